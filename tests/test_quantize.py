"""pyfastopt.quant.quantize / dequantize against the formula in NumPy, on every SIMD level."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, ODD_SIZES

import pyfastopt
from pyfastopt.quant import dequantize, quantize

QDTYPES = [np.int8, np.uint8]
RANGE = {np.int8: (-128, 127), np.uint8: (0, 255)}


def ref_quantize(x, scale, zp, qdt, axis=None):
    """The rule in the input's own float type: NumPy's / is the IEEE division and rint
    rounds half to even. NaN -> qmax (documented)."""
    x = np.asarray(x)
    lo, hi = RANGE[qdt]
    s = np.asarray(scale, dtype=np.float64).astype(x.dtype)
    z = np.asarray(zp, dtype=np.int64)
    if axis is not None and s.ndim:
        shape = [1] * x.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    v = np.rint(x / s) + z
    v = np.where(np.isnan(v), hi, v)
    return np.clip(v, lo, hi).astype(qdt)


def ref_dequantize(q, scale, zp, axis=None):
    s = np.asarray(scale, dtype=np.float64).astype(np.float32)
    z = np.asarray(zp, dtype=np.int64).astype(np.float32)
    if axis is not None and s.ndim:
        shape = [1] * q.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return (q.astype(np.float32) - z) * s


def data(rng, n, dtype, spread=200.0):
    """Values spanning well past the quantized range on both sides, plus exact zeros."""
    x = rng.standard_normal(n) * spread
    x[::11] = 0.0
    return x.astype(dtype)


def assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# ---- per tensor ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qdt", QDTYPES)
@pytest.mark.parametrize("n", ODD_SIZES)
def test_quantize_matches_formula(simd, rng, dtype, qdt, n):
    x = data(rng, n, dtype)
    zp = -3 if qdt == np.int8 else 131
    for scale in (0.7, 1.3, 0.0173):
        assert_same(quantize(x, scale, zp, qdt), ref_quantize(x, scale, zp, qdt))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qdt", QDTYPES)
def test_exact_ties_round_half_to_even(simd, dtype, qdt):
    # x = (k + 0.5) * 2**-4 is exact, and so is x / scale = k + 0.5: the answer is the even
    # neighbour, computed here with integers only (no np.rint).
    k = np.arange(-300, 300)
    scale = 2.0**-4
    x = ((k + 0.5) * scale).astype(dtype)
    lo, hi = RANGE[qdt]
    for zp in (0, 1, 7) if qdt == np.int8 else (0, 1, 128):
        even = np.where(k % 2 == 0, k, k + 1)
        expect = np.clip(even + zp, lo, hi).astype(qdt)
        assert_same(quantize(x, scale, zp, qdt), expect)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_with_a_non_dyadic_scale(simd, dtype):
    # keep only x whose quotient x / scale is exactly k + 0.5 in the input's arithmetic
    scale = 0.1
    k = np.arange(-127, 127)
    x = ((k + 0.5) * dtype(scale)).astype(dtype)
    tie = (x / dtype(scale)) == (k + 0.5)
    assert tie.sum() > 50
    x, k = x[tie], k[tie]
    expect = np.clip(np.where(k % 2 == 0, k, k + 1), -128, 127).astype(np.int8)
    assert_same(quantize(x, scale, 0, np.int8), expect)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qdt", QDTYPES)
def test_saturation_inf_and_nan(simd, dtype, qdt):
    lo, hi = RANGE[qdt]
    zp = 5 if qdt == np.int8 else 100
    special = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, 127.4, -128.6, 1e-30]
    x = np.array(special * 7, dtype=dtype)  # 70 elements: vector bodies and tails
    q = quantize(x, 1.0, zp, qdt)
    per = np.array([hi, hi, lo, hi, lo, zp, zp, min(127 + zp, hi), max(-129 + zp, lo), zp])
    assert_same(q, np.tile(per, 7).astype(qdt))


@pytest.mark.parametrize("qdt", QDTYPES)
def test_zero_maps_to_zero_point_and_back(simd, qdt):
    lo, hi = RANGE[qdt]
    for zp in (lo, 0 if qdt == np.int8 else 1, hi):
        q = quantize(np.zeros(37, np.float32), 0.37, zp, qdt)
        assert_same(q, np.full(37, zp, qdt))
        assert np.all(dequantize(q, 0.37, zp) == 0.0)


@pytest.mark.parametrize("qdt", QDTYPES)
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 33, 1000])
def test_dequantize_matches_formula(simd, rng, qdt, n):
    lo, hi = RANGE[qdt]
    q = rng.integers(lo, hi + 1, n).astype(qdt)
    for scale, zp in ((0.0173, 3 if qdt == np.int8 else 200), (3.1e-5, lo), (1.7, hi)):
        y = dequantize(q, scale, zp)
        assert y.dtype == np.float32
        assert_same(y, ref_dequantize(q, scale, zp))


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_error_at_most_half_a_step(simd, rng, dtype):
    scale, zp = 0.05, 7
    x = (rng.uniform(-6.0, 6.0, 5000)).astype(dtype)  # inside the range: no saturation
    y = dequantize(quantize(x, scale, zp), scale, zp)
    assert np.max(np.abs(y - x)) <= scale / 2 * (1 + 1e-6)


# ---- per channel -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape",
    [(3, 5, 7), (4, 1, 130), (2, 70, 3), (130, 9), (5,), (2, 3, 100), (2, 3, 4, 5)],
)
@pytest.mark.parametrize("qdt", QDTYPES)
def test_per_channel_every_axis(simd, rng, shape, qdt):
    x = data(rng, int(np.prod(shape)), np.float32, spread=3.0).reshape(shape)
    lo, hi = RANGE[qdt]
    for axis in range(-len(shape), len(shape)):
        c = shape[axis]
        scale = rng.uniform(0.005, 0.05, c)
        zp = rng.integers(lo, hi + 1, c)
        q = quantize(x, scale, zp, qdt, axis=axis)
        assert_same(q, ref_quantize(x, scale, zp, qdt, axis % len(shape)))
        y = dequantize(q, scale, zp, axis=axis)
        assert_same(y, ref_dequantize(q, scale, zp, axis % len(shape)))


def test_per_channel_long_period_and_float64(simd, rng):
    # channel-last with more channels than the expansion limit, and float64 per channel
    x = data(rng, 2 * 70001, np.float64, spread=3.0).reshape(2, 70001)
    scale = rng.uniform(0.005, 0.05, 70001)
    zp = rng.integers(-128, 128, 70001)
    assert_same(quantize(x, scale, zp, np.int8, axis=1), ref_quantize(x, scale, zp, np.int8, 1))
    x = data(rng, 3 * 40 * 2, np.float64, spread=3.0).reshape(3, 40, 2)
    scale = rng.uniform(0.005, 0.05, 40)
    assert_same(quantize(x, scale, 0, np.uint8, 1), ref_quantize(x, scale, 0, np.uint8, 1))


def test_per_channel_scalar_zero_point_broadcasts(rng):
    x = data(rng, 60, np.float32, 3.0).reshape(6, 10)
    scale = np.linspace(0.01, 0.06, 6)
    assert_same(quantize(x, scale, 0, axis=0), ref_quantize(x, scale, np.zeros(6), np.int8, 0))


# ---- layouts, sizes, threads -----------------------------------------------------------
def test_non_contiguous_inputs(rng):
    base = data(rng, 40 * 30, np.float32, 3.0).reshape(40, 30)
    for x in (base[:, ::2], base.T, np.asfortranarray(base), base[::-3, 1:29]):
        assert_same(quantize(x, 0.02, 3), ref_quantize(np.ascontiguousarray(x), 0.02, 3, np.int8))
        s = np.linspace(0.01, 0.03, x.shape[1])
        assert_same(quantize(x, s, 1, axis=1), ref_quantize(x, s, np.ones(x.shape[1]), np.int8, 1))
    q = quantize(base, 0.02, 3)
    for qv in (q[:, ::2], q.T):
        assert_same(dequantize(qv, 0.02, 3), ref_dequantize(np.ascontiguousarray(qv), 0.02, 3))


def test_empty_and_zero_d():
    for shape in [(0,), (3, 0), (0, 4)]:
        q = quantize(np.zeros(shape, np.float32), 0.1, 0, np.uint8)
        assert q.shape == shape and q.dtype == np.uint8
        assert dequantize(q, 0.1, 0).shape == shape
    q = quantize(np.zeros((0, 4)), np.ones(4), 0, axis=1)
    assert q.shape == (0, 4)
    q0 = quantize(np.float32(1.25), 0.5, 1)
    assert q0.shape == () and q0.dtype == np.int8 and int(q0) == 3  # rint(2.5) = 2, + 1
    assert dequantize(q0, 0.5, 1).shape == ()


def test_scalar_parameter_types_agree(rng):
    x = data(rng, 1000, np.float32, 3.0)
    ref = ref_quantize(x, 0.021, 3, np.int8)
    for s, z in ((0.021, 3), (np.float32(0.021), np.int8(3)), (np.float64(0.021), np.int64(3))):
        assert_same(quantize(x, s, z), ref)  # float32 input: the scale is rounded to float32
    assert_same(quantize(x, np.array(0.021), np.array(3)), ref)


def test_python_lists_and_other_input_types():
    assert_same(quantize([0.5, 1.5, 2.5], 1.0, 0), np.array([0, 2, 2], np.int8))
    assert_same(quantize(np.array([3, -3], np.int32), 2.0, 0), np.array([2, -2], np.int8))
    assert_same(quantize(np.array([1.5], np.float16), 1.0, 0), np.array([2], np.int8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_counts_give_identical_bits(rng, dtype):
    x = data(rng, 1_000_003, dtype, 3.0)
    x2 = x[: 1000 * 999].reshape(1000, 999)
    s2 = rng.uniform(0.01, 0.03, 999)
    results = []
    for t in (1, 2, 3):
        pyfastopt.set_num_threads(t)
        q = quantize(x, 0.021, 3)
        qc = quantize(x2, s2, 0, np.uint8, axis=1)
        s0 = np.linspace(0.01, 0.03, 1000)  # channel-first: long same-channel runs
        qr = quantize(x2, s0, 0, axis=0)
        results.append((q, qc, qr, dequantize(q, 0.021, 3), dequantize(qc, s2, 0, axis=1)))
    ref = ref_quantize(x, 0.021, 3, np.int8)
    assert_same(results[0][0], ref)
    assert_same(results[0][1], ref_quantize(x2, s2, np.zeros(999), np.uint8, 1))
    assert_same(results[0][2], ref_quantize(x2, s0, np.zeros(1000), np.int8, 0))
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert_same(a, b)


# ---- float32 per tensor: the reciprocal path (quant_avx2.cpp quantize_f32) ------------------
# Half the vectors of a 32-element step are multiplied by RN(1/s) instead of divided, and
# redone by division where the product lies within 2^-11 of a half-integer; scales outside
# [2^-64, 2^64] divide everything. These inputs sit on and around every decision point.
RECIP_SCALES = [0.1, 1.0 / 3.0, 0.0173, 0.7, 2.0**-64, 2.0**64, 2.0**-70, 2.0**70, 3.3e-38, 3.0e38]


def near_ties(scale, ks, ulps=40):
    """float32 x within +-ulps ulps of (k + 0.5) * scale and of k * scale, every k."""
    s = np.float32(scale)
    with np.errstate(over="ignore"):  # beyond float32 for the largest scales: dropped below
        centres = np.concatenate([(ks + 0.5) * np.float64(s), ks * np.float64(s)]).astype(
            np.float32
        )
    bits = centres.view(np.int32)[:, None] + np.arange(-ulps, ulps + 1, dtype=np.int32)
    x = bits.reshape(-1).view(np.float32)
    return x[np.isfinite(x)]


@pytest.mark.parametrize("qdt", QDTYPES)
@pytest.mark.parametrize("scale", RECIP_SCALES)
def test_float32_near_ties_every_scale_range(simd, qdt, scale):
    x = near_ties(scale, np.arange(-300, 301))
    for zp in (0, 1, -7, 127) if qdt == np.int8 else (0, 1, 128, 255):
        for n in (x.size, x.size - 31, 33):  # every lane offset in a 32-element step, and tails
            assert_same(quantize(x[:n], scale, zp, qdt), ref_quantize(x[:n], scale, zp, qdt))


@pytest.mark.parametrize("qdt", QDTYPES)
def test_float32_specials_at_every_block_position(simd, rng, qdt):
    # NaN, infinities, huge, subnormal and signed zeros at each position of a 32-element
    # step, among near-tie neighbours (so blocks take both the product and the division)
    specials = np.array(
        [np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, -1e-45, 0.0, -0.0, 1.17e-38], np.float32
    )
    for scale in (0.1, 2.0**-64, 2.0**64, 2.0**-80):
        base = near_ties(scale, np.arange(-40, 41), ulps=3)[: 32 * 40].copy()
        for pos in range(32):
            x = base.copy()
            x[pos::32][: specials.size] = specials
            x[pos + 64 :: 96] = specials[rng.integers(0, specials.size, x[pos + 64 :: 96].size)]
            zp = 3 if qdt == np.int8 else 200
            with np.errstate(over="ignore", invalid="ignore"):  # 3e38 / 2**-80 in the reference
                want = ref_quantize(x, scale, zp, qdt)
            assert_same(quantize(x, scale, zp, qdt), want)


def test_float32_random_scales_and_ranges(simd, rng):
    for _ in range(40):
        scale = float(np.float32(np.exp(rng.uniform(-60, 60))))
        x = (rng.standard_normal(4099) * scale * rng.choice([0.3, 30.0, 300.0, 3e4])).astype(
            np.float32
        )
        for qdt, zp in (
            (np.int8, int(rng.integers(-128, 128))),
            (np.uint8, int(rng.integers(0, 256))),
        ):
            assert_same(quantize(x, scale, zp, qdt), ref_quantize(x, scale, zp, qdt))


# ---- errors ----------------------------------------------------------------------------
def test_bad_arguments():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="dtype"):
        quantize(x, 0.1, 0, np.int16)
    with pytest.raises(TypeError, match="dtype"):
        quantize(x, 0.1, 0, "float32")
    for bad in (0.0, -1.0, np.nan, np.inf, 1e-50, 1e39):
        with pytest.raises(ValueError, match="scale"):
            quantize(x, bad, 0)
    with pytest.raises(ValueError, match="scale"):
        dequantize(np.zeros(3, np.int8), 0.0, 0)
    with pytest.raises(ValueError, match="zero_point"):
        quantize(x, 0.1, 128)
    with pytest.raises(ValueError, match="zero_point"):
        quantize(x, 0.1, -1, np.uint8)
    with pytest.raises(ValueError, match="zero_point"):
        dequantize(np.zeros(3, np.uint8), 0.1, 256)
    with pytest.raises(TypeError, match="zero_point"):
        quantize(x, 0.1, 0.5)
    with pytest.raises(TypeError, match="zero_point"):
        quantize(x, 0.1, True)
    with pytest.raises(ValueError, match="zero_point"):
        quantize(x, np.float32(0.1), np.int64(200))
    with pytest.raises(ValueError, match=r"\(4,\).*\(4, 3\)|\(4, 3\).*\(4,\)"):
        quantize(x, np.full(4, 0.1), 0, axis=1)
    with pytest.raises(ValueError, match="zero_point"):
        quantize(x, np.full(3, 0.1), np.zeros(2, np.int64), axis=1)
    with pytest.raises(ValueError, match="scale"):
        quantize(x, np.array([0.1, 0.0, 0.1]), 0, axis=1)
    with pytest.raises(ValueError, match="axis"):
        quantize(x, np.full(3, 0.1), 0, axis=2)
    with pytest.raises(ValueError, match="axis"):
        quantize(x, np.full(3, 0.1), 0)  # per-channel parameters need the axis
    with pytest.raises(TypeError, match="q must be"):
        dequantize(x, 0.1, 0)
    with pytest.raises(TypeError):
        quantize(np.array(["a"]), 0.1, 0)


# ---- PyTorch ---------------------------------------------------------------------------
def near_tie(x, scale):
    """|x / scale - (k + 1/2)| within 1e-6 relative: where a reciprocal and a division may
    round to different sides (torch multiplies by the float32 reciprocal)."""
    v = x.astype(np.float64) / np.float64(np.float32(scale))
    return np.abs(v - np.floor(v) - 0.5) <= 1e-6 * np.maximum(1.0, np.abs(v))


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's qint8 deprecation notice
@pytest.mark.parametrize("qdt", QDTYPES)
def test_torch_quantize_per_tensor_parity(rng, qdt):
    torch = pytest.importorskip("torch")
    tq = {np.int8: torch.qint8, np.uint8: torch.quint8}[qdt]
    x = (rng.standard_normal(200_003) * 3).astype(np.float32)
    x[::97] = 0.0
    for scale, zp in ((0.0173, 0), (0.1, 2), (0.05, 4 if qdt == np.int8 else 128)):
        with np.errstate(all="ignore"):
            t = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, tq)
        tv = t.int_repr().numpy()
        ours = quantize(x, scale, zp, qdt)
        diff = ours != tv
        # even zero points: the only differences are reciprocal-vs-division near ties
        assert np.all(near_tie(x[diff], scale))
        assert np.all(np.abs(ours.astype(int) - tv.astype(int)) <= 1)
        assert diff.sum() <= 20
        # dequantize: bit for bit
        assert_same(dequantize(tv, scale, zp), t.dequantize().numpy())
    # NaN and infinities as torch
    s = np.array([np.nan, np.inf, -np.inf] * 11, np.float32)
    tv = torch.quantize_per_tensor(torch.from_numpy(s), 0.1, 5 if qdt == np.int8 else 50, tq)
    assert_same(quantize(s, 0.1, 5 if qdt == np.int8 else 50, qdt), tv.int_repr().numpy())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_torch_odd_zero_point_ties_differ_on_purpose():
    # torch rounds x * (1/scale) + zp, we round x / scale, then add zp: exact ties with an
    # odd zero point break to different sides (ONNX QuantizeLinear agrees with us).
    torch = pytest.importorskip("torch")
    x = np.array([0.5, 1.5, 2.5, -0.5], np.float32)
    t = torch.quantize_per_tensor(torch.from_numpy(x), 1.0, 1, torch.qint8).int_repr().numpy()
    assert_same(quantize(x, 1.0, 1), np.array([1, 3, 3, 1], np.int8))
    assert_same(t, np.array([2, 2, 4, 0], np.int8))


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's qint8 deprecation notice
def test_torch_quantize_per_channel_parity(rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((16, 300)) * 2).astype(np.float32)
    for axis in (0, 1):
        c = x.shape[axis]
        # float32 scale values: torch multiplies per-channel scales in their own dtype
        # (float64 here, exactly the float32 values), we in float32 -- the same bits.
        scale = rng.uniform(0.01, 0.03, c).astype(np.float32).astype(np.float64)
        zp = 2 * rng.integers(-20, 20, c)
        t = torch.quantize_per_channel(
            torch.from_numpy(x), torch.from_numpy(scale), torch.from_numpy(zp), axis, torch.qint8
        )
        tv = t.int_repr().numpy()
        ours = quantize(x, scale, zp, np.int8, axis=axis)
        assert np.all(np.abs(ours.astype(int) - tv.astype(int)) <= 1)
        assert (ours != tv).sum() <= 3
        assert_same(dequantize(tv, scale, zp, axis=axis), t.dequantize().numpy())


def test_out_argument(rng):
    x = data(rng, 3 * 70, np.float32, 3.0).reshape(3, 70)
    out = np.full((3, 70), 99, np.int8)
    r = quantize(x, 0.02, 1, out=out)
    assert r is out
    assert_same(out, ref_quantize(x, 0.02, 1, np.int8))
    s = np.linspace(0.01, 0.03, 70)
    outu = np.empty((3, 70), np.uint8)
    assert quantize(x, s, 100, np.uint8, axis=1, out=outu) is outu
    assert_same(outu, ref_quantize(x, s, np.full(70, 100), np.uint8, 1))
    y = np.full((3, 70), np.nan, np.float32)
    assert dequantize(out, 0.02, 1, out=y) is y
    assert_same(y, ref_dequantize(out, 0.02, 1))
    with pytest.raises(TypeError, match="out"):
        quantize(x, 0.02, 1, out=np.empty((3, 70), np.uint8))  # int8 result
    with pytest.raises(TypeError, match="out"):
        dequantize(out, 0.02, 1, out=np.empty((3, 70), np.float64))
    with pytest.raises(ValueError, match=r"\(70, 3\).*\(3, 70\)"):
        quantize(x, 0.02, 1, out=np.empty((70, 3), np.int8))
    with pytest.raises(ValueError, match="C-contiguous"):
        quantize(x, 0.02, 1, out=np.empty((70, 3), np.int8).T)
    ro = np.empty((3, 70), np.int8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        quantize(x, 0.02, 1, out=ro)
    with pytest.raises(TypeError, match="out"):
        quantize(x, 0.02, 1, out=[0] * 210)
    buf = np.zeros(4 * 210, np.uint8)
    xs = buf.view(np.float32).reshape(3, 70)
    with pytest.raises(ValueError, match="share memory"):
        quantize(xs, 0.02, 1, np.uint8, out=buf[:210].reshape(3, 70))
