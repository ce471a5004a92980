"""Depthwise conv2d (groups == C, with and without a channel multiplier): forward,
backward-data and backward-weight against torch (float64 to 1e-10), and the rounding
contract of pyfastopt/conv.h checked bitwise: NCHW == NHWC, 1/2/3 threads, every SIMD
level, for the direct channels-first paths (finite weights) and the channels-last ones,
and for non-finite weights (which take the channels-last route in NCHW)."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIMD_LEVELS = _core.config.supported_levels()

# (N, C, H, W, multiplier, kh, kw, stride, padding (t, b, l, r), dilation)
CASES = [
    (2, 5, 9, 11, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 7, 10, 9, 1, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),  # stride 2, odd channels
    (1, 3, 12, 13, 1, 5, 5, (2, 1), (2, 2, 2, 2), (1, 1)),
    (2, 4, 8, 8, 1, 3, 3, (1, 2), (3, 3, 4, 4), (1, 1)),  # padding > half the kernel
    (2, 6, 11, 10, 1, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),  # dilation 2
    (2, 3, 1, 9, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # H = 1
    (2, 3, 9, 1, 1, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),  # W = 1
    (3, 9, 7, 9, 1, 3, 3, (2, 3), (0, 2, 1, 0), (1, 2)),  # asymmetric everything
    (2, 37, 6, 40, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # long rows, many channels
    (2, 33, 5, 37, 1, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (2, 150, 4, 45, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # many channels, long rows
    (1, 4, 6, 6, 2, 3, 3, (1, 1), (1, 2, 0, 1), (1, 1)),  # multiplier 2
    (2, 3, 7, 8, 3, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),  # multiplier 3, stride 2
]
IDS = [f"dw{i}" for i in range(len(CASES))]


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def make(rng, case, dtype=np.float64):
    n, c, h, w, m, kh, kw = case[:7]
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((c * m, 1, kh, kw)).astype(dtype)
    b = rng.standard_normal(c * m).astype(dtype)
    return x, wt, b


def args(case):
    return {"stride": case[7], "padding": case[8], "dilation": case[9], "groups": case[1]}


def torch_all(x, w, b, dy, case):
    t, bo, le, r = case[8]
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    xp = F.pad(xt, (le, r, t, bo))
    y = F.conv2d(xp, wt, bt, case[7], 0, case[9], case[1])
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def ours(x, w, b, dy, case, layout):
    a = args(case)
    if layout == "NHWC":
        y = pyfastopt.conv2d(to_nhwc(x), w, b, layout="NHWC", **a)
        dx, dw, db = pyfastopt.conv2d_backward(to_nhwc(dy), to_nhwc(x), w, layout="NHWC", **a)
        return to_nchw(y), to_nchw(dx), dw, db
    y = pyfastopt.conv2d(x, w, b, **a)
    dx, dw, db = pyfastopt.conv2d_backward(dy, x, w, **a)
    return y, dx, dw, db


def out_shape(x, w, case):
    y = pyfastopt.conv2d(x, w, **args(case))
    return y.shape


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_depthwise_matches_torch_float64(rng, case, layout):
    x, w, b = make(rng, case)
    dy = rng.standard_normal(out_shape(x, w, case))
    ref = torch_all(x, w, b, dy, case)
    got = ours(x, w, b, dy, case, layout)
    for name, g, r in zip(("y", "dx", "dw", "db"), got, ref, strict=True):
        assert g.shape == r.shape, name
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_depthwise_float32_close_to_torch(rng, case):
    x, w, b = make(rng, case, np.float32)
    dy = rng.standard_normal(out_shape(x, w, case)).astype(np.float32)
    ref = torch_all(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), dy, case)
    got = ours(x, w, b, dy, case, "NCHW")
    for name, g, r in zip(("y", "dx", "dw", "db"), got, ref, strict=True):
        assert g.dtype == np.float32
        # at most 9 * multiplier products per element: a few ulps of the sum of |terms|
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [CASES[1], CASES[10]], ids=["stride2", "many-channels"])
def test_depthwise_relu_gelu_bias(rng, case, dtype):
    """The epilogue (bias, then the activation) in both layouts, the same bits; NaN passes
    relu unchanged, as activate() defines it."""
    x, w, b = make(rng, case, dtype)
    x[0, 1, 2, 3] = np.nan
    for act in (None, "relu", "gelu"):
        y1 = pyfastopt.conv2d(x, w, b, activation=act, **args(case))
        y2 = pyfastopt.conv2d(to_nhwc(x), w, b, activation=act, layout="NHWC", **args(case))
        assert y1.tobytes() == to_nchw(y2).tobytes()
        y0 = torch_all(
            x.astype(np.float64),
            w.astype(np.float64),
            b.astype(np.float64),
            np.zeros(y1.shape),
            case,
        )[0]
        if act == "relu":
            expect = np.where(y0 < 0, 0.0, y0)
        elif act == "gelu":
            expect = F.gelu(torch.tensor(y0)).numpy()
        else:
            expect = y0
        tol = 1e-10 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(y1, expect, rtol=tol, atol=tol)
        assert np.isnan(y1).sum() == np.isnan(expect).sum() > 0
    # relu fused = relu applied to the plain convolution's output, bit for bit
    y = pyfastopt.conv2d(x, w, b, activation="relu", **args(case))
    y_lin = pyfastopt.conv2d(x, w, b, **args(case))
    assert y.tobytes() == np.where(y_lin < 0, dtype(0), y_lin).tobytes()


def test_depthwise_non_contiguous(rng):
    case = CASES[1]
    x, w, b = make(rng, case)
    big = np.zeros((x.shape[0], x.shape[1], x.shape[2], 2 * x.shape[3]))
    big[..., ::2] = x
    xs = big[..., ::2]
    assert not xs.flags.c_contiguous
    y = pyfastopt.conv2d(xs, w, b, **args(case))
    assert y.tobytes() == pyfastopt.conv2d(x, w, b, **args(case)).tobytes()
    dy = rng.standard_normal(y.shape)
    dyb = np.zeros((*dy.shape[:3], 2 * dy.shape[3]))
    dyb[..., 1::2] = dy
    g1 = pyfastopt.conv2d_backward(dyb[..., 1::2], xs, w, **args(case))
    g2 = pyfastopt.conv2d_backward(dy, x, w, **args(case))
    for a, r in zip(g1, g2, strict=True):
        assert a.tobytes() == r.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_non_finite_weights_and_inputs(rng, dtype):
    """inf / NaN weights (NCHW then converts to channels-last) and inputs: the same bits
    in both layouts, and torch's values where torch skips nothing differently."""
    case = CASES[0]
    x, w, b = make(rng, case, dtype)
    x[0, 1, 0, 0] = np.inf
    x[1, 2, 4, 4] = np.nan
    for wbad in (None, np.inf, np.nan):
        ww = w.copy()
        if wbad is not None:
            ww[2, 0, 0, 0] = wbad
        y = pyfastopt.conv2d(x, ww, b, **args(case))
        dy = rng.standard_normal(y.shape).astype(dtype)
        got = ours(x, ww, b, dy, case, "NCHW")
        ref = ours(x, ww, b, dy, case, "NHWC")
        for g, r in zip(got, ref, strict=True):
            assert g.tobytes() == r.tobytes()


def _results(x, w, b, dy, case, layout):
    a = args(case)
    if layout == "NHWC":
        y = pyfastopt.conv2d(to_nhwc(x), w, b, activation="gelu", layout="NHWC", **a)
        dx, dw, db = pyfastopt.conv2d_backward(to_nhwc(dy), to_nhwc(x), w, layout="NHWC", **a)
        return [to_nchw(y), to_nchw(dx), dw, db]
    y = pyfastopt.conv2d(x, w, b, activation="gelu", **a)
    return [y, *pyfastopt.conv2d_backward(dy, x, w, **a)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_bitwise_threads_simd_layouts(rng, dtype):
    cases = [*CASES, (16, 24, 14, 14, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1))]  # many tasks
    previous = _core.config.get_simd_level()
    try:
        for case in cases:
            x, w, b = make(rng, case, dtype)
            dy = rng.standard_normal(out_shape(x, w, case)).astype(dtype)
            ref = None
            for level in SIMD_LEVELS:
                _core.config.set_simd_level(level)
                for threads in (1, 2, 3):
                    pyfastopt.set_num_threads(threads)
                    for layout in ("NCHW", "NHWC"):
                        got = _results(x, w, b, dy, case, layout)
                        if ref is None:
                            ref = got
                            continue
                        for name, a, r in zip(("y", "dx", "dw", "db"), got, ref, strict=True):
                            assert a.tobytes() == r.tobytes(), (
                                f"{name} differs: {case} {level} threads={threads} {layout}"
                            )
    finally:
        _core.config.set_simd_level(previous)
