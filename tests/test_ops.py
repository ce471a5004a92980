"""pyfastopt.ops: axpby_ and sum_squares / l2_norm against float64/longdouble references,
on every SIMD level, awkward sizes, non-contiguous and aliased inputs, and thread counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import BLOCK_EDGE_SIZES, DTYPES, ODD_SIZES

import pyfastopt
from pyfastopt import _core, ops

EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}


def data(rng, n, dtype, scale=1.0):
    return (rng.standard_normal(n) * scale).astype(dtype)


def axpby_reference(y, x, a, b):
    """a*x + b*y in extended precision, and a rigorous bound on the kernel's error."""
    dt = y.dtype.type
    a_, b_ = np.longdouble(dt(a)), np.longdouble(dt(b))
    xl, yl = x.astype(np.longdouble), y.astype(np.longdouble)
    exact = a_ * xl + b_ * yl
    # two roundings in the kernel: b*y, then the fma
    bound = 2 * EPS[dt] * (np.abs(a_ * xl) + 2 * np.abs(b_ * yl)) + np.finfo(dt).tiny
    return exact, bound


def assert_axpby_close(got, y0, x, a, b):
    exact, bound = axpby_reference(y0, x, a, b)
    err = np.abs(got.astype(np.longdouble) - exact)
    assert np.all(err <= bound), f"max err {err.max()} > bound"


# ---------------------------------------------------------------- axpby_ correctness


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", ODD_SIZES)
def test_axpby_odd_sizes(simd, rng, dtype, n):
    x, y = data(rng, n, dtype), data(rng, n, dtype)
    y0 = y.copy()
    ops.axpby_(y, x, 0.37, -1.25)
    assert y.dtype == dtype
    assert_axpby_close(y, y0, x, 0.37, -1.25)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BLOCK_EDGE_SIZES)
def test_axpby_large_and_block_edges(simd, rng, dtype, n):
    x, y = data(rng, n, dtype), data(rng, n, dtype)
    y0 = y.copy()
    ops.axpby_(y, x, 1e-3, 0.9)
    assert_axpby_close(y, y0, x, 1e-3, 0.9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_axpby_same_bits_on_every_level(rng, dtype):
    x, y = data(rng, 100_003, dtype), data(rng, 100_003, dtype)
    results = []
    previous = _core.config.get_simd_level()
    try:
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            out = y.copy()
            ops.axpby_(out, x, 0.1, 0.99)
            results.append(out.tobytes())
    finally:
        _core.config.set_simd_level(previous)
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("dtype", DTYPES)
def test_axpby_bitwise_any_thread_count(simd, rng, dtype):
    xs = [data(rng, n, dtype) for n in (1_000_003, 70_001, 5, 0)]
    ys = [data(rng, n, dtype) for n in (1_000_003, 70_001, 5, 0)]
    outs = []
    for t in (1, 2, 3):
        with pyfastopt.threads(t):
            cur = [y.copy() for y in ys]
            ops.axpby_(cur, xs, -0.5, 1.5)
            outs.append(b"".join(c.tobytes() for c in cur))
    assert outs[0] == outs[1] == outs[2]


def test_axpby_special_values(simd):
    y = np.array([np.nan, np.inf, 1.0, 0.0, -0.0, 1.0], np.float32)
    x = np.array([1.0, 1.0, np.inf, 0.0, -0.0, np.nan], np.float32)
    ops.axpby_(y, x, 1.0, 0.0)  # IEEE: 0 * nan = nan, 0 * inf = nan
    assert np.isnan(y[0]) and np.isnan(y[1])
    assert y[2] == np.inf and np.isnan(y[5])
    assert y[3] == 0.0 and y[4] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_axpby_multi_tensor_matches_single(simd, rng, dtype):
    shapes = [(3, 5), (1,), (0,), (17, 33), (2, 3, 4), ()]
    xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ys = [rng.standard_normal(s).astype(dtype) for s in shapes]
    singles = [y.copy() for y in ys]
    for y1, x in zip(singles, xs):
        ops.axpby_(y1, x, 2.0, 3.0)
    ops.axpby_(ys, xs, 2.0, 3.0)
    for y, y1 in zip(ys, singles):
        assert y.tobytes() == y1.tobytes()
    ops.axpby_([], [], 1.0, 1.0)  # empty list: nothing to do


def test_axpby_noncontiguous_and_readonly_x(simd, rng):
    base = data(rng, 4000, np.float64)
    x = base[::2]  # strided view
    x_ro = x.copy()
    x_ro.setflags(write=False)  # read-only input is fine
    xf = np.asfortranarray(data(rng, 40 * 50, np.float64).reshape(40, 50))
    for xin in (x, x_ro):
        y = data(rng, 2000, np.float64)
        y0 = y.copy()
        ops.axpby_(y, xin, 0.5, 2.0)
        assert_axpby_close(y, y0, np.ascontiguousarray(xin), 0.5, 2.0)
    y = data(rng, 40 * 50, np.float64).reshape(40, 50)
    y0 = y.copy()
    ops.axpby_(y, xf, 0.5, 2.0)
    assert_axpby_close(y, y0, np.ascontiguousarray(xf), 0.5, 2.0)


def test_axpby_x_is_y(simd, rng):
    y = data(rng, 1001, np.float32)
    y0 = y.copy()
    ops.axpby_(y, y, 2.0, 3.0)
    assert_axpby_close(y, y0, y0, 2.0, 3.0)


@pytest.mark.parametrize("shift", [1, 7, 16, 100])
def test_axpby_partial_overlap_reads_original_x(simd, rng, shift):
    buf = data(rng, 200_000, np.float32)
    y, x = buf[:-shift], buf[shift:]
    x_before, y_before = x.copy(), y.copy()
    ops.axpby_(y, x, 0.5, 0.25)
    expect = y_before.copy()
    ops.axpby_(expect, x_before, 0.5, 0.25)
    assert y.tobytes() == expect.tobytes()


def test_axpby_array_like_x():
    y = np.zeros(3)
    ops.axpby_(y, [1.0, 2.0, 3.0], 2.0, 1.0)
    np.testing.assert_array_equal(y, [2.0, 4.0, 6.0])


def test_axpby_byteswapped_x_is_converted(rng):
    x = data(rng, 33, np.float64)
    y = np.zeros(33)
    ops.axpby_(y, x.astype(">f8"), 1.0, 0.0)
    np.testing.assert_array_equal(y, x)


def test_axpby_zero_dim_and_numpy_scalars():
    y = np.array(2.0, np.float32)
    ops.axpby_(y, np.array(3.0, np.float32), np.float32(2.0), np.float64(0.5))
    assert y == 7.0


# ---------------------------------------------------------------- axpby_ bad input


def test_axpby_rejects_integer_dtype():
    y = np.zeros(4, np.int32)
    with pytest.raises(TypeError, match=r"\by\b.*float32 or float64.*int32"):
        ops.axpby_(y, np.zeros(4, np.int32), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"\by\b"):  # DTypeError is a ValueError too
        ops.axpby_(y, np.zeros(4, np.int32), 1.0, 1.0)
    with pytest.raises(TypeError, match=r"\bx\b.*float32 or float64.*int64"):
        ops.axpby_(np.zeros(4), np.zeros(4, np.int64), 1.0, 1.0)
    with pytest.raises(TypeError, match=r"\bx\b.*float16"):
        ops.axpby_(np.zeros(4), np.zeros(4, np.float16), 1.0, 1.0)
    with pytest.raises(TypeError, match=r"\bx\b.*complex"):
        ops.axpby_(np.zeros(4), np.zeros(4, np.complex64), 1.0, 1.0)


def test_axpby_rejects_mixed_dtypes():
    with pytest.raises(pyfastopt.DTypeError, match="y and x must have the same dtype"):
        ops.axpby_(np.zeros(4, np.float32), np.zeros(4, np.float64), 1.0, 1.0)
    with pytest.raises(pyfastopt.DTypeError, match=r"y\[0\] and y\[1\]"):
        ops.axpby_(
            [np.zeros(2, np.float32), np.zeros(2)], [np.zeros(2, np.float32), np.zeros(2)], 1.0, 1.0
        )


def test_axpby_rejects_readonly_y():
    y = np.zeros(4)
    y.setflags(write=False)
    with pytest.raises(ValueError, match=r"\by\b.*read-only"):
        ops.axpby_(y, np.ones(4), 1.0, 1.0)
    assert not y.any()


def test_axpby_rejects_noncontiguous_y():
    buf = np.zeros(8)
    with pytest.raises(ValueError, match=r"\by\b.*C-contiguous"):
        ops.axpby_(buf[::2], np.ones(4), 1.0, 1.0)
    assert not buf.any()  # no hidden copy was updated, and nothing was written
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.axpby_(np.asfortranarray(np.zeros((3, 4))), np.ones((3, 4)), 1.0, 1.0)


def test_axpby_rejects_non_array_y():
    with pytest.raises(TypeError, match=r"\by\b.*numpy.ndarray.*list"):
        ops.axpby_([[0.0, 1.0]], [[1.0, 1.0]], 1.0, 1.0)
    with pytest.raises(TypeError, match=r"\by\b.*numpy.ndarray"):
        ops.axpby_(3.0, 1.0, 1.0, 1.0)


def test_axpby_rejects_byteswapped_y():
    with pytest.raises(ValueError, match="byte order"):
        ops.axpby_(np.zeros(3, ">f8"), np.zeros(3), 1.0, 1.0)


def test_axpby_shape_mismatch_names_both_shapes():
    with pytest.raises(
        ValueError, match=r"y and x must have the same shape, got \(2, 3\) and \(3, 2\)"
    ):
        ops.axpby_(np.zeros((2, 3)), np.zeros((3, 2)), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"\(6,\) and \(2, 3\)"):
        ops.axpby_(np.zeros(6), np.zeros((2, 3)), 1.0, 1.0)


def test_axpby_list_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        ops.axpby_([np.zeros(2)], [np.zeros(2), np.zeros(2)], 1.0, 1.0)
    with pytest.raises(ValueError, match="both be arrays or both be sequences"):
        ops.axpby_([np.zeros(2)], np.zeros(2), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(1, 2\)"):
        ops.axpby_(np.zeros(2), [np.zeros(2)], 1.0, 1.0)


def test_axpby_rejects_aliased_outputs():
    buf = np.zeros(10)
    with pytest.raises(ValueError, match="share memory"):
        ops.axpby_([buf[:6], buf[4:]], [np.ones(6), np.ones(6)], 1.0, 1.0)
    with pytest.raises(ValueError, match="share memory"):
        ops.axpby_([buf, buf], [np.ones(10), np.ones(10)], 1.0, 1.0)
    assert not buf.any()


def test_axpby_cross_aliased_input_is_read_before_write(rng):
    p, q = data(rng, 100_000, np.float64), data(rng, 100_000, np.float64)
    p0, q0 = p.copy(), q.copy()
    ops.axpby_([p, q], [q, p], 1.0, 1.0)  # p += q, q += p, both from the old values
    np.testing.assert_array_equal(p, p0 + q0)
    np.testing.assert_array_equal(q, q0 + p0)


@pytest.mark.parametrize("bad", ["1", None, True, 1 + 2j, np.ones(2), [1.0]])
def test_axpby_rejects_bad_coefficients(bad):
    with pytest.raises(TypeError, match=r"\ba must be a real number"):
        ops.axpby_(np.zeros(2), np.zeros(2), bad, 1.0)
    with pytest.raises(TypeError, match=r"\bb must be a real number"):
        ops.axpby_(np.zeros(2), np.zeros(2), 1.0, bad)


# ---------------------------------------------------------------- sum_squares / l2_norm


def sumsq_reference(arrays):
    return math.fsum(float(v) ** 2 for a in arrays for v in np.asarray(a, np.float64).ravel())


def sumsq_bound(arrays, ref):
    n = sum(np.size(a) for a in arrays)
    # 32-lane accumulation: each lane sums n/32 terms, then a 5-level tree and the blocks
    return (n / 32 + 64 + n / 16384) * 2 * EPS[np.float64] * ref + 1e-300


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [*ODD_SIZES, 16383, 16385, 100_003])
def test_sum_squares_odd_sizes(simd, rng, dtype, n):
    x = data(rng, n, dtype)
    ref = math.fsum(np.square(x.astype(np.float64)).tolist())  # x**2 is exact in double for f32
    got = ops.sum_squares(x)
    assert isinstance(got, float)
    assert abs(got - ref) <= sumsq_bound([x], ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_norm_large_multi_tensor(simd, rng, dtype):
    xs = [
        data(rng, n, dtype, scale=s)
        for n, s in ((1_000_003, 1.0), (65_537, 1e3), (3, 1e-3), (0, 1.0))
    ]
    ref = math.sqrt(math.fsum(math.fsum(np.square(x.astype(np.float64)).tolist()) for x in xs))
    got = ops.l2_norm(xs)
    assert abs(got - ref) <= 1e-11 * ref


def test_sum_squares_float32_keeps_precision():
    # a float32 accumulator would stall at 2**24; double accumulation does not
    x = np.ones(20_000_001, np.float32)
    assert ops.sum_squares(x) == 20_000_001.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_squares_same_bits_every_level_and_thread_count(rng, dtype):
    xs = [data(rng, 1_000_003, dtype), data(rng, 77, dtype)]
    results = set()
    previous = _core.config.get_simd_level()
    try:
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            for t in (1, 2, 3):
                with pyfastopt.threads(t):
                    results.add(ops.sum_squares(xs).hex())
    finally:
        _core.config.set_simd_level(previous)
    assert len(results) == 1


def test_sum_squares_mixed_dtypes_and_views(rng):
    a = data(rng, 1000, np.float32)
    b = data(rng, 3000, np.float64)[::3]  # non-contiguous: copied
    c = np.asfortranarray(data(rng, 12, np.float64).reshape(3, 4))
    ref = sumsq_reference([a, b, c])
    assert abs(ops.sum_squares([a, b, c]) - ref) <= 1e-12 * ref
    assert abs(ops.sum_squares((a, b)) - sumsq_reference([a, b])) <= 1e-12 * ref


def test_sum_squares_empty_and_special():
    assert ops.sum_squares(np.zeros(0)) == 0.0
    assert ops.sum_squares([]) == 0.0
    assert ops.l2_norm([np.zeros((0, 3), np.float32)]) == 0.0
    assert math.isnan(ops.sum_squares(np.array([1.0, np.nan])))
    assert ops.sum_squares(np.array([1.0, -np.inf], np.float32)) == math.inf
    assert ops.l2_norm(np.array([3.0, 4.0])) == 5.0
    assert ops.l2_norm([3.0, 4.0]) == 5.0


def test_sum_squares_bad_input():
    with pytest.raises(TypeError, match=r"x must have dtype float32 or float64, got int64"):
        ops.sum_squares(np.arange(3))
    with pytest.raises(TypeError, match=r"x\[1\] must have dtype.*bool"):
        ops.sum_squares([np.zeros(2), np.zeros(2, bool)])
    with pytest.raises(TypeError, match="x must be an array"):
        ops.sum_squares(None)
    with pytest.raises(TypeError, match=r"x\[0\] must have dtype float32 or float64, got object"):
        ops.sum_squares([object()])
    with pytest.raises(TypeError, match=r"x must have dtype float32 or float64, got <U3"):
        ops.sum_squares("abc")
