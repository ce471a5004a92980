"""The fast paths of global average pooling (channels-first: several planes per kernel
call; channels-last: one pool_avg call per image and channel block), channels-last
float average pooling (a ring of rows converted to double once) and depthwise
convolution with a channel multiplier (groups == C_in, C_out = k * C_in): against the
rounding contract of pyfastopt/conv.h recomputed here in float64 NumPy (bitwise), against
torch in float64 (1e-10), and bitwise across layouts, 1/2/3 threads and SIMD levels; odd
shapes, H or W = 1, batch 1, non-contiguous inputs."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional

LEVELS = _core.config.supported_levels()


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def each_level_and_thread():
    previous = _core.config.get_simd_level()
    try:
        for level in LEVELS:
            _core.config.set_simd_level(level)
            for threads in (1, 2, 3):
                pyfastopt.set_num_threads(threads)
                yield level, threads
    finally:
        _core.config.set_simd_level(previous)


def global_chain(x):
    """The contract: per plane s = 0, s = s + double(x) in (h, w) order, T(s / (H*W))."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w)
    s = np.zeros(n * c)
    for i in range(h * w):
        s = s + flat[:, i].astype(np.float64)
    return (s / (h * w)).astype(x.dtype).reshape(n, c, 1, 1)


def avg_chain(x, k, stride, pad):
    """count_include_pad average pool: the window's double sum in (h, w) order (padding
    taps add +0: the chain never holds -0, so that is the skipping chain), / k*k."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    xp[:, :, pad : pad + h, pad : pad + w] = x
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    s = np.zeros((n, c, oh, ow))
    for r in range(k):
        for q in range(k):
            s = s + xp[:, :, r : r + stride * oh : stride, q : q + stride * ow : stride]
    return (s / (k * k)).astype(x.dtype)


GLOBAL_SHAPES = [
    (2, 37, 19, 23),  # 74 planes: four blocks of 16 and a rest; 437 pixels (odd tail)
    (1, 64, 7, 7),  # batch 1, 49 pixels
    (3, 16, 1, 9),  # H = 1
    (2, 35, 9, 1),  # W = 1
    (1, 130, 3, 3),  # channels-last: three channel blocks of 64
    (2, 5, 2, 2),  # fewer planes than one block
    (1, 64, 33, 40),  # channels-last image over 256 KB: the row-by-row adaptive loop
]


@pytest.mark.parametrize("shape", GLOBAL_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_avg_pool_is_the_contract_chain(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype) * 10.0 ** rng.integers(-3, 4, shape)
    expect = global_chain(x)
    ref = None
    for level, threads in each_level_and_thread():
        for layout in ("NCHW", "NHWC"):
            xi = to_nhwc(x) if layout == "NHWC" else x
            y = pyfastopt.global_avg_pool2d(xi, layout=layout)
            y = to_nchw(y) if layout == "NHWC" else y
            assert y.tobytes() == expect.tobytes(), (level, threads, layout)
            if ref is None:
                ref = y
    if dtype == np.float64:
        t = F.adaptive_avg_pool2d(torch.tensor(x), 1).numpy()
        np.testing.assert_allclose(ref, t, rtol=1e-10, atol=1e-10)


def test_global_avg_pool_non_contiguous(rng):
    x = rng.standard_normal((2, 40, 6, 10)).astype(np.float32)
    xs = np.concatenate([x, x], axis=3)[..., ::2]  # every other column: strided W
    assert not xs.flags.c_contiguous
    expect = global_chain(np.ascontiguousarray(xs))
    assert pyfastopt.global_avg_pool2d(xs).tobytes() == expect.tobytes()
    xl = to_nhwc(x)[:, :, :, ::2]  # channels-last, strided C
    assert not xl.flags.c_contiguous
    got = to_nchw(pyfastopt.global_avg_pool2d(xl, layout="NHWC"))
    assert got.tobytes() == global_chain(to_nchw(np.ascontiguousarray(xl))).tobytes()


AVG_CASES = [
    ((2, 37, 14, 14), 3, 1, 1),  # the bench layer's kind, odd channels
    ((1, 20, 1, 9), 3, 1, 1),  # H = 1
    ((2, 3, 9, 1), 3, 2, 1),  # W = 1, stride 2
    ((1, 70, 11, 13), 5, 2, 2),
    ((3, 8, 6, 7), 2, 2, 0),
]


@pytest.mark.parametrize("case", AVG_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool_is_the_contract_chain(rng, case, dtype):
    shape, k, s, p = case
    x = rng.standard_normal(shape).astype(dtype) * 10.0 ** rng.integers(-3, 4, shape)
    expect = avg_chain(x, k, s, p)
    for level, threads in each_level_and_thread():
        for layout in ("NCHW", "NHWC"):
            xi = to_nhwc(x) if layout == "NHWC" else x
            y = pyfastopt.avg_pool2d(xi, k, s, p, layout=layout)
            y = to_nchw(y) if layout == "NHWC" else y
            assert y.tobytes() == expect.tobytes(), (level, threads, layout)
    if dtype == np.float64:
        t = F.avg_pool2d(torch.tensor(x), k, s, p).numpy()
        np.testing.assert_allclose(expect, t, rtol=1e-10, atol=1e-10)


def test_avg_pool_non_contiguous_nhwc(rng):
    x = rng.standard_normal((2, 14, 12, 48)).astype(np.float32)  # NHWC
    xs = x[:, :, :, ::2]
    got = pyfastopt.avg_pool2d(xs, 3, 1, 1, layout="NHWC")
    assert (
        got.tobytes()
        == pyfastopt.avg_pool2d(np.ascontiguousarray(xs), 3, 1, 1, layout="NHWC").tobytes()
    )
    assert to_nchw(got).tobytes() == avg_chain(to_nchw(np.ascontiguousarray(xs)), 3, 1, 1).tobytes()


# depthwise with a channel multiplier: (N, C, H, W, multiplier, k, stride, padding)
MULT_CASES = [
    (2, 37, 9, 11, 2, 3, 1, 1),  # many channels: the tap kernel's full registers
    (1, 5, 8, 7, 3, 3, 2, 1),  # batch 1, stride 2
    (2, 4, 1, 9, 2, 3, 1, 1),  # H = 1
    (2, 6, 9, 1, 3, 3, 1, 1),  # W = 1
    (1, 3, 10, 10, 4, 5, 1, 2),
    (3, 17, 6, 6, 2, 1, 1, 0),  # 1x1
]


def dw_torch(x, w, b, case):
    c = case[1]
    y = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), case[6], case[7], 1, c)
    return y.numpy()


def dw_chain(x, w, b, case):
    """The contract: acc = 0; acc = acc + x * w per valid tap in (r, s) order (multiply,
    then add, in x's dtype); then acc + bias."""
    n, c, h, wd, m, k, s, p = case
    dt = x.dtype.type
    xp = np.zeros((n, c, h + 2 * p, wd + 2 * p), dtype=x.dtype)
    xp[:, :, p : p + h, p : p + wd] = x
    oh = (h + 2 * p - k) // s + 1
    ow = (wd + 2 * p - k) // s + 1
    xr = np.repeat(xp, m, axis=1)  # input channel of output channel co = co // m
    acc = np.zeros((n, c * m, oh, ow), dtype=x.dtype)
    for r in range(k):
        for q in range(k):
            tap = xr[:, :, r : r + s * oh : s, q : q + s * ow : s]
            wv = w[:, 0, r, q].reshape(1, -1, 1, 1)
            acc = acc + tap * wv  # padding taps: + (+-0), which never changes acc (see conv.h)
    return (acc + b.reshape(1, -1, 1, 1).astype(dt)).astype(x.dtype)


@pytest.mark.parametrize("case", MULT_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_multiplier_forward(rng, case, dtype):
    n, c, h, wd, m, k, s, p = case
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = rng.standard_normal((c * m, 1, k, k)).astype(dtype)
    b = rng.standard_normal(c * m).astype(dtype)
    expect = dw_chain(x, w, b, case)
    kw = {"stride": s, "padding": p, "groups": c}
    for level, threads in each_level_and_thread():
        for layout in ("NCHW", "NHWC"):
            xi = to_nhwc(x) if layout == "NHWC" else x
            y = pyfastopt.conv2d(xi, w, b, layout=layout, **kw)
            y = to_nchw(y) if layout == "NHWC" else y
            assert y.tobytes() == expect.tobytes(), (level, threads, layout)
    if dtype == np.float64:
        np.testing.assert_allclose(expect, dw_torch(x, w, b, case), rtol=1e-10, atol=1e-10)


def test_depthwise_multiplier_non_contiguous_and_non_finite(rng):
    case = MULT_CASES[0]
    n, c, h, wd, m, k, s, p = case
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((c * m, 1, k, k))
    kw = {"stride": s, "padding": p, "groups": c}
    big = np.zeros((n, c, h, 2 * wd))
    big[..., ::2] = x
    xs = big[..., ::2]
    assert not xs.flags.c_contiguous
    ref = pyfastopt.conv2d(x, w, **kw)
    assert pyfastopt.conv2d(xs, w, **kw).tobytes() == ref.tobytes()
    bigl = np.zeros((n, h, wd, 2 * c))
    bigl[..., 1::2] = to_nhwc(x)
    xl = bigl[..., 1::2]
    assert to_nchw(pyfastopt.conv2d(xl, w, layout="NHWC", **kw)).tobytes() == ref.tobytes()
    # a non-finite weight: channels-first keeps the generic loop, channels-last the tap
    # kernels; both are the skipping chain
    w[3, 0, 1, 1] = np.inf
    x[0, 2, 0, 0] = np.nan
    y1 = pyfastopt.conv2d(x, w, **kw)
    y2 = to_nchw(pyfastopt.conv2d(to_nhwc(x), w, layout="NHWC", **kw))
    assert y1.tobytes() == y2.tobytes()
    t = F.conv2d(torch.tensor(x), torch.tensor(w), None, s, p, 1, c).numpy()
    np.testing.assert_array_equal(np.isnan(y1), np.isnan(t))
    fin = np.isfinite(t)
    np.testing.assert_allclose(y1[fin], t[fin], rtol=1e-10, atol=1e-10)
