"""int8 convolution and pooling (pyfastopt.quant.conv2d_int8 and the *_int8 pools) against
exact int64 NumPy references: every output stage, both layouts, every SIMD level, 1/2/3
threads, and the argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from qconv_reference import (
    float_stage,
    nhwc,
    rand,
    ref_avg_pool,
    ref_conv,
    ref_max_pool,
    requant_stage,
    round_half_even_div,
)

import pyfastopt
from pyfastopt import _core
from pyfastopt.quant import (
    adaptive_avg_pool2d_int8,
    avg_pool2d_int8,
    conv2d_int8,
    global_avg_pool2d_int8,
    max_pool2d_int8,
)

from .conftest import QSIMD_LEVELS

CASES = [
    (2, 3, 9, 8, 5, 3, 1, (1, 1, 1, 1), 1, 1),
    (1, 4, 7, 7, 6, 1, 1, (0, 0, 0, 0), 1, 1),
    (1, 4, 11, 10, 6, 5, 2, (2, 2, 2, 2), 1, 2),
    (2, 6, 10, 9, 6, 3, 2, (1, 0, 2, 1), 1, 6),
    (1, 5, 12, 12, 10, 3, 1, (2, 2, 2, 2), 2, 5),
    (1, 7, 9, 13, 9, 3, 1, (0, 1, 1, 0), 2, 1),
    (0, 4, 5, 5, 4, 3, 1, (1, 1, 1, 1), 1, 1),
    (1, 1, 8, 8, 16, 3, 1, (1, 1, 1, 1), 1, 1),
    (3, 2, 1, 9, 4, 1, 2, (0, 0, 1, 1), 1, 1),
    (1, 9, 6, 6, 9, 5, 1, (4, 4, 4, 4), 1, 9),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_int32_exact_both_layouts(qsimd, rng, case, x_dtype):
    n, c, h, w_, co, k, s, pad, d, g = case
    x = rand(rng, x_dtype, (n, c, h, w_))
    w = rand(rng, np.int8, (co, c // g, k, k))
    zx = int(rng.integers(np.iinfo(x_dtype).min, np.iinfo(x_dtype).max + 1))
    zw = int(rng.integers(-128, 128))
    bias = rng.integers(-(2**20), 2**20, size=co).astype(np.int32)
    want = ref_conv(x, zx, w, zw, (s, s), pad, (d, d), g, bias)
    got = conv2d_int8(x, zx, w, zw, bias, s, pad, d, g)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    got_l = conv2d_int8(nhwc(x), zx, w, zw, bias, s, pad, d, g, layout="NHWC")
    np.testing.assert_array_equal(got_l, nhwc(want))


def test_uint8_weights(rng):
    x = rand(rng, np.uint8, (2, 4, 6, 6))
    w = rand(rng, np.uint8, (3, 4, 3, 3))
    np.testing.assert_array_equal(
        conv2d_int8(x, 3, w, 200, padding=1), ref_conv(x, 3, w, 200, pad=(1, 1, 1, 1))
    )
    wd = rand(rng, np.uint8, (4, 1, 3, 3))  # direct path
    np.testing.assert_array_equal(
        conv2d_int8(x, 3, wd, 17, padding=1, groups=4),
        ref_conv(x, 3, wd, 17, pad=(1, 1, 1, 1), groups=4),
    )


@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("relu", [False, True])
def test_float_output(qsimd, rng, groups, relu):
    x = rand(rng, np.uint8, (2, 8, 10, 10))
    w = rand(rng, np.int8, (8, 8 // groups, 3, 3))
    xs, ws = 0.02, rng.uniform(1e-3, 1e-2, 8).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    acc = ref_conv(x, 128, w, 0, pad=(1, 1, 1, 1), groups=groups)
    cs = (np.float32(xs) * ws).astype(np.float32)
    want = float_stage(acc, cs, b, relu)
    act = "relu" if relu else None
    got = conv2d_int8(x, 128, w, 0, b, 1, 1, 1, groups, x_scale=xs, weight_scale=ws, activation=act)
    assert got.dtype == np.float32
    assert got.tobytes() == want.tobytes()
    got_l = conv2d_int8(
        nhwc(x), 128, w, 0, b, 1, 1, 1, groups, "NHWC", x_scale=xs, weight_scale=ws, activation=act
    )
    assert got_l.tobytes() == nhwc(want).tobytes()
    # an int32 (quantized) bias goes into the accumulator
    qb = rng.integers(-5000, 5000, 8).astype(np.int32)
    acc_b = ref_conv(x, 128, w, 0, pad=(1, 1, 1, 1), groups=groups, bias=qb)
    got_q = conv2d_int8(x, 128, w, 0, qb, 1, 1, 1, groups, x_scale=xs, weight_scale=ws)
    assert got_q.tobytes() == float_stage(acc_b, cs).tobytes()


@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("relu", [False, True])
def test_requantized_output(qsimd, rng, out_dtype, groups, relu):
    x = rand(rng, np.uint8, (1, 4, 9, 9))
    w = rand(rng, np.int8, (4, 4 // groups, 3, 3))
    xs, ws, ys = 0.05, rng.uniform(1e-3, 1e-2, 4).astype(np.float32), 0.3
    zy = 7 if out_dtype == np.uint8 else -3
    b = rng.standard_normal(4).astype(np.float32)
    qb = np.clip(np.rint(b.astype(np.float64) / (np.float64(np.float32(xs)) * ws.astype(np.float64))),
                 -(2**31), 2**31 - 1).astype(np.int32)  # fmt: skip
    acc = ref_conv(x, 120, w, 0, stride=(2, 2), pad=(1, 1, 1, 1), groups=groups, bias=qb)
    mult = ((np.float32(xs) * ws).astype(np.float32) / np.float32(ys)).astype(np.float32)
    want = requant_stage(acc, mult, zy, out_dtype, relu)
    got = conv2d_int8(
        x, 120, w, 0, b, 2, 1, 1, groups, x_scale=xs, weight_scale=ws, out_scale=ys,
        out_zero_point=zy, out_dtype=out_dtype, activation="relu" if relu else None,
    )  # fmt: skip
    assert got.dtype == out_dtype
    np.testing.assert_array_equal(got, want)
    # the output dtype follows a NumPy zero point
    got2 = conv2d_int8(
        x, 120, w, 0, b, 2, 1, 1, groups, x_scale=xs, weight_scale=ws, out_scale=ys,
        out_zero_point=np.dtype(out_dtype).type(zy), activation="relu" if relu else None,
    )  # fmt: skip
    np.testing.assert_array_equal(got2, want)


@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_per_channel_weight_zero_points(rng, groups, layout):
    """ONNX ConvInteger's per-output-channel weight zero points (differing values)."""
    x = rand(rng, np.uint8, (2, 6, 7, 8))
    w = rand(rng, np.uint8, (6, 6 // groups, 3, 3))
    zw = rng.integers(0, 256, 6).astype(np.uint8)
    qb = rng.integers(-1000, 1000, 6).astype(np.int32)
    want = ref_conv(x, 9, w, zw, (2, 1), (1, 1, 0, 2), groups=groups, bias=qb)
    xin = nhwc(x) if layout == "NHWC" else x
    fix = nhwc if layout == "NHWC" else (lambda a: a)
    args = dict(stride=(2, 1), padding=(1, 1, 0, 2), groups=groups, layout=layout)
    np.testing.assert_array_equal(conv2d_int8(xin, 9, w, zw, qb, **args), fix(want))
    ws = rng.uniform(1e-3, 1e-2, 6).astype(np.float32)
    cs = (np.float32(0.05) * ws).astype(np.float32)
    got = conv2d_int8(xin, 9, w, zw, qb, x_scale=0.05, weight_scale=ws, activation="relu", **args)
    assert got.tobytes() == fix(float_stage(want, cs, relu=True)).tobytes()
    mult = (cs / np.float32(0.4)).astype(np.float32)
    got = conv2d_int8(
        xin, 9, w, zw, qb, x_scale=0.05, weight_scale=ws, out_scale=0.4, out_zero_point=np.int8(-4),
        **args,
    )  # fmt: skip
    np.testing.assert_array_equal(got, fix(requant_stage(want, mult, -4, np.int8)))


def test_multiple_tiles_and_large_k(rng):
    # M = 2 * 32 * 32 pixels: several MC tiles; K = 64 * 25 = 1600
    x = rand(rng, np.uint8, (2, 32, 32, 64))
    w = rand(rng, np.int8, (24, 64, 5, 5))
    want = ref_conv(x.transpose(0, 3, 1, 2), 9, w, -1, pad=(2, 2, 2, 2))
    got = conv2d_int8(x, 9, w, -1, padding=2, layout="NHWC")
    np.testing.assert_array_equal(got, nhwc(want))
    got_c = conv2d_int8(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), 9, w, -1, padding=2)
    np.testing.assert_array_equal(got_c, want)


def test_non_contiguous_inputs(rng):
    base = rand(rng, np.uint8, (2, 12, 11, 9))
    x = base[:, ::2, 1:, ::-1]  # strided, reversed
    w_base = rand(rng, np.int8, (5, 6, 3, 3, 2))
    w = w_base[..., 1]
    np.testing.assert_array_equal(
        conv2d_int8(x, 50, w, 2, padding=1),
        ref_conv(np.ascontiguousarray(x), 50, w, 2, pad=(1, 1, 1, 1)),
    )
    xl = np.ascontiguousarray(x).transpose(0, 2, 3, 1)  # an NHWC view of NCHW memory
    np.testing.assert_array_equal(
        conv2d_int8(xl, 50, w, 2, padding=1, layout="NHWC"),
        nhwc(ref_conv(np.ascontiguousarray(x), 50, w, 2, pad=(1, 1, 1, 1))),
    )


def test_same_padding_and_zero_point_arrays(rng):
    x = rand(rng, np.uint8, (1, 3, 7, 7))
    w = rand(rng, np.int8, (4, 3, 3, 3))
    want = ref_conv(x, 5, w, 0, pad=(1, 1, 1, 1))
    np.testing.assert_array_equal(
        conv2d_int8(x, np.array([5], np.uint8), w, np.zeros(4, np.int8), padding="same"), want
    )


def test_thread_counts_and_levels_identical(rng):
    x = rand(rng, np.uint8, (4, 24, 24, 32))
    w = rand(rng, np.int8, (48, 16, 3, 3))
    wd = rand(rng, np.int8, (32, 1, 3, 3))
    ws = rng.uniform(1e-3, 1e-2, 48).astype(np.float32)
    want = nhwc(ref_conv(x.transpose(0, 3, 1, 2), 100, w, 0, pad=(1, 1, 1, 1), groups=2))
    outs = []
    previous = _core.config.get_simd_level()
    try:
        for level in QSIMD_LEVELS:
            _core.config.set_simd_level(level)
            for t in (1, 2, 3):
                pyfastopt.set_num_threads(t)
                got = conv2d_int8(x, 100, w, 0, padding=1, groups=2, layout="NHWC")
                np.testing.assert_array_equal(got, want)
                outs.append(
                    conv2d_int8(
                        x, 100, w, 0, padding=1, groups=2, layout="NHWC", x_scale=0.1,
                        weight_scale=ws, out_scale=0.7, out_zero_point=3,
                    ).tobytes()
                    + conv2d_int8(x, 100, wd, 0, padding=1, groups=32, layout="NHWC",
                                  x_scale=0.1, weight_scale=0.01, activation="relu").tobytes()
                    + max_pool2d_int8(x, 3, 2, 1, layout="NHWC").tobytes()
                    + avg_pool2d_int8(x, 100, 3, 2, 1, layout="NHWC").tobytes()
                )  # fmt: skip
    finally:
        _core.config.set_simd_level(previous)
    assert all(o == outs[0] for o in outs)


# ---- pooling ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize(
    ("k", "s", "p", "d"), [(2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 2), (3, 3, 0, 1)]
)
def test_max_pool_exact(rng, dtype, k, s, p, d):
    x = rand(rng, dtype, (2, 5, 9, 8))
    want = ref_max_pool(x, k, s, p, d)
    np.testing.assert_array_equal(max_pool2d_int8(x, k, s, p, d), want)
    np.testing.assert_array_equal(max_pool2d_int8(nhwc(x), k, s, p, d, layout="NHWC"), nhwc(want))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize(("k", "s", "p", "cip", "div"), [(2, 2, 0, True, None), (3, 2, 1, True, None),
                                           (3, 2, 1, False, None), (3, 1, 1, True, 4)])  # fmt: skip
def test_avg_pool_exact_rounding(rng, dtype, k, s, p, cip, div):
    x = rand(rng, dtype, (2, 5, 9, 8))
    zx = 3 if dtype == np.uint8 else -5
    want = ref_avg_pool(x, zx, k, s, p, cip, div)
    got = avg_pool2d_int8(x, zx, k, s, p, count_include_pad=cip, divisor_override=div)
    np.testing.assert_array_equal(got, want)
    got_l = avg_pool2d_int8(
        nhwc(x), zx, k, s, p, count_include_pad=cip, divisor_override=div, layout="NHWC"
    )
    np.testing.assert_array_equal(got_l, nhwc(want))


def test_avg_pool_ties_round_to_even():
    x = np.array([[[[1, 2], [4, 4]]]], np.uint8)  # sum 11 / 4 = 2.75 -> 3
    assert avg_pool2d_int8(x, 0, 2)[0, 0, 0, 0] == 3
    x = np.array([[[[1, 2], [3, 4]]]], np.uint8)  # 10 / 4 = 2.5 -> 2 (even)
    assert avg_pool2d_int8(x, 0, 2)[0, 0, 0, 0] == 2
    x = np.array([[[[3, 2], [3, 6]]]], np.uint8)  # 14 / 4 = 3.5 -> 4 (even)
    assert avg_pool2d_int8(x, 0, 2)[0, 0, 0, 0] == 4


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_adaptive_and_global_avg_pool(rng, dtype):
    x = rand(rng, dtype, (2, 3, 7, 5))
    zx = 10 if dtype == np.uint8 else -10
    info = np.iinfo(dtype)
    xz = x.astype(np.int64) - zx
    want = np.empty((2, 3, 3, 2), dtype)
    for i in range(3):
        for j in range(2):
            h0, h1 = i * 7 // 3, -((-(i + 1) * 7) // 3)
            w0, w1 = j * 5 // 2, -((-(j + 1) * 5) // 2)
            tot = xz[:, :, h0:h1, w0:w1].sum(axis=(2, 3))
            want[:, :, i, j] = np.clip(
                round_half_even_div(tot, (h1 - h0) * (w1 - w0)) + zx, info.min, info.max
            )
    np.testing.assert_array_equal(adaptive_avg_pool2d_int8(x, zx, (3, 2)), want)
    np.testing.assert_array_equal(adaptive_avg_pool2d_int8(nhwc(x), zx, (3, 2), "NHWC"), nhwc(want))
    g = np.clip(round_half_even_div(xz.sum(axis=(2, 3)), 35) + zx, info.min, info.max).astype(dtype)
    np.testing.assert_array_equal(global_avg_pool2d_int8(x, zx), g[:, :, None, None])
    np.testing.assert_array_equal(global_avg_pool2d_int8(nhwc(x), zx, "NHWC"), g[:, None, None, :])


# ---- argument checks ----------------------------------------------------------------------


def test_bad_arguments(rng):
    x = rand(rng, np.uint8, (1, 4, 6, 6))
    w = rand(rng, np.int8, (4, 4, 3, 3))
    with pytest.raises(ValueError, match="x_q"):
        conv2d_int8(x[0], 0, w, 0)
    with pytest.raises(ValueError, match="weight_q"):
        conv2d_int8(x, 0, w[0], 0)
    with pytest.raises(ValueError, match="groups"):
        conv2d_int8(x, 0, rand(rng, np.int8, (3, 2, 3, 3)), 0, groups=2)
    with pytest.raises(ValueError, match="input channels"):
        conv2d_int8(x, 0, rand(rng, np.int8, (4, 3, 3, 3)), 0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2d_int8(x, 0, rand(rng, np.int8, (4, 4, 7, 7)), 0)
    with pytest.raises(ValueError, match="padding"):
        conv2d_int8(x, 0, w, 0, padding=-1)
    with pytest.raises(TypeError, match="x_q"):
        conv2d_int8(x.astype(np.float32), 0, w, 0)
    with pytest.raises(TypeError, match="weight_q"):
        conv2d_int8(x, 0, w.astype(np.int16), 0)
    with pytest.raises(ValueError, match="x_zero_point"):
        conv2d_int8(x, 256, w, 0)
    with pytest.raises(ValueError, match="weight_zero_point"):
        conv2d_int8(x, 0, w, 128)
    with pytest.raises(ValueError, match="weight_zero_point"):
        conv2d_int8(x, 0, w, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="weight_zero_point"):
        conv2d_int8(x, 0, w, np.array([0, 1, 0, 200]))
    with pytest.raises(TypeError, match="x_zero_point"):
        conv2d_int8(x, 1.5, w, 0)
    with pytest.raises(ValueError, match="bias"):
        conv2d_int8(x, 0, w, 0, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="weight_scale"):
        conv2d_int8(x, 0, w, 0, x_scale=0.1, weight_scale=np.ones(3))
    with pytest.raises(ValueError, match="x_scale"):
        conv2d_int8(x, 0, w, 0, x_scale=-0.1, weight_scale=0.1)
    with pytest.raises(ValueError, match="together"):
        conv2d_int8(x, 0, w, 0, x_scale=0.1)
    with pytest.raises(ValueError, match="relu"):
        conv2d_int8(x, 0, w, 0, activation="relu")
    with pytest.raises(ValueError, match="activation"):
        conv2d_int8(x, 0, w, 0, activation="gelu")
    with pytest.raises(ValueError, match="layout"):
        conv2d_int8(x, 0, w, 0, layout="CHWN")
    with pytest.raises(TypeError, match="out_dtype"):
        conv2d_int8(x, 0, w, 0, x_scale=0.1, weight_scale=0.1, out_scale=1.0, out_dtype=np.int16)
    with pytest.raises(ValueError, match="out_zero_point"):
        conv2d_int8(x, 0, w, 0, x_scale=0.1, weight_scale=0.1, out_scale=1.0, out_zero_point=300)
    with pytest.raises(ValueError, match="x_q"):
        max_pool2d_int8(x[0], 2)
    with pytest.raises(TypeError, match="x_q"):
        avg_pool2d_int8(x.astype(np.float64), 0, 2)
    with pytest.raises(ValueError, match="x_zero_point"):
        avg_pool2d_int8(x, -1, 2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        max_pool2d_int8(x, 7)
