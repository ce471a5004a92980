"""Fuzz the int8 API (quantize/dequantize, matmul_int8, QuantizedLinear, QuantizedModel).

Acceptable outcomes: a result that matches the contract, or TypeError/ValueError with
every input untouched. Never a crash (run under ASan+UBSan by .ci/asan), never a silent
wrong answer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from fuzz_layouts import LAYOUTS, in_layout  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyfastopt import quant  # noqa: E402

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

junk = st.sampled_from(
    [None, "x", [1, 2], object(), True, -1, 2**64, math.nan, math.inf, 0.0, -0.5, 1e-40]
)
dtypes = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int32, np.bool_, ">f4"]
)


@st.composite
def arrays(draw, dtype=None, max_dim=40, ndim=None):
    dt = draw(dtypes) if dtype is None else dtype
    nd = draw(st.integers(0, 3)) if ndim is None else ndim
    shape = tuple(draw(st.lists(st.integers(0, max_dim), min_size=nd, max_size=nd)))
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    if np.dtype(dt).kind in "iub":
        info = np.iinfo(dt) if np.dtype(dt).kind != "b" else None
        a = (
            rng.integers(info.min, info.max, shape, endpoint=True).astype(dt)
            if info
            else rng.integers(0, 2, shape).astype(dt)
        )
    else:
        a = (rng.standard_normal(shape) * 4).astype(dt)
        if a.size and draw(st.booleans()):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf, 6e4])
            )
    return in_layout(a, draw(st.sampled_from(LAYOUTS)))


def _unchanged(arrs, before):
    for a, b in zip(arrs, before):
        if b is not None:
            assert np.array_equal(a, b, equal_nan=True)


def _snap(*xs):
    return [np.array(x, copy=True) if isinstance(x, np.ndarray) else None for x in xs]


@st.composite
def mostly(draw, good, bad):
    """``good`` three times in four, else ``bad``: most calls get far enough to compute."""
    return draw(good) if draw(st.integers(0, 3)) else draw(bad)


@SETTINGS
@given(
    x=mostly(arrays(dtype=np.float32), st.one_of(arrays(), junk)),
    scale=mostly(st.floats(1e-3, 10), st.one_of(junk, arrays(ndim=1))),
    zp=mostly(st.integers(0, 127), st.one_of(st.integers(-300, 300), junk, arrays(ndim=1))),
    dtype=st.sampled_from([np.int8, np.uint8, np.int8, np.uint8, np.int16, "int8", None]),
    axis=mostly(st.none(), st.one_of(st.integers(-4, 4), junk)),
)
def test_fuzz_quantize_dequantize(x, scale, zp, dtype, axis):
    before = _snap(x, scale, zp)
    try:
        q = quant.quantize(x, scale, zp, dtype=dtype, axis=axis)
    except (TypeError, ValueError):
        _unchanged([x, scale, zp], before)
        return
    _unchanged([x, scale, zp], before)
    xa = np.asarray(x)
    assert q.shape == xa.shape and q.dtype in (np.int8, np.uint8)
    if axis is None and xa.dtype.kind == "f" and xa.size:  # per tensor: the formula
        info = np.iinfo(q.dtype)
        s = xa.dtype.type(scale)
        with np.errstate(all="ignore"):
            ref = np.rint(xa / s) + int(zp)
        ref = np.where(np.isnan(ref), info.max, np.clip(ref, info.min, info.max))
        np.testing.assert_array_equal(q, ref.astype(q.dtype))
    try:
        y = quant.dequantize(q, scale, zp, axis=axis)
    except (TypeError, ValueError):
        return
    assert y.dtype == np.float32 and y.shape == q.shape


@st.composite
def int8_pairs(draw):
    m, k, n = (draw(st.integers(0, 40)) for _ in range(3))
    k2 = k + draw(st.integers(1, 3)) if draw(st.integers(0, 9)) == 0 else k  # 1 in 10: mismatch
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    adt = draw(st.sampled_from([np.uint8, np.int8, np.int16, np.float32]))
    bdt = draw(st.sampled_from([np.int8, np.uint8, np.int32]))
    a = rng.integers(
        -128 if adt != np.uint8 else 0, 128 if adt != np.uint8 else 256, (m, k)
    ).astype(adt)
    b = rng.integers(
        -128 if bdt != np.uint8 else 0, 128 if bdt != np.uint8 else 256, (k2, n)
    ).astype(bdt)
    if draw(st.booleans()) and a.shape[0] > 1:
        a = a[::2]  # strided rows (the shapes still match)
    if draw(st.booleans()):
        b = np.asfortranarray(b)
    za = draw(mostly(st.integers(0, 127), st.one_of(st.integers(-200, 300), junk)))
    zb = draw(mostly(st.integers(0, 127), st.one_of(st.integers(-200, 300), junk)))
    return a, za, b, zb


@SETTINGS
@given(args=int8_pairs())
def test_fuzz_matmul_int8(args):
    a, za, b, zb = args
    before = _snap(a, b)
    try:
        c = quant.matmul_int8(a, za, b, zb)
    except (TypeError, ValueError):
        _unchanged([a, b], before)
        return
    _unchanged([a, b], before)
    ref = (a.astype(np.int64) - int(za)) @ (b.astype(np.int64) - int(zb))
    assert c.dtype == np.int32
    np.testing.assert_array_equal(c, ref.astype(np.int32))


@SETTINGS
@given(
    x=mostly(
        st.builds(
            lambda b, seed: np.random.default_rng(seed).standard_normal((b, 12)).astype(np.float32),
            st.integers(0, 5),
            st.integers(0, 99),
        ),
        st.one_of(arrays(max_dim=12), junk),
    ),
    out_f=st.integers(1, 9),
    per_channel=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", 3]),
    static=st.booleans(),
)
def test_fuzz_quantized_linear_and_model(x, out_f, per_channel, act, static):
    rng = np.random.default_rng(out_f)
    in_f = 12
    w = rng.standard_normal((out_f, in_f)).astype(np.float32)
    b = rng.standard_normal(out_f).astype(np.float32)
    try:
        ql = quant.QuantizedLinear.from_float(w, b, per_channel=per_channel, activation=act)
    except (TypeError, ValueError):
        assert act not in (None, "relu")
        return
    if static:
        ql.set_input_qparams(0.05, 128)
    before = _snap(x)
    try:
        y = ql(x)
    except (TypeError, ValueError):
        _unchanged([x], before)
        return
    _unchanged([x], before)
    xa = np.asarray(x)
    assert y.dtype == np.float32 and y.shape[-1] == out_f
    if xa.dtype.kind == "f" and xa.size and np.isfinite(xa).all() and not static:
        ref = xa.reshape(-1, in_f).astype(np.float64) @ w.T.astype(np.float64) + b
        if act == "relu":
            ref = np.maximum(ref, 0)
        span = np.abs(xa).max() * np.abs(w).sum(1).max() + 1
        assert np.abs(y.reshape(ref.shape) - ref).max() <= 0.02 * span
