"""pyfastopt.matmul against its contract (numpy.matmul semantics): every M, N, K around
the register tiles and cache blocks, empty and prime shapes, all memory layouts, 1-D
promotion, batch broadcasting, out= (guards, aliasing, rejection), NaN/inf, argument
checking, and bitwise identity across thread counts, on every SIMD level.

Values are compared with ``matmul_reference`` (np.matmul on float64 copies) under the
elementwise forward-error bound ``2 K eps |A| @ |B|`` (see that module's docstring);
``test_reference_bound_catches_wrong_results`` checks that the bound rejects a missing
k term, a wrong tile and float32 accumulation of float64 input.
"""

from __future__ import annotations

import re

import matmul_reference as ref
import numpy as np
import pytest
from conftest import DTYPES

import pyfastopt

if not hasattr(pyfastopt, "matmul"):
    pytest.skip("pyfastopt.matmul is not implemented yet", allow_module_level=True)

BLOCK_K = [63, 64, 65, 127, 128, 129, 255, 256, 257, 383, 384, 385, 511, 512, 513, 1024, 1025]
BAD_DTYPES = [
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
    np.float16,
    np.complex64,
    np.complex128,
    object,
]


# ----------------------------------------------------------------------------- helpers


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def check(a, b, what, with_out=True):
    """matmul(a, b) and matmul(a, b, out=guarded) against the reference; inputs intact."""
    a0, b0 = np.array(a, copy=True), np.array(b, copy=True)
    got = pyfastopt.matmul(a, b)
    ref.assert_matmul_close(got, a0, b0, what)
    if isinstance(a, np.ndarray) and isinstance(got, np.ndarray):
        assert not np.shares_memory(got, a) and not np.shares_memory(got, b), what
    if with_out:
        expected_shape = np.shape(np.matmul(a0, b0))
        out, buf = ref.guarded_out(expected_shape, ref.result_dtype(a0, b0))
        res = pyfastopt.matmul(a, b, out=out)
        assert res is out, f"{what}: out= must be returned"
        ref.assert_matmul_close(out, a0, b0, f"{what}, out=")
        ref.assert_guards_intact(buf, what)
    np.testing.assert_array_equal(a, a0, err_msg=f"{what}: a modified")
    np.testing.assert_array_equal(b, b0, err_msg=f"{what}: b modified")
    return got


def mnk_what(dtype, m, n, k, extra=""):
    return f"{np.dtype(dtype).name} M={m} N={n} K={k}{extra}"


# ----------------------------------------------------------------------------- the bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_bound_catches_wrong_results(rng, dtype):
    """The bound accepts a correct result (BLAS, and rounding anywhere within K/2 ulps of
    |A||B|) and rejects every plausible kernel bug by a wide margin."""
    for m, n, k in [(17, 19, 33), (40, 30, 257), (8, 16, 1000)]:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        exact = ref.matmul(a, b)
        good = np.matmul(a, b)
        ref.assert_matmul_close(good, a, b, "np.matmul")
        absab = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
        eps = np.finfo(dtype).eps
        shaky = exact + 0.5 * k * eps * absab * np.sign(rng.standard_normal(exact.shape))
        ref.assert_matmul_close(shaky.astype(dtype), a, b, "perturbed within K/2 eps")

        last = a[:, -1:].astype(np.float64) * b[-1:, :].astype(np.float64)
        wrong = {
            "missing last k term everywhere": (exact - last).astype(dtype),
            "missing first k term everywhere": (
                exact - a[:, :1].astype(np.float64) * b[:1, :].astype(np.float64)
            ).astype(dtype),
            "last column from the previous tile": np.concatenate(
                [good[:, :-1], good[:, -2:-1]], axis=1
            ),
            "last row from the previous tile": np.concatenate([good[:-1], good[-2:-1]]),
            "k loop stops one block early": ref.matmul(a[:, : k - 8], b[: k - 8]).astype(dtype),
        }
        i, j = np.unravel_index(np.argmax(np.abs(last)), last.shape)
        one = good.copy()
        one[i, j] = dtype(exact[i, j] - last[i, j])
        wrong["one element missing its last k term"] = one
        one_bit = good.copy()
        one_bit[i, j] = dtype(exact[i, j] + 4 * k * eps * absab[i, j])
        wrong["one element off by 4 K eps |A||B|"] = one_bit
        if dtype == np.float64:
            wrong["float64 accumulated in float32"] = np.matmul(
                a.astype(np.float32), b.astype(np.float32)
            ).astype(np.float64)
        for label, c in wrong.items():
            with pytest.raises(AssertionError, match="outside the error bound"):
                ref.assert_matmul_close(c, a, b, label)
    # dtype and shape are part of the check
    a, b = rand(rng, (3, 4), dtype), rand(rng, (4, 5), dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(AssertionError, match="dtype"):
        ref.assert_matmul_close(np.matmul(a, b).astype(other), a, b)
    with pytest.raises(AssertionError, match="shape"):
        ref.assert_matmul_close(np.matmul(a, b).T, a, b)


# ----------------------------------------------------------------------------- shape sweeps


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_m(simd, rng, dtype):
    n, k = 17, 33
    b = rand(rng, (k, n), dtype)
    for m in range(1, 41):
        check(rand(rng, (m, k), dtype), b, mnk_what(dtype, m, n, k, f" {simd}"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_n(simd, rng, dtype):
    m, k = 19, 33
    a = rand(rng, (m, k), dtype)
    for n in range(1, 71):  # two full 32-wide float32 AVX-512 tiles and the edges
        check(a, rand(rng, (k, n), dtype), mnk_what(dtype, m, n, k, f" {simd}"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_k_and_k_block_edges(simd, rng, dtype):
    m, n = 13, 37
    for k in [*range(1, 41), *BLOCK_K]:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        check(a, b, mnk_what(dtype, m, n, k, f" {simd}"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_primes_and_large(simd, rng, dtype):
    shapes = [(97, 101, 127), (127, 97, 101), (101, 127, 97), (300, 513, 257), (1024, 64, 1000)]
    for m, n, k in shapes:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        check(a, b, mnk_what(dtype, m, n, k, f" {simd}"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_skinny(simd, rng, dtype):
    """M (or N) from 1 to 16 against large K and N (or M). One reference for the largest
    operand serves every prefix (rows of A @ B depend only on the rows of A)."""
    k, big = 515, 1031
    a_all, b = rand(rng, (16, k), dtype), rand(rng, (k, big), dtype)
    expected, bound = ref.matmul(a_all, b), ref.gemm_bound(a_all, b, dtype)
    for m in range(1, 17):
        got = pyfastopt.matmul(a_all[:m], b)
        what = mnk_what(dtype, m, big, k, f" {simd}")
        ref.assert_close(got, expected[:m], bound[:m], what, dtype=dtype, shape=(m, big))
    a, b_all = rand(rng, (big, k), dtype), rand(rng, (k, 16), dtype)
    expected, bound = ref.matmul(a, b_all), ref.gemm_bound(a, b_all, dtype)
    for n in (1, 2, 3, 5, 8, 15, 16):
        got = pyfastopt.matmul(a, np.ascontiguousarray(b_all[:, :n]))
        what = mnk_what(dtype, big, n, k, f" {simd}")
        ref.assert_close(got, expected[:, :n], bound[:, :n], what, dtype=dtype, shape=(big, n))
    check(rand(rng, (5, k), dtype), b, mnk_what(dtype, 5, big, k, " out="))
    check(rand(rng, (8, 512), dtype), rand(rng, (512, 4096), dtype), "8x4096x512")


@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_dynamic_range(simd, rng, dtype):
    """Entries spanning 2**-20..2**20: the bound is elementwise, so a term lost among
    large ones is still caught in a small output element."""
    m, n, k = 29, 41, 70
    a = rand(rng, (m, k), dtype) * np.exp2(rng.integers(-20, 21, (m, 1))).astype(dtype)
    b = rand(rng, (k, n), dtype) * np.exp2(rng.integers(-20, 21, (1, n))).astype(dtype)
    check(a, b, f"{np.dtype(dtype).name} dynamic range")


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_sizes(simd, dtype):
    cases = [
        ((0, 5), (5, 3)),
        ((4, 5), (5, 0)),
        ((0, 0), (0, 0)),
        ((4, 0), (0, 3)),  # K = 0: zeros
        ((1, 0), (0, 1)),
        ((37, 0), (0, 41)),
        ((0,), (0,)),  # vector . vector with K = 0: 0.0
        ((3, 0), (0,)),
        ((0,), (0, 6)),
        ((0, 4, 5), (5, 3)),
        ((2, 3, 0), (0, 4)),
        ((2, 0, 5), (3, 1, 5, 4)),
    ]
    for sa, sb in cases:
        a, b = np.ones(sa, dtype), np.ones(sb, dtype)
        expected = np.matmul(a, b)
        what = f"{sa} @ {sb} {np.dtype(dtype).name}"
        got = check(a, b, what)
        got = np.asarray(got)
        assert got.shape == np.shape(expected) and got.dtype == dtype, what
        assert (got == 0).all(), f"{what}: K = 0 must give exact zeros, got {got}"
        out, buf = ref.guarded_out(np.shape(expected), dtype)
        assert pyfastopt.matmul(a, b, out=out) is out
        assert (out == 0).all(), f"{what}: out= not zero-filled for K = 0"
        ref.assert_guards_intact(buf, what)


# ----------------------------------------------------------------------------- layouts


def _layouts(rng, rows, cols, dtype):
    """The same kind of (rows, cols) operand in many memory layouts."""
    c = rand(rng, (rows, cols), dtype)
    flat = rand(rng, rows * cols + 1, dtype)
    big = rand(rng, (2 * rows + 1, 3 * cols + 2), dtype)
    padded = rand(rng, (rows, 5, cols), dtype)
    ro = c.copy()
    ro.flags.writeable = False
    return {
        "C": c,
        "transposed view": rand(rng, (cols, rows), dtype).T,
        "Fortran order": np.asfortranarray(c),
        "sliced [::2, 1::3]": big[::2, 1::3][:rows, :cols],
        "negative strides": big[::-2, ::-3][:rows, :cols],
        "unaligned": flat[1:].reshape(rows, cols),
        "stride-0 rows": np.broadcast_to(c[:1], (rows, cols)),
        "padded rows (lda > cols)": padded[:, 3, :],
        "read-only": ro,
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts(simd, rng, dtype):
    m, k, n = 23, 37, 45
    a_views = _layouts(rng, m, k, dtype)
    b_views = _layouts(rng, k, n, dtype)
    for na, a in a_views.items():
        for nb, b in b_views.items():
            check(a, b, f"a {na} @ b {nb} ({np.dtype(dtype).name})", with_out=na == "C")


# ----------------------------------------------------------------------------- 1-D and batches


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_promotion(simd, rng, dtype):
    for k in (1, 17, 100):
        m, n = 9, 33
        v, w = rand(rng, k, dtype), rand(rng, 2 * k, dtype)[::-2]
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        cases = {
            "vec @ mat": (v, b),
            "mat @ vec": (a, v),
            "strided vec @ mat": (w, b),
            "mat @ negative-stride vec": (a, w),
            "vec @ batch": (v, rand(rng, (3, k, n), dtype)),
            "batch @ vec": (rand(rng, (2, 3, m, k), dtype), v),
        }
        for label, (x, y) in cases.items():
            expected = np.matmul(x, y)
            got = check(x, y, f"{label} K={k}")
            assert np.shape(got) == expected.shape, (label, np.shape(got), expected.shape)
        for x, y in [(v, v), (v, w), (w, w)]:
            what = f"vec @ vec K={k}"
            got = check(x, y, what)
            assert np.ndim(got) == 0, f"{what}: got shape {np.shape(got)}, expected 0-d"
            assert isinstance(got, (np.ndarray, np.generic)) and got.dtype == dtype, (
                f"{what}: got {type(got).__name__}, expected a {np.dtype(dtype).name} scalar"
            )


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_broadcast(simd, rng, dtype):
    m, k, n = 11, 19, 23

    def r(*shape):
        return rand(rng, shape, dtype)

    base = r(8, m, k)
    cases = {
        "(2,3,M,K) @ (K,N)": (r(2, 3, m, k), r(k, n)),
        "(M,K) @ (5,K,N)": (r(m, k), r(5, k, n)),
        "(3,1,M,K) @ (1,4,K,N)": (r(3, 1, m, k), r(1, 4, k, n)),
        "(1,M,K) @ (6,K,N)": (r(1, m, k), r(6, k, n)),
        "(2,1,M,K) @ (3,K,N)": (r(2, 1, m, k), r(3, k, n)),
        "(2,1,2,M,K) @ (3,1,K,N)": (r(2, 1, 2, m, k), r(3, 1, k, n)),
        "(4,M,K) @ (4,N,K).T(0,2,1)": (r(4, m, k), r(4, n, k).transpose(0, 2, 1)),
        "(4,K,M).T(0,2,1) @ (4,K,N)": (r(4, k, m).transpose(0, 2, 1), r(4, k, n)),
        "stacked transposed both": (r(3, k, m).transpose(0, 2, 1), r(3, n, k).transpose(0, 2, 1)),
        "batch-strided [::2]": (base[::2], r(4, k, n)),
        "batch-reversed [::-1]": (base[::-1], r(k, n)),
        "batch axis last": (r(m, k, 3).transpose(2, 0, 1), r(3, k, n)),
        "stride-0 batch": (np.broadcast_to(r(m, k), (3, m, k)), r(3, k, n)),
        "(0,M,K) @ (K,N)": (r(0, m, k), r(k, n)),
        "(2,0,M,K) @ (1,K,N)": (r(2, 0, m, k), r(1, k, n)),
    }
    for label, (a, b) in cases.items():
        got = check(a, b, f"{label} {np.dtype(dtype).name}")
        assert np.shape(got) == np.matmul(a, b).shape, label


# ----------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_aliasing_inputs(simd, rng, dtype):
    """out may be (or overlap) a or b: the result is as if both were read first."""
    for n in (1, 5, 17, 64, 130):
        s, t = rand(rng, (n, n), dtype), rand(rng, (n, n), dtype)
        what = f"n={n} {np.dtype(dtype).name}"

        x = s.copy()
        assert pyfastopt.matmul(x, x, out=x) is x
        ref.assert_matmul_close(x, s, s, f"a @ a, out=a, {what}")

        x = s.copy()
        assert pyfastopt.matmul(x, t, out=x) is x
        ref.assert_matmul_close(x, s, t, f"a @ b, out=a, {what}")

        y = t.copy()
        assert pyfastopt.matmul(s, y, out=y) is y
        ref.assert_matmul_close(y, s, t, f"a @ b, out=b, {what}")

        x = s.copy()
        assert pyfastopt.matmul(x.T, x, out=x) is x
        ref.assert_matmul_close(x, s.T, s, f"a.T @ a, out=a, {what}")

        x = s.copy()
        assert pyfastopt.matmul(x, x[::-1, ::-1], out=x) is x
        ref.assert_matmul_close(x, s, s[::-1, ::-1], f"a @ a[::-1, ::-1], out=a, {what}")

        # partial overlap: out starts one row into a's buffer
        buf = np.concatenate([s.ravel(), t.ravel()[:n]])
        a_view, out_view = buf[: n * n].reshape(n, n), buf[n : n + n * n].reshape(n, n)
        assert pyfastopt.matmul(a_view, t, out=out_view) is out_view
        ref.assert_matmul_close(out_view, s, t, f"out overlapping a by n*(n-1), {what}")

        v = s[0].copy()
        if n > 1:  # vector results: mat @ vec with out = the vector
            pyfastopt.matmul(s, v, out=v)
            ref.assert_matmul_close(v, s, s[0], f"mat @ vec, out=vec, {what}")

    a3, b3 = rand(rng, (3, 17, 17), dtype), rand(rng, (3, 17, 17), dtype)
    x = a3.copy()
    assert pyfastopt.matmul(x, b3, out=x) is x
    ref.assert_matmul_close(x, a3, b3, "batched out=a")
    y = b3.copy()
    assert pyfastopt.matmul(a3, y, out=y) is y
    ref.assert_matmul_close(y, a3, b3, "batched out=b")


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_vector_and_batched(rng, dtype):
    a, b, v = rand(rng, (4, 6, 5), dtype), rand(rng, (5, 7), dtype), rand(rng, 5, dtype)
    out = np.full((4, 6, 7), np.nan, dtype)
    assert pyfastopt.matmul(a, b, out=out) is out
    ref.assert_matmul_close(out, a, b, "batched out=")
    out = np.full((4, 6), np.nan, dtype)
    assert pyfastopt.matmul(a, v, out=out) is out
    ref.assert_matmul_close(out, a, v, "batch @ vec out=")
    out = np.full((), np.nan, dtype)  # vec @ vec into a 0-d out, as NumPy allows
    got = pyfastopt.matmul(v, v, out=out)
    assert got is out
    ref.assert_matmul_close(out, v, v, "vec @ vec out=0-d")


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_rejected(dtype):
    a, b = np.ones((6, 5), dtype), np.ones((5, 4), dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    read_only = np.zeros((6, 4), dtype)
    read_only.flags.writeable = False
    shape_errors = {
        "wrong shape": np.zeros((6, 5), dtype),
        "transposed shape": np.zeros((4, 6), dtype),
        "extra batch dim": np.zeros((1, 6, 4), dtype),
        "flat": np.zeros(24, dtype),
    }
    layout_errors = {
        "strided": np.zeros((6, 8), dtype)[:, ::2],
        "Fortran order": np.zeros((6, 4), dtype, order="F"),
        "transposed view": np.zeros((4, 6), dtype).T,
        "negative stride": np.zeros((6, 4), dtype)[::-1],
        "read-only": read_only,
    }
    for label, out in shape_errors.items():
        with pytest.raises(ValueError, match=r"\bout\b"):
            pyfastopt.matmul(a, b, out=out)
        assert (out == 0).all(), f"{label}: out modified by a failing call"
    for label, out in layout_errors.items():
        with pytest.raises(ValueError, match=r"\bout\b"):
            pyfastopt.matmul(a, b, out=out)
        assert (out == 0).all(), f"{label}: out modified by a failing call"
    for out in (np.zeros((6, 4), other), np.zeros((6, 4), np.int64), [[0.0] * 4] * 6):
        with pytest.raises((TypeError, ValueError), match=r"\bout\b"):
            pyfastopt.matmul(a, b, out=out)
    with pytest.raises((TypeError, ValueError), match=r"\bout\b"):  # f32 @ f64 is float64
        pyfastopt.matmul(
            a.astype(np.float32), b.astype(np.float64), out=np.zeros((6, 4), np.float32)
        )


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_for_any_thread_count(simd, rng, dtype):
    cases = {
        "200x300x150": (rand(rng, (200, 150), dtype), rand(rng, (150, 300), dtype)),
        "7x1000x1000": (rand(rng, (7, 1000), dtype), rand(rng, (1000, 1000), dtype)),
        "64x96x4096 (long K)": (rand(rng, (64, 4096), dtype), rand(rng, (4096, 96), dtype)),
        "2x3x50000": (rand(rng, (2, 50000), dtype), rand(rng, (50000, 3), dtype)),
        "batch (6,64,96)@(96,80)": (rand(rng, (6, 64, 96), dtype), rand(rng, (96, 80), dtype)),
        "vec @ (1000,1000)": (rand(rng, 1000, dtype), rand(rng, (1000, 1000), dtype)),
    }
    for label, (a, b) in cases.items():
        fresh, outs = [], []
        for t in (1, 2, 3):
            with pyfastopt.threads(t):
                fresh.append(np.asarray(pyfastopt.matmul(a, b)))
                out = np.full(fresh[0].shape, np.nan, dtype)
                pyfastopt.matmul(a, b, out=out)
                outs.append(out)
        ref.assert_matmul_close(fresh[0], a, b, f"{label} {simd}")
        ref.assert_matmul_close(outs[0], a, b, f"{label} {simd} out=")
        for kind, results in (("", fresh), (" out=", outs)):
            for t, r in zip((2, 3), results[1:]):
                assert r.tobytes() == results[0].tobytes(), (
                    f"{label} {simd} {np.dtype(dtype).name}{kind}: threads={t} differs bitwise "
                    f"from threads=1 (max diff "
                    f"{np.max(np.abs(r.astype(np.float64) - results[0])):.3e})"
                )


# ----------------------------------------------------------------------------- dtypes


def test_mixed_dtypes_promote_like_numpy(simd, rng):
    a32, b64 = rand(rng, (13, 21), np.float32), rand(rng, (21, 35), np.float64)
    a64, b32 = rand(rng, (13, 21), np.float64), rand(rng, (21, 35), np.float32)
    for a, b in [(a32, b64), (a64, b32), (a32[0], b64), (a64, b32[:, 0]), (a32[0], b64[:, 0])]:
        got = check(a, b, f"{a.dtype}{a.shape} @ {b.dtype}{b.shape}")
        assert got.dtype == np.matmul(a, b).dtype == np.float64
    for dtype in DTYPES:
        a, b = rand(rng, (5, 3), dtype), rand(rng, (3, 4), dtype)
        assert pyfastopt.matmul(a, b).dtype == dtype  # no upcast of float32


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_dtype_names_the_argument(bad):
    good = np.ones((3, 3), np.float32)
    bad_arr = np.ones((3, 3), bad)
    with pytest.raises(TypeError, match=r"\ba\b") as ea:
        pyfastopt.matmul(bad_arr, good)
    with pytest.raises(TypeError, match=r"\bb\b") as eb:
        pyfastopt.matmul(good, bad_arr)
    assert str(ea.value) != str(eb.value), "the message must say which argument is bad"
    with pytest.raises(TypeError, match=r"\bb\b"):
        pyfastopt.matmul(good.astype(np.float64), bad_arr)


def test_string_input_rejected():
    good = np.ones((2, 2))
    with pytest.raises(TypeError, match=r"\ba\b"):
        pyfastopt.matmul(np.array([["x", "y"], ["z", "w"]]), good)
    with pytest.raises(TypeError, match=r"\bb\b"):
        pyfastopt.matmul(good, np.array([[1.0, None], [2.0, 3.0]], dtype=object))


# ----------------------------------------------------------------------------- shape errors


@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((3, 4), (5, 6)),
        ((4,), (5,)),
        ((3, 4), (5,)),
        ((4,), (5, 3)),
        ((2, 3, 4), (2, 5, 6)),
        ((2, 3, 4), (3, 4, 5)),  # batch dims do not broadcast
        ((2, 1, 3, 4), (3, 2, 4, 5)),
        ((3, 0), (1, 3)),
    ],
)
def test_shape_mismatch_names_both_shapes(sa, sb):
    a, b = np.ones(sa), np.ones(sb)
    with pytest.raises(ValueError) as exc:
        pyfastopt.matmul(a, b)
    msg = str(exc.value)
    assert re.search(ref.shape_re(sa), msg) and re.search(ref.shape_re(sb), msg), (
        f"message must name both shapes {sa} and {sb}: {msg!r}"
    )
    with pytest.raises(ValueError):
        pyfastopt.matmul(np.ones(sa, np.float32), np.ones(sb, np.float32))


def test_zero_d_operands_rejected():
    m = np.ones((3, 3))
    for a, b in [(np.float64(2.0), m), (m, 2.0), (np.array(1.0), np.array(2.0)), (1.0, 2.0)]:
        with pytest.raises(ValueError):
            pyfastopt.matmul(a, b)
    with pytest.raises(ValueError):
        pyfastopt.matmul(np.array(1.0, np.float32), np.ones(3, np.float32))


# ----------------------------------------------------------------------------- IEEE, array-likes


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(simd, rng, dtype):
    for m, k, n in [(9, 21, 19), (33, 70, 67)]:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        a[2, 5] = np.nan  # row 2 all NaN
        a[m - 1, k - 1] = np.nan  # last row, last k: the K tail must be included
        a[4, 1] = np.inf  # row 4: +-inf (signs follow b[1]), unless inf - inf
        b[k - 1, 3] = -np.inf  # column 3: -+inf from the last k term
        b[0, n - 1] = np.nan  # last column all NaN
        a[6, :] = 0.0
        b[7, 10] = np.inf  # (6, 10): 0 * inf = NaN (IEEE), not 0
        b[:, 12] = 0.0
        expected = ref.matmul_ieee(a, b)
        finite_a, finite_b = (
            np.nan_to_num(a, nan=0, posinf=0, neginf=0),
            np.nan_to_num(b, nan=0, posinf=0, neginf=0),
        )
        bound = ref.gemm_bound(finite_a, finite_b, dtype)
        with np.errstate(invalid="ignore"):  # NumPy-backed builds may warn; not the point
            results = [
                ("matmul", pyfastopt.matmul(a, b)),
                ("Fortran-order a", pyfastopt.matmul(np.asfortranarray(a), b)),
            ]
        for label, got in results:
            what = f"{label} {m}x{n}x{k} {np.dtype(dtype).name} with NaN/inf"
            g = np.asarray(got, np.float64)
            np.testing.assert_array_equal(np.isnan(g), np.isnan(expected), err_msg=f"{what}: NaN")
            np.testing.assert_array_equal(g[np.isinf(expected)], expected[np.isinf(expected)], what)
            ref.assert_close(got, expected, bound, what, dtype=dtype, shape=(m, n))
            assert np.isnan(g[2]).all() and np.isnan(g[:, n - 1]).all() and np.isnan(g[6, 10])


def test_array_likes():
    a = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    b = [[0.5, -1.0], [2.0, 0.25], [-3.0, 1.5]]
    got = check(a, b, "lists", with_out=False)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_array_equal(got, np.matmul(a, b))  # small integers: exact
    np.testing.assert_array_equal(pyfastopt.matmul(tuple(a[0]), b), np.matmul(a[0], b))
    np.testing.assert_array_equal(pyfastopt.matmul(np.array(a, np.float32), b), np.matmul(a, b))
    assert float(pyfastopt.matmul([1.0, 2.0], [3.0, 4.0])) == 11.0
