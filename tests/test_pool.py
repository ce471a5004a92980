"""max_pool2d / avg_pool2d / adaptive_avg_pool2d / global_avg_pool2d and their backward
functions against torch.nn.functional and autograd, both layouts; NaN/-inf semantics,
ceil_mode, count_include_pad, divisor_override; validation; bitwise identity across
thread counts and SIMD levels."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional

LAYOUTS = ["NCHW", "NHWC"]


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def run(fn, x, layout, *args, **kw):
    if layout == "NHWC":
        return to_nchw(fn(to_nhwc(x), *args, layout=layout, **kw))
    return fn(x, *args, layout=layout, **kw)


def run_bwd(fn, dy, x, layout, *args, **kw):
    if layout == "NHWC":
        return to_nchw(fn(to_nhwc(dy), to_nhwc(x), *args, layout=layout, **kw))
    return fn(dy, x, *args, layout=layout, **kw)


def torch_fwd_bwd(tfn, x, dy_rng, *args, **kw):
    xt = torch.tensor(x, requires_grad=True)
    y = tfn(xt, *args, **kw)
    dy = dy_rng.standard_normal(tuple(y.shape)).astype(x.dtype)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), dy, xt.grad.numpy()


# (shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 7), 3, 2, 1, 1, False),
    ((1, 5, 10, 11), 3, 2, 1, 1, True),
    ((2, 4, 11, 9), (3, 2), (2, 1), (1, 1), (2, 1), True),
    ((2, 3, 7, 7), 3, 1, 1, 2, False),
    ((2, 2, 1, 9), (1, 3), (1, 2), (0, 1), 1, True),  # H = 1
    ((1, 3, 6, 6), 5, 3, 2, 1, True),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", MAX_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_matches_torch(rng, case, layout, dtype):
    shape, k, s, p, d, cm = case
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::5] = x.flat[1::5][: x.flat[::5].size]  # ties: torch picks the first
    ref, dy, gx = torch_fwd_bwd(F.max_pool2d, x, rng, k, s, p, d, ceil_mode=cm)
    y = run(pyfastopt.max_pool2d, x, layout, k, s, p, d, cm)
    assert y.dtype == dtype and y.shape == ref.shape
    assert np.array_equal(y, ref)
    dx = run_bwd(pyfastopt.max_pool2d_backward, dy, x, layout, k, s, p, d, cm)
    np.testing.assert_allclose(dx, gx, rtol=0, atol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool_nan_and_inf(layout):
    x = np.full((1, 1, 4, 4), -np.inf)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 0, 3] = np.nan
    x[0, 0, 2, 3] = np.nan
    xt = torch.tensor(x, requires_grad=True)
    yt = F.max_pool2d(xt, 2, 2, 1)
    yt.backward(torch.ones_like(yt))
    y = run(pyfastopt.max_pool2d, x, layout, 2, 2, 1)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    dx = run_bwd(pyfastopt.max_pool2d_backward, np.ones(y.shape), x, layout, 2, 2, 1)
    np.testing.assert_array_equal(dx, xt.grad.numpy())


AVG_CASES = [
    ((2, 3, 8, 8), 2, None, 0, False, True, None),
    ((2, 3, 9, 7), 3, 2, 1, False, True, None),
    ((2, 3, 9, 7), 3, 2, 1, False, False, None),
    ((1, 5, 10, 11), 3, 2, 1, True, True, None),
    ((1, 5, 10, 11), 3, 2, 1, True, False, None),
    ((2, 4, 11, 9), (3, 2), (2, 1), (1, 1), True, False, None),
    ((2, 2, 7, 7), 3, 2, 1, False, True, 5),
    ((2, 2, 9, 1), (3, 1), 2, (1, 0), True, True, None),  # W = 1
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", AVG_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool_matches_torch(rng, case, layout, dtype):
    shape, k, s, p, cm, cip, div = case
    x = rng.standard_normal(shape).astype(dtype)
    ref, dy, gx = torch_fwd_bwd(
        F.avg_pool2d, x.astype(np.float64), rng, k, s, p, cm, cip, divisor_override=div
    )
    y = run(pyfastopt.avg_pool2d, x, layout, k, s, p, cm, cip, div)
    assert y.dtype == dtype and y.shape == ref.shape
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y, ref, rtol=0, atol=tol)
    dx = run_bwd(pyfastopt.avg_pool2d_backward, dy.astype(dtype), x, layout, k, s, p, cm, cip, div)
    np.testing.assert_allclose(dx, gx, rtol=0, atol=tol * 10)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("shape", "size"),
    [((2, 3, 8, 8), 1), ((2, 3, 10, 7), (3, 4)), ((1, 5, 5, 13), (5, 6)), ((2, 2, 3, 3), (7, 5))],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_avg_pool_matches_torch(rng, shape, size, layout, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    ref, dy, gx = torch_fwd_bwd(F.adaptive_avg_pool2d, x.astype(np.float64), rng, size)
    y = run(pyfastopt.adaptive_avg_pool2d, x, layout, size)
    assert y.dtype == dtype and y.shape == ref.shape
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y, ref, rtol=0, atol=tol)
    dx = run_bwd(pyfastopt.adaptive_avg_pool2d_backward, dy.astype(dtype), x, layout)
    np.testing.assert_allclose(dx, gx, rtol=0, atol=tol)


def test_adaptive_none_and_global(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    ref = F.adaptive_avg_pool2d(torch.tensor(x), (None, 2)).numpy()
    np.testing.assert_allclose(pyfastopt.adaptive_avg_pool2d(x, (None, 2)), ref, atol=1e-14)
    g = pyfastopt.global_avg_pool2d(to_nhwc(x), layout="NHWC")
    assert g.shape == (2, 1, 1, 3)
    np.testing.assert_allclose(g[:, 0, 0, :], x.mean(axis=(2, 3)), atol=1e-14)


def test_non_contiguous(rng):
    x = rng.standard_normal((2, 6, 9, 9))[:, ::2, ::-1]
    assert not x.flags.c_contiguous
    want = pyfastopt.max_pool2d(np.ascontiguousarray(x), 3, 2, 1)
    assert np.array_equal(pyfastopt.max_pool2d(x, 3, 2, 1), want)


@pytest.mark.parametrize(
    ("call", "exc", "msg"),
    [
        (lambda x: pyfastopt.max_pool2d(x, 3, 1, 2), ValueError, "at most half of kernel_size"),
        (lambda x: pyfastopt.max_pool2d(x, 0), ValueError, "kernel_size must be >= 1"),
        (lambda x: pyfastopt.max_pool2d(x, 2, 0), ValueError, "stride must be >= 1"),
        (lambda x: pyfastopt.max_pool2d(x, 2, padding=-1), ValueError, "padding must be >= 0"),
        (lambda x: pyfastopt.max_pool2d(x, 9), ValueError, r"larger than the padded input.*\(2, 3"),
        (lambda x: pyfastopt.max_pool2d(x[0], 2), ValueError, r"x must be 4-D"),
        (lambda x: pyfastopt.max_pool2d(x, 2.0), TypeError, "kernel_size must be"),
        (lambda x: pyfastopt.max_pool2d(x, 2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
        (lambda x: pyfastopt.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override"),
        (lambda x: pyfastopt.adaptive_avg_pool2d(x, 0), ValueError, "output_size must be >= 1"),
        (lambda x: pyfastopt.max_pool2d(x.astype(np.int64), 2), TypeError, "x"),
        (lambda x: pyfastopt.max_pool2d(x, 2, layout="CHWN"), ValueError, "layout"),
        (
            lambda x: pyfastopt.max_pool2d_backward(np.zeros((2, 3, 3, 3)), x, 2),
            ValueError,
            r"dy must have the shape of the pooling output \(2, 3, 3, 2\)",
        ),
    ],
)
def test_validation(rng, call, exc, msg):
    x = rng.standard_normal((2, 3, 7, 5))
    with pytest.raises(exc, match=msg):
        call(x)


def test_bitwise_threads_and_simd(rng):
    x = rng.standard_normal((4, 16, 33, 31)).astype(np.float32)
    previous = _core.config.get_simd_level()
    ref = None
    try:
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            for threads in (1, 2, 3):
                pyfastopt.set_num_threads(threads)
                y1 = pyfastopt.max_pool2d(x, 3, 2, 1, ceil_mode=True)
                y2 = pyfastopt.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
                y3 = pyfastopt.adaptive_avg_pool2d(x, (5, 7))
                g1 = pyfastopt.max_pool2d_backward(y1, x, 3, 2, 1, ceil_mode=True)
                g2 = pyfastopt.avg_pool2d_backward(y2, x, 3, 2, 1, count_include_pad=False)
                g3 = pyfastopt.adaptive_avg_pool2d_backward(y3, x)
                got = [a.tobytes() for a in (y1, y2, y3, g1, g2, g3)]
                if ref is None:
                    ref = got
                assert got == ref, (level, threads)
    finally:
        _core.config.set_simd_level(previous)


def test_out_arguments(rng):
    x = rng.standard_normal((2, 3, 8, 7))
    y = np.empty((2, 3, 4, 3))
    assert pyfastopt.max_pool2d(x, 2, out=y) is y
    assert np.array_equal(y, pyfastopt.max_pool2d(x, 2))
    dx = np.empty_like(x)
    assert pyfastopt.avg_pool2d_backward(y, x, 2, out=dx) is dx
    assert np.array_equal(dx, pyfastopt.avg_pool2d_backward(y, x, 2))
    g = np.empty((2, 3, 1, 1))
    assert pyfastopt.global_avg_pool2d(x, out=g) is g
    np.testing.assert_allclose(g[:, :, 0, 0], x.mean(axis=(2, 3)), atol=1e-14)
    xx = x.copy()  # the result written over its own input
    want = pyfastopt.max_pool2d_backward(np.ones((2, 3, 8, 7)), x, 3, 1, 1)
    got = pyfastopt.max_pool2d_backward(np.ones((2, 3, 8, 7)), xx, 3, 1, 1, out=xx)
    assert got is xx and np.array_equal(xx, want)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 4, 3\)"):
        pyfastopt.max_pool2d(x, 2, out=np.empty((2, 3, 4, 4)))
