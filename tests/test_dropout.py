"""pyfastopt.dropout against its contract: Philox4x32-10 (Random123 known answers), the
exact counter-based mask, bitwise y on every SIMD level and thread count, layouts,
IEEE semantics, identities, argument checking, and statistical quality of the mask.

The exact checks compare with ``dropout_reference`` (pure NumPy, written from the
contract and the Philox paper; its Philox reproduces the Random123 KAT vectors, which
``test_reference_reproduces_random123_kat`` re-checks). Statistical checks use fixed
seeds, so they are deterministic; their bounds are 5 standard deviations of the
statistic under the hypothesis being tested (false-alarm odds ~6e-7 per check), far
below the effect any real defect (a reused word, a shifted stream) would have.
"""

from __future__ import annotations

import functools
import importlib
import math

import dropout_reference as ref
import numpy as np
import pytest
from conftest import DTYPES, ODD_SIZES

import pyfastopt

if not hasattr(pyfastopt, "dropout"):
    pytest.skip("pyfastopt.dropout is not implemented yet", allow_module_level=True)

MASK_SIZES = [0, 1, 15, 16, 17, 63, 64, 65, 1000, 100_003]
MASK_SEEDS = [0, 1, 2**32 + 5, 2**64 - 1]
MASK_OFFSETS = [0, 7, 2**40]
MASK_PS = [0.0, 0.1, 0.5, 0.9, 1 - 2**-20]
BIG = 1_000_003  # large enough for the kernels to split the work across threads
STAT_N = 4_000_000


def random_module():
    return importlib.import_module("pyfastopt.random")


# ----------------------------------------------------------------------------- helpers


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view({4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_same_bits(got, expected, what: str = "y", p=None, seed=None, offset=0) -> None:
    """Same dtype, shape and bits (NaN where NaN is expected, any payload)."""
    got = np.asarray(got)
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    g, e = got.ravel(), expected.ravel()
    g_nan, e_nan = np.isnan(g), np.isnan(e)
    bad = (g_nan != e_nan) | (~e_nan & (_bits(np.ascontiguousarray(g)) != _bits(e.copy())))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        detail = ""
        if p is not None and seed is not None:
            word = int(ref.mask_words(i + 1, seed, offset)[i])
            kept = word >= ref.threshold(p)
            detail = (
                f"; reference: word {word:#010x} vs threshold {ref.threshold(p):#x} -> "
                f"{'kept' if kept else 'dropped'}"
            )
        if g[i] == 0 and e[i] == 0:
            detail += " (only the sign of zero differs: y = x * 0 keeps x's sign)"
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {g.size} elements differ; first at flat index {i}: "
            f"got {g[i]!r} (bits {int(_bits(g[i : i + 1].copy())[0]):#x}), expected {e[i]!r} "
            f"(bits {int(_bits(e[i : i + 1].copy())[0]):#x}){detail}"
        )


def assert_mask_equal(got, expected, what: str, p: float, seed: int, offset: int) -> None:
    got = np.asarray(got)
    assert got.dtype == np.bool_, f"{what}: dtype {got.dtype}, expected bool"
    assert got.shape == expected.shape, f"{what}: shape {got.shape} vs {expected.shape}"
    bad = got.ravel() != expected.ravel()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        g, r = divmod(i, 64)
        j, lane = divmod(r, 16)
        word = int(ref.mask_words(i + 1, seed, offset)[i])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} mask bits differ (p={p!r}, seed={seed}, "
            f"offset={offset}); first at element {i} (block {16 * g + lane}, word {j}): got "
            f"{'kept' if got.ravel()[i] else 'dropped'}, reference word {word:#010x} vs "
            f"threshold {ref.threshold(p):#x} -> {'kept' if expected.ravel()[i] else 'dropped'}"
        )


def data(n, dtype, seed=20261122, shape=None):
    """Standard normal values times 3 (negative ones test the sign of dropped zeros)."""
    x = (np.random.default_rng(seed).standard_normal(n) * 3).astype(dtype)
    return x.reshape(shape) if shape is not None else x


@functools.lru_cache(maxsize=8)
def _ref_big(dtype: type, p: float, seed: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    x = data(BIG, dtype, seed=7)
    x.flags.writeable = False
    y = ref.dropout(x, p, seed, offset)
    y.flags.writeable = False
    return x, y


def binomial_sigma(prob: float, n: int) -> float:
    return math.sqrt(prob * (1.0 - prob) / n)


# ----------------------------------------------------------------------------- Philox


def test_reference_reproduces_random123_kat():
    # the reference itself against the published vectors (7 and 10 rounds)
    for rounds, ctr, key, expected in ref.KAT_PHILOX4X32:
        got = tuple(int(w) for w in ref.philox4x32([ctr], key, rounds=rounds)[0])
        assert got == expected, (rounds, ctr, key)


@pytest.mark.parametrize(
    ("ctr", "key", "expected"), ref.KAT_PHILOX4X32_10, ids=["zeros", "ones", "pi-digits"]
)
def test_philox_known_answers(ctr, key, expected):
    counters = np.array([ctr], dtype=np.uint32)
    got = np.asarray(random_module().philox4x32_10(counters, key))
    assert got.dtype == np.uint32
    assert got.shape == (1, 4)
    assert tuple(int(w) for w in got[0]) == expected, (
        f"philox4x32_10 ctr={[hex(w) for w in ctr]} key={[hex(w) for w in key]}: got "
        f"{[hex(int(w)) for w in got[0]]}, Random123 KAT {[hex(w) for w in expected]}"
    )


def test_philox_batch_matches_reference():
    rng = np.random.default_rng(3)
    counters = rng.integers(0, 2**32, size=(1000, 4), dtype=np.uint32)
    counters[:3] = [[0, 0, 0, 0], [2**32 - 1] * 4, [1, 0, 0, 0]]
    philox = random_module().philox4x32_10
    for key in [(0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (0xA4093822, 0x299F31D0), (1, 2**31)]:
        got = np.asarray(philox(counters, key))
        expected = ref.philox4x32_10(counters, key)
        assert got.dtype == np.uint32 and got.shape == (1000, 4)
        bad = np.flatnonzero((got != expected).any(axis=1))
        assert bad.size == 0, (
            f"key {key}: {bad.size} rows differ, first row {bad[0] if bad.size else None}: "
            f"ctr {counters[bad[0]]} got {got[bad[0]]} expected {expected[bad[0]]}"
        )
    empty = np.asarray(philox(np.zeros((0, 4), np.uint32), (1, 2)))
    assert empty.shape == (0, 4) and empty.dtype == np.uint32


# ----------------------------------------------------------------------------- exact mask


@functools.lru_cache(maxsize=16)
def _words(n: int, seed: int, offset: int) -> np.ndarray:
    return ref.mask_words(n, seed, offset)


@pytest.mark.parametrize("offset", MASK_OFFSETS)
@pytest.mark.parametrize("seed", MASK_SEEDS)
def test_mask_matches_reference(simd, seed, offset):
    words = _words(max(MASK_SIZES), seed, offset)
    x_all = np.ones(max(MASK_SIZES), np.float32)
    for n in MASK_SIZES:
        for p in MASK_PS:
            expected = words[:n] >= np.uint64(ref.threshold(p))
            what = f"dropout_mask(({n},), p={p!r}, seed={seed}, offset={offset})"
            got = pyfastopt.dropout_mask((n,), p, seed, offset=offset)
            assert_mask_equal(got, expected, what, p, seed, offset)
            y, bits = pyfastopt.dropout(x_all[:n], p, seed, offset=offset, return_mask=True)
            bits = np.asarray(bits)
            assert bits.dtype == np.uint8 and bits.shape == (-(-n // 8),), (what, bits.shape)
            np.testing.assert_array_equal(bits, ref.packed_mask(expected), err_msg=what)
            assert_mask_equal(
                np.asarray(y) != 0, expected, f"dropout y != 0, {what}", p, seed, offset
            )


def test_mask_threshold_is_exact_and_rounds_half_to_even():
    """Kept iff u >= t, t = round_half_even(p * 2**32): put p exactly on a word."""
    seed, offset = 12345, 3
    n = 4096
    words = ref.mask_words(n, seed, offset).astype(np.int64)
    usable = np.flatnonzero((words > 2) & (words < 2**32 - 2))
    evens = [int(i) for i in usable if words[i] % 2 == 0][:4]
    odds = [int(i) for i in usable if words[i] % 2 == 1][:4]
    assert evens and odds
    for i in evens + odds:
        u = int(words[i])
        cases = [
            (u / 2**32, True),  # t == u: kept (u >= t)
            ((u + 1) / 2**32, False),  # t == u + 1: dropped
            ((u + 0.5) / 2**32, u % 2 == 0),  # tie: t = u if u even, else u + 1
            ((u - 0.5) / 2**32, True),  # tie: t = u - 1 or u, both <= u
        ]
        for p, kept in cases:
            assert p * 2.0**32 in (u, u + 1, u + 0.5, u - 0.5)  # exact in float64
            got = np.asarray(pyfastopt.dropout_mask((n,), p, seed, offset=offset))
            assert bool(got[i]) is kept, (
                f"element {i}: word {u:#010x}, p*2**32 = {p * 2**32!r}, threshold "
                f"{ref.threshold(p):#x}: expected {'kept' if kept else 'dropped'}"
            )
            assert_mask_equal(got, ref.dropout_mask((n,), p, seed, offset), "mask", p, seed, offset)


def test_mask_shapes_use_c_order_index():
    for shape in [(), (3, 5, 7), (1, 0, 4), (2, 64), (65, 3)]:
        got = pyfastopt.dropout_mask(shape, 0.4, 99, offset=5)
        assert_mask_equal(got, ref.dropout_mask(shape, 0.4, 99, 5), f"shape {shape}", 0.4, 99, 5)


# ----------------------------------------------------------------------------- exact y


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_matches_reference(simd, dtype):
    seed, offset = 2**32 + 5, 7
    for n in [*ODD_SIZES, 100_003]:
        x = data(n, dtype)
        x0 = x.copy()
        for p in (0.1, 0.5, 0.9, 1 - 2**-20):
            expected = ref.dropout(x, p, seed, offset)
            what = f"dropout n={n} p={p!r} {np.dtype(dtype).name}"
            y = pyfastopt.dropout(x, p, seed, offset=offset)
            assert isinstance(y, np.ndarray)
            assert_same_bits(y, expected, what, p, seed, offset)
            dy = pyfastopt.dropout_backward(x, p, seed, offset=offset)
            assert_same_bits(dy, expected, f"dropout_backward n={n} p={p!r}", p, seed, offset)
            np.testing.assert_array_equal(x, x0, err_msg="input modified")


def test_default_arguments():
    x = data(1000, np.float32)
    assert_same_bits(pyfastopt.dropout(x), ref.dropout(x, 0.5, 0, 0), "dropout(x)", 0.5, 0)
    assert_same_bits(pyfastopt.dropout(x, 0.2), ref.dropout(x, 0.2, 0, 0), "dropout(x, 0.2)")
    mask = pyfastopt.dropout_mask((1000,), 0.2, 0)
    assert_mask_equal(mask, ref.dropout_mask((1000,), 0.2, 0), "dropout_mask", 0.2, 0, 0)


def test_functions_agree():
    shape, p, seed, offset = (7, 33, 5), 0.3, 2**63 + 11, 2**33 + 1
    x = data(math.prod(shape), np.float64, shape=shape)
    mask = pyfastopt.dropout_mask(shape, p, seed, offset=offset)
    assert_mask_equal(mask, ref.dropout_mask(shape, p, seed, offset), "mask", p, seed, offset)
    scale = ref.scale_for(p, np.float64)
    y = pyfastopt.dropout(x, p, seed, offset=offset)
    assert_same_bits(y, x * np.where(mask, scale, 0.0), "dropout vs x * mask * scale")
    y2, bits = pyfastopt.dropout(x, p, seed, offset=offset, return_mask=True)
    assert_same_bits(y2, y, "dropout(return_mask=True)")
    np.testing.assert_array_equal(np.asarray(bits), ref.packed_mask(mask))
    dy = pyfastopt.dropout_backward(x, p, seed, offset=offset)
    assert_same_bits(dy, y, "dropout_backward")
    unpacked = np.unpackbits(np.asarray(bits), count=x.size, bitorder="little").astype(bool)
    np.testing.assert_array_equal(unpacked.reshape(shape), mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_every_simd_level_and_thread_count(simd, dtype):
    p, seed, offset = 0.3, 987654321, 11
    x, expected = _ref_big(dtype, p, seed, offset)
    mask = expected != 0
    for nthreads in (1, 2, 3):
        with pyfastopt.threads(nthreads):
            what = f"{simd} {nthreads} threads"
            y = pyfastopt.dropout(x, p, seed, offset=offset)
            assert_same_bits(y, expected, f"dropout, {what}", p, seed, offset)
            dy = pyfastopt.dropout_backward(x, p, seed, offset=offset)
            assert_same_bits(dy, expected, f"dropout_backward, {what}", p, seed, offset)
            m = pyfastopt.dropout_mask(x.shape, p, seed, offset=offset)
            assert_mask_equal(m, mask, f"dropout_mask, {what}", p, seed, offset)
            _, bits = pyfastopt.dropout(x, p, seed, offset=offset, return_mask=True)
            np.testing.assert_array_equal(np.asarray(bits), ref.packed_mask(mask), err_msg=what)


# ----------------------------------------------------------------------------- layouts


def _layouts(dtype):
    base = data(6 * 35 * 17, dtype, seed=5, shape=(6, 35, 17))
    flat = data(2 * 1003, dtype, seed=6)
    return {
        "strided [::2]": flat[::2],
        "negative stride [::-1]": flat[::-1],
        "negative stride [::-3]": flat[::-3],
        "unaligned [1:]": flat[1:],
        "Fortran order": np.asfortranarray(base),
        "transposed": base.transpose(2, 0, 1),
        "sliced 3-d": base[1::2, ::-2, 3:],
        "broadcast (stride 0)": np.broadcast_to(flat[:17], (40, 17)),
        "column": base[:, 4, :].T,
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_follow_logical_c_order(simd, dtype):
    p, seed, offset = 0.45, 31337, 2**40 + 3
    for name, x in _layouts(dtype).items():
        contiguous = np.ascontiguousarray(x)
        expected = ref.dropout(contiguous, p, seed, offset)
        y = pyfastopt.dropout(x, p, seed, offset=offset)
        assert_same_bits(y, expected, f"dropout, {name}", p, seed, offset)
        assert_same_bits(y, pyfastopt.dropout(contiguous, p, seed, offset=offset), name)
        dy = pyfastopt.dropout_backward(x, p, seed, offset=offset)
        assert_same_bits(dy, expected, f"dropout_backward, {name}", p, seed, offset)
        _, bits = pyfastopt.dropout(x, p, seed, offset=offset, return_mask=True)
        np.testing.assert_array_equal(
            np.asarray(bits), ref.packed_mask(ref.dropout_mask(x.shape, p, seed, offset)), name
        )


def test_array_likes_zero_d_and_empty():
    p, seed = 0.5, 4
    values = [0.5, -1.25, 3.0, 7.0, -2.0]
    assert_same_bits(pyfastopt.dropout(values, p, seed), ref.dropout(np.array(values), p, seed))
    nested = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert_same_bits(pyfastopt.dropout(nested, p, seed), ref.dropout(np.array(nested), p, seed))
    for dtype in DTYPES:
        for x in (np.array(2.5, dtype=dtype), dtype(-2.5)):
            y = pyfastopt.dropout(x, p, seed)
            assert_same_bits(np.asarray(y), ref.dropout(np.asarray(x), p, seed), "0-d")
        for shape in [(0,), (3, 0, 2), (0, 0)]:
            x = np.empty(shape, dtype)
            assert_same_bits(pyfastopt.dropout(x, p, seed), x, f"empty {shape}")
            assert_same_bits(pyfastopt.dropout_backward(x, p, seed), x, f"empty {shape}")
            _, bits = pyfastopt.dropout(x, p, seed, return_mask=True)
            bits = np.asarray(bits)
            assert bits.dtype == np.uint8 and bits.shape == (0,)
    for seed_ in (1, 2, 3, 4):
        _, bits = pyfastopt.dropout(np.array(1.0), 0.5, seed_, return_mask=True)
        expected = ref.packed_mask(ref.dropout_mask((), 0.5, seed_))
        np.testing.assert_array_equal(np.asarray(bits), expected)


def test_read_only_input():
    x = data(1001, np.float32)
    x.flags.writeable = False
    assert_same_bits(pyfastopt.dropout(x, 0.3, 8), ref.dropout(x, 0.3, 8), "read-only x")


# ----------------------------------------------------------------------------- IEEE


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_and_overflow(simd, dtype):
    """y = x * m: NaN/inf dropped -> NaN (0 * inf), kept NaN stays NaN, kept inf stays
    inf, huge kept values overflow to inf; negative dropped values give -0.0."""
    p, seed = 0.5, 77
    n = 1000
    x = data(n, dtype)
    finfo = np.finfo(dtype)
    specials = [np.nan, np.inf, -np.inf, finfo.max, -finfo.max, finfo.tiny, -0.0, 0.0]
    x[::7] = np.resize(np.array(specials, dtype), x[::7].size)
    mask = ref.dropout_mask((n,), p, seed)
    y = pyfastopt.dropout(x, p, seed)
    assert_same_bits(y, ref.dropout(x, p, seed), "dropout with NaN/inf", p, seed)
    assert_same_bits(pyfastopt.dropout_backward(x, p, seed), ref.dropout(x, p, seed), "backward")
    nonfinite = ~np.isfinite(x)
    assert np.isnan(y[nonfinite & ~mask]).all(), "NaN/inf in a dropped position must give NaN"
    assert np.isnan(y[np.isnan(x)]).all()
    kept_inf = np.isinf(x) & mask
    assert kept_inf.any() and (y[kept_inf] == x[kept_inf]).all()
    assert (np.isinf(y[(np.abs(x) == finfo.max) & mask])).all()  # 2 * max overflows
    neg_dropped = (x < 0) & np.isfinite(x) & ~mask
    assert neg_dropped.any() and np.signbit(y[neg_dropped]).all(), "-x * 0 is -0.0"


# ----------------------------------------------------------------------------- identity / out


@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_when_not_training_or_p_zero(dtype):
    x = data(100, dtype)
    views = [x, x[::-2], x.reshape(10, 10).T, np.array(1.5, dtype)]
    for v in views:
        assert pyfastopt.dropout(v, 0.5, 3, training=False) is v
        assert pyfastopt.dropout(v, 0.0, 3) is v
        assert pyfastopt.dropout(v, 0.0, 3, training=True) is v
        assert pyfastopt.dropout(v, 0, 3) is v
    for kwargs in ({"p": 0.5, "training": False}, {"p": 0.0}):
        out = np.full_like(x, -7.0)
        got = pyfastopt.dropout(x, seed=3, out=out, **kwargs)
        assert got is out
        assert_same_bits(out, x, f"copy into out, {kwargs}")
        out2 = np.empty((10, 10), dtype)
        xt = x.reshape(10, 10).T
        assert pyfastopt.dropout(xt, seed=3, out=out2, **kwargs) is out2
        assert_same_bits(out2, np.ascontiguousarray(xt), f"strided copy into out, {kwargs}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_and_in_place(simd, dtype):
    p, seed, offset = 0.25, 2024, 9
    for n in (1, 17, 1000, 100_003):
        x = data(n, dtype)
        expected = ref.dropout(x, p, seed, offset)
        out = np.full_like(x, np.nan)
        assert pyfastopt.dropout(x, p, seed, offset=offset, out=out) is out
        assert_same_bits(out, expected, f"out=, n={n}", p, seed, offset)
        out = np.full_like(x, np.nan)
        assert pyfastopt.dropout_backward(x, p, seed, offset=offset, out=out) is out
        assert_same_bits(out, expected, f"dropout_backward out=, n={n}", p, seed, offset)
        out = np.full_like(x, np.nan)
        y, bits = pyfastopt.dropout(x, p, seed, offset=offset, out=out, return_mask=True)
        assert y is out
        np.testing.assert_array_equal(np.asarray(bits), ref.packed_mask(expected != 0))
        inplace = x.copy()
        assert pyfastopt.dropout(inplace, p, seed, offset=offset, out=inplace) is inplace
        assert_same_bits(inplace, expected, f"out=x in place, n={n}", p, seed, offset)
        inplace = x.copy()
        got = pyfastopt.dropout_backward(inplace, p, seed, offset=offset, out=inplace)
        assert got is inplace
        assert_same_bits(inplace, expected, f"backward out=dy in place, n={n}", p, seed, offset)
    # non-contiguous x into a contiguous out
    x = data(60, dtype, shape=(6, 10))
    out = np.empty((10, 6), dtype)
    assert pyfastopt.dropout(x.T, p, seed, out=out) is out
    assert_same_bits(out, ref.dropout(np.ascontiguousarray(x.T), p, seed), "x.T into out")


# ----------------------------------------------------------------------------- bad inputs


def _calls(x, **kw):
    """(name, callable) for dropout and dropout_backward with the same arguments."""
    return [
        (
            "dropout",
            lambda: pyfastopt.dropout(
                x,
                kw.get("p", 0.5),
                kw.get("seed", 0),
                offset=kw.get("offset", 0),
                out=kw.get("out"),
            ),
        ),
        (
            "dropout_backward",
            lambda: pyfastopt.dropout_backward(
                x,
                kw.get("p", 0.5),
                kw.get("seed", 0),
                offset=kw.get("offset", 0),
                out=kw.get("out"),
            ),
        ),
    ]


@pytest.mark.parametrize(
    "dtype", [np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128]
)
def test_bad_dtype_names_the_argument(dtype):
    x = np.ones(10, dtype)
    with pytest.raises(TypeError, match=r"\bx\b"):
        pyfastopt.dropout(x, 0.5, 1)
    with pytest.raises(TypeError, match=r"\bdy\b"):
        pyfastopt.dropout_backward(x, 0.5, 1)


def test_bad_dtype_object_and_strings():
    for x in (np.array(["a", "b"]), np.array([1.0, None], dtype=object)):
        with pytest.raises(TypeError, match=r"\bx\b"):
            pyfastopt.dropout(x, 0.5, 1)


@pytest.mark.parametrize("p", [-0.1, -1e-300, 1.0, 1.5, np.nan, np.inf, -np.inf, 2**64])
def test_bad_p(p):
    x = np.ones(10, np.float32)
    for _name, call in _calls(x, p=p):
        with pytest.raises(ValueError, match=r"\bp\b"):
            call()
    with pytest.raises(ValueError, match=r"\bp\b"):
        pyfastopt.dropout_mask((10,), p, 0)


@pytest.mark.parametrize("arg", ["seed", "offset"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (1.0, TypeError),
        (1.5, TypeError),
        ("1", TypeError),
        (None, TypeError),
        (True, TypeError),
        (False, TypeError),
        (-1, ValueError),
        (-(2**63), ValueError),
        (2**64, ValueError),
        (2**70, ValueError),
    ],
)
def test_bad_seed_and_offset(arg, value, error):
    x = np.ones(10, np.float32)
    kw = {"seed": 0, "offset": 0, arg: value}
    pattern = rf"\b{arg}\b"
    with pytest.raises(error, match=pattern):
        pyfastopt.dropout(x, 0.5, kw["seed"], offset=kw["offset"])
    with pytest.raises(error, match=pattern):
        pyfastopt.dropout_backward(x, 0.5, kw["seed"], offset=kw["offset"])
    with pytest.raises(error, match=pattern):
        pyfastopt.dropout_mask((10,), 0.5, kw["seed"], offset=kw["offset"])


def test_seed_and_offset_extremes_accepted():
    x = data(100, np.float32)
    for seed in (0, 2**64 - 1):
        for offset in (0, 2**64 - 1):
            expected = ref.dropout(x, 0.5, seed, offset)
            assert_same_bits(
                pyfastopt.dropout(x, 0.5, seed, offset=offset),
                expected,
                f"seed={seed} offset={offset}",
                0.5,
                seed,
                offset,
            )


def test_offset_and_return_mask_are_keyword_only():
    x = np.ones(10, np.float32)
    with pytest.raises(TypeError):
        pyfastopt.dropout(x, 0.5, 0, True, None, 1)
    with pytest.raises(TypeError):
        pyfastopt.dropout_backward(x, 0.5, 0, 1)
    with pytest.raises(TypeError):
        pyfastopt.dropout_mask((10,), 0.5, 0, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_out_names_the_argument(dtype):
    x = np.ones(20, dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    read_only = np.empty(20, dtype)
    read_only.flags.writeable = False
    bad_outs = {
        "wrong shape": np.empty(21, dtype),
        "wrong shape (2-d)": np.empty((4, 5), dtype),
        "wrong dtype": np.empty(20, other),
        "read-only": read_only,
        "non-contiguous": np.empty(40, dtype)[::2],
        "not an array": [0.0] * 20,
    }
    for _label, out in bad_outs.items():
        for _name, call in _calls(x, out=out):
            with pytest.raises((TypeError, ValueError), match=r"\bout\b"):
                call()


# ----------------------------------------------------------------------------- Generator


def test_generator_next_seed_distinct():
    gen = random_module().Generator(42)
    seeds = [gen.next_seed() for _ in range(10_000)]
    assert all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    assert all(0 <= s < 2**64 for s in seeds)
    assert len(set(seeds)) == len(seeds), "next_seed repeated a seed"
    x = np.ones(64, np.float32)
    masks = {np.asarray(pyfastopt.dropout(x, 0.5, s)).tobytes() for s in seeds[:50]}
    assert len(masks) == 50  # 50 fresh seeds, 50 different masks of 64 elements


# ----------------------------------------------------------------------------- statistics


@functools.lru_cache(maxsize=4)
def _stat_mask(p: float, seed: int = 1234, offset: int = 0) -> np.ndarray:
    m = np.asarray(pyfastopt.dropout_mask((STAT_N,), p, seed, offset=offset))
    m.flags.writeable = False
    return m


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate(p):
    m = _stat_mask(p)
    q = ref.keep_probability(p)
    rate = np.count_nonzero(m) / m.size
    sigma = binomial_sigma(q, m.size)
    assert abs(rate - q) <= 5 * sigma, f"keep rate {rate} vs {q} (5 sigma = {5 * sigma:.2e})"
    # and the kept values are x * scale
    x = np.random.default_rng(0).uniform(1, 2, 100_000).astype(np.float32)
    y = pyfastopt.dropout(x, p, 1234)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept] * ref.scale_for(p, np.float32))


def _pearson_bool(a: np.ndarray, b: np.ndarray) -> float:
    n = a.size  # exact integer arithmetic (Python ints), then one float division
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    nab = int(np.count_nonzero(a & b))
    return (n * nab - na * nb) / math.sqrt(na * (n - na) * nb * (n - nb))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_no_lag_correlation(p):
    """Lags 1 (next block), 8, 16 (next word of the same Philox block), 32, 64 (next
    group): for independent bits sqrt(n) * r is ~N(0, 1), so |r| <= 5 / sqrt(n)."""
    m = _stat_mask(p)
    for lag in (1, 8, 16, 32, 64):
        a, b = m[:-lag], m[lag:]
        r = _pearson_bool(a, b)
        bound = 5 / math.sqrt(a.size)
        assert abs(r) <= bound, f"lag {lag}: Pearson r = {r:.2e}, bound {bound:.2e}"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((0, 0), (1, 0)),  # seed 0 vs 1
        ((1, 0), (1 + 2**32, 0)),  # seeds differing only in the key's high word
        ((2**64 - 1, 0), (2**64 - 2, 0)),
        ((7, 0), (7, 1)),  # offset 0 vs 1
        ((7, 5), (7, 5 + 2**32)),  # offsets differing only in the high counter word
        ((7, 0), (7, 2**40)),
        ((1, 0), (0, 1)),  # seed and offset swapped
    ],
)
def test_masks_of_different_seeds_and_offsets_independent(a, b):
    n = 1_000_000
    for p in (0.1, 0.5):
        ma = np.asarray(pyfastopt.dropout_mask((n,), p, a[0], offset=a[1]))
        mb = np.asarray(pyfastopt.dropout_mask((n,), p, b[0], offset=b[1]))
        q = ref.keep_probability(p)
        agree_p = q * q + (1 - q) * (1 - q)
        agree = np.count_nonzero(ma == mb) / n
        sigma = binomial_sigma(agree_p, n)
        assert abs(agree - agree_p) <= 5 * sigma, (
            f"(seed, offset) {a} vs {b}, p={p}: agreement {agree:.5f}, independent masks give "
            f"{agree_p:.5f} +- {5 * sigma:.1e}"
        )


def test_statistics_match_torch():
    """torch's RNG differs (no bitwise comparison): same keep rate, same scaling."""
    torch = pytest.importorskip("torch")
    n = 1_000_000
    x = np.random.default_rng(1).uniform(1, 2, n).astype(np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        for p in (0.1, 0.5, 0.9):
            q = ref.keep_probability(p)
            sigma = binomial_sigma(q, n)
            yt = torch.nn.functional.dropout(torch.from_numpy(x.copy()), p, training=True)
            yt = yt.numpy()
            y = np.asarray(pyfastopt.dropout(x, p, 99))
            kept_t, kept = yt != 0, y != 0
            for name, k in (("torch", kept_t), ("pyfastopt", kept)):
                rate = np.count_nonzero(k) / n
                assert abs(rate - q) <= 5 * sigma, f"{name} keep rate {rate} vs {q}, p={p}"
            ours = np.unique(y[kept] / x[kept])
            theirs = np.unique(yt[kept_t].astype(np.float64) / x[kept_t])
            scale = float(ref.scale_for(p, np.float32))
            # ours: exactly x * float32(1/(1-p)); torch: x * noise with noise = 1/(1-p)
            # formed in float32 (within an ulp or two of ours)
            np.testing.assert_array_equal(y[kept], x[kept] * np.float32(scale))
            assert np.allclose(ours, scale, rtol=1e-6, atol=0), (p, ours[:5])
            assert np.allclose(theirs, scale, rtol=3e-7, atol=0), (p, theirs[:5], scale)
            # dropped inf -> NaN in both
            inf = np.full(4096, np.inf, np.float32)
            yt_inf = torch.nn.functional.dropout(torch.from_numpy(inf.copy()), p).numpy()
            y_inf = np.asarray(pyfastopt.dropout(inf, p, 5))
            for name, v in (("torch", yt_inf), ("pyfastopt", y_inf)):
                assert set(np.unique(np.isnan(v))) <= {False, True}
                assert (np.isnan(v) | (v == np.inf)).all(), name
                nan_rate = np.count_nonzero(np.isnan(v)) / v.size
                s = binomial_sigma(1 - q, v.size)
                assert abs(nan_rate - (1 - q)) <= 5 * s, (name, p, nan_rate)
