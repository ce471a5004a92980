"""conv2d / conv2d_backward against torch.nn.functional.conv2d and autograd (float64 to
1e-10, float32 to the GEMM error bound), finite differences, both layouts, every
argument form, validation, and bitwise identity across thread counts, SIMD levels and
layouts."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TIMEOUT_SCALE

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIMD_LEVELS = _core.config.supported_levels()

# (N, C, H, W, Co, kh, kw, stride, padding (top, bottom, left, right), dilation, groups)
CASES = [
    (2, 3, 8, 9, 4, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # 1x1: a straight GEMM
    (2, 4, 9, 8, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (1, 5, 11, 10, 7, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1), 1),  # batch 1, odd channels
    (2, 3, 12, 13, 5, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
    (2, 6, 10, 10, 4, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 2),  # dilation 2, groups 2
    (2, 6, 7, 7, 6, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 6),  # depthwise, stride 2
    (1, 4, 6, 6, 8, 3, 3, (1, 1), (1, 2, 0, 1), (1, 1), 4),  # depthwise, multiplier 2
    (3, 5, 1, 9, 4, 1, 3, (1, 1), (0, 0, 1, 1), (1, 1), 1),  # H = 1
    (2, 3, 7, 1, 4, 3, 1, (1, 1), (1, 1, 0, 0), (1, 1), 1),  # W = 1
    (2, 8, 5, 6, 8, 3, 3, (1, 1), (4, 4, 4, 4), (1, 1), 1),  # padding > kernel
    (2, 9, 9, 8, 6, 3, 3, (2, 1), (1, 2, 0, 3), (2, 1), 3),  # asymmetric everything
    (2, 7, 9, 9, 5, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1),  # 1x1 stride 2
    (2, 300, 6, 5, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # K > 256: several K blocks
    (2, 16, 6, 6, 300, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # Co > 256: column blocks
    # >= 8 channels per group: A read in place (ukernel_rows), NCHW through a channels-last
    # copy; a K block ending inside a tap (270 = 256 + 14), groups 2, stride 2, asymmetric
    # padding (padding rows at the zero row), 11 output channels per group (column tails)
    (2, 60, 5, 7, 22, 3, 3, (2, 2), (1, 0, 2, 1), (1, 1), 2),
    (1, 8, 5, 7, 13, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # 35 rows: 6-row tails, edge panel
    (2, 12, 9, 9, 16, 3, 3, (2, 2), (1, 1, 1, 1), (2, 2), 1),  # dilation 2, stride 2
    (1, 10, 2, 1, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # 2 rows: mostly padding
    # channels per group a multiple of the panel width: backward-weight reads x in place
    (2, 32, 7, 6, 10, 3, 3, (2, 1), (1, 2, 1, 0), (1, 1), 2),  # groups 2, padding rows
    (1, 32, 5, 5, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),  # k = 288: a second column block
    # 1x1 NCHW: a GEMM per image (no layout copy): 2 K blocks, 14 rows (6 + 6 + 2), 15 pixels
    (2, 300, 3, 5, 14, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
]
IDS = [f"case{i}" for i in range(len(CASES))]


def make(rng, case, dtype=np.float64):
    n, c, h, w, co, kh, kw, _, _, _, g = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((co, c // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    return x, wt, b


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def torch_conv(x, w, b, case, act=None, abs_=False):
    """float64 torch reference (also of |x| * |w| + |b| for the float32 bound)."""
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    xt = torch.tensor(np.abs(x) if abs_ else x, dtype=torch.float64)
    wt = torch.tensor(np.abs(w) if abs_ else w, dtype=torch.float64)
    bt = None if b is None else torch.tensor(np.abs(b) if abs_ else b, dtype=torch.float64)
    xp = F.pad(xt, (pad[2], pad[3], pad[0], pad[1]))
    y = F.conv2d(xp, wt, bt, stride, 0, dil, g)
    if act == "relu":
        y = F.relu(y)
    elif act == "gelu":
        y = F.gelu(y)
    return y.numpy()


def ours(x, w, b, case, layout, act=None):
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    xi = to_nhwc(x) if layout == "NHWC" else x
    y = pyfastopt.conv2d(xi, w, b, stride, pad, dil, g, activation=act, layout=layout)
    return to_nchw(y) if layout == "NHWC" else y


def red_len(case):
    return case[1] // case[10] * case[5] * case[6]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_float64(rng, case, layout):
    x, w, b = make(rng, case)
    ref = torch_conv(x, w, b, case)
    y = ours(x, w, b, case, layout)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_float32_within_bound(rng, case, layout):
    """|y - y64| <= (K + 2) u (|x| * |w| + |b|) + the input rounding, with u = 2^-24."""
    x, w, b = make(rng, case, np.float32)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    ref = torch_conv(x64, w64, b64, case)
    bound = (red_len(case) + 2) * 2.0**-24 * torch_conv(x64, w64, b64, case, abs_=True)
    y = ours(x, w, b, case, layout)
    assert y.dtype == np.float32
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(err <= bound + 1e-30), f"max excess {np.max(err - bound)}"


@pytest.mark.parametrize("act", ["relu", "gelu"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fused_activation(rng, act, layout):
    for case in (CASES[1], CASES[5], CASES[10]):
        x, w, b = make(rng, case)
        ref = torch_conv(x, w, b, case, act=act)
        y = ours(x, w, b, case, layout, act=act)
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10 * max(1.0, np.abs(ref).max()))


def torch_grads(x, w, b, dy, case):
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    y = F.conv2d(F.pad(xt, (pad[2], pad[3], pad[0], pad[1])), wt, bt, stride, 0, dil, g)
    y.backward(torch.tensor(dy))
    return xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_float64(rng, case, layout):
    x, w, b = make(rng, case)
    y = torch_conv(x, w, b, case)
    dy = rng.standard_normal(y.shape)
    gx, gw, gb = torch_grads(x, w, b, dy, case)
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    nhwc = layout == "NHWC"
    dx, dw, db = pyfastopt.conv2d_backward(
        to_nhwc(dy) if nhwc else dy,
        to_nhwc(x) if nhwc else x,
        w,
        stride,
        pad,
        dil,
        g,
        layout=layout,
    )
    dx = to_nchw(dx) if nhwc else dx
    for name, got, want in (("dx", dx, gx), ("dweight", dw, gw), ("dbias", db, gb)):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(
            got, want, rtol=0, atol=1e-10 * max(1.0, np.abs(want).max()), err_msg=name
        )


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_backward_float32_within_bound(rng, layout):
    for case in (CASES[2], CASES[4], CASES[5], CASES[12]):
        x, w, b = make(rng, case, np.float32)
        y = torch_conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), case)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
        gx, gw, gb = torch_grads(x64, w64, b.astype(np.float64), dy64, case)
        ax, aw, ab = torch_grads(
            np.abs(x64), np.abs(w64), np.abs(b).astype(np.float64), np.abs(dy64), case
        )
        nhwc = layout == "NHWC"
        stride, pad, dil, g = case[7], case[8], case[9], case[10]
        dx, dw, db = pyfastopt.conv2d_backward(
            to_nhwc(dy) if nhwc else dy, to_nhwc(x) if nhwc else x, w, stride, pad, dil, g,
            layout=layout,
        )  # fmt: skip
        dx = to_nchw(dx) if nhwc else dx
        assert dx.dtype == dw.dtype == db.dtype == np.float32
        kx = case[4] // g * case[5] * case[6]  # dx: a sum over (r, s, out channel)
        kw = y.shape[0] * y.shape[2] * y.shape[3]  # dweight: over (n, oh, ow)
        u = 2.0**-24
        assert np.all(np.abs(dx - gx) <= (kx + 2) * u * ax)
        assert np.all(np.abs(dw - gw) <= (kw + 10) * u * aw)
        assert np.all(np.abs(db - gb) <= 2 * u * ab + 1e-30)


def test_backward_finite_differences(rng):
    """Central differences of L = sum(conv2d(x, w, b) * dy) in float64."""
    case = CASES[10]
    x, w, b = make(rng, case)
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    y = pyfastopt.conv2d(x, w, b, stride, pad, dil, g)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = pyfastopt.conv2d_backward(dy, x, w, stride, pad, dil, g)

    def loss(xx, ww, bb):
        return float(np.sum(pyfastopt.conv2d(xx, ww, bb, stride, pad, dil, g) * dy))

    h = 1e-6
    for arr, grad, args in ((x, dx, 0), (w, dw, 1), (b, db, 2)):
        for idx in list(np.ndindex(arr.shape))[:: max(1, arr.size // 7)]:
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += h
            minus[idx] -= h
            p = [x, w, b]
            p[args] = plus
            lp = loss(*p)
            p[args] = minus
            lm = loss(*p)
            assert abs((lp - lm) / (2 * h) - grad[idx]) < 1e-6 * max(1.0, abs(grad[idx]))


def test_need_flags(rng):
    case = CASES[1]
    x, w, b = make(rng, case)
    dy = rng.standard_normal(torch_conv(x, w, b, case).shape)
    full = pyfastopt.conv2d_backward(dy, x, w, 1, 1)
    dx, dw, db = pyfastopt.conv2d_backward(dy, x, w, 1, 1, need_dweight=False, need_dbias=False)
    assert dw is None and db is None and np.array_equal(dx, full[0])
    dx, dw, db = pyfastopt.conv2d_backward(dy, x, w, 1, 1, need_dx=False, need_dweight=False)
    assert dx is None and dw is None and np.array_equal(db, full[2])


@pytest.mark.parametrize(
    ("padding", "expect"),
    [(1, (1, 1, 1, 1)), ((1, 2), (1, 1, 2, 2)), ((0, 1, 2, 3), (0, 1, 2, 3)), ("valid", (0,) * 4)],
)
def test_padding_forms(rng, padding, expect):
    case = (2, 3, 7, 8, 4, 3, 3, (1, 1), expect, (1, 1), 1)
    x, w, b = make(rng, case)
    y = pyfastopt.conv2d(x, w, b, padding=padding)
    np.testing.assert_allclose(y, torch_conv(x, w, b, case), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(("k", "d"), [(3, 1), (4, 1), (3, 2), (2, 3)])
def test_padding_same_matches_torch(rng, k, d):
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((5, 3, k, k))
    ref = F.conv2d(torch.tensor(x), torch.tensor(w), None, 1, "same", d).numpy()
    for layout in ("NCHW", "NHWC"):
        xi = to_nhwc(x) if layout == "NHWC" else x
        y = pyfastopt.conv2d(xi, w, padding="same", dilation=d, layout=layout)
        y = to_nchw(y) if layout == "NHWC" else y
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)


def test_non_contiguous_inputs(rng):
    case = CASES[4]
    x, w, b = make(rng, case)
    xs = np.asfortranarray(x)
    ws = np.repeat(w, 2, axis=0)[::2]
    bs = np.repeat(b, 2)[::2]
    assert not ws.flags.c_contiguous and not bs.flags.c_contiguous
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    y = pyfastopt.conv2d(xs, ws, bs, stride, pad, dil, g)
    assert np.array_equal(y, pyfastopt.conv2d(x, w, b, stride, pad, dil, g))
    dy = rng.standard_normal(y.shape)
    got = pyfastopt.conv2d_backward(dy[:, ::-1][:, ::-1], xs, ws, stride, pad, dil, g)
    want = pyfastopt.conv2d_backward(dy, x, w, stride, pad, dil, g)
    for a, bb in zip(got, want, strict=True):
        assert np.array_equal(a, bb)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_non_contiguous_inputs_in_place_path(rng, layout):
    """Strided x / dy (copied at the boundary) on the path that reads A in place."""
    case = CASES[14]
    x, w, b = make(rng, case, np.float32)
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    xl = to_nhwc(x) if layout == "NHWC" else x
    xs = np.repeat(xl, 2, axis=0)[::2]
    assert not xs.flags.c_contiguous
    args = (stride, pad, dil, g)
    y = pyfastopt.conv2d(xs, w, b, *args, layout=layout)
    assert np.array_equal(y, pyfastopt.conv2d(xl, w, b, *args, layout=layout))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dys = np.repeat(dy, 2, axis=0)[::2]
    got = pyfastopt.conv2d_backward(dys, xs, w, *args, layout=layout)
    want = pyfastopt.conv2d_backward(dy, xl, w, *args, layout=layout)
    for a, bb in zip(got, want, strict=True):
        assert np.array_equal(a, bb)


def test_out_argument_and_aliasing(rng):
    x = rng.standard_normal((2, 4, 6, 6))
    w = rng.standard_normal((4, 4, 1, 1))
    want = pyfastopt.conv2d(x, w)
    out = np.empty_like(want)
    assert pyfastopt.conv2d(x, w, out=out) is out
    assert np.array_equal(out, want)
    xx = x.copy()  # out is x itself: x must be read before it is overwritten
    pyfastopt.conv2d(xx, w, out=xx)
    assert np.array_equal(xx, want)
    with pytest.raises(ValueError, match="out must have shape"):
        pyfastopt.conv2d(x, w, out=np.empty((2, 4, 6, 5)))
    with pytest.raises(TypeError):
        pyfastopt.conv2d(x, w, out=np.empty(want.shape, np.float32))


def test_batch_zero(rng):
    x = np.zeros((0, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    assert pyfastopt.conv2d(x, w).shape == (0, 4, 3, 3)
    dx, dw, db = pyfastopt.conv2d_backward(np.zeros((0, 4, 3, 3)), x, w)
    assert dx.shape == x.shape and np.all(dw == 0) and np.all(db == 0)


BAD = [
    (dict(x=(2, 3, 5), w=(4, 3, 3, 3)), ValueError, r"x must be 4-D.*\(2, 3, 5\)"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3)), ValueError, r"weight must be 4-D.*\(4, 3, 3\)"),
    (dict(x=(2, 6, 5, 5), w=(4, 3, 3, 3), groups=4), ValueError, r"not divisible by groups=4"),
    (dict(x=(2, 6, 5, 5), w=(3, 3, 3, 3), groups=2), ValueError, r"out_channels \(3.*groups=2"),
    (dict(x=(2, 5, 5, 5), w=(4, 3, 3, 3)), ValueError, r"weight with shape \(4, 3, 3, 3\).*5"),
    (dict(x=(2, 3, 2, 5), w=(4, 3, 3, 3)), ValueError, r"larger than the padded input"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), dilation=3), ValueError, r"kernel size \(7, 7\)"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), padding=-1), ValueError, r"padding must be >= 0"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), padding=(0, 0, -1, 0)), ValueError, r"padding\[2\]"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), padding=(1, 1, 1)), ValueError, r"padding must have"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), padding="full"), ValueError, r"padding must be"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), padding="same", stride=2), ValueError, r"strided"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), stride=0), ValueError, r"stride must be >= 1"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), stride=1.0), TypeError, r"stride must be"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), groups=0), ValueError, r"groups must be >= 1"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), b=(3,)), ValueError, r"bias must have shape \(4,\)"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), activation="tanh"), ValueError, r"activation must"),
    (dict(x=(2, 3, 5, 5), w=(4, 3, 3, 3), layout="NHCW"), ValueError, r"layout must be"),
]


@pytest.mark.parametrize(("spec", "exc", "msg"), BAD)
def test_validation(rng, spec, exc, msg):
    spec = dict(spec)
    x = rng.standard_normal(spec.pop("x"))
    w = rng.standard_normal(spec.pop("w"))
    b = rng.standard_normal(spec.pop("b")) if "b" in spec else None
    with pytest.raises(exc, match=msg):
        pyfastopt.conv2d(x, w, b, **spec)


def test_validation_dtypes_and_dy(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    with pytest.raises(TypeError, match="weight and x must have the same dtype"):
        pyfastopt.conv2d(x, w.astype(np.float32))
    with pytest.raises(TypeError, match="x"):
        pyfastopt.conv2d(x.astype(np.int32), w)
    with pytest.raises(ValueError, match=r"dy must have the shape.*\(2, 4, 3, 3\).*\(2, 4, 3, 4\)"):
        pyfastopt.conv2d_backward(np.zeros((2, 4, 3, 4)), x, w)
    with pytest.raises(TypeError, match="need_dx must be a bool"):
        pyfastopt.conv2d_backward(np.zeros((2, 4, 3, 3)), x, w, need_dx=1)


def _all_results(x, w, b, dy, case, layout):
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    y = pyfastopt.conv2d(x, w, b, stride, pad, dil, g, activation="gelu", layout=layout)
    grads = pyfastopt.conv2d_backward(dy, x, w, stride, pad, dil, g, layout=layout)
    return [y, *grads]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_threads_simd_layouts(rng, dtype):
    """Every result has the same bits for 1/2/3 threads, every SIMD level and both layouts
    (the reduction order (r, s, c) does not depend on the layout)."""
    cases = [c for i, c in enumerate(CASES) if i in (1, 4, 5, 10, 12, 14, 15, 17, 18, 19, 20)]
    cases.append((8, 24, 20, 20, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1))  # many tasks
    previous = _core.config.get_simd_level()
    try:
        for case in cases:
            x, w, b = make(rng, case, dtype)
            y = torch_conv(x.astype(np.float64), w.astype(np.float64), None, case)
            dy = rng.standard_normal(y.shape).astype(dtype)
            ref = None
            for level in SIMD_LEVELS:
                _core.config.set_simd_level(level)
                for threads in (1, 2, 3):
                    pyfastopt.set_num_threads(threads)
                    for layout in ("NCHW", "NHWC"):
                        if layout == "NHWC":
                            got = _all_results(to_nhwc(x), w, b, to_nhwc(dy), case, layout)
                            got[0], got[1] = to_nchw(got[0]), to_nchw(got[1])
                        else:
                            got = _all_results(x, w, b, dy, case, layout)
                        if ref is None:
                            ref = got
                            continue
                        for name, a, r in zip(("y", "dx", "dw", "db"), got, ref, strict=True):
                            assert a.tobytes() == r.tobytes(), (
                                f"{name} differs: {case} {level} threads={threads} {layout}"
                            )
    finally:
        _core.config.set_simd_level(previous)


_CHILD = """
import hashlib, numpy as np, pyfastopt
rng = np.random.default_rng(5)
x = rng.standard_normal((4, 8, 12, 12)).astype(np.float32)
w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
y = pyfastopt.conv2d(x, w, padding=1, activation="relu")
dx, dw, db = pyfastopt.conv2d_backward(y, x, w, padding=1)
h = hashlib.sha256()
for a in (y, dx, dw, db):
    h.update(a.tobytes())
print(h.hexdigest())
"""


def test_bitwise_across_processes_env(tmp_path):
    """PYFASTOPT_NUM_THREADS / PYFASTOPT_SIMD set in the environment (fresh processes)."""
    digests = set()
    for level in SIMD_LEVELS:
        for threads in ("1", "2", "3"):
            env = dict(os.environ, PYFASTOPT_NUM_THREADS=threads, PYFASTOPT_SIMD=level)
            r = subprocess.run(
                [sys.executable, "-c", _CHILD],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120 * TIMEOUT_SCALE,
                check=False,
            )
            assert r.returncode == 0, r.stderr
            digests.add(r.stdout.strip())
    assert len(digests) == 1, digests


def test_backward_out_arrays(rng):
    case = CASES[4]
    x, w, b = make(rng, case)
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    dy = rng.standard_normal(pyfastopt.conv2d(x, w, b, stride, pad, dil, g).shape)
    want = pyfastopt.conv2d_backward(dy, x, w, stride, pad, dil, g)
    outs = (np.empty_like(x), np.empty_like(w), np.empty_like(b))
    got = pyfastopt.conv2d_backward(dy, x, w, stride, pad, dil, g, out=outs)
    for a, o, r in zip(got, outs, want, strict=True):
        assert a is o and np.array_equal(a, r)
    # partial: only dweight given; dx new
    dw = np.empty_like(w)
    got = pyfastopt.conv2d_backward(dy, x, w, stride, pad, dil, g, out=(None, dw, None))
    assert got[1] is dw and np.array_equal(got[0], want[0])
    # dx written over x itself: x is read from a private copy first
    xx = x.copy()
    got = pyfastopt.conv2d_backward(dy, xx, w, stride, pad, dil, g, out=(xx, None, None))
    assert got[0] is xx and np.array_equal(xx, want[0])
    with pytest.raises(ValueError, match=r"dweight_out must have shape \(4, 3, 3, 3\)"):
        pyfastopt.conv2d_backward(dy, x, w, stride, pad, dil, g, out=(None, np.empty(3), None))
    with pytest.raises(ValueError, match="out must have 3 items"):
        pyfastopt.conv2d_backward(dy, x, w, stride, pad, dil, g, out=(None, None))
    same = np.empty_like(x)
    with pytest.raises(ValueError):  # outputs must not alias each other
        pyfastopt.conv2d_backward(dy, x, x[:, :1], 1, 0, 1, 1, out=(same, same[:, :1], None))


# Strided backward-data (>= 8 output channels per group) runs one stride phase of dx at a
# time over the taps that reach it (NHWC; NCHW when it copies dy to channels-last); NCHW
# with few input channels per group and few taps (C/groups x kh x kw < 128) still gathers
# every tap, padding zeros included. Both must give the same bits.
# (N, C, H, W, Co, kh, kw, stride, padding (t, b, l, r), dilation, groups)
PHASE_CASES = [
    (2, 8, 9, 9, 100, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),  # K blocks cut inside taps
    (2, 8, 11, 10, 16, 3, 3, (2, 3), (1, 0, 2, 1), (1, 1), 1),  # stride 2 x 3, asymmetric
    (1, 4, 13, 12, 40, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1), 1),  # 5x5
    (2, 12, 9, 9, 16, 3, 3, (2, 2), (1, 1, 1, 1), (2, 2), 1),  # dilation 2: live taps r = 0, 1, 2
    (2, 8, 7, 7, 18, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1),  # 1x1: three of four phases dead
    (2, 16, 9, 8, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 2),  # groups 2
    (1, 8, 1, 9, 16, 3, 3, (3, 2), (1, 1, 1, 1), (1, 1), 1),  # H = 1 < stride: one row phase
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", PHASE_CASES, ids=[f"phase{i}" for i in range(len(PHASE_CASES))])
def test_backward_data_strided_phases_bitwise(rng, case, dtype):
    """The phase split skips taps that only ever multiply zeros; it keeps the gather's bits,
    with signed zeros (products that underflow: a chain of -0 turned +0 by a skipped zero
    product, or not) and with non-finite weights on skipped taps (0 x inf = NaN)."""
    stride, pad, dil, g = case[7], case[8], case[9], case[10]
    assert case[1] // g * case[5] * case[6] < 128  # NCHW takes the gather
    x, w, _ = make(rng, case, dtype)
    dy = rng.standard_normal(torch_conv(x, w, None, case).shape).astype(dtype)
    tiny = np.finfo(dtype).tiny
    variants = [(dy, w)]
    # values whose products underflow to signed zeros, and exact zeros
    # every product underflows to -0, except the last step's (tap (kh-1, kw-1), last output
    # channel) on input channel 0 (+0): skipping that zero product where its tap is dead
    # would leave -0 where the gather gives +0
    dy2, w2 = np.abs(dy) * np.sqrt(tiny) * 1e-12, -np.abs(w) * np.sqrt(tiny) * 1e-12
    dy2[:, ::3] = 0.0
    w2[-1, 0, -1, -1] = -w2[-1, 0, -1, -1]
    variants.append((dy2, w2))
    w3 = w.copy()
    w3.flat[:: max(1, w3.size // 5)] = np.inf
    w3.flat[7] = np.nan
    variants.append((dy, w3))
    for d, wt in variants:
        want = pyfastopt.conv2d_backward(
            d, x, wt, stride, pad, dil, g, need_dweight=False, need_dbias=False
        )[0]
        if dtype == np.float64 and wt is w:
            ref = x.copy()
            xt = torch.tensor(ref, requires_grad=True)
            p = (pad[2], pad[3], pad[0], pad[1])
            yt = F.conv2d(F.pad(xt, p), torch.tensor(wt), None, stride, 0, dil, g)
            (gx,) = torch.autograd.grad(yt, xt, torch.tensor(d))
            np.testing.assert_allclose(want, gx.numpy(), rtol=1e-10, atol=1e-10)
        for threads in (1, 2, 3):
            pyfastopt.set_num_threads(threads)
            got = pyfastopt.conv2d_backward(
                to_nhwc(d),
                to_nhwc(x),
                wt,
                stride,
                pad,
                dil,
                g,
                layout="NHWC",
                need_dweight=False,
                need_dbias=False,
            )[0]
            got = to_nchw(got)
            nan = np.isnan(want)
            assert np.array_equal(np.isnan(got), nan)
            assert got[~nan].tobytes() == want[~nan].tobytes(), (case, threads)
        if wt is w2:
            assert np.all(want == 0)
            assert np.any(np.signbit(want)) and not np.all(np.signbit(want))
