"""pyfastopt.batch_norm_{train,infer,backward} against their contract.

* values: a float64 NumPy reference written from PyTorch's equations
  (``batchnorm_reference``), finite-difference gradients, and -- when installed --
  ``torch.nn.functional.batch_norm`` and its autograd, for every layout (axis=1 on
  (N, C), (N, C, L), (N, C, H, W); channels-last with axis=-1) and both dtypes, at odd
  sizes (C=1, C=3, H*W=1, N=2, runs with and without tails, huge spatial extents);
* numerics: a large mean with a small spread (1e4 + N(0, 1) in float32), an outlier as
  the channel's first element;
* determinism: the same bits on every SIMD level and for 1, 2 and 3 threads, for large
  and small C;
* the boundary: array-likes, non-contiguous inputs, running statistics updated in place
  (never a copy), every argument error naming the argument (and both shapes).

Tolerances are in units of the dtype's epsilon times the size of the reference values,
so a formula error (biased vs unbiased variance, a missing term) fails by orders of
magnitude.
"""

from __future__ import annotations

import batchnorm_reference as ref
import numpy as np
import pytest
from conftest import DTYPES

import pyfastopt

EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}

# (id, shape, axis): every kernel path -- columns (inner < 16), runs with and without
# tails, channels-last, fused channel blocks (C >= 16 small channels, channels-first) --
# and the odd sizes of the issue.
LAYOUTS = [
    ("NC", (6, 5), 1),
    ("NC-C1", (9, 1), 1),
    ("NCL", (4, 3, 37), 1),
    ("NCL-run16", (3, 2, 16), 1),
    ("NCHW", (3, 4, 5, 7), 1),
    ("NCHW-HW9", (5, 6, 3, 3), 1),
    ("NCHW-C1", (7, 1, 4, 5), 1),
    ("NCHW-N2-C3", (2, 3, 6, 6), 1),
    ("NCHW-HW1", (9, 4, 1, 1), 1),
    ("NHWC", (3, 5, 7, 6), -1),
    ("NHWC-C3", (2, 4, 5, 3), -1),
    ("NLC-wide", (5, 4, 100), -1),
    # many small channels: each task takes whole channels through both passes
    ("NCHW-fused", (3, 20, 16, 16), 1),
    ("NCHW-fused-tail", (2, 32, 17, 19), 1),
    ("NCHW-C64-HW9", (4, 64, 3, 3), 1),
    ("NC-C256", (6, 256), 1),
    # one run longer than a reduction task: the runs are split
    ("NCL-split", (1, 2, 40001), 1),
]
LAYOUT_IDS = [name for name, _, _ in LAYOUTS]


def data(shape, dtype, seed=0, loc=0.5, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + loc).astype(dtype)


def params(c, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(c) * 0.5 + 1.0, rng.standard_normal(c)


def assert_close(got, expected, dtype, what, k=16.0, scale=None):
    """|got - expected| <= k * eps(dtype) * scale (default: max |expected|), times 8 for
    float64, whose results carry the rounding of float64 sums (float32 results are
    dominated by their own final rounding)."""
    got = np.asarray(got)
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == np.shape(expected), f"{what}: shape {got.shape} vs {np.shape(expected)}"
    if got.size == 0:
        return
    if scale is None:
        scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(got.astype(np.float64) - expected)))
    bound = k * EPS[dtype] * max(scale, 1e-300) * (8 if dtype == np.float64 else 1)
    assert err <= bound, f"{what}: max error {err:.3g} > {k} eps * {scale:.3g} = {bound:.3g}"


def same_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if not np.array_equal(a.view(np.uint8), b.view(np.uint8)):
        diff = np.flatnonzero(a.ravel() != b.ravel())
        raise AssertionError(
            f"{what}: {diff.size} elements differ, first at {diff[:1]}: "
            f"{a.ravel()[diff[:1]]} vs {b.ravel()[diff[:1]]}"
        )


def channels(shape, axis):
    return shape[axis % len(shape)]


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "shape", "axis"), LAYOUTS, ids=LAYOUT_IDS)
def test_train_infer_backward_match_reference(simd, name, shape, axis, dtype):
    c = channels(shape, axis)
    x = data(shape, dtype)
    w, b = params(c)
    rm = np.linspace(-1, 1, c).astype(dtype)
    rv = np.linspace(0.5, 2, c).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, rm, rv, momentum=0.3, eps=1e-3, axis=axis)
    y_r, mean_r, invstd_r, rm_r, rv_r = ref.train(x, w, b, rm0, rv0, 0.3, 1e-3, axis)
    assert_close(y, y_r, dtype, "y")
    assert_close(mean, mean_r, dtype, "save_mean", k=4, scale=np.abs(x).max())
    assert_close(invstd, invstd_r, dtype, "save_invstd", k=4)
    assert_close(rm, rm_r, dtype, "running_mean", k=4, scale=np.abs(x).max())
    assert_close(rv, rv_r, dtype, "running_var", k=4)

    dy = data(shape, dtype, seed=2, loc=0.1, scale=1.0)
    dx, dw, db = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, axis=axis)
    dx_r, dw_r, db_r = ref.backward(dy, x, w, mean, invstd, axis)
    assert_close(dx, dx_r, dtype, "dx", k=32)
    assert_close(dw, dw_r, dtype, "dweight", k=16, scale=np.abs(dy).sum() / c)
    assert_close(db, db_r, dtype, "dbias", k=16, scale=np.abs(dy).sum() / c)

    y_eval = pyfastopt.batch_norm_infer(x, w, b, rm, rv, eps=1e-3, axis=axis)
    assert_close(y_eval, ref.infer(x, w, b, rm, rv, 1e-3, axis), dtype, "infer y")


@pytest.mark.parametrize(
    ("name", "shape", "axis"),
    [LAYOUTS[0], LAYOUTS[2], LAYOUTS[5], LAYOUTS[9]],
    ids=[LAYOUTS[i][0] for i in (0, 2, 5, 9)],
)
def test_backward_matches_finite_differences(name, shape, axis):
    """Central differences of L = sum(G * y(x, w, b)), float64: the backward is the
    gradient of the training forward (batch statistics included)."""
    c = channels(shape, axis)
    x = data(shape, np.float64, seed=5)
    w, b = params(c, seed=6)
    g = data(shape, np.float64, seed=7, loc=0.0, scale=1.0)

    def loss(x_, w_, b_):
        return float(np.sum(g * pyfastopt.batch_norm_train(x_, w_, b_, axis=axis)[0]))

    _, mean, invstd = pyfastopt.batch_norm_train(x, w, b, axis=axis)
    dx, dw, db = pyfastopt.batch_norm_backward(g, x, w, mean, invstd, axis=axis)
    h = 1e-6
    rng = np.random.default_rng(8)
    for flat in rng.choice(x.size, size=min(x.size, 12), replace=False):
        xp, xm = x.copy(), x.copy()
        xp.flat[flat] += h
        xm.flat[flat] -= h
        fd = (loss(xp, w, b) - loss(xm, w, b)) / (2 * h)
        assert abs(fd - dx.flat[flat]) <= 1e-6 * max(1.0, abs(fd)), (flat, fd, dx.flat[flat])
    for j in range(c):
        e = np.zeros(c)
        e[j] = h
        fd_w = (loss(x, w + e, b) - loss(x, w - e, b)) / (2 * h)
        fd_b = (loss(x, w, b + e) - loss(x, w, b - e)) / (2 * h)
        assert abs(fd_w - dw[j]) <= 1e-6 * max(1.0, abs(fd_w)), (j, fd_w, dw[j])
        assert abs(fd_b - db[j]) <= 1e-6 * max(1.0, abs(fd_b)), (j, fd_b, db[j])


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_none_means_one_and_zero(dtype):
    x = data((4, 3, 5), dtype)
    y0, m0, s0 = pyfastopt.batch_norm_train(x, None, None)
    y1, m1, s1 = pyfastopt.batch_norm_train(x, np.ones(3), np.zeros(3))
    same_bits(y0, y1, "y")
    dy = data(x.shape, dtype, seed=3)
    g0 = pyfastopt.batch_norm_backward(dy, x, None, m0, s0)
    g1 = pyfastopt.batch_norm_backward(dy, x, np.ones(3), m1, s1)
    for a, b_, what in zip(g0, g1, ("dx", "dweight", "dbias")):
        same_bits(a, b_, what)
        assert a.dtype == dtype
    same_bits(
        pyfastopt.batch_norm_infer(x, None, None, m0, 1 / s0**2),
        pyfastopt.batch_norm_infer(x, np.ones(3), np.zeros(3), m0, 1 / s0**2),
        "infer",
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_running_stats_over_several_calls(dtype):
    """momentum=0.1 and the cumulative average (momentum=None + num_batches_tracked),
    updated in place over five batches of different sizes."""
    c = 4
    for momentum in (0.1, None):
        rm = np.zeros(c, dtype)
        rv = np.ones(c, dtype)
        rm_id, rv_id = id(rm), id(rv)
        rm_r, rv_r = np.zeros(c), np.ones(c)
        for t in range(5):
            x = data((3 + t, c, 5, 4), dtype, seed=10 + t, loc=t)
            pyfastopt.batch_norm_train(
                x, None, None, rm, rv, momentum=momentum, num_batches_tracked=t
            )
            _, _, _, rm_r, rv_r = ref.train(
                x, None, None, rm_r, rv_r, momentum, 1e-5, 1, num_batches_tracked=t
            )
            assert id(rm) == rm_id and id(rv) == rv_id
            assert_close(
                rm,
                rm_r,
                dtype,
                f"running_mean after {t + 1} ({momentum})",
                k=8,
                scale=max(1.0, float(np.abs(rm_r).max())),
            )
            assert_close(rv, rv_r, dtype, f"running_var after {t + 1} ({momentum})", k=8)
        if momentum is None:  # the cumulative average of the five batch means
            means = [
                ref.train(data((3 + t, c, 5, 4), np.float64, seed=10 + t, loc=t))[1]
                for t in range(5)
            ]
            if dtype == np.float64:
                np.testing.assert_allclose(rm, np.mean(means, axis=0), rtol=1e-12)


def test_momentum_edges():
    x = data((8, 3), np.float64)
    rm, rv = np.full(3, 7.0), np.full(3, 7.0)
    pyfastopt.batch_norm_train(x, None, None, rm, rv, momentum=0.0)
    assert np.all(rm == 7.0) and np.all(rv == 7.0)
    pyfastopt.batch_norm_train(x, None, None, rm, rv, momentum=1.0)
    np.testing.assert_allclose(rm, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(rv, x.var(0, ddof=1), rtol=1e-13)
    rm[:] = 7.0
    pyfastopt.batch_norm_train(x, None, None, rm, rv, momentum=None, num_batches_tracked=0)
    np.testing.assert_allclose(rm, x.mean(0), rtol=1e-14)  # first batch: factor 1
    # momentum given: num_batches_tracked is accepted and ignored
    a, b = np.zeros(3), np.ones(3)
    pyfastopt.batch_norm_train(x, None, None, a, b, momentum=0.5, num_batches_tracked=9)
    np.testing.assert_allclose(a, 0.5 * x.mean(0), rtol=1e-14)
    # without running statistics momentum=None needs no count
    pyfastopt.batch_norm_train(x, None, None, momentum=None)


def test_two_values_per_channel():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    y, mean, invstd = pyfastopt.batch_norm_train(x, None, None, eps=1e-300)
    np.testing.assert_array_equal(mean, [2.0, 5.0])
    assert invstd[0] == 1.0 and invstd[1] == 1e150  # var 0: 1 / sqrt(eps)
    np.testing.assert_array_equal(y[:, 0], [-1.0, 1.0])
    np.testing.assert_array_equal(y[:, 1], [0.0, 0.0])  # a constant channel: 0, not NaN
    with pytest.raises(ValueError, match="eps must be positive"):  # as PyTorch
        pyfastopt.batch_norm_train(x, None, None, eps=0.0)


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("axis", [1, -1])
def test_large_mean_small_variance_float32(simd, axis):
    """1e4 + N(0, 1) in float32: E[x^2] - E[x]^2 in float32 would be noise; folding the
    mean into the shift (y = x*p + q) would lose ~3 digits of y. Here y, the statistics
    and the gradients keep float32 accuracy relative to the spread."""
    shape = (16, 4, 9, 8) if axis == 1 else (16, 9, 8, 4)
    x = (1e4 + np.random.default_rng(3).standard_normal(shape)).astype(np.float32)
    y, mean, invstd = pyfastopt.batch_norm_train(x, None, None, axis=axis)
    y_r, mean_r, invstd_r, _, _ = ref.train(x, axis=axis)
    assert_close(y, y_r, np.float32, "y", k=16)  # ~2e-6 absolute on |y| <= 5
    assert_close(invstd, invstd_r, np.float32, "save_invstd", k=4)
    assert_close(mean, mean_r, np.float32, "save_mean", k=1)
    dy = data(shape, np.float32, seed=4, loc=0.3, scale=1.0)
    dx, dw, db = pyfastopt.batch_norm_backward(dy, x, None, mean, invstd, axis=axis)
    # reference from the exact float64 statistics: save_mean's float32 rounding (up to
    # 5e-4 here, i.e. 5e-4 in xhat) must not show up in the gradients
    dx_r, dw_r, db_r = ref.backward(dy, x, None, mean_r, invstd_r, axis)
    assert_close(dx, dx_r, np.float32, "dx", k=64)
    assert_close(dw, dw_r, np.float32, "dweight", k=64, scale=np.abs(dy).sum() / 4)
    assert_close(db, db_r, np.float32, "dbias", k=4, scale=np.abs(dy).sum() / 4)
    rm = np.full(4, 1e4, np.float32)
    y_e = pyfastopt.batch_norm_infer(x, None, None, rm, 1 / invstd_r**2 - 1e-5, axis=axis)
    assert_close(
        y_e,
        ref.infer(x, None, None, rm, 1 / invstd_r**2 - 1e-5, 1e-5, axis),
        np.float32,
        "infer y",
        k=16,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_outlier_first_element(dtype):
    """The shift K is the channel's first value: an outlier there (the worst case,
    (mean - K)^2 ~ n var) still gives the variance to n * eps relative accuracy."""
    x = data((64, 2, 50), dtype, seed=9, loc=0.0, scale=1.0)
    x[0, :, 0] = 1e6
    n = 64 * 50
    y, mean, invstd = pyfastopt.batch_norm_train(x, None, None)
    y_r, mean_r, invstd_r, _, _ = ref.train(x)
    # float32: the final rounding dominates; float64: n eps (assert_close multiplies by 8)
    k_var = 8 if dtype == np.float32 else n / 8
    assert_close(invstd, invstd_r, dtype, "save_invstd", k=k_var)
    assert_close(mean, mean_r, dtype, "save_mean", k=2, scale=1e6)  # any sum: eps * max|x|
    assert_close(y, y_r, dtype, "y", k=2 * k_var)


# ----------------------------------------------------------------------------- determinism

# Large enough to run on several threads: C large, C small (N=256, C=8), small spatial
# extent (columns kernels), channels-last with small and large C, a run split in pieces.
BIG = [
    ((8, 64, 32, 32), 1),
    ((256, 8, 16, 16), 1),
    ((256, 8, 7, 7), 1),
    ((65536, 8), -1),
    ((64, 32, 32, 24), -1),
    ((512, 1024), 1),
    ((2, 3, 70001), 1),
]


def _everything(x, axis, dtype):
    c = channels(x.shape, axis)
    w, b = params(c)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, rm, rv, axis=axis)
    dy = data(x.shape, dtype, seed=12)
    dx, dw, db = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, axis=axis)
    ye = pyfastopt.batch_norm_infer(x, w, b, rm, rv, axis=axis)
    return {
        "y": y,
        "save_mean": mean,
        "save_invstd": invstd,
        "running_mean": rm,
        "running_var": rv,
        "dx": dx,
        "dweight": dw,
        "dbias": db,
        "infer": ye,
    }


@pytest.mark.parametrize(("shape", "axis"), BIG, ids=[f"{s}-axis{a}" for s, a in BIG])
def test_bitwise_identical_for_1_2_3_threads(shape, axis):
    dtype = np.float32
    x = data(shape, dtype, seed=11)
    with pyfastopt.threads(1):
        one = _everything(x, axis, dtype)
    for n in (2, 3):
        with pyfastopt.threads(n):
            other = _everything(x, axis, dtype)
        for key in one:
            same_bits(other[key], one[key], f"{key} with {n} threads vs 1")


@pytest.mark.parametrize(("shape", "axis"), [((16, 16, 128, 128), 1), ((16, 128, 128, 16), -1)])
def test_large_outputs(shape, axis):
    """Outputs of 16 MB and more are written with non-temporal stores, aligned by a partial
    head vector: misaligned out= arrays, reference values, 1 vs 2 threads bitwise."""
    x = data(shape, np.float32, seed=17)
    c = channels(shape, axis)
    w, b = params(c)
    dy = data(shape, np.float32, seed=18, loc=0.0, scale=1.0)
    buf = np.empty(2 * x.size + 3, np.float32)
    y_out = buf[1 : 1 + x.size].reshape(shape)  # 4 bytes past a 64-byte boundary at most
    dx_out = buf[2 + x.size : 2 + 2 * x.size].reshape(shape)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, axis=axis, out=y_out)
    dx = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, axis=axis, out=dx_out)[0]
    y_r, mean_r, invstd_r, _, _ = ref.train(x, w, b, axis=axis)
    assert_close(y, y_r, np.float32, "y", k=16)
    assert_close(dx, ref.backward(dy, x, w, mean_r, invstd_r, axis)[0], np.float32, "dx", k=64)
    with pyfastopt.threads(1):
        y1, _, _ = pyfastopt.batch_norm_train(x, w, b, axis=axis)
        dx1 = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, axis=axis)[0]
    same_bits(y, y1, "y, 2 threads and misaligned out= vs 1 thread")
    same_bits(dx, dx1, "dx, 2 threads and misaligned out= vs 1 thread")
    ye = pyfastopt.batch_norm_infer(x, w, b, mean_r, 1 / invstd_r**2 - 1e-5, axis=axis, out=y_out)
    assert_close(ye, y_r, np.float32, "infer y", k=16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        *((s, a) for _, s, a in LAYOUTS),
        ((4, 16, 33, 40), 1),
        ((128, 8, 5, 5), 1),
        ((2, 3, 70001), 1),
        ((4096, 24), -1),
    ],
)
def test_same_bits_on_every_simd_level(simd, shape, axis, dtype):
    from pyfastopt import _core

    x = data(shape, dtype, seed=13)
    got = _everything(x, axis, dtype)
    _core.config.set_simd_level("scalar")  # the fixture restores the level
    expected = _everything(x, axis, dtype)
    for key in got:
        same_bits(got[key], expected[key], f"{key} at {simd} vs scalar")


# ----------------------------------------------------------------------------- boundary


def test_array_likes_and_non_contiguous_inputs():
    x = data((4, 6, 5, 3), np.float32)
    w, b = params(6)
    y = pyfastopt.batch_norm_train(x, w, b)[0]
    # a list input (float64 by NumPy's rules)
    y_list = pyfastopt.batch_norm_train(x.astype(np.float64).tolist(), list(w), list(b))[0]
    assert y_list.dtype == np.float64
    np.testing.assert_allclose(y_list, y, rtol=1e-5, atol=1e-5)
    # non-contiguous x, weight and bias: same bits as their contiguous copies
    big = data((4, 6, 5, 6), np.float32)
    xs = big[..., ::2]
    wide = np.repeat(w, 2)
    got = pyfastopt.batch_norm_train(xs, wide[::2], np.repeat(b, 2)[::2])
    exp = pyfastopt.batch_norm_train(np.ascontiguousarray(xs), w, b)
    for g, e, what in zip(got, exp, ("y", "mean", "invstd")):
        same_bits(g, e, what)
    # channels-last memory seen as NCHW (a transposed view, axis=1) vs the NHWC array
    nhwc = data((4, 5, 3, 6), np.float32)
    a = pyfastopt.batch_norm_train(nhwc.transpose(0, 3, 1, 2), w, b, axis=1)
    c_last = pyfastopt.batch_norm_train(nhwc, w, b, axis=-1)
    np.testing.assert_allclose(a[0], c_last[0].transpose(0, 3, 1, 2), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a[1], c_last[1], rtol=1e-6)
    dy = data(nhwc.shape, np.float32, seed=3)
    g_view = pyfastopt.batch_norm_backward(
        dy.transpose(0, 3, 1, 2), nhwc.transpose(0, 3, 1, 2), w, a[1], a[2], axis=1
    )
    g_last = pyfastopt.batch_norm_backward(dy, nhwc, w, a[1], a[2], axis=-1)
    np.testing.assert_allclose(g_view[0], g_last[0].transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_view[1], g_last[1], rtol=1e-5, atol=1e-5)
    # byte-swapped input
    sw = x.astype(">f4")
    same_bits(pyfastopt.batch_norm_train(sw, w, b)[0], y, "byte-swapped x")
    # any axis: the middle one of (N, H, C, W)
    nhcw = np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    y2 = pyfastopt.batch_norm_train(nhcw, w, b, axis=2)[0]
    np.testing.assert_allclose(y2.transpose(0, 2, 1, 3), y, rtol=1e-6, atol=1e-6)
    y3 = pyfastopt.batch_norm_train(nhcw, w, b, axis=-2)[0]
    same_bits(y3, y2, "axis=-2 vs axis=2")


def test_x_sharing_memory_with_running_stats():
    """x overlapping running_mean: the statistics come from x as it was passed."""
    buf = data((5 * 4,), np.float64, seed=21)
    x = buf.reshape(5, 4)
    expected = pyfastopt.batch_norm_train(x.copy(), None, None, np.zeros(4), np.ones(4))
    rm = buf[:4]  # aliases x's first row
    rv = np.ones(4)
    x_before = x.copy()
    y, mean, _ = pyfastopt.batch_norm_train(x, None, None, rm, rv)
    same_bits(y, expected[0], "y")
    same_bits(mean, expected[1], "save_mean")
    np.testing.assert_allclose(rm, 0.9 * x_before[0] + 0.1 * x_before.mean(0), rtol=1e-14)


@pytest.mark.parametrize(("shape", "axis"), [((4, 6, 5, 7), 1), ((4, 5, 7, 6), -1)])
def test_out_argument(shape, axis):
    x = data(shape, np.float32)
    c = channels(shape, axis)
    w, b = params(c)
    dy = data(shape, np.float32, seed=3)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, axis=axis)
    dx = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, axis=axis)[0]
    ye = pyfastopt.batch_norm_infer(x, w, b, mean, 1 / invstd**2, axis=axis)
    # a preallocated out: the same bits, and the very object comes back
    out = np.full(shape, np.nan, np.float32)
    got = pyfastopt.batch_norm_train(x, w, b, axis=axis, out=out)
    assert got[0] is out
    same_bits(out, y, "train out=")
    out[:] = np.nan
    assert pyfastopt.batch_norm_infer(x, w, b, mean, 1 / invstd**2, axis=axis, out=out) is out
    same_bits(out, ye, "infer out=")
    out[:] = np.nan
    assert pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, axis=axis, out=out)[0] is out
    same_bits(out, dx, "backward out=")
    # in place: out is x (train, infer) or dy (backward)
    xi = x.copy()
    pyfastopt.batch_norm_train(xi, w, b, axis=axis, out=xi)
    same_bits(xi, y, "train out=x")
    xi = x.copy()
    pyfastopt.batch_norm_infer(xi, w, b, mean, 1 / invstd**2, axis=axis, out=xi)
    same_bits(xi, ye, "infer out=x")
    gi = dy.copy()
    pyfastopt.batch_norm_backward(gi, x, w, mean, invstd, axis=axis, out=gi)
    same_bits(gi, dx, "backward out=dy")
    xi = x.copy()
    pyfastopt.batch_norm_backward(dy, xi, w, mean, invstd, axis=axis, out=xi)
    same_bits(xi, dx, "backward out=x")
    # partial overlap with x: x is read as it was passed
    n = x.size
    buf = np.zeros(n + 7, np.float32)
    xo = buf[:n].reshape(shape)
    xo[...] = x
    oo = buf[7:].reshape(shape)
    pyfastopt.batch_norm_train(xo, w, b, axis=axis, out=oo)
    same_bits(oo, y, "train out overlapping x")
    # errors
    with pytest.raises(ValueError, match="out and x must have the same shape"):
        pyfastopt.batch_norm_train(x, w, b, axis=axis, out=np.zeros(shape[:-1], np.float32))
    with pytest.raises(pyfastopt.DTypeError, match="out"):
        pyfastopt.batch_norm_infer(x, w, b, mean, invstd, axis=axis, out=np.zeros(shape))
    with pytest.raises(ValueError, match="C-contiguous"):
        pyfastopt.batch_norm_backward(
            dy, x, w, mean, invstd, axis=axis, out=np.zeros(shape, np.float32).T.copy().T
        )
    rm_inside_out = out.reshape(-1)[:c]  # a running_mean in out's memory
    with pytest.raises(ValueError, match="share memory"):
        pyfastopt.batch_norm_train(
            x, w, b, rm_inside_out, np.ones(c, np.float32), axis=axis, out=out
        )


def test_empty_inputs():
    x = np.zeros((4, 0, 3), np.float32)  # no channels
    y, m, s = pyfastopt.batch_norm_train(
        x, None, None, np.zeros(0, np.float32), np.zeros(0, np.float32)
    )
    assert y.shape == x.shape and m.shape == (0,) and s.shape == (0,)
    e = np.zeros((0, 3, 2), np.float32)  # no values per channel: eval and backward are fine
    assert pyfastopt.batch_norm_infer(e, None, None, np.zeros(3), np.ones(3)).shape == e.shape
    dx, dw, db = pyfastopt.batch_norm_backward(e, e, None, np.zeros(3), np.ones(3))
    assert dx.shape == e.shape
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)


def _shape_error(fn, *names):
    with pytest.raises(ValueError) as exc:
        fn()
    msg = str(exc.value)
    for name in names:
        assert name in msg, (name, msg)
    return msg


def test_shape_errors_name_the_argument():
    x = data((32, 6, 4, 4), np.float32)
    w, b = params(6)
    rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
    bad = np.zeros(5, np.float32)
    msg = _shape_error(
        lambda: pyfastopt.batch_norm_train(x, bad, b), "weight", "(6,)", "(5,)", "(32, 6, 4, 4)"
    )
    assert "axis 1" in msg
    _shape_error(lambda: pyfastopt.batch_norm_train(x, w, bad), "bias", "(5,)")
    _shape_error(lambda: pyfastopt.batch_norm_train(x, w, b, bad, rv), "running_mean", "(5,)")
    _shape_error(lambda: pyfastopt.batch_norm_train(x, w, b, rm, bad), "running_var", "(5,)")
    _shape_error(lambda: pyfastopt.batch_norm_train(x, w.reshape(2, 3), b), "weight", "(2, 3)")
    _shape_error(lambda: pyfastopt.batch_norm_train(x, w, b, axis=-1), "weight", "(4,)")
    _shape_error(lambda: pyfastopt.batch_norm_infer(x, w, b, bad, rv), "running_mean", "(5,)")
    _shape_error(lambda: pyfastopt.batch_norm_infer(x, w, b, rm, bad), "running_var", "(5,)")
    _, mean, invstd = pyfastopt.batch_norm_train(x, w, b)
    _shape_error(lambda: pyfastopt.batch_norm_backward(x, x, w, bad, invstd), "save_mean", "(5,)")
    _shape_error(lambda: pyfastopt.batch_norm_backward(x, x, w, mean, bad), "save_invstd")
    _shape_error(lambda: pyfastopt.batch_norm_backward(x, x, bad, mean, invstd), "weight")
    _shape_error(
        lambda: pyfastopt.batch_norm_backward(x[:8], x, w, mean, invstd),
        "dy",
        "x",
        "(8, 6, 4, 4)",
        "(32, 6, 4, 4)",
    )
    assert np.all(rm == 0) and np.all(rv == 1)  # nothing was updated


def test_argument_errors():
    x = data((4, 3, 5), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    train = pyfastopt.batch_norm_train
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        train(np.ones((1, 3), np.float32), None, None)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        train(np.ones((1, 3, 1, 1), np.float32), None, None, rm, rv)
    # (an empty batch, 0 values per channel, is valid: tests/test_batchnorm_edges.py)
    with pytest.raises(ValueError, match="both"):
        train(x, None, None, rm, None)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        train(x, None, None, rm, rv, momentum=None)
    for m in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="momentum"):
            train(x, None, None, rm, rv, momentum=m)
    for e in (-1e-5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps"):
            train(x, None, None, eps=e)
        with pytest.raises(ValueError, match="eps"):
            pyfastopt.batch_norm_infer(x, None, None, rm, rv, eps=e)
    with pytest.raises(TypeError, match="momentum"):
        train(x, None, None, momentum="0.1")
    with pytest.raises(ValueError, match="num_batches_tracked"):
        train(x, None, None, rm, rv, momentum=None, num_batches_tracked=-1)
    with pytest.raises(TypeError, match="num_batches_tracked"):
        train(x, None, None, rm, rv, momentum=None, num_batches_tracked=1.5)
    for axis in (3, -4):
        with pytest.raises(ValueError, match=f"axis {axis} is out of bounds"):
            train(x, None, None, axis=axis)
    with pytest.raises(ValueError, match="axis 1 is out of bounds"):
        pyfastopt.batch_norm_infer(np.ones(3), None, None, rm, rv)
    for axis in (True, 1.0, "1"):
        with pytest.raises(TypeError, match="axis"):
            train(x, None, None, axis=axis)
    # dtypes: TypeError naming the argument
    with pytest.raises(TypeError, match="x must have dtype"):
        train(x.astype(np.int32), None, None)
    with pytest.raises(TypeError, match="weight must have dtype"):
        train(x, np.ones(3, np.float16), None)
    with pytest.raises(TypeError, match="dy must have dtype"):
        pyfastopt.batch_norm_backward(x.astype(np.float16), x, None, rm, rv)
    with pytest.raises(pyfastopt.DTypeError, match="dy and x"):
        pyfastopt.batch_norm_backward(x.astype(np.float64), x, None, rm, rv)
    assert np.all(rm == 0) and np.all(rv == 1)


def test_running_stats_are_never_copied():
    x = data((4, 3, 5), np.float32)
    good = np.zeros(3, np.float32)
    cases = {
        "float64 running_mean": (np.zeros(3, np.float64), good.copy()),
        "strided running_mean": (np.zeros(6, np.float32)[::2], good.copy()),
        "list running_var": (good.copy(), [1.0, 1.0, 1.0]),  # TypeError: not an ndarray
    }
    for what, (rm, rv) in cases.items():
        before = [np.array(rm, copy=True), np.array(rv, copy=True)]
        with pytest.raises((TypeError, ValueError)) as exc:  # DTypeError is both
            pyfastopt.batch_norm_train(x, None, None, rm, rv)
        assert ("running_mean" in str(exc.value)) or ("running_var" in str(exc.value)), what
        np.testing.assert_array_equal(np.asarray(rm), before[0])
        np.testing.assert_array_equal(np.asarray(rv), before[1])
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"running_mean.*read-only"):
        pyfastopt.batch_norm_train(x, None, None, ro, good)
    with pytest.raises(pyfastopt.DTypeError, match="running_mean"):
        pyfastopt.batch_norm_train(x, None, None, np.zeros(3), np.ones(3))
    shared = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        pyfastopt.batch_norm_train(x, None, None, shared, shared)


# ----------------------------------------------------------------------------- PyTorch


def _torch_layout(torch, x, axis):
    """x (NumPy, channels at `axis`) as a torch tensor in NC... order (a view)."""
    t = torch.from_numpy(x)
    if axis == -1 and x.ndim > 2:
        t = t.movedim(-1, 1)  # channels-last strides
    return t


def _from_torch(t, axis, x_ndim):
    if axis == -1 and x_ndim > 2:
        t = t.movedim(1, -1)
    return t.detach().numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((6, 5), 1),
        ((4, 3, 37), 1),
        ((3, 4, 5, 7), 1),
        ((3, 5, 7, 6), -1),
        ((4, 6, 2, 2), 1),
        ((3, 20, 16, 16), 1),
    ],
)
def test_matches_torch_with_autograd(shape, axis, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    c = channels(shape, axis)
    w, b = (v.astype(dtype) for v in params(c))
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    rm_t = torch.from_numpy(rm.copy())
    rv_t = torch.from_numpy(rv.copy())
    for step in range(3):
        x = data(shape, dtype, seed=30 + step, loc=step)
        g = data(shape, dtype, seed=40 + step, loc=0.0, scale=1.0)
        xt = _torch_layout(torch, x, axis).clone().requires_grad_(True)
        wt = torch.from_numpy(w.copy()).requires_grad_(True)
        bt = torch.from_numpy(b.copy()).requires_grad_(True)
        yt = F.batch_norm(xt, rm_t, rv_t, wt, bt, training=True, momentum=0.1, eps=1e-5)
        yt.backward(_torch_layout(torch, g, axis))
        y, mean, invstd = pyfastopt.batch_norm_train(
            x, w, b, rm, rv, momentum=0.1, eps=1e-5, axis=axis
        )
        tol = 64 * EPS[dtype]
        np.testing.assert_allclose(y, _from_torch(yt, axis, x.ndim), rtol=tol, atol=tol * 4)
        np.testing.assert_allclose(rm, rm_t.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(rv, rv_t.numpy(), rtol=tol, atol=tol)
        dx, dw, db = pyfastopt.batch_norm_backward(g, x, w, mean, invstd, axis=axis)
        np.testing.assert_allclose(dx, _from_torch(xt.grad, axis, x.ndim), rtol=tol, atol=tol * 4)
        scale = np.abs(g).sum() / c
        np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=tol, atol=tol * scale)
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=tol, atol=tol * scale)
    ye = pyfastopt.batch_norm_infer(x, w, b, rm, rv, eps=1e-5, axis=axis)
    yet = F.batch_norm(
        _torch_layout(torch, x, axis),
        rm_t,
        rv_t,
        torch.from_numpy(w),
        torch.from_numpy(b),
        training=False,
        eps=1e-5,
    )
    np.testing.assert_allclose(
        ye, _from_torch(yet, axis, x.ndim), rtol=64 * EPS[dtype], atol=256 * EPS[dtype]
    )


def test_cumulative_average_matches_torch_module():
    """momentum=None: torch.nn.BatchNorm2d(momentum=None) counts num_batches_tracked."""
    torch = pytest.importorskip("torch")
    c = 5
    bn = torch.nn.BatchNorm2d(c, momentum=None, affine=False).train()
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    for t in range(4):
        x = data((3 + t, c, 4, 3), np.float32, seed=50 + t, loc=2 * t)
        assert int(bn.num_batches_tracked) == t
        with torch.no_grad():
            yt = bn(torch.from_numpy(x))
        y, _, _ = pyfastopt.batch_norm_train(
            x, None, None, rm, rv, momentum=None, num_batches_tracked=t
        )
        np.testing.assert_allclose(y, yt.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- fuzz


def test_fuzz_never_crashes():
    """Random shapes, axes, dtypes and junk: a correct result or TypeError/ValueError,
    with the running statistics untouched on error."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    junk = st.sampled_from([None, "x", [1, 2], 3.0, np.zeros((2, 2)), np.ones(3, np.int64)])

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
        axis=st.integers(-5, 4),
        dtype=st.sampled_from([np.float32, np.float64, np.int32]),
        wkind=st.sampled_from(["ok", "none", "short", "junk"]),
        junk_value=junk,
        running=st.booleans(),
        seed=st.integers(0, 99),
    )
    def run(shape, axis, dtype, wkind, junk_value, running, seed):
        x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
        nd = len(shape)
        c = shape[axis % nd] if nd and -nd <= axis < nd else 1
        w = {"ok": np.ones(c), "none": None, "short": np.ones(c + 1), "junk": junk_value}[wkind]
        rm = np.zeros(c, x.dtype if x.dtype.kind == "f" else np.float32) if running else None
        rv = np.ones_like(rm) if running else None
        before = None if rm is None else (rm.copy(), rv.copy())
        try:
            y, mean, invstd = pyfastopt.batch_norm_train(x, w, None, rm, rv, axis=axis)
        except (TypeError, ValueError):
            if before is not None:
                np.testing.assert_array_equal(rm, before[0])
                np.testing.assert_array_equal(rv, before[1])
        else:
            assert y.shape == x.shape and y.dtype == x.dtype
            if x.size == 0:  # no values per channel (an empty batch): NaN statistics
                assert np.isnan(mean).all() and np.isnan(invstd).all()
            else:
                y_r = ref.train(x, w, None, axis=axis)[0]
                scale = np.abs(y_r).max(initial=1.0)
                assert_close(y, y_r, x.dtype.type, "fuzz y", k=64, scale=scale)
            dx = pyfastopt.batch_norm_backward(x, x, w, mean, invstd, axis=axis)[0]
            assert dx.shape == x.shape
        try:
            ye = pyfastopt.batch_norm_infer(x, w, None, np.zeros(c), np.ones(c), axis=axis)
        except (TypeError, ValueError):
            pass
        else:
            assert ye.shape == x.shape

    run()
