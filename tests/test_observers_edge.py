"""Observers at float32's edge (issue 16 point 5).

A range such as [-3e38, 3e38] is representable in float32 but its width is not: the
asymmetric scale used to come out inf. Every observer must now give finite,
float32-representable qparams that quantize the data, or -- for float64 data needing a
scale beyond float32 -- raise ValueError at qparams() naming the range.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pyfastopt import quant
from pyfastopt.quant import observers as obs

F32_MAX = float(np.finfo(np.float32).max)

OBSERVERS = {
    "minmax": quant.MinMaxObserver,
    "moving": quant.MovingAverageMinMaxObserver,
    "hist-percentile": lambda: quant.HistogramObserver(method="percentile"),
    "hist-entropy": lambda: quant.HistogramObserver(method="entropy"),
    "hist-mse": lambda: quant.HistogramObserver(method="mse"),
}
EDGES = {
    "[-3e38, 3e38]": np.array([-3e38, 3e38, 1.0, -2.5], np.float32),
    "+-float32 max": np.array([-F32_MAX, F32_MAX, 0.5], np.float32),
    "[0, float32 max]": np.array([0.0, F32_MAX, 1e30], np.float32),
    "[-float32 max, 0]": np.array([-F32_MAX, -1.0], np.float32),
    "[-3e38, 1]": np.array([-3e38, 1.0], np.float32),
}


def _check_qparams(scale, zp, dtype, data):
    qmin, qmax = (0, 255) if dtype == np.uint8 else (-128, 127)
    assert isinstance(scale, float) and np.isfinite(scale) and scale > 0
    assert float(np.float32(scale)) == scale  # exactly a float32
    assert qmin <= zp <= qmax
    q = quant.quantize(data, scale, zp, dtype=dtype)
    back = quant.dequantize(q, scale, zp).astype(np.float64)
    assert np.all(np.isfinite(back))
    # every value comes back within one step (saturation at the ends: within two)
    err = np.abs(back - data.astype(np.float64))
    assert np.all(err <= 2 * scale), (err.max(), scale)


@pytest.mark.parametrize("name", sorted(OBSERVERS))
@pytest.mark.parametrize("edge", sorted(EDGES))
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_finite_qparams_at_the_float32_edge(name, edge, dtype, symmetric):
    data = EDGES[edge]
    o = OBSERVERS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        o.observe(data)
        scale, zp = o.qparams(dtype, symmetric=symmetric)
    _check_qparams(scale, zp, dtype, data)


def test_per_channel_edge():
    x = np.array([[-3e38, 3e38], [-1.0, 2.0], [0.0, F32_MAX]], np.float32)
    o = quant.MinMaxObserver(axis=0)
    o.observe(x)
    scale, zp = o.qparams(np.uint8)
    assert scale.dtype == np.float32 and np.all(np.isfinite(scale))
    for c in range(3):
        _check_qparams(float(scale[c]), int(zp[c]), np.uint8, x[c])


def test_normal_ranges_keep_the_float32_formula():
    """Away from the edge nothing changed: torch's float32 arithmetic, bit for bit."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        lo, hi = sorted(rng.standard_normal(2) * 10.0 ** rng.integers(-30, 30))
        for dtype in (np.uint8, np.int8):
            qmin, qmax = (0, 255) if dtype == np.uint8 else (-128, 127)
            lo32, hi32 = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
            eps = np.float32(np.finfo(np.float32).eps)
            want = np.maximum((hi32 - lo32) / np.float32(qmax - qmin), eps).astype(np.float32)
            want_zp = int(np.clip(qmin - np.rint(lo32 / want).astype(np.int64), qmin, qmax))
            assert obs.qparams_from_range(lo, hi, dtype) == (float(want), want_zp)


def test_float64_far_beyond_float32_is_value_error():
    for make in OBSERVERS.values():
        o = make()
        o.observe(np.array([-1e300, 1e300]))  # observing is fine
        with pytest.raises(
            ValueError, match=r"range \[-[\d.]+e\+(29\d|300), [\d.]+e\+(29\d|300)\].*float32"
        ):
            o.qparams(np.uint8)
        with pytest.raises(ValueError, match="float32"):
            o.qparams(np.int8, symmetric=True)


def test_float64_at_the_end_of_float64():
    """A span that overflows float64 itself: the histogram stops binning, qparams says why."""
    for make in OBSERVERS.values():
        o = make()
        o.observe(np.array([0.0, 1.0, 2.0]))
        o.observe(np.array([-1.7e308, 1.7e308]))
        with pytest.raises(ValueError, match="float32"):
            o.qparams(np.uint8)
        o.reset()
        o.observe(np.array([0.0, 1.0]))
        assert o.qparams(np.uint8)[0] == pytest.approx(1 / 255)


def test_float64_just_beyond_float32_is_value_error():
    """float64 data past float32's largest value: int8 dequantizes to float32, so it
    cannot be represented, even where the scale itself would fit float32."""
    o = quant.MinMaxObserver()
    o.observe(np.array([-1e39, 0.0, 5.0]))
    with pytest.raises(ValueError, match=r"range \[-1e\+39, 5\.0\] .*beyond float32"):
        o.qparams(np.uint8)
    o = quant.MinMaxObserver(axis=0)
    o.observe(np.array([[1.0, 2.0], [-1e39, 0.0]]))
    with pytest.raises(ValueError, match=r"\(channel 1\)"):
        o.qparams(np.uint8)
    with pytest.raises(ValueError, match="float32"):
        obs.qparams_from_range(-1e41, 1e41, np.uint8)
    with pytest.raises(ValueError, match="nan"):
        obs.qparams_from_range(np.nan, 1.0, np.uint8)
