"""global_avg_pool2d / adaptive_avg_pool2d(1) on channels-last images larger than L2 (the
chan_sums path: > 256 KB per image) and on small ones (pool_avg), against NumPy float64
sums, bit for bit equal to the channels-first result (plane_sums) and the same bits at
every SIMD level this CPU has and 1 / 2 / 3 threads. Channel counts around the kernel's
register blocks (1, 7, 9, 33, 257 > one 256-channel unit, 300) and pixel counts that are
not multiples of its 32-pixel chunk."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

SIMD_LEVELS = _core.config.supported_levels()

# (N, C, H, W): image bytes (float32) C*H*W*4
SHAPES = [
    (2, 64, 56, 56),  # 800 KB: the ResNet stem's output
    (1, 1, 300, 301),  # one channel, 360 KB
    (2, 7, 97, 101),
    (1, 9, 91, 89),
    (2, 33, 45, 47),
    (1, 257, 16, 17),  # two channel units (256 + 1)
    (2, 300, 15, 15),
    (3, 16, 9, 11),  # small: pool_avg
]


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_global_avg_nhwc(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, 0] = -0.0
    ref = x.astype(np.float64).mean(axis=(2, 3))
    xl = _nhwc(x)
    previous = _core.config.get_simd_level()
    prev_threads = pyfastopt.get_num_threads()
    first = None
    try:
        for level in SIMD_LEVELS:
            _core.config.set_simd_level(level)
            for threads in (1, 2, 3):
                pyfastopt.set_num_threads(threads)
                got = [
                    pyfastopt.global_avg_pool2d(xl, layout="NHWC").reshape(shape[:2]),
                    pyfastopt.adaptive_avg_pool2d(xl, 1, layout="NHWC").reshape(shape[:2]),
                    pyfastopt.global_avg_pool2d(x).reshape(shape[:2]),
                ]
                if first is None:
                    first = got[0]
                    tol = 1e-6 if dtype == np.float32 else 1e-12
                    np.testing.assert_allclose(first, ref, rtol=tol, atol=tol)
                for g in got:
                    assert g.dtype == dtype
                    assert g.tobytes() == first.tobytes(), f"{level} threads={threads}"
    finally:
        _core.config.set_simd_level(previous)
        pyfastopt.set_num_threads(prev_threads)


def test_global_avg_nhwc_nonfinite(rng):
    x = rng.standard_normal((1, 40, 100, 90)).astype(np.float32)
    x[0, 3, 50, 7] = np.nan
    x[0, 5, 1, 1] = np.inf
    x[0, 6, 2, 2] = np.inf
    x[0, 6, 3, 3] = -np.inf
    y = pyfastopt.global_avg_pool2d(_nhwc(x), layout="NHWC").reshape(40)
    assert np.isnan(y[3]) and y[5] == np.inf and np.isnan(y[6])
    assert np.isfinite(np.delete(y, [3, 5, 6])).all()
