"""Fuzz dropout, the optimizers and clipping with random and junk arguments.

Acceptable outcomes: a result that matches the contract, or TypeError/ValueError with
every array untouched. Never a crash (run under ASan+UBSan by .ci/asan), never a silent
wrong answer, never a write outside the outputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from fuzz_layouts import LAYOUTS, in_layout  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pyfastopt  # noqa: E402
from pyfastopt import optim  # noqa: E402

SETTINGS = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

junk = st.sampled_from(
    [None, "x", [1, 2], object(), b"ab", True, -1, 2**64, math.nan, 1.0, 0.5, -0.5, math.inf]
)
dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.bool_, ">f4"])


@st.composite
def arrays(draw, dtype=None, shape=None):
    dt = draw(dtypes) if dtype is None else dtype
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 70), max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    a = (rng.standard_normal(shape) * 3).astype(dt)
    return in_layout(a, draw(st.sampled_from(LAYOUTS)))


@SETTINGS
@given(
    x=st.one_of(arrays(), junk),
    p=st.one_of(st.floats(0, 0.999), junk),
    seed=st.one_of(st.integers(0, 2**64 - 1), junk),
    offset=st.one_of(st.integers(0, 3), junk),
    use_out=st.booleans(),
)
def test_fuzz_dropout(x, p, seed, offset, use_out):
    before = np.array(x, copy=True) if isinstance(x, np.ndarray) else None
    out = None
    if use_out and isinstance(x, np.ndarray) and x.dtype.kind == "f":
        out = np.full(
            x.shape,
            7.0,
            dtype=x.dtype.newbyteorder("=") if x.dtype.itemsize in (4, 8) else np.float32,
        )
    try:
        y = pyfastopt.dropout(x, p, seed, out=out, offset=offset)
    except (TypeError, ValueError):
        if before is not None:
            assert np.array_equal(x, before, equal_nan=True)
        if out is not None:
            assert (out == 7.0).all()
        return
    xa = np.asarray(x)
    native = xa.dtype.newbyteorder("=")  # byte-swapped input is read through a copy
    assert native in (np.float32, np.float64)
    assert y.shape == xa.shape and y.dtype == native
    keep = pyfastopt.dropout_mask(xa.shape, p, seed, offset=offset)
    scale = xa.dtype.type(1.0 / (1.0 - p))
    with np.errstate(invalid="ignore", over="ignore"):
        expect = xa * np.where(keep, scale, xa.dtype.type(0))
    assert np.array_equal(y, expect, equal_nan=True)
    if out is not None:
        assert y is out


OPTS = [
    (optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (optim.Adam, {}),
    (optim.AdamW, {"amsgrad": True}),
    (optim.RMSprop, {"centered": True, "momentum": 0.5}),
    (optim.Adagrad, {"lr_decay": 0.1}),
]


@st.composite
def step_args(draw):
    """Half the time a gradient of the parameter's shape (any dtype/layout), else anything."""
    n = draw(st.integers(0, 40))
    if draw(st.booleans()):
        grad = draw(
            arrays(dtype=draw(st.sampled_from([np.float32, np.float32, np.float64])), shape=(n,))
        )
    else:
        grad = draw(st.one_of(arrays(), junk))
    return n, grad


@SETTINGS
@given(
    which=st.integers(0, len(OPTS) - 1),
    args=step_args(),
    lr=st.one_of(st.floats(0, 1), st.floats(0, 1), junk),
)
def test_fuzz_optimizer_step(which, args, lr):
    n, grad = args
    cls, kw = OPTS[which]
    p = np.linspace(-1, 1, n).astype(np.float32)
    opt = cls([p], **kw)
    opt.param_groups[0]["lr"] = lr
    before = p.copy()
    try:
        opt.step([grad])
    except (TypeError, ValueError):
        assert p.tobytes() == before.tobytes()
        assert opt.state == {}
        return
    g = np.asarray(grad)
    assert g.shape == p.shape and g.dtype == np.float32
    assert opt.state[0]["step"] == 1


@st.composite
def grad_lists(draw):
    """Half the time writable C-contiguous float arrays (any shapes), else anything."""
    if draw(st.booleans()):
        return [
            np.ascontiguousarray(
                draw(arrays(dtype=draw(st.sampled_from([np.float32, np.float64]))))
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
    return draw(st.lists(st.one_of(arrays(), junk), max_size=3))


@SETTINGS
@given(
    grads=grad_lists(),
    max_norm=st.one_of(st.floats(0, 10), junk),
    norm_type=st.one_of(st.sampled_from([2.0, 1.0, math.inf, 0.0, 3.5, -math.inf]), junk),
)
def test_fuzz_clip_grad_norm(grads, max_norm, norm_type):
    snapshot = [np.array(g, copy=True) if isinstance(g, np.ndarray) else None for g in grads]
    try:
        total = optim.clip_grad_norm_(grads, max_norm, norm_type=norm_type)
    except (TypeError, ValueError):
        for g, s in zip(grads, snapshot):
            if s is not None:
                assert np.array_equal(g, s, equal_nan=True)
        return
    assert isinstance(total, float)
    assert all(isinstance(g, np.ndarray) and g.dtype in (np.float32, np.float64) for g in grads)
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g, s in zip(grads, snapshot):
            tol = 1e-6 if g.dtype == np.float32 else 1e-14
            with np.errstate(invalid="ignore", over="ignore"):
                np.testing.assert_allclose(g, s * coef, rtol=tol, atol=1e-30, equal_nan=True)


# ---- GEMM: matmul / linear / linear_backward ----------------------------------------------
@st.composite
def matrices(draw):
    """Float arrays of 0-4 dims with small, often mismatched shapes and odd layouts."""
    dt = draw(st.sampled_from([np.float32, np.float64, np.float64, np.int64, ">f8"]))
    shape = tuple(draw(st.lists(st.integers(0, 9), max_size=4)))
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    a = (rng.standard_normal(shape) * 3).astype(dt)
    kind = draw(st.sampled_from(["plain", "transposed", "strided", "negative", "broadcast"]))
    if kind == "transposed" and a.ndim >= 2:
        a = np.swapaxes(a, -1, -2)
    elif kind == "strided" and a.ndim and a.shape[-1] > 1:
        a = a[..., ::2]
    elif kind == "negative" and a.ndim:
        a = a[..., ::-1]
    elif kind == "broadcast" and a.ndim:
        a = np.broadcast_to(a[..., :1], a.shape)
    return a


def _numpy_matmul_or_error(a, b):
    try:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)), None
    except (ValueError, TypeError) as exc:
        return None, exc


def _layout(draw, a):
    kind = draw(st.sampled_from(["plain", "transposed", "strided", "negative", "broadcast"]))
    if kind == "transposed" and a.ndim >= 2:
        return np.swapaxes(
            np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2
        )  # same values, F-like
    if kind == "strided" and a.ndim:
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if kind == "negative" and a.ndim:
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if kind == "broadcast" and a.ndim >= 2:
        return np.broadcast_to(a[..., :1, :], a.shape)
    return a


@st.composite
def gemm_pairs(draw):
    """Mostly compatible (a, b) pairs (1-D, 2-D and broadcast batches, odd layouts, size-0
    dimensions), sometimes independent arrays or junk."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.one_of(matrices(), junk)), draw(st.one_of(matrices(), junk))
    dt = draw(st.sampled_from([np.float32, np.float64]))
    m, k, n = (draw(st.integers(0, 40)) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    abatch = tuple(draw(st.lists(st.sampled_from([1, 2, 3]), max_size=2)))
    bbatch = tuple(draw(st.lists(st.sampled_from([1, 2, 3]), max_size=2)))
    ashape = (k,) if draw(st.booleans()) and not abatch else (*abatch, m, k)
    bshape = (k,) if draw(st.booleans()) and not bbatch else (*bbatch, k, n)
    a = _layout(draw, (rng.standard_normal(ashape) * 3).astype(dt))
    b = _layout(
        draw, (rng.standard_normal(bshape) * 3).astype(draw(st.sampled_from([dt, np.float64])))
    )
    return a, b


@SETTINGS
@given(pair=gemm_pairs())
def test_fuzz_matmul(pair):
    """matmul agrees with NumPy where NumPy succeeds on float inputs, and fails cleanly
    (TypeError/ValueError) everywhere else; inputs are never modified."""
    a, b = pair
    before = [np.array(v, copy=True) if isinstance(v, np.ndarray) else None for v in (a, b)]
    floats = all(isinstance(v, np.ndarray) and v.dtype.kind == "f" for v in (a, b))
    try:
        got = pyfastopt.matmul(a, b)
    except (TypeError, ValueError):
        if floats:
            ref, err = _numpy_matmul_or_error(a, b)
            assert err is not None, "pyfastopt rejected a product NumPy computes"
    else:
        assert floats, "a non-float operand was accepted"
        ref, err = _numpy_matmul_or_error(a, b)
        assert err is None
        k = a.shape[-1]
        bound = (
            4
            * max(k, 1)
            * np.finfo(np.result_type(a, b)).eps
            * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
            + 1e-300
        )
        assert np.shape(got) == ref.shape
        assert np.all(np.abs(np.asarray(got, np.float64) - ref) <= bound)
    for v, old in zip((a, b), before):
        if old is not None:
            assert np.array_equal(v, old, equal_nan=True)


@SETTINGS
@given(
    x=st.one_of(matrices(), junk),
    w=st.one_of(matrices(), junk),
    bias=st.one_of(matrices(), st.none()),
    act=st.sampled_from([None, "relu", "gelu", "tanh", 3]),
    need_dx=st.booleans(),
)
def test_fuzz_linear(x, w, bias, act, need_dx):
    """linear and linear_backward either return the right shapes or raise TypeError/ValueError."""
    try:
        y = pyfastopt.linear(x, w, bias, act)
    except (TypeError, ValueError):
        pass
    else:
        assert y.shape == (*x.shape[:-1], w.shape[0])
        assert act in (None, "relu", "gelu")
        grads = pyfastopt.linear_backward(np.ones_like(y), x, w, need_dx=need_dx)
        assert grads[1].shape == w.shape
        assert grads[2].shape == (w.shape[0],)
        assert (grads[0] is None) == (not need_dx)
        if need_dx:
            assert grads[0].shape == x.shape
