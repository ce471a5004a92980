"""The direct path for convolutions with few input channels (channels-last, groups 1,
2 <= C <= 4: the RGB stem; kernels/conv/conv_small_driver.cpp): forward and
backward-weight against torch (float64 to 1e-10, float32 to a derived bound), and the
rounding contract of pyfastopt/conv.h checked bitwise: NHWC (the direct path) == NCHW
(the implicit GEMM path) for every SIMD level and 1/2/3 threads, bias and relu/gelu,
non-contiguous inputs, non-finite weights."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIMD_LEVELS = _core.config.supported_levels()

# (N, C, H, W, Co, kh, kw, stride, padding (t, b, l, r), dilation)
CASES = [
    (2, 3, 9, 11, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # the stem
    (3, 3, 10, 9, 5, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),  # stride 2, odd Co
    (1, 2, 12, 13, 17, 5, 5, (2, 1), (2, 2, 2, 2), (1, 1)),
    (2, 4, 8, 8, 40, 3, 3, (1, 2), (3, 3, 4, 4), (1, 1)),  # padding > half the kernel
    (2, 3, 11, 10, 24, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),  # dilation 2
    (2, 3, 1, 9, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # H = 1
    (2, 3, 9, 1, 9, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),  # W = 1
    (3, 3, 7, 9, 70, 3, 3, (2, 3), (0, 2, 1, 0), (1, 2)),  # asymmetric everything
    (2, 3, 16, 17, 64, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1)),  # ResNet's 7x7 stem
    (9, 3, 18, 18, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # N > 8 batch blocks, P > KC
    (1, 2, 3, 3, 3, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1)),  # one output pixel
]
IDS = [f"s{i}" for i in range(len(CASES))]


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def make(rng, case, dtype=np.float64):
    n, c, h, w, co, kh, kw = case[:7]
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((co, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    return x, wt, b


def args(case):
    return {"stride": case[7], "padding": case[8], "dilation": case[9]}


def torch_all(x, w, b, dy, case):
    t, bo, le, r = case[8]
    xt = torch.tensor(x)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    y = F.conv2d(F.pad(xt, (le, r, t, bo)), wt, bt, case[7], 0, case[9])
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), wt.grad.numpy(), bt.grad.numpy()


def ours(x, w, b, dy, case, layout, act=None):
    a = args(case)
    if layout == "NHWC":
        y = pyfastopt.conv2d(to_nhwc(x), w, b, layout="NHWC", activation=act, **a)
        _, dw, db = pyfastopt.conv2d_backward(
            to_nhwc(dy), to_nhwc(x), w, layout="NHWC", need_dx=False, **a
        )
        return to_nchw(y), dw, db
    y = pyfastopt.conv2d(x, w, b, activation=act, **a)
    _, dw, db = pyfastopt.conv2d_backward(dy, x, w, need_dx=False, **a)
    return y, dw, db


def dy_for(rng, x, w, case, dtype):
    y = pyfastopt.conv2d(x, w, None, **args(case))
    return rng.standard_normal(y.shape).astype(dtype)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_against_torch(case, rng):
    x, w, b = make(rng, case)
    dy = dy_for(rng, x, w, case, np.float64)
    ref = torch_all(x, w, b, dy, case)
    for layout in ("NHWC", "NCHW"):
        got = ours(x, w, b, dy, case, layout)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_against_float64(case, rng):
    x, w, b = make(rng, case)
    dy = dy_for(rng, x, w, case, np.float64)
    ref = torch_all(x, w, b, dy, case)
    got = ours(*(a.astype(np.float32) for a in (x, w, b, dy)), case, "NHWC")
    # |error| <= k * eps * sum |terms| (k: the chain length; a generous factor)
    eps = np.finfo(np.float32).eps
    k_fwd = w[0].size + 1
    y_abs = np.abs(
        F.conv2d(
            F.pad(torch.tensor(np.abs(x)), (case[8][2], case[8][3], case[8][0], case[8][1])),
            torch.tensor(np.abs(w)),
            torch.tensor(np.abs(b)),
            case[7],
            0,
            case[9],
        ).numpy()
    )
    assert np.all(np.abs(got[0] - ref[0]) <= 2 * k_fwd * eps * y_abs + 1e-30)
    npix = dy.shape[0] * dy.shape[2] * dy.shape[3]
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=2 * npix * eps * np.abs(dy).max() * 4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_levels_threads_layouts(case, dtype, rng):
    x, w, b = make(rng, case, dtype)
    dy = dy_for(rng, x, w, case, dtype)
    base: dict = {}
    previous = _core.config.get_simd_level()
    try:
        for level in SIMD_LEVELS:
            _core.config.set_simd_level(level)
            for nt in (1, 2, 3):
                pyfastopt.set_num_threads(nt)
                for layout in ("NHWC", "NCHW"):
                    for act in (None, "relu", "gelu"):
                        got = ours(x, w, b, dy, case, layout, act)
                        if act not in base:
                            base[act] = got
                            continue
                        for g, r in zip(got, base[act]):
                            assert g.tobytes() == r.tobytes(), (level, nt, layout, act)
    finally:
        _core.config.set_simd_level(previous)


def test_non_contiguous_and_nonfinite(rng):
    case = CASES[0]
    x, w, b = make(rng, case, np.float32)
    xl = to_nhwc(x)
    big = np.zeros((xl.shape[0], xl.shape[1], xl.shape[2] * 2, xl.shape[3]), np.float32)
    big[:, :, ::2] = xl
    view = big[:, :, ::2]
    assert not view.flags.c_contiguous
    y1 = pyfastopt.conv2d(view, w, b, layout="NHWC", **args(case))
    y2 = pyfastopt.conv2d(xl, w, b, layout="NHWC", **args(case))
    assert y1.tobytes() == y2.tobytes()
    # a non-finite weight: padding taps (zeros) times inf give NaN as in the GEMM path
    w2 = w.copy()
    w2[3, 1, 0, 0] = np.inf
    y_nhwc = to_nchw(pyfastopt.conv2d(xl, w2, b, layout="NHWC", **args(case)))
    y_nchw = pyfastopt.conv2d(x, w2, b, **args(case))
    assert y_nhwc.tobytes() == y_nchw.tobytes()
    assert np.isnan(y_nhwc[:, 3, 0, :]).all()
