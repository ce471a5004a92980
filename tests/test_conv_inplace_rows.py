"""Forward conv with channels-last x read in place (>= 8 channels per group: ukernel_rows,
row pointers per tap segment, padding at a zero row) on small images and the border
cases (odd sizes, asymmetric padding, W = kw, W = 1, K blocks cut inside taps, 5x5,
dilation, stride, groups, padding > kernel): the same bits as the NCHW gather path (few
output channels per group: every tap gathered and packed), at every SIMD level and 1/2/3
threads, also with non-finite weights; float64 against torch.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_conv import make, to_nchw, to_nhwc, torch_conv

import pyfastopt
from pyfastopt import _core

SIMD_LEVELS = _core.config.supported_levels()

# (N, C, H, W, Co, kh, kw, stride, padding (t, b, l, r), dilation, groups); Co/g x kh x kw
# < 128 so that NCHW gathers (the independent path)
CASES = [
    (3, 8, 8, 8, 12, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # 8x8: panels straddle rows
    (2, 16, 16, 16, 14, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # 16x16: interior panels merge
    (2, 8, 7, 9, 5, 3, 3, (1, 1), (0, 2, 2, 0), (1, 1), 1),  # odd sizes, asymmetric padding
    (2, 9, 6, 3, 7, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # W = kw: rows continue into next rows
    (2, 8, 5, 1, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # W = 1: every side tap padding
    (2, 100, 6, 7, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # K blocks cut inside taps
    (2, 40, 9, 9, 4, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 1),  # 5x5: 5-tap runs over K blocks
    (2, 16, 10, 10, 6, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1),  # dilation: taps never adjacent
    (2, 8, 11, 11, 9, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),  # stride 2
    (2, 32, 8, 8, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),  # groups: pixels C apart, not cg
    (2, 8, 6, 12, 10, 1, 4, (1, 1), (0, 0, 1, 2), (1, 1), 1),  # 1 x 4 kernel
    (1, 12, 4, 4, 3, 3, 3, (1, 1), (3, 3, 3, 3), (1, 1), 1),  # padding > kernel: zero runs
]
IDS = [f"m{i}" for i in range(len(CASES))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_inplace_rows_bitwise(rng, case, dtype):
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    assert case[4] // g * case[5] * case[6] < 128 and case[1] // g >= 8
    x, w, b = make(rng, case, dtype)
    w_inf = w.copy()
    w_inf.flat[:: max(1, w.size // 4)] = np.inf  # 0 x inf in padded taps: NaN
    w_inf.flat[3] = -np.inf
    for wt, act in ((w, "relu"), (w, None), (w_inf, None)):
        want = pyfastopt.conv2d(x, wt, b, stride, pad, dil, g, activation=act)  # NCHW gather
        if dtype == np.float64 and wt is w:
            ref = torch_conv(x, wt, b, case, act=act)
            np.testing.assert_allclose(want, ref, rtol=1e-10, atol=1e-10)
        nan = np.isnan(want)
        previous = _core.config.get_simd_level()
        try:
            for level in SIMD_LEVELS:
                _core.config.set_simd_level(level)
                for threads in (1, 2, 3):
                    pyfastopt.set_num_threads(threads)
                    got = to_nchw(
                        pyfastopt.conv2d(
                            to_nhwc(x), wt, b, stride, pad, dil, g, activation=act, layout="NHWC"
                        )
                    )
                    assert np.array_equal(np.isnan(got), nan), (case, level, threads)
                    assert got[~nan].tobytes() == want[~nan].tobytes(), (case, level, threads)
        finally:
            _core.config.set_simd_level(previous)
            pyfastopt.set_num_threads(1)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_forward_small_image_layers_threads_simd(rng, layout):
    """The CNN step's layer shapes (16x16 and 8x8 images, 32-64 channels; NCHW runs the
    channels-last code on a copy): float64 against torch, float32 bitwise across SIMD
    levels and 1/2/3 threads."""
    for case in (
        (4, 32, 16, 16, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
        (5, 64, 8, 8, 128, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ):
        x, w, b = make(rng, case, np.float64)

        def conv(a, wt, bb, case=case):
            stride, pad, dil, g = case[7], case[8], case[9], case[10]
            if layout == "NCHW":
                return pyfastopt.conv2d(a, wt, bb, stride, pad, dil, g)
            return to_nchw(pyfastopt.conv2d(to_nhwc(a), wt, bb, stride, pad, dil, g, layout="NHWC"))

        np.testing.assert_allclose(conv(x, w, b), torch_conv(x, w, b, case), rtol=1e-10, atol=1e-10)
        x32, w32, b32 = x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)
        ref = None
        previous = _core.config.get_simd_level()
        try:
            for level in SIMD_LEVELS:
                _core.config.set_simd_level(level)
                for threads in (1, 2, 3):
                    pyfastopt.set_num_threads(threads)
                    got = conv(x32, w32, b32)
                    if ref is None:
                        ref = got
                    assert got.tobytes() == ref.tobytes(), (case, level, threads)
        finally:
            _core.config.set_simd_level(previous)
            pyfastopt.set_num_threads(1)
