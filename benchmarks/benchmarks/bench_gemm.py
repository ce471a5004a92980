"""asv benchmarks for the GEMM family vs NumPy: ``matmul``, ``linear``, ``linear_backward``.

float32, standard normal inputs, one call per ``time_*`` method; each pyfastopt class has
its NumPy baseline (``a @ b`` and with a preallocated ``out=``) in a ``...NumPy`` class
of its own (``PeerBenchmark``: never in a process with pyfastopt). Shapes are
``(M, K, N)`` strings: ``x (M, K)``, ``W (N, K)`` (PyTorch's layout), ``B (K, N)``.

* ``MatmulSquare``: ``matmul(a, b)``, all ``(n, n)``; ``track_gflops_*`` at 2 n^3 flops.
* ``LinearRelu``: the fused ``linear(x, W, b, activation="relu")`` at MLP layer shapes vs
  ``np.maximum(x @ W.T + b, 0)``.
* ``Skinny``: M = 1 or 8 rows against a large weight (``matmul`` x @ B and ``linear``
  x @ W.T), bound by streaming the weight; ``track_bandwidth_*`` count its bytes.
* ``LinearBackward``: ``linear_backward(dy, x, W)`` vs ``(dy @ W, dy.T @ x, dy.sum(0))``.

The functions are looked up in ``setup``, so commits without them skip these benchmarks
instead of breaking discovery.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .common import THREADS, Benchmark, PeerBenchmark, best_seconds, get_matrix, get_vector

MLP_SHAPES = ["64x784x256", "256x784x512", "32x512x10"]
SKINNY_SHAPES = ["8x4096x4096", "1x1024x1024"]


def _parse(shape: str) -> tuple[int, int, int]:
    m, k, n = (int(s) for s in shape.split("x"))
    return m, k, n


_matrix = get_matrix


def _lookup(*names: str) -> list:
    import pyfastopt

    found = [getattr(pyfastopt, name, None) for name in names]
    if any(f is None for f in found):
        raise NotImplementedError(f"this pyfastopt has no {' / '.join(names)}")
    return found


class _MatmulSquareData:
    params: ClassVar[list] = [[256, 512, 1024, 2048], THREADS]
    param_names: ClassVar[list[str]] = ["size", "threads"]
    #: the tiny grid tests/test_benchmarks.py runs
    smoke_params: ClassVar[list] = [[64], THREADS]

    def setup(self, size, threads):
        self.set_threads(threads)
        self.a = _matrix(size, size, 1)
        self.b = _matrix(size, size, 2)
        self.out = np.empty((size, size), dtype=np.float32)
        self.flops = 2.0 * size**3


class MatmulSquare(_MatmulSquareData, Benchmark):
    """``pyfastopt.matmul(a, b)``, both (n, n) float32."""

    def setup(self, size, threads):
        (self.matmul,) = _lookup("matmul")
        super().setup(size, threads)

    def time_matmul_pyfastopt(self, size, threads):
        self.matmul(self.a, self.b)

    def time_matmul_pyfastopt_out(self, size, threads):
        self.matmul(self.a, self.b, out=self.out)

    def track_gflops_pyfastopt(self, size, threads):
        matmul, a, b, out = self.matmul, self.a, self.b, self.out
        return self.flops / best_seconds(lambda: matmul(a, b, out=out)) / 1e9

    track_gflops_pyfastopt.unit = "GFLOP/s"


class MatmulSquareNumPy(_MatmulSquareData, PeerBenchmark):
    """``a @ b`` (BLAS)."""

    def time_matmul_numpy(self, size, threads):
        self.a @ self.b

    def time_matmul_numpy_out(self, size, threads):
        np.matmul(self.a, self.b, out=self.out)

    def track_gflops_numpy(self, size, threads):
        a, b, out = self.a, self.b, self.out
        return self.flops / best_seconds(lambda: np.matmul(a, b, out=out)) / 1e9

    track_gflops_numpy.unit = "GFLOP/s"


class _LinearReluData:
    params: ClassVar[list] = [MLP_SHAPES, THREADS]
    param_names: ClassVar[list[str]] = ["shape", "threads"]
    smoke_params: ClassVar[list] = [["16x32x8"], THREADS]

    def setup(self, shape, threads):
        self.set_threads(threads)
        m, k, n = _parse(shape)
        self.x = _matrix(m, k, 3)
        self.w = _matrix(n, k, 4)
        self.b = get_vector(n, "float32", 5)
        self.out = np.empty((m, n), dtype=np.float32)
        self.buf = np.empty((m, n), dtype=np.float32)


class LinearRelu(_LinearReluData, Benchmark):
    """``pyfastopt.linear(x, W, b, activation="relu")``."""

    def setup(self, shape, threads):
        (self.linear,) = _lookup("linear")
        super().setup(shape, threads)

    def time_linear_relu_pyfastopt(self, shape, threads):
        self.linear(self.x, self.w, self.b, activation="relu")

    def time_linear_relu_pyfastopt_out(self, shape, threads):
        self.linear(self.x, self.w, self.b, activation="relu", out=self.out)


class LinearReluNumPy(_LinearReluData, PeerBenchmark):
    """``maximum(x @ W.T + b, 0)``, also with a preallocated buffer."""

    def time_linear_relu_numpy(self, shape, threads):
        np.maximum(self.x @ self.w.T + self.b, 0)

    def time_linear_relu_numpy_preallocated(self, shape, threads):
        buf = self.buf
        np.matmul(self.x, self.w.T, out=buf)
        buf += self.b
        np.maximum(buf, 0, out=buf)


class _SkinnyData:
    params: ClassVar[list] = [SKINNY_SHAPES, THREADS]
    param_names: ClassVar[list[str]] = ["shape", "threads"]
    smoke_params: ClassVar[list] = [["1x64x64"], THREADS]

    def setup(self, shape, threads):
        self.set_threads(threads)
        m, k, n = _parse(shape)
        self.x = _matrix(m, k, 6)
        self.weight = _matrix(n, k, 7)  # W (N, K) for linear
        self.bmat = _matrix(k, n, 11)  # B (K, N), C-contiguous, for matmul
        self.bytes = 4.0 * (k * n + m * k + m * n)  # weight + x + out


class Skinny(_SkinnyData, Benchmark):
    """M = 1 or 8 rows times a large weight: ``matmul`` (x @ B) and ``linear`` (x @ W.T)."""

    def setup(self, shape, threads):
        self.matmul, self.linear = _lookup("matmul", "linear")
        super().setup(shape, threads)

    def time_matmul_pyfastopt(self, shape, threads):
        self.matmul(self.x, self.bmat)

    def time_linear_pyfastopt(self, shape, threads):
        self.linear(self.x, self.weight)

    def track_bandwidth_linear_pyfastopt(self, shape, threads):
        linear, x, w = self.linear, self.x, self.weight
        return self.bytes / best_seconds(lambda: linear(x, w)) / 1e9

    track_bandwidth_linear_pyfastopt.unit = "GB/s"


class SkinnyNumPy(_SkinnyData, PeerBenchmark):
    """The same skinny products with NumPy (BLAS GEMV/GEMM)."""

    def time_matmul_numpy(self, shape, threads):
        self.x @ self.bmat

    def time_linear_numpy(self, shape, threads):
        self.x @ self.weight.T

    def track_bandwidth_linear_numpy(self, shape, threads):
        x, wt = self.x, self.weight.T
        return self.bytes / best_seconds(lambda: x @ wt) / 1e9

    track_bandwidth_linear_numpy.unit = "GB/s"


class _LinearBackwardData:
    params: ClassVar[list] = [["256x784x512", "64x784x256"], THREADS]
    param_names: ClassVar[list[str]] = ["shape", "threads"]
    smoke_params: ClassVar[list] = [["16x32x8"], THREADS]

    def setup(self, shape, threads):
        self.set_threads(threads)
        m, k, n = _parse(shape)
        self.x = _matrix(m, k, 8)
        self.w = _matrix(n, k, 9)
        self.dy = _matrix(m, n, 10)
        self.dx = np.empty((m, k), dtype=np.float32)
        self.dw = np.empty((n, k), dtype=np.float32)
        self.db = np.empty(n, dtype=np.float32)


class LinearBackward(_LinearBackwardData, Benchmark):
    """``pyfastopt.linear_backward(dy, x, W)``."""

    def setup(self, shape, threads):
        (self.linear_backward,) = _lookup("linear_backward")
        super().setup(shape, threads)

    def time_linear_backward_pyfastopt(self, shape, threads):
        self.linear_backward(self.dy, self.x, self.w)


class LinearBackwardNumPy(_LinearBackwardData, PeerBenchmark):
    """``(dy @ W, dy.T @ x, dy.sum(0))``, also into preallocated arrays."""

    def time_linear_backward_numpy(self, shape, threads):
        dy = self.dy
        dy @ self.w, dy.T @ self.x, dy.sum(0)

    def time_linear_backward_numpy_preallocated(self, shape, threads):
        dy = self.dy
        np.matmul(dy, self.w, out=self.dx)
        np.matmul(dy.T, self.x, out=self.dw)
        np.sum(dy, axis=0, out=self.db)
