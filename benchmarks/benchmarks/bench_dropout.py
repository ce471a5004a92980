"""asv benchmarks for ``pyfastopt.dropout`` vs NumPy: training-mode dropout, float32.

One call per ``time_*`` method, p = 0.5, over size x threads; pyfastopt in ``Dropout``,
NumPy in ``DropoutNumPy`` (``PeerBenchmark``: never in a process with pyfastopt). NumPy is ``(rng.random(n, dtype=float32) >= p) * x * scale``,
also timed with every buffer preallocated. ``track_bandwidth_*`` report GB/s counting 8
bytes per element (read x, write y; the mask is generated in registers, never stored).

``pyfastopt.dropout`` is looked up in ``setup``, so commits without it skip these
benchmarks instead of breaking discovery.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .common import THREADS, Benchmark, PeerBenchmark, best_seconds, get_vector

P = 0.5
SEED = 1234
BYTES_PER_ELEMENT = 8


class _DropoutData:
    params: ClassVar[list] = [[1_000_000, 10_000_000], THREADS]
    param_names: ClassVar[list[str]] = ["size", "threads"]
    #: the tiny grid tests/test_benchmarks.py runs (not the 1e6 minimum of ``params``)
    smoke_params: ClassVar[list] = [[1_000], THREADS]

    def setup(self, size, threads):
        self.set_threads(threads)
        self.x = get_vector(size, "float32")  # read-only input, as dropout's x is
        self.out = np.empty_like(self.x)


class Dropout(_DropoutData, Benchmark):
    """``pyfastopt.dropout(x, 0.5, seed)``."""

    def setup(self, size, threads):
        import pyfastopt

        self.dropout = getattr(pyfastopt, "dropout", None)
        if self.dropout is None:
            raise NotImplementedError("this pyfastopt has no dropout")
        super().setup(size, threads)

    def time_dropout_pyfastopt(self, size, threads):
        self.dropout(self.x, P, SEED)

    def time_dropout_pyfastopt_out(self, size, threads):
        self.dropout(self.x, P, SEED, out=self.out)

    def track_bandwidth_pyfastopt(self, size, threads):
        dropout, x, out = self.dropout, self.x, self.out
        seconds = best_seconds(lambda: dropout(x, P, SEED, out=out))
        return BYTES_PER_ELEMENT * x.size / seconds / 1e9

    track_bandwidth_pyfastopt.unit = "GB/s"


class DropoutNumPy(_DropoutData, PeerBenchmark):
    """NumPy's mask-multiply-scale, also with every buffer preallocated."""

    def setup(self, size, threads):
        super().setup(size, threads)
        self.scale = np.float32(1.0 / (1.0 - P))
        self.rng = np.random.default_rng(SEED)
        self.u = np.empty_like(self.x)
        self.keep = np.empty(size, dtype=bool)
        self.y = np.empty_like(self.x)

    def _numpy(self):
        return (self.rng.random(self.x.size, dtype=np.float32) >= P) * self.x * self.scale

    def _numpy_preallocated(self):
        u, keep, y = self.u, self.keep, self.y
        self.rng.random(dtype=np.float32, out=u)
        np.greater_equal(u, P, out=keep)
        np.multiply(self.x, self.scale, out=y)
        np.multiply(y, keep, out=y)
        return y

    def time_dropout_numpy(self, size, threads):
        self._numpy()

    def time_dropout_numpy_preallocated(self, size, threads):
        self._numpy_preallocated()

    def track_bandwidth_numpy(self, size, threads):
        seconds = best_seconds(self._numpy_preallocated)
        return BYTES_PER_ELEMENT * self.x.size / seconds / 1e9

    track_bandwidth_numpy.unit = "GB/s"
