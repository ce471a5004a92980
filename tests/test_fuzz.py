"""Fuzz the public ops API: random dtypes, shapes, strides, aliasing and junk arguments.

The only acceptable outcomes are a correct result or a TypeError/ValueError; never a
crash, a silent wrong answer, or a write outside the output. Run under ASan+UBSan by
`.ci/asan` as part of the suite.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyfastopt import ops  # noqa: E402

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

dtypes = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_, np.complex64, ">f4", ">f8"]
)
shapes = st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple)
junk = st.sampled_from([None, "x", 1.5, [1, 2], [[1.0], [2.0, 3.0]], object(), b"ab"])


@st.composite
def arrays(draw, dtype=None, shape=None):
    dt = draw(dtypes) if dtype is None else dtype
    shape = draw(shapes) if shape is None else shape
    step = draw(st.sampled_from([1, 1, 2, -1]))
    base_shape = list(shape)
    if base_shape:
        base_shape[-1] = base_shape[-1] * abs(step)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    base = (rng.standard_normal(base_shape) * 4).astype(dt)
    a = base[..., ::step] if base_shape else base
    if draw(st.booleans()) and a.ndim >= 2:
        a = a.T
    if draw(st.booleans()):
        a = a.copy()
        a.setflags(write=draw(st.booleans()))
    return a


def guarded_reference(y, x, a, b):
    return np.float64(a) * x.astype(np.float64) + np.float64(b) * y.astype(np.float64)


@st.composite
def axpby_args(draw):
    """Half the time a compatible pair (same shape and dtype, any strides), else anything."""
    y = draw(arrays())
    if draw(st.booleans()):  # a valid in-place argument
        y = np.ascontiguousarray(np.real(y), dtype=draw(st.sampled_from([np.float32, np.float64])))
    if draw(st.booleans()):
        x = draw(arrays(dtype=y.dtype, shape=y.shape))
    else:
        x = draw(st.one_of(arrays(), junk))
    return y, x


@SETTINGS
@given(args=axpby_args(), a=st.one_of(st.floats(-3, 3), st.floats(-3, 3), junk), b=st.floats(-3, 3))
def test_fuzz_axpby(args, a, b):
    y, x = args
    sentinel = y.copy()
    try:
        expected = guarded_reference(y, np.asarray(x), a, b)
    except Exception:
        expected = None
    try:
        ops.axpby_(y, x, a, b)
    except (TypeError, ValueError):
        # rejected: y must be untouched
        assert np.array_equal(y, sentinel, equal_nan=True)
        return
    # accepted: it must have been valid, and right
    assert y.dtype in (np.float32, np.float64) and y.dtype.isnative
    assert y.flags.c_contiguous and y.flags.writeable
    assert expected is not None and expected.shape == y.shape
    tol = 1e-5 if y.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol * 20)


@SETTINGS
@given(xs=st.lists(st.one_of(arrays(), junk), min_size=0, max_size=4))
def test_fuzz_sum_squares(xs):
    try:
        got = ops.sum_squares(xs)
    except (TypeError, ValueError):
        for x in xs:
            try:
                arr = np.asarray(x)
            except Exception:
                return
            if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
                return
        raise AssertionError("valid float input was rejected") from None
    ref = math.fsum(float(v) ** 2 for x in xs for v in np.asarray(x, np.float64).ravel())
    assert math.isclose(got, ref, rel_tol=1e-12, abs_tol=1e-300)


@SETTINGS
@given(
    n=st.integers(1, 5000),
    shift=st.integers(-40, 40),
    a=st.floats(-2, 2),
    b=st.floats(-2, 2),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_fuzz_axpby_overlapping_views(n, shift, a, b, dtype):
    pad = 64
    buf = np.random.default_rng(n).standard_normal(n + 2 * pad).astype(dtype)
    y = buf[pad : pad + n]
    x = buf[pad + shift : pad + shift + n]
    x0, y0 = x.copy(), y.copy()
    before, after = buf[:pad].copy(), buf[pad + n :].copy()
    ops.axpby_(y, x, a, b)
    expect = y0.copy()
    ops.axpby_(expect, x0, a, b)
    assert y.tobytes() == expect.tobytes()
    # nothing outside y was written
    assert buf[:pad].tobytes() == before.tobytes()
    assert buf[pad + n :].tobytes() == after.tobytes()
