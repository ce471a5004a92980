"""matmul_int8 and the int8 GEMM's output stages: exact against an int64 NumPy reference
on every SIMD level, every zero point, awkward shapes and strides, any thread count."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import QSIMD_LEVELS

import pyfastopt
from pyfastopt import _core
from pyfastopt.quant import matmul_int8

_staged = _core.qgemm.qgemm_staged

U8_ZPS = [0, 1, 127, 128, 255]
I8_ZPS = [-128, -1, 0, 1, 127]


def reference(a, za, b, zb):
    """sum_k (A - za)(B - zb) in int64 (exact)."""
    return (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)


def wrap32(x):
    """int64 -> int32 modulo 2**32 (what int32 wrap-around arithmetic gives)."""
    return ((np.asarray(x, dtype=np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


def rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


def check(a, za, b, zb):
    c = matmul_int8(a, za, b, zb)
    ref = reference(a, za, b, zb)
    assert c.dtype == np.int32
    assert c.shape == ref.shape
    assert np.abs(ref).max(initial=0) < 2**31  # the exact regime
    np.testing.assert_array_equal(c, ref)


def _shapes():
    fixed = [(m, 37, 29) for m in range(1, 71)]
    fixed += [(13, n, 29) for n in range(1, 71)]
    fixed += [(13, 37, k) for k in range(1, 71)]
    rng = np.random.default_rng(7)
    fixed += [tuple(int(v) for v in rng.integers(1, 71, size=3)) for _ in range(60)]
    return fixed


SHAPES = _shapes()


def test_sweep_every_dimension(qsimd, rng):
    for m, n, k in SHAPES:
        a = rand(rng, np.uint8, (m, k))
        b = rand(rng, np.int8, (k, n))
        check(a, int(rng.integers(0, 256)), b, int(rng.integers(-128, 128)))


@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("b_dtype", [np.int8, np.uint8])
def test_every_zero_point(qsimd, rng, a_dtype, b_dtype):
    a = rand(rng, a_dtype, (19, 45))
    b = rand(rng, b_dtype, (45, 35))
    zas = U8_ZPS if a_dtype == np.uint8 else I8_ZPS
    zbs = U8_ZPS if b_dtype == np.uint8 else I8_ZPS
    for za in zas:
        for zb in zbs:
            check(a, za, b, zb)


@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("b_dtype", [np.int8, np.uint8])
def test_extremes_large_k(qsimd, a_dtype, b_dtype):
    k = 4096
    ai, bi = np.iinfo(a_dtype), np.iinfo(b_dtype)
    rng = np.random.default_rng(3)
    a = np.where(rng.random((14, k)) < 0.5, ai.min, ai.max).astype(a_dtype)
    a[0] = ai.max
    a[1] = ai.min
    b = np.where(rng.random((k, 35)) < 0.5, bi.min, bi.max).astype(b_dtype)
    b[:, 0] = bi.min
    b[:, 1] = bi.max
    for za in (ai.min, ai.max):
        for zb in (bi.min, bi.max):
            check(a, int(za), b, int(zb))
    check(a, 0, b, 0)


def test_wraps_modulo_2_32_beyond_int32(simd):
    # 40000 * 255 * 255 > 2**31: the result is the true value modulo 2**32 (documented)
    k = 40000
    a = np.full((3, k), 255, dtype=np.uint8)
    b = np.full((k, 5), 127, dtype=np.int8)
    ref = reference(a, 0, b, -128)
    assert ref.max() >= 2**31
    np.testing.assert_array_equal(matmul_int8(a, 0, b, -128), wrap32(ref))


def test_strided_and_transposed_views(qsimd, rng):
    a_big = rand(rng, np.int8, (60, 90))
    b_big = rand(rng, np.int8, (90, 70))
    cases = [
        (a_big[::2, ::3], b_big[::3, ::2]),
        (np.asfortranarray(a_big[:33, :41]), np.asfortranarray(b_big[:41, :29])),
        (a_big[::-1, :50], b_big[:50, ::-1]),
        (b_big.T[:, :60], a_big.T[:60, :17]),
    ]
    for a, b in cases:
        assert not (a.flags.c_contiguous and b.flags.c_contiguous)
        check(a, 3, b, -5)


def test_one_d_operands_follow_numpy(rng):
    a = rand(rng, np.uint8, (7, 11))
    b = rand(rng, np.int8, (11, 5))
    v = rand(rng, np.uint8, (11,))
    w = rand(rng, np.int8, (11,))
    got = matmul_int8(v, 2, b, 1)
    assert got.shape == (5,)
    np.testing.assert_array_equal(got, reference(v, 2, b, 1))
    got = matmul_int8(a, 2, w, 1)
    assert got.shape == (7,)
    np.testing.assert_array_equal(got, reference(a, 2, w, 1))
    got = matmul_int8(v, 2, w, 1)
    assert got.shape == ()
    assert int(got) == int(reference(v, 2, w, 1))


@pytest.mark.parametrize(("m", "k", "n"), [(0, 5, 3), (4, 5, 0), (0, 0, 0), (4, 0, 3)])
def test_empty_shapes(qsimd, m, k, n):
    a = np.full((m, k), 9, dtype=np.uint8)
    b = np.full((k, n), -7, dtype=np.int8)
    c = matmul_int8(a, 200, b, 100)
    assert c.shape == (m, n)
    assert c.dtype == np.int32
    np.testing.assert_array_equal(c, np.zeros((m, n), dtype=np.int32))


def test_thread_counts_identical(rng):
    # 203 * 1001 * 211 multiply-adds: enough work for 3 threads on every table (driver: 8M
    # per thread by default, 1M for the AVX2 and scalar tables)
    a = rand(rng, np.uint8, (203, 1001))
    b = rand(rng, np.int8, (1001, 211))
    cs = rng.uniform(1e-4, 1e-2, 211).astype(np.float32)
    rs = rng.uniform(0.5, 2.0, 203).astype(np.float32)
    bias = rng.standard_normal(211).astype(np.float32)
    outs_i, outs_f = [], []
    for t in (1, 2, 3):
        pyfastopt.set_num_threads(t)
        outs_i.append(matmul_int8(a, 77, b, -3))
        outs_f.append(_staged(a, 77, b, -3, "f32", cs, rs, bias, True, None, None, t))
    np.testing.assert_array_equal(outs_i[0], reference(a, 77, b, -3))
    for o in outs_i[1:]:
        np.testing.assert_array_equal(o, outs_i[0])
    for o in outs_f[1:]:
        assert o.tobytes() == outs_f[0].tobytes()


def test_batch32_layer_thread_counts_identical(qsimd, rng):
    # the batch-32 MLP's 784 x 512 layer (12.8M multiply-adds): split over 2-3 threads
    # on the AVX2 and scalar tables since their 1M-per-thread threshold (the 8M default
    # kept it on one); every stage bitwise identical for 1, 2 and 3 threads
    a = rand(rng, np.uint8, (32, 784))
    b = rand(rng, np.int8, (784, 512))
    cs = rng.uniform(1e-4, 1e-2, 512).astype(np.float32)
    bias = rng.standard_normal(512).astype(np.float32)
    want = reference(a, 91, b, 0)
    outs = []
    for t in (1, 2, 3):
        pyfastopt.set_num_threads(t)
        np.testing.assert_array_equal(matmul_int8(a, 91, b, 0), want)
        outs.append(
            (
                _staged(a, 91, b, 0, "f32", cs, None, bias, True, None, None, t).tobytes(),
                _staged(a, 91, b, 0, "u8", cs, None, None, False, 7, None, t).tobytes(),
            )
        )
    assert outs[1] == outs[0] and outs[2] == outs[0]


def test_same_result_on_every_level(rng):
    a = rand(rng, np.uint8, (29, 67))
    b = rand(rng, np.int8, (67, 45))
    cs = rng.uniform(1e-4, 1e-2, 45).astype(np.float32)
    bias = rng.standard_normal(45).astype(np.float32)
    previous = _core.config.get_simd_level()
    got = []
    try:
        for level in QSIMD_LEVELS:
            _core.config.set_simd_level(level)
            got.append(_staged(a, 5, b, 2, "f32", cs, None, bias, False))
            got.append(_staged(a, 5, b, 2, "u8", cs * 0.1, None, None, True, 100))
    finally:
        _core.config.set_simd_level(previous)
    for i in range(2, len(got)):
        assert got[i].tobytes() == got[i % 2].tobytes()


# ---- output stages ---------------------------------------------------------------------


def f32_stage(acc, col_scale, row_scale=None, bias=None, relu=False):
    """The float32 stage exactly as qgemm.h specifies it (one rounding per operation)."""
    y = acc.astype(np.float32) * col_scale.astype(np.float32)
    if row_scale is not None:
        y = y * row_scale.astype(np.float32)[:, None]
    if bias is not None:
        y = y + bias.astype(np.float32)
    if relu:
        y = np.where(y < 0, np.float32(0), y)
    return y.astype(np.float32)


def requant_stage(acc, multiplier, out_zp, dtype, relu=False):
    info = np.iinfo(dtype)
    x = acc.astype(np.float32) * multiplier.astype(np.float32)
    q = np.rint(x).astype(np.int64) + out_zp
    lo = max(int(info.min), out_zp) if relu else int(info.min)
    return np.clip(q, lo, int(info.max)).astype(dtype)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("per_row", [False, True])
def test_float_stage(qsimd, rng, relu, per_row):
    m, k, n = 37, 53, 41
    a = rand(rng, np.uint8, (m, k))
    b = rand(rng, np.int8, (k, n))
    za, zb = 131, -4
    acc = reference(a, za, b, zb)
    cs = rng.uniform(1e-4, 1e-3, n).astype(np.float32)
    rs = rng.uniform(0.5, 2.0, m).astype(np.float32) if per_row else None
    bias = rng.standard_normal(n).astype(np.float32)
    got = _staged(a, za, b, zb, "f32", cs, rs, bias, relu)
    want = f32_stage(acc, cs, rs, bias, relu)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # bit-exact rule
    # and close to the float64 formula
    y64 = acc * cs.astype(np.float64) * (rs[:, None] if per_row else 1.0) + bias
    if relu:
        assert (y64 < 0).any()  # relu has something to do
        y64 = np.maximum(y64, 0)
    np.testing.assert_allclose(got, y64, rtol=3e-7 * 4, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("relu", [False, True])
def test_requantize_stage(qsimd, rng, dtype, relu):
    m, k, n = 23, 77, 39
    a = rand(rng, np.int8, (m, k))
    b = rand(rng, np.int8, (k, n))
    acc = reference(a, -3, b, 5)
    mult = rng.uniform(2e-3, 8e-3, n).astype(np.float32)
    out_zp = 120 if dtype == np.uint8 else -10
    got = _staged(a, -3, b, 5, "u8" if dtype == np.uint8 else "i8", mult, None, None, relu, out_zp)
    want = requant_stage(acc, mult, out_zp, dtype, relu)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    # saturation and (with relu) the clamp at the zero point are both exercised
    info = np.iinfo(dtype)
    assert (got == info.max).any()
    assert (got == (out_zp if relu else info.min)).any()
    # float64 formula: within half a step (ties may round either way in float32)
    x64 = acc * mult.astype(np.float64)
    lo = max(int(info.min), out_zp) if relu else int(info.min)
    ref = np.clip(x64 + out_zp, lo, int(info.max))
    assert np.abs(got.astype(np.float64) - ref).max() <= 0.5 + 1e-3


def test_round_half_to_even_in_requantize(simd):
    # acc = 1, 3, 5, 7 (times 0.5 -> .5 ties) must round to even
    a = np.array([[1], [3], [5], [7], [-1], [-3]], dtype=np.int8)
    b = np.array([[1]], dtype=np.int8)
    got = _staged(a, 0, b, 0, "i8", np.array([0.5], np.float32), None, None, False, 0)
    np.testing.assert_array_equal(got[:, 0], [0, 2, 2, 4, 0, -2])


def test_col_bias_is_added_in_int32(qsimd, rng):
    a = rand(rng, np.uint8, (9, 20))
    b = rand(rng, np.int8, (20, 11))
    cb = rng.integers(-(2**20), 2**20, 11).astype(np.int32)
    got = _staged(a, 1, b, 2, "i32", None, None, None, False, None, cb)
    np.testing.assert_array_equal(got, reference(a, 1, b, 2) + cb)


# ---- parity with PyTorch -----------------------------------------------------------------


def test_torch_int_mm_parity(rng):
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "_int_mm"):
        pytest.skip("torch._int_mm not available")
    a = rand(rng, np.int8, (32, 64))
    b = rand(rng, np.int8, (64, 40))
    try:
        want = torch._int_mm(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    except RuntimeError as e:  # shape rules differ across versions/backends
        pytest.skip(f"torch._int_mm refused the shape: {e}")
    np.testing.assert_array_equal(matmul_int8(a, 0, b, 0), want)


# ---- errors ---------------------------------------------------------------------------------


def test_bad_dtypes_name_the_argument():
    a = np.zeros((2, 3), np.uint8)
    b = np.zeros((3, 4), np.int8)
    with pytest.raises(TypeError, match="a_q"):
        matmul_int8(a.astype(np.float32), 0, b, 0)
    with pytest.raises(TypeError, match="b_q"):
        matmul_int8(a, 0, b.astype(np.int16), 0)
    with pytest.raises(TypeError, match="a_q"):
        matmul_int8([[1, 2, 3]], 0, b, 0)  # int64 after conversion


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        matmul_int8(np.zeros((2, 3), np.uint8), 0, np.zeros((4, 5), np.int8), 0)
    with pytest.raises(ValueError, match=r"\(2, 3, 1\).*\(4, 1, 5\)"):
        # N-D operands broadcast like numpy.matmul: batch 2 against 4 does not
        matmul_int8(np.zeros((2, 3, 1), np.uint8), 0, np.zeros((4, 1, 5), np.int8), 0)


@pytest.mark.parametrize(
    ("za", "zb", "name"),
    [
        (256, 0, "a_zero_point"),
        (-1, 0, "a_zero_point"),
        (0, 128, "b_zero_point"),
        (0, -129, "b_zero_point"),
        (2**70, 0, "a_zero_point"),
        (np.uint64(2**64 - 1), 0, "a_zero_point"),
        (np.array(300), 0, "a_zero_point"),
    ],
)
def test_out_of_range_zero_points(za, zb, name):
    with pytest.raises(ValueError, match=name):
        matmul_int8(np.zeros((2, 3), np.uint8), za, np.zeros((3, 4), np.int8), zb)


@pytest.mark.parametrize(
    ("za", "zb", "name"),
    [
        (1.0, 0, "a_zero_point"),
        (True, 0, "a_zero_point"),
        (np.bool_(True), 0, "a_zero_point"),
        ("3", 0, "a_zero_point"),
        (np.array(["1"]), 0, "a_zero_point"),  # 1-element int arrays are valid (ONNX)
        (0, None, "b_zero_point"),
        (0, np.float32(2), "b_zero_point"),
    ],
)
def test_zero_points_of_the_wrong_type(za, zb, name):
    # the shared rule (pyfastopt/_validate.py): a wrong type is a TypeError
    with pytest.raises(TypeError, match=name):
        matmul_int8(np.zeros((2, 3), np.uint8), za, np.zeros((3, 4), np.int8), zb)


def test_zero_point_as_0d_array():
    a = np.full((2, 3), 130, np.uint8)
    b = np.ones((3, 4), np.int8)
    got = matmul_int8(a, np.array(128, np.int64), b, np.array(-1, np.int16))
    np.testing.assert_array_equal(got, np.full((2, 4), 3 * 2 * 2))


def test_int8_a_zero_point_range():
    a = np.zeros((2, 3), np.int8)
    b = np.zeros((3, 4), np.int8)
    with pytest.raises(ValueError, match="a_zero_point"):
        matmul_int8(a, 128, b, 0)
    got = matmul_int8(a, np.int64(-128), b, np.int8(3))
    np.testing.assert_array_equal(got, np.full((2, 4), 3 * 128 * -3))
