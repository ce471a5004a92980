"""Calibration observers: ranges vs NumPy, streaming, constant memory, qparams rules, torch."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import quant
from pyfastopt.quant import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    dequantize,
    quantize,
)
from pyfastopt.quant.observers import qparams_from_range

EPS = float(np.finfo(np.float32).eps)
RANGE = {np.int8: (-128, 127), np.uint8: (0, 255)}


def batches(rng, n=20, size=5000, shift=0.0):
    return [
        (rng.standard_normal(size) * (1 + 0.2 * i) + shift).astype(np.float32) for i in range(n)
    ]


def check_qparams_invariants(scale, zp, lo, hi, qdt, symmetric):
    """0 exactly representable, the (0-widened) range covered, zero point in range."""
    qmin, qmax = RANGE[qdt]
    assert isinstance(scale, float) and isinstance(zp, int)
    assert scale >= EPS and np.float32(scale) == scale
    assert qmin <= zp <= qmax
    assert quantize(np.float32(0.0), scale, zp, qdt) == zp
    assert dequantize(np.array([zp], qdt), scale, zp)[0] == 0.0
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    # the range's ends are reached within half a step (saturation at most there)
    for v in (lo, hi):
        q = quantize(np.float32(v), scale, zp, qdt)
        back = float(dequantize(np.array([q], qdt), scale, zp)[0])
        assert abs(back - v) <= scale * 0.5 * (1 + 1e-5) + 1e-7 * abs(v)
    if symmetric:
        assert zp == (0 if qdt == np.int8 else 128)


# ---- MinMax ----------------------------------------------------------------------------
def test_minmax_streaming_equals_one_batch(rng):
    bs = batches(rng, shift=0.3)
    o = MinMaxObserver()
    for b in bs:
        assert o.observe(b) is b
    allx = np.concatenate(bs)
    assert o.min_val == allx.min() and o.max_val == allx.max()
    one = MinMaxObserver()
    one.observe(allx)
    for qdt in (np.int8, np.uint8):
        for sym in (False, True):
            assert o.qparams(qdt, sym) == one.qparams(qdt, sym)
            check_qparams_invariants(*o.qparams(qdt, sym), allx.min(), allx.max(), qdt, sym)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_minmax_per_channel(rng, axis):
    x = rng.standard_normal((6, 5, 7)).astype(np.float32) * np.arange(1, 8, dtype=np.float32)
    split = (axis + 1) % 3  # stream two batches cut along another axis
    first, second = np.array_split(x, 2, axis=split)
    o = MinMaxObserver(axis=axis)
    o.observe(first)
    o.observe(second * 2)
    full = np.concatenate([first, second * 2], axis=split)
    red = tuple(d for d in range(3) if d != axis % 3)
    np.testing.assert_array_equal(o.min_val, full.min(axis=red))
    np.testing.assert_array_equal(o.max_val, full.max(axis=red))
    scale, zp = o.qparams(np.int8, symmetric=True)
    assert scale.shape == zp.shape == (full.shape[axis],)
    amax = np.maximum(-full.min(axis=red), full.max(axis=red))
    np.testing.assert_allclose(scale, amax / 127, rtol=1e-6)
    q = quantize(full, scale, zp, np.int8, axis=axis)
    assert q.min() >= -127  # symmetric: -max|w| maps to -127, never -128
    assert np.all(np.abs(q).max(axis=red) == 127)  # each channel's max|w| maps to 127
    s, z = o.qparams(np.uint8)
    lo, hi = np.minimum(full.min(axis=red), 0), np.maximum(full.max(axis=red), 0)
    for c in range(full.shape[axis]):
        check_qparams_invariants(float(s[c]), int(z[c]), lo[c], hi[c], np.uint8, False)


def test_minmax_ignores_nan_and_inf():
    o = MinMaxObserver()
    o.observe(np.array([np.nan, 1.0, -2.0, np.inf, -np.inf], np.float32))
    assert (o.min_val, o.max_val) == (-2.0, 1.0)
    o.observe(np.array([np.nan]))
    assert (o.min_val, o.max_val) == (-2.0, 1.0)


def test_qparams_rules_by_hand():
    # asymmetric uint8 on [-1, 3]: scale 4/255, zp = 0 - rint(-1 / scale) = 64 (63.75)
    s, z = qparams_from_range(-1.0, 3.0, np.uint8)
    assert s == float(np.float32(4.0) / np.float32(255)) and z == 64
    # range widened to include 0
    s, z = qparams_from_range(2.0, 3.0, np.uint8)
    assert s == float(np.float32(3.0) / np.float32(255)) and z == 0
    s, z = qparams_from_range(-3.0, -2.0, np.int8)
    assert s == float(np.float32(3.0) / np.float32(255)) and z == 127
    # symmetric: /127, zp 0 (int8) / 128 (uint8)
    assert qparams_from_range(-2.0, 1.0, np.int8, True) == (
        float(np.float32(2) / np.float32(127)),
        0,
    )
    assert qparams_from_range(-2.0, 1.0, np.uint8, True)[1] == 128
    # degenerate: eps floor
    assert qparams_from_range(0.0, 0.0, np.uint8) == (EPS, 0)
    assert qparams_from_range(0.0, 0.0, np.int8) == (EPS, -128)
    assert qparams_from_range(0.0, 0.0, np.int8, True) == (EPS, 0)


def test_all_zero_and_no_data():
    for cls in (MinMaxObserver, MovingAverageMinMaxObserver, HistogramObserver):
        o = cls()
        with pytest.raises(ValueError, match="observer has seen no data"):
            o.qparams()
        o.observe(np.zeros(0, np.float32))
        o.observe(np.array([np.nan]))
        with pytest.raises(ValueError, match="observer has seen no data"):
            o.qparams()
        o.observe(np.zeros(100, np.float32))
        s, z = o.qparams(np.uint8)
        assert s == EPS and z == 0
        check_qparams_invariants(s, z, 0.0, 0.0, np.uint8, False)


# ---- MovingAverage ---------------------------------------------------------------------
def test_moving_average_rule(rng):
    bs = batches(rng, n=6)
    c = 0.25
    o = MovingAverageMinMaxObserver(averaging_constant=c)
    mn, mx = float(bs[0].min()), float(bs[0].max())
    o.observe(bs[0])
    for b in bs[1:]:
        o.observe(b)
        mn = mn + c * (float(b.min()) - mn)
        mx = mx + c * (float(b.max()) - mx)
    assert o.min_val == pytest.approx(mn, rel=1e-12) and o.max_val == pytest.approx(mx, rel=1e-12)
    # per channel
    x = rng.standard_normal((4, 3, 8)).astype(np.float32)
    o = MovingAverageMinMaxObserver(0.5, axis=1)
    o.observe(x[:2])
    o.observe(x[2:])
    red = (0, 2)
    m1, m2 = x[:2].min(axis=red).astype(np.float64), x[2:].min(axis=red).astype(np.float64)
    expect = m1 + 0.5 * (m2 - m1)
    np.testing.assert_allclose(o.min_val, expect, rtol=1e-12)


# ---- torch -----------------------------------------------------------------------------
@pytest.mark.parametrize("qdt", [np.int8, np.uint8])
def test_torch_observer_parity(rng, qdt):
    torch = pytest.importorskip("torch")
    obs = pytest.importorskip("torch.ao.quantization.observer")
    tdt = {np.int8: torch.qint8, np.uint8: torch.quint8}[qdt]
    bs = batches(rng, n=5, size=3000, shift=0.4)
    pairs = [
        (MinMaxObserver(), obs.MinMaxObserver(dtype=tdt)),
        (
            MovingAverageMinMaxObserver(0.1),
            obs.MovingAverageMinMaxObserver(averaging_constant=0.1, dtype=tdt),
        ),
    ]
    for ours, theirs in pairs:
        for b in bs:
            ours.observe(b)
            theirs(torch.from_numpy(b))
        ts, tz = theirs.calculate_qparams()
        s, z = ours.qparams(qdt)
        assert s == pytest.approx(float(ts), rel=1e-6) and z == int(tz)
        # symmetric differs on purpose: /127 (ours) vs /127.5 (torch)
        ts_sym = obs.MinMaxObserver(dtype=tdt, qscheme=torch.per_tensor_symmetric)
        ts_sym(torch.from_numpy(np.concatenate(bs)))
        mm = MinMaxObserver()
        mm.observe(np.concatenate(bs))
        assert mm.qparams(qdt, True)[0] == pytest.approx(
            float(ts_sym.calculate_qparams()[0]) * 127.5 / 127, rel=1e-6
        )
    # per channel, streamed
    xs = [rng.standard_normal((8, 20)).astype(np.float32) * (1 + k) for k in range(4)]
    pairs = [
        (MinMaxObserver(axis=0), obs.PerChannelMinMaxObserver(ch_axis=0, dtype=tdt)),
        (
            MovingAverageMinMaxObserver(0.2, axis=1),
            obs.MovingAveragePerChannelMinMaxObserver(averaging_constant=0.2, ch_axis=1, dtype=tdt),
        ),
    ]
    for ours, theirs in pairs:
        for x in xs:
            ours.observe(x)
            theirs(torch.from_numpy(x))
        ts, tz = theirs.calculate_qparams()
        s, z = ours.qparams(qdt)
        np.testing.assert_allclose(s, ts.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(z, tz.numpy())


# ---- Histogram -------------------------------------------------------------------------
def test_histogram_counts_match_numpy_on_its_edges(rng):
    bs = batches(rng, n=12, size=4000, shift=0.5)
    h = HistogramObserver(bins=256)
    for b in bs:
        assert h.observe(b) is b
    allx = np.concatenate(bs).astype(np.float64)
    assert h.total == allx.size
    assert h.min_val == allx.min() and h.max_val == allx.max()
    e = h.edges()
    assert e[0] <= allx.min() and e[-1] >= allx.max()
    ref, _ = np.histogram(allx, bins=e)
    # rebinning merges whole bins: the histogram is NumPy's on the final edges (up to
    # values within rounding of an edge)
    assert np.abs(h.counts - ref).sum() <= 4


def test_histogram_constant_memory(rng):
    h = HistogramObserver(bins=512)
    sizes = []
    for i in range(30):
        h.observe(rng.standard_normal(2000) * (1.5**i))  # the range keeps growing
        state = [v for v in vars(h).values() if isinstance(v, np.ndarray)]
        sizes.append(sum(a.nbytes for a in state))
    assert len(set(sizes)) == 1 and sizes[0] <= 512 * 8
    assert h.total == 30 * 2000


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
@pytest.mark.parametrize("order", ["growing", "shrinking"])
def test_histogram_streaming_close_to_one_batch(rng, method, order):
    bs = batches(rng, n=10, size=20000)
    if order == "shrinking":
        bs = bs[::-1]
    h = HistogramObserver(method=method)
    for b in bs:
        h.observe(b)
    one = HistogramObserver(method=method)
    one.observe(np.concatenate(bs))
    # growth keeps the width within 2x of what the span needs
    assert h.width <= 2 * (h.max_val - h.min_val) / h.bins * (1 + 1e-9) + one.width
    for sym in (False, True):
        a1, b1 = h.clip_range(np.int8, sym)
        a2, b2 = one.clip_range(np.int8, sym)
        # percentile and mse: within two bin widths; entropy's KL minimum is flat, so
        # its threshold moves further with the resolution (sparse tails: within 15%)
        tol = 2 * max(h.width, one.width) if method != "entropy" else 0.15 * abs(b2)
        assert abs(a1 - a2) <= tol and abs(b1 - b2) <= tol


def test_histogram_percentile_vs_numpy(rng):
    x = rng.standard_normal(200_000) * 2 + 0.7
    h = HistogramObserver(bins=2048, percentile=99.0)
    for part in np.array_split(x, 7):
        h.observe(part)
    a, b = h.clip_range(np.uint8, False)
    assert a == pytest.approx(np.percentile(x, 1.0), abs=2 * h.width)
    assert b == pytest.approx(np.percentile(x, 99.0), abs=2 * h.width)
    a, b = h.clip_range(np.int8, True)
    assert b == pytest.approx(np.percentile(np.abs(x), 99.0), abs=2 * h.width) and a == -b
    s, z = h.qparams(np.int8, True)
    check_qparams_invariants(s, z, a, b, np.int8, True)


def test_histogram_entropy_clips_outliers(rng):
    # Gaussian bulk with a few huge outliers: KL ignores the outliers' magnitude
    x = rng.standard_normal(300_000)
    x[:30] = rng.choice([-1, 1], 30) * 60.0
    h = HistogramObserver(method="entropy")
    h.observe(x)
    a, b = h.clip_range(np.int8, True)
    assert np.percentile(np.abs(x), 99.0) < b < 10.0 and a == -b
    check_qparams_invariants(*h.qparams(np.int8, True), a, b, np.int8, True)


def test_histogram_mse_minimizes_quantization_error(rng):
    x = rng.laplace(size=300_000)  # heavy tails: the best clip is well inside max|x|
    mm = MinMaxObserver()
    mm.observe(x)
    h = HistogramObserver(method="mse")
    h.observe(x)
    a, b = h.clip_range(np.int8, True)
    assert b < 0.9 * np.abs(x).max()
    s, z = h.qparams(np.int8, True)
    check_qparams_invariants(s, z, a, b, np.int8, True)
    err = _qmse(x, s, z, np.int8)
    assert err < 0.8 * _qmse(x, *mm.qparams(np.int8, True), np.int8)
    best = min(
        _qmse(x, *qparams_from_range(-t, t, np.int8, True), np.int8)
        for t in np.linspace(1.0, 13.0, 121)
    )
    assert err <= 1.05 * best
    # with outliers so far out that clipping them costs more than coarse steps, mse keeps
    # (nearly) the whole range -- unlike entropy
    y = rng.standard_normal(300_000)
    y[:30] = rng.choice([-1, 1], 30) * 60.0
    h = HistogramObserver(method="mse")
    h.observe(y)
    assert h.clip_range(np.int8, True)[1] > 40.0


def _qmse(x, s, z, qdt):
    return float(np.mean((dequantize(quantize(x, s, z, qdt), s, z) - x) ** 2))


def test_histogram_one_sided_data(rng):
    x = np.maximum(rng.standard_normal(50_000), 0.0)  # post-ReLU
    for method in ("percentile", "entropy", "mse"):
        h = HistogramObserver(method=method)
        h.observe(x)
        a, b = h.clip_range(np.uint8, False)
        assert 0.0 <= a <= h.width and 0.5 < b <= x.max()
        s, z = h.qparams(np.uint8)
        assert z == 0
        check_qparams_invariants(s, z, a, b, np.uint8, False)


def test_histogram_zeros_first_then_data(rng):
    h = HistogramObserver(bins=64)
    h.observe(np.zeros(1000))
    h.observe(np.array([1.0, 2.0, -1.0]))
    assert h.total == 1003
    assert h.counts[h._bin(0.0)] >= 1000


# ---- errors ----------------------------------------------------------------------------
def test_bad_arguments(rng):
    with pytest.raises(ValueError, match="bins"):
        HistogramObserver(bins=4)
    with pytest.raises(ValueError, match="method"):
        HistogramObserver(method="kl")
    with pytest.raises(ValueError, match="percentile"):
        HistogramObserver(percentile=30.0)
    with pytest.raises(ValueError, match="averaging_constant"):
        MovingAverageMinMaxObserver(averaging_constant=0.0)
    with pytest.raises(TypeError, match="axis"):
        MinMaxObserver(axis=1.5)
    o = MinMaxObserver(axis=1)
    o.observe(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="channels"):
        o.observe(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="axis"):
        MinMaxObserver(axis=3).observe(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="axis"):
        o.qparams(axis=0)
    with pytest.raises(TypeError, match="dtype"):
        o.qparams(np.int16)
    with pytest.raises(TypeError, match="real"):
        MinMaxObserver().observe(np.array(["a"]))
    h = HistogramObserver()
    h.observe(rng.standard_normal(10))
    with pytest.raises(ValueError, match="per tensor"):
        h.qparams(axis=0)


@pytest.mark.parametrize("cls", [quant.MinMaxObserver, quant.MovingAverageMinMaxObserver])
def test_qparams_axis_on_an_observer_built_without_one(cls):
    """qparams(dtype, symmetric, axis=k) per API.md: per-channel along any axis whose
    length stayed the same, equal to an observer built with axis=k."""
    rng = np.random.default_rng(4)
    batches = [rng.standard_normal((6, 5)).astype(np.float32) * (i + 1) for i in range(3)]
    plain, per0, per1 = cls(), cls(axis=0), cls(axis=1)
    for b in batches:
        for o in (plain, per0, per1):
            o.observe(b)
    for dt, sym in ((np.int8, True), (np.uint8, False)):
        for axis, ref in ((0, per0), (1, per1), (-1, per1)):
            got, want = plain.qparams(dt, sym, axis=axis), ref.qparams(dt, sym)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    # the per-tensor answer is unchanged by the extra bookkeeping
    whole = np.concatenate(batches)
    if cls is quant.MinMaxObserver:
        ref = quant.MinMaxObserver()
        ref.observe(whole)
        assert plain.qparams(np.int8, True) == ref.qparams(np.int8, True)
    # a batch axis whose length changes has no per-channel range
    plain.observe(rng.standard_normal((4, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="axis=0"):
        plain.qparams(np.int8, True, axis=0)
    plain.qparams(np.int8, True, axis=1)  # still there
    with pytest.raises(ValueError, match="out of range"):
        plain.qparams(np.int8, True, axis=2)
    plain.reset()
    with pytest.raises(ValueError, match="no data"):
        plain.qparams(np.int8, True, axis=1)
