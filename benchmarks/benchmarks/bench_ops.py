"""asv benchmarks for ``pyfastopt.ops``: ``axpby_`` and ``l2_norm`` vs NumPy.

One kernel call per ``time_*`` method over dtype x size x threads; each pyfastopt class
has its NumPy baseline in a ``...NumPy`` class of its own (``PeerBenchmark``: never in a
process with pyfastopt, see ``common.py``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .common import (
    DTYPES,
    SIZES,
    THREADS,
    Benchmark,
    PeerBenchmark,
    best_seconds,
    get_grads,
    get_vector,
)

A, B = 0.1, 0.9  # momentum-like: y stays bounded however many times asv repeats a call


class _AxpbyData:
    params: ClassVar[list] = [DTYPES, SIZES, THREADS]
    param_names: ClassVar[list[str]] = ["dtype", "size", "threads"]

    def setup(self, dtype, size, threads):
        self.set_threads(threads)
        self.x = get_vector(size, dtype)
        self.y = get_vector(size, dtype, seed=99).copy()
        self.tmp = np.empty_like(self.y)


class Axpby(_AxpbyData, Benchmark):
    """In place ``y = a*x + b*y``; 3 * n * itemsize bytes moved per call."""

    def setup(self, dtype, size, threads):
        import pyfastopt

        self.axpby_ = pyfastopt.ops.axpby_
        super().setup(dtype, size, threads)

    def time_axpby_pyfastopt(self, dtype, size, threads):
        self.axpby_(self.y, self.x, A, B)

    def track_bandwidth_axpby(self, dtype, size, threads):
        y, x, axpby_ = self.y, self.x, self.axpby_
        seconds = best_seconds(lambda: axpby_(y, x, A, B))
        return 3 * y.nbytes / seconds / 1e9

    track_bandwidth_axpby.unit = "GB/s"


class AxpbyNumPy(_AxpbyData, PeerBenchmark):
    """NumPy's ``y = a*x + b*y``: with a temporary, and with a preallocated buffer."""

    def time_axpby_numpy(self, dtype, size, threads):
        y = self.y
        np.multiply(y, B, out=y)
        np.add(y, A * self.x, out=y)

    def time_axpby_numpy_preallocated(self, dtype, size, threads):
        y, tmp = self.y, self.tmp
        np.multiply(self.x, A, out=tmp)
        np.multiply(y, B, out=y)
        np.add(y, tmp, out=y)


class _AxpbyMultiData:
    params: ClassVar[list] = [DTYPES, [100_000, 1_000_000], THREADS]
    param_names: ClassVar[list[str]] = ["dtype", "size", "threads"]

    def setup(self, dtype, size, threads):
        self.set_threads(threads)
        self.xs = list(get_grads(200, size, dtype))
        self.ys = [g.copy() for g in get_grads(200, size, dtype, seed=99)]


class AxpbyMulti(_AxpbyMultiData, Benchmark):
    """Multi-tensor ``axpby_`` over 200 gradient-like arrays (one parallel region)."""

    def setup(self, dtype, size, threads):
        import pyfastopt

        self.axpby_ = pyfastopt.ops.axpby_
        super().setup(dtype, size, threads)

    def time_axpby_multi_pyfastopt(self, dtype, size, threads):
        self.axpby_(self.ys, self.xs, A, B)


class AxpbyMultiNumPy(_AxpbyMultiData, PeerBenchmark):
    """NumPy over the same 200 arrays, one tensor at a time."""

    def time_axpby_multi_numpy(self, dtype, size, threads):
        multiply, add = np.multiply, np.add
        for y, x in zip(self.ys, self.xs):
            multiply(y, B, out=y)
            add(y, A * x, out=y)


class _L2NormData:
    params: ClassVar[list] = [DTYPES, SIZES, THREADS]
    param_names: ClassVar[list[str]] = ["dtype", "size", "threads"]

    def setup(self, dtype, size, threads):
        self.set_threads(threads)
        self.x = get_vector(size, dtype)


class L2Norm(_L2NormData, Benchmark):
    """Global L2 norm of one vector; n * itemsize bytes read per call."""

    def setup(self, dtype, size, threads):
        import pyfastopt

        self.l2_norm = pyfastopt.ops.l2_norm
        super().setup(dtype, size, threads)

    def time_l2_norm_pyfastopt(self, dtype, size, threads):
        self.l2_norm(self.x)


class L2NormNumPy(_L2NormData, PeerBenchmark):
    """``sqrt(dot(x, x))`` (BLAS)."""

    def time_l2_norm_numpy(self, dtype, size, threads):
        x = self.x
        math.sqrt(np.dot(x, x))


class _L2NormMultiData:
    params: ClassVar[list] = [DTYPES, [100_000, 1_000_000], THREADS]
    param_names: ClassVar[list[str]] = ["dtype", "size", "threads"]

    def setup(self, dtype, size, threads):
        self.set_threads(threads)
        self.grads = list(get_grads(200, size, dtype))


class L2NormMulti(_L2NormMultiData, Benchmark):
    """Global L2 norm over 200 gradient-like arrays: the gradient-clipping case."""

    def setup(self, dtype, size, threads):
        import pyfastopt

        self.l2_norm = pyfastopt.ops.l2_norm
        super().setup(dtype, size, threads)

    def time_l2_norm_multi_pyfastopt(self, dtype, size, threads):
        self.l2_norm(self.grads)


class L2NormMultiNumPy(_L2NormMultiData, PeerBenchmark):
    """``sqrt(sum(vdot(g, g)))`` over the same 200 arrays."""

    def time_l2_norm_multi_numpy(self, dtype, size, threads):
        vdot = np.vdot
        math.sqrt(sum([float(vdot(g, g)) for g in self.grads]))
