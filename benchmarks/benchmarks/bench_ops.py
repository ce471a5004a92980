"""asv benchmarks for ``pyfastopt.ops``: ``axpby_`` and ``l2_norm`` vs NumPy.

One kernel call per ``time_*`` method; pyfastopt and its NumPy baseline side by side in
the same class, over dtype x size x threads.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

import pyfastopt

from .common import DTYPES, SIZES, THREADS, Benchmark, best_seconds, get_grads, get_vector

A, B = 0.1, 0.9  # momentum-like: y stays bounded however many times asv repeats a call


class Axpby(Benchmark):
    """In place ``y = a*x + b*y``; 3 * n * itemsize bytes moved per call."""

    params: ClassVar[list] = [DTYPES, SIZES, THREADS]
    param_names: ClassVar[list[str]] = ["dtype", "size", "threads"]

    def setup(self, dtype, size, threads):
        self.set_threads(threads)
        self.x = get_vector(size, dtype)
        self.y = get_vector(size, dtype, seed=99).copy()
        self.tmp = np.empty_like(self.y)

    def time_axpby_pyfastopt(self, dtype, size, threads):
        pyfastopt.ops.axpby_(self.y, self.x, A, B)

    def time_axpby_numpy(self, dtype, size, threads):
        y = self.y
        np.multiply(y, B, out=y)
        np.add(y, A * self.x, out=y)

    def time_axpby_numpy_preallocated(self, dtype, size, threads):
        y, tmp = self.y, self.tmp
        np.multiply(self.x, A, out=tmp)
        np.multiply(y, B, out=y)
        np.add(y, tmp, out=y)

    def track_bandwidth_axpby(self, dtype, size, threads):
        y, x = self.y, self.x
        seconds = best_seconds(lambda: pyfastopt.ops.axpby_(y, x, A, B))
        return 3 * y.nbytes / seconds / 1e9

    track_bandwidth_axpby.unit = "GB/s"


class AxpbyMulti(Benchmark):
    """Multi-tensor ``axpby_`` over 200 gradient-like arrays (one parallel region)."""

    params: ClassVar[list] = [DTYPES, [100_000, 1_000_000], THREADS]
    param_names: ClassVar[list[str]] = ["dtype", "size", "threads"]

    def setup(self, dtype, size, threads):
        self.set_threads(threads)
        self.xs = list(get_grads(200, size, dtype))
        self.ys = [g.copy() for g in get_grads(200, size, dtype, seed=99)]

    def time_axpby_multi_pyfastopt(self, dtype, size, threads):
        pyfastopt.ops.axpby_(self.ys, self.xs, A, B)

    def time_axpby_multi_numpy(self, dtype, size, threads):
        multiply, add = np.multiply, np.add
        for y, x in zip(self.ys, self.xs):
            multiply(y, B, out=y)
            add(y, A * x, out=y)


class L2Norm(Benchmark):
    """Global L2 norm of one vector; n * itemsize bytes read per call."""

    params: ClassVar[list] = [DTYPES, SIZES, THREADS]
    param_names: ClassVar[list[str]] = ["dtype", "size", "threads"]

    def setup(self, dtype, size, threads):
        self.set_threads(threads)
        self.x = get_vector(size, dtype)

    def time_l2_norm_pyfastopt(self, dtype, size, threads):
        pyfastopt.ops.l2_norm(self.x)

    def time_l2_norm_numpy(self, dtype, size, threads):
        x = self.x
        math.sqrt(np.dot(x, x))


class L2NormMulti(Benchmark):
    """Global L2 norm over 200 gradient-like arrays: the gradient-clipping case."""

    params: ClassVar[list] = [DTYPES, [100_000, 1_000_000], THREADS]
    param_names: ClassVar[list[str]] = ["dtype", "size", "threads"]

    def setup(self, dtype, size, threads):
        self.set_threads(threads)
        self.grads = list(get_grads(200, size, dtype))

    def time_l2_norm_multi_pyfastopt(self, dtype, size, threads):
        pyfastopt.ops.l2_norm(self.grads)

    def time_l2_norm_multi_numpy(self, dtype, size, threads):
        vdot = np.vdot
        math.sqrt(sum([float(vdot(g, g)) for g in self.grads]))
