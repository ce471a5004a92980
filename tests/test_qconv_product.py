"""int8 convolution through the level's product table (AVX2: vpmaddubsw on bytes with a
clamped B and its sparse remainder, QConvWeights::prepare / gemm_path) and the gathers
of padded channels-last inputs (padded_input, gather_dense in qconv_driver.cpp).

Every result is exact: int32 accumulators against the int64 reference, requantized
outputs against the reference stage, and bitwise identical for every SIMD level this CPU
runs and 1/2/3 threads. The weights put many (k, k + 1) pairs of a column (k =
(r * S + s) * Cg + c, the packing order) at the clamp boundary: |w0 + w1| = 128 (never
clamped), 129 and 254/256 (clamped, remainder added back)."""

from __future__ import annotations

import numpy as np
import pytest
from qconv_reference import nhwc, rand, ref_conv, requant_stage

import pyfastopt
from pyfastopt import _core
from pyfastopt.quant import conv2d_int8

from .conftest import QSIMD_LEVELS

# pairs (w_k, w_{k+1}) at and around the clamp boundary of vpmaddubsw on A' in 0..255
BOUNDARY_PAIRS = [
    (64, 64), (65, 64), (64, 65), (127, 1), (1, 127), (127, 2), (127, 127), (100, 29),
    (-64, -64), (-65, -64), (-64, -65), (-128, -1), (-1, -128), (-128, -128), (-128, 0),
    (-100, -29), (127, -128), (-128, 127), (0, 127), (-128, 1),
]  # fmt: skip


def boundary_weights(rng, co, cg, k, share):
    """(co, cg, k, k) int8 weights: Gaussian-like, with `share` of the packing-order pairs
    of every column replaced by BOUNDARY_PAIRS."""
    kk = k * k * cg
    b = np.clip(np.rint(rng.standard_normal((kk, co)) * 30), -128, 127).astype(np.int64)
    for j in range(co):
        for q in range(kk // 2):
            if rng.random() < share:
                b[2 * q, j], b[2 * q + 1, j] = BOUNDARY_PAIRS[rng.integers(len(BOUNDARY_PAIRS))]
    # b[(r * k + s) * cg + c, o] -> w[o, c, r, s]
    return np.ascontiguousarray(b.reshape(k, k, cg, co).transpose(3, 2, 0, 1)).astype(np.int8)


# (N, C, H, W, Co, k, stride, padding (t, b, l, r), groups): 1/3/16/17 channels (odd K:
# 3x3x1, 3x3x3, 5x5x17), padded and unpadded, stride 2, grouped
CASES = [
    (2, 1, 9, 8, 16, 5, 1, (2, 2, 2, 2), 1),
    (2, 3, 10, 9, 20, 3, 1, (1, 1, 1, 1), 1),
    (1, 3, 11, 11, 17, 3, 2, (1, 0, 1, 2), 1),
    (3, 16, 9, 9, 32, 5, 1, (0, 0, 0, 0), 1),
    (2, 16, 8, 7, 40, 5, 1, (2, 2, 2, 2), 1),
    (2, 17, 7, 8, 33, 5, 1, (2, 1, 0, 3), 1),
    (1, 17, 9, 9, 48, 3, 2, (0, 0, 0, 0), 1),
    (2, 32, 6, 6, 32, 3, 1, (1, 1, 1, 1), 2),
    (1, 34, 7, 7, 34, 3, 1, (1, 1, 1, 1), 17),
    (2, 16, 6, 6, 16, 3, 1, (1, 1, 1, 1), 16),
]


def _conv(x, zx, w, zw, qb, stride, pad, groups, layout, **kw):
    t, b, lf, r = pad
    return conv2d_int8(
        x, zx, w, zw, qb, stride=stride, padding=(t, b, lf, r), groups=groups, layout=layout, **kw
    )


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("share", [0.0, 0.01, 0.3])
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_conv_int32_exact(qsimd, rng, case, share, x_dtype):
    """ConvInteger-style int32 accumulators, NCHW and NHWC, against the int64 reference
    (share 0.3: more clamped pairs than the sparse remainder takes, the level's own table
    then; either way exact)."""
    n, c, h, wd, co, k, s, pad, groups = case
    x = rand(rng, x_dtype, (n, c, h, wd))
    w = boundary_weights(rng, co, c // groups, k, share)
    info = np.iinfo(x_dtype)
    zx = int(rng.integers(info.min, info.max + 1))
    zw = int(rng.integers(-20, 20))
    qb = rng.integers(-(2**20), 2**20, size=co).astype(np.int32)
    ref = ref_conv(x, zx, w, zw, stride=(s, s), pad=pad, groups=groups, bias=qb).astype(np.int32)
    got = _conv(x, zx, w, zw, qb, s, pad, groups, "NCHW")
    np.testing.assert_array_equal(got, ref)
    got = _conv(nhwc(x), zx, w, zw, qb, s, pad, groups, "NHWC")
    np.testing.assert_array_equal(got, nhwc(ref))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("relu", [False, True])
def test_conv_requantized_exact(qsimd, rng, case, relu):
    """uint8 output (QLinearConv: the plan's layers) through the requantization stage."""
    n, c, h, wd, co, k, s, pad, groups = case
    x = rand(rng, np.uint8, (n, c, h, wd))
    w = boundary_weights(rng, co, c // groups, k, 0.02)
    zx = int(rng.integers(0, 256))
    ws = rng.uniform(2e-4, 2e-3, co).astype(np.float32)
    xs, ys, zy = np.float32(0.05), np.float32(0.2), 7
    qb = rng.integers(-(2**16), 2**16, size=co).astype(np.int32)
    mult = ((xs * ws).astype(np.float32) / ys).astype(np.float32)
    acc = ref_conv(x, zx, w, 0, stride=(s, s), pad=pad, groups=groups, bias=qb)
    want = nhwc(requant_stage(acc, mult, zy, np.uint8, relu))
    got = _conv(
        nhwc(x), zx, w, 0, qb, s, pad, groups, "NHWC", x_scale=xs, weight_scale=ws, out_scale=ys,
        out_zero_point=np.uint8(zy), activation="relu" if relu else None,
    )  # fmt: skip
    np.testing.assert_array_equal(got, want)


def test_levels_and_threads_bitwise(rng):
    """The LeNet-like layers (5x5 on 1 and 16 channels, padded and not) and a grouped one:
    the same bytes on every SIMD level this CPU runs and 1/2/3 threads."""
    layers = [
        (rand(rng, np.uint8, (5, 28, 28, 1)), boundary_weights(rng, 16, 1, 5, 0.05), 2, 1),
        (rand(rng, np.uint8, (5, 14, 14, 16)), boundary_weights(rng, 32, 16, 5, 0.01), 0, 1),
        (rand(rng, np.uint8, (3, 9, 9, 17)), boundary_weights(rng, 19, 17, 3, 0.01), 1, 1),
        (rand(rng, np.uint8, (3, 9, 9, 32)), boundary_weights(rng, 32, 16, 3, 0.01), 1, 2),
    ]
    previous = _core.config.get_simd_level()
    threads = pyfastopt.get_num_threads()
    outs = []
    try:
        for level in QSIMD_LEVELS:
            _core.config.set_simd_level(level)
            for t in (1, 2, 3):
                pyfastopt.set_num_threads(t)
                res = []
                for x, w, p, groups in layers:
                    co = w.shape[0]
                    res.append(conv2d_int8(
                        x, 3, w, 0, np.arange(co, dtype=np.int32) * 97, padding=p, groups=groups,
                        layout="NHWC", x_scale=0.02, weight_scale=np.full(co, 0.01, np.float32),
                        out_scale=0.3, out_zero_point=np.uint8(4), activation="relu",
                    ).tobytes())  # fmt: skip
                    res.append(conv2d_int8(
                        x, 3, w, 0, None, padding=p, groups=groups, layout="NHWC"
                    ).tobytes())  # fmt: skip
                outs.append((level, t, res))
    finally:
        _core.config.set_simd_level(previous)
        pyfastopt.set_num_threads(threads)
    for level, t, res in outs[1:]:
        assert res == outs[0][2], (level, t)
