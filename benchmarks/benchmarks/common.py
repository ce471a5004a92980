"""Shared pieces of the asv benchmarks: seeded cached datasets and a ``Benchmark`` base.

Datasets are generated from fixed seeds (the same bits on every run and machine) and
cached per process, read-only: a benchmark that updates in place copies its input in
``setup``. Only NumPy, threadpoolctl and pyfastopt's public API are used here, so the
benchmarks also run against older commits.
"""

from __future__ import annotations

import functools
import time

import numpy as np

DTYPES = ["float32", "float64"]
SIZES = [10_000, 1_000_000, 10_000_000]
THREADS = [1, 2]
SEED = 1234


@functools.lru_cache(maxsize=8)
def get_vector(size: int, dtype: str, seed: int = SEED) -> np.ndarray:
    """A read-only standard normal vector of ``size`` elements."""
    x = np.random.default_rng(seed).standard_normal(size, dtype=np.dtype(dtype))
    x.flags.writeable = False
    return x


def grad_shapes(ntensors: int, total: int, seed: int = SEED) -> list[tuple[int, ...]]:
    """Shapes of a gradient-like list: (h, w) weights and (h,) biases in pairs, sizes
    spread over two orders of magnitude, about ``total`` elements in all."""
    rng = np.random.default_rng(seed)
    pairs = max(1, ntensors // 2)
    share = rng.lognormal(0.0, 0.8, pairs)
    share = share / share.sum() * total
    shapes: list[tuple[int, ...]] = []
    for s in share:
        h = int(rng.integers(16, 257))
        shapes.append((h, max(1, round(float(s) / h) - 1)))
        shapes.append((h,))
    return shapes[:ntensors]


@functools.lru_cache(maxsize=4)
def get_grads(ntensors: int, total: int, dtype: str, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """A read-only tuple of ``ntensors`` arrays, about ``total`` elements in all.

    The shapes depend on ``ntensors`` and ``total`` only; ``seed`` picks the values.
    """
    rng = np.random.default_rng(seed + 1)
    out = []
    for shape in grad_shapes(ntensors, total):
        g = rng.standard_normal(shape, dtype=np.dtype(dtype))
        g.flags.writeable = False
        out.append(g)
    return tuple(out)


def best_seconds(fn, min_batch_s: float = 0.005, repeats: int = 3) -> float:
    """Seconds per call of ``fn()``: timeit-style, best of ``repeats`` batches."""
    fn()
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_batch_s or number >= 1 << 20:
            break
        number *= 4
    best = elapsed / number
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


class Benchmark:
    """Base class: pins the thread count in ``setup`` and restores it in ``teardown``.

    Subclasses whose ``param_names`` include ``threads`` call ``self.set_threads(n)``
    from ``setup``. pyfastopt, OpenMP and BLAS pools are all limited, so the NumPy
    baseline runs on the same number of threads as pyfastopt.
    """

    timeout = 120.0
    _limits = None
    _previous_threads = None

    def set_threads(self, n: int) -> None:
        from threadpoolctl import threadpool_limits

        import pyfastopt

        self._previous_threads = pyfastopt.get_num_threads()
        self._limits = threadpool_limits(limits=n)
        pyfastopt.set_num_threads(n)

    def teardown(self, *params) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
        if self._previous_threads is not None:
            import pyfastopt

            pyfastopt.set_num_threads(self._previous_threads)
            self._previous_threads = None
