"""The NCHW <-> channels-last relayout (conv family's per-level transpose kernels) under the
NCHW convolution paths that copy an operand to channels-last: forward (a channels-last
copy of x), backward-data (of dy; strided: the phase path), backward-weight (of x),
depthwise with a non-finite weight (x and y, dy and dx). The channels-last calls run no
relayout, so NCHW == NHWC bit for bit checks every element the transpose moved; float64
is also checked against torch (an independent reference). Shapes with channel and pixel
counts that are not multiples of the register tiles (8 x 8 float / 4 x 4 double), 1 x 1
images, non-contiguous inputs; every SIMD level this CPU has, 1 and 3 threads."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIMD_LEVELS = _core.config.supported_levels()

# (N, C, H, W, Co, k, stride, padding, groups): each NCHW call below takes a relayout path
# (>= 8 channels per group and >= 128 multiply-adds per copied element)
CASES = [
    (2, 9, 3, 3, 17, 3, 1, 1, 1),  # 9 pixels, 9 / 17 channels
    (3, 17, 1, 7, 15, 3, 1, 1, 1),  # 7 pixels
    (2, 17, 1, 17, 9, 3, 1, 1, 1),  # 17 pixels
    (2, 33, 1, 1, 19, 3, 1, 1, 1),  # one pixel
    (2, 16, 7, 9, 32, 3, 1, 1, 1),  # 16 channels: backward-weight reads x in place
    (2, 32, 5, 5, 24, 3, 1, 1, 1),
    (2, 17, 9, 7, 23, 3, 2, 1, 1),  # strided: backward-data by phase
    (1, 48, 11, 13, 40, 3, 1, 1, 1),  # several 32 x 32 cache blocks
    (2, 34, 9, 9, 34, 3, 1, 1, 2),  # groups
]


def _to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _make(rng, case, dtype):
    n, c, h, w, co, k, _s, _p, g = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((co, c // g, k, k)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    return x, wt, b


def _run(x, w, b, dy, case, layout):
    s, p, g = case[6], case[7], case[8]
    if layout == "NHWC":
        y = pyfastopt.conv2d(_to_nhwc(x), w, b, stride=s, padding=p, groups=g, layout="NHWC")
        dx, dw, db = pyfastopt.conv2d_backward(
            _to_nhwc(dy), _to_nhwc(x), w, stride=s, padding=p, groups=g, layout="NHWC"
        )
        return [_to_nchw(y), _to_nchw(dx), dw, db]
    y = pyfastopt.conv2d(x, w, b, stride=s, padding=p, groups=g)
    dx, dw, db = pyfastopt.conv2d_backward(dy, x, w, stride=s, padding=p, groups=g)
    return [y, dx, dw, db]


def _out_shape(case):
    n, _c, h, w, co, k, s, p, _g = case
    return (n, co, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_nchw_equals_nhwc_every_level(rng, case, dtype):
    x, w, b = _make(rng, case, dtype)
    dy = rng.standard_normal(_out_shape(case)).astype(dtype)
    previous = _core.config.get_simd_level()
    prev_threads = pyfastopt.get_num_threads()
    ref = None
    try:
        for level in SIMD_LEVELS:
            _core.config.set_simd_level(level)
            for threads in (1, 3):
                pyfastopt.set_num_threads(threads)
                for layout in ("NCHW", "NHWC"):
                    got = _run(x, w, b, dy, case, layout)
                    if ref is None:
                        ref = got
                        continue
                    for name, a, r in zip(("y", "dx", "dw", "db"), got, ref, strict=True):
                        assert a.tobytes() == r.tobytes(), (
                            f"{name}: {level} threads={threads} {layout}"
                        )
    finally:
        _core.config.set_simd_level(previous)
        pyfastopt.set_num_threads(prev_threads)
    if dtype == np.float64:  # against torch (independent of both layouts)
        s, p, g = case[6], case[7], case[8]
        xt = torch.from_numpy(x).requires_grad_(True)
        wt = torch.from_numpy(w).requires_grad_(True)
        bt = torch.from_numpy(b).requires_grad_(True)
        yt = F.conv2d(xt, wt, bt, stride=s, padding=p, groups=g)
        yt.backward(torch.from_numpy(dy))
        for a, t in zip(ref, (yt.detach(), xt.grad, wt.grad, bt.grad), strict=True):
            np.testing.assert_allclose(a, t.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_nchw(rng, dtype):
    case = CASES[6]
    x, w, b = _make(rng, case, dtype)
    wide = np.repeat(x, 3, axis=3)[:, :, :, 1::3]  # a strided view with x's values
    assert not wide.flags.c_contiguous
    s, p = case[6], case[7]
    y = pyfastopt.conv2d(x, w, b, stride=s, padding=p)
    yv = pyfastopt.conv2d(wide, w, b, stride=s, padding=p)
    assert yv.tobytes() == y.tobytes()
    dy = rng.standard_normal(y.shape).astype(dtype)
    dyv = np.repeat(dy, 2, axis=2)[:, :, ::2, :]
    got = pyfastopt.conv2d_backward(dyv, wide, w, stride=s, padding=p)
    ref = pyfastopt.conv2d_backward(dy, x, w, stride=s, padding=p)
    for a, r in zip(got, ref, strict=True):
        assert a.tobytes() == r.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 9, 5, 7), (1, 17, 1, 1), (2, 1, 6, 6), (3, 8, 4, 4)])
def test_depthwise_nonfinite_weight_relayout(rng, shape, dtype):
    """A non-finite depthwise weight sends NCHW through the channels-last copy (x -> y,
    dy -> dx): NaN / inf propagate and the results equal the NHWC call's bits."""
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    wt = rng.standard_normal((c, 1, 3, 3)).astype(dtype)
    wt[0, 0, 1, 1] = np.nan
    wt[c - 1, 0, 0, 2] = np.inf
    y = pyfastopt.conv2d(x, wt, None, padding=1, groups=c)
    yl = pyfastopt.conv2d(_to_nhwc(x), wt, None, padding=1, groups=c, layout="NHWC")
    assert y.tobytes() == _to_nchw(yl).tobytes()
    assert np.isnan(y[:, 0]).all()
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, _, _ = pyfastopt.conv2d_backward(
        dy, x, wt, padding=1, groups=c, need_dweight=False, need_dbias=False
    )
    dxl, _, _ = pyfastopt.conv2d_backward(
        _to_nhwc(dy),
        _to_nhwc(x),
        wt,
        padding=1,
        groups=c,
        layout="NHWC",
        need_dweight=False,
        need_dbias=False,
    )
    assert dx.tobytes() == _to_nchw(dxl).tobytes()
