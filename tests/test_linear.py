"""pyfastopt.linear and pyfastopt.linear_backward against their contract:
``linear(x, weight, bias, activation) = act(x @ weight.T + bias)`` (PyTorch layout, exact
erf GELU) and ``linear_backward(dy, x, weight) = (dy @ W, dy2.T @ x2, dy2.sum(0))`` with
the leading dims of dy/x flattened into rows.

Values are compared with ``matmul_reference`` (float64) under elementwise forward-error
bounds: the GEMM bound with K + 1 terms for the pre-activation, propagated through the
activation (relu is 1-Lipschitz, gelu 1.13-Lipschitz, plus a few ulps for evaluating
it). Gradients are also checked against central finite differences of
``sum(act(linear(x)) * g)`` and, when torch is installed, against torch autograd.
"""

from __future__ import annotations

import re

import matmul_reference as ref
import numpy as np
import pytest
from conftest import DTYPES

import pyfastopt

if not hasattr(pyfastopt, "linear") or not hasattr(pyfastopt, "linear_backward"):
    pytest.skip("pyfastopt.linear is not implemented yet", allow_module_level=True)

ACTIVATIONS = [None, "relu", "gelu"]
# (leading dims of x, in_features, out_features)
SHAPES = [
    ((), 33, 17),  # 1-D x -> (out,)
    ((), 1, 1),
    ((1,), 1, 1),
    ((0,), 5, 3),  # no rows
    ((4,), 0, 6),  # in_features = 0: y = act(bias)
    ((5,), 1, 40),
    ((7,), 40, 1),
    ((16,), 33, 17),
    ((97,), 101, 127),
    ((64,), 257, 70),
    ((2, 3), 19, 23),  # 3-D x
    ((2, 0), 5, 3),
    ((3, 5, 2), 7, 9),  # 4-D x
]


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def problem(rng, lead, n_in, n_out, dtype, bias=True):
    x = rand(rng, (*lead, n_in), dtype)
    w = rand(rng, (n_out, n_in), dtype, 1 / np.sqrt(max(n_in, 1)))
    b = rand(rng, n_out, dtype) if bias else None
    return x, w, b


def check_linear(x, w, b, activation, what, dtype=None):
    """linear(...) against the reference: dtype, shape, values; inputs untouched."""
    copies = [None if v is None else np.array(v, copy=True) for v in (x, w, b)]
    y = pyfastopt.linear(x, w, b, activation=activation)
    expected, bound = ref.linear(*copies, activation)
    dt = dtype if dtype is not None else np.asarray(x).dtype
    assert isinstance(y, np.ndarray), f"{what}: returned {type(y).__name__}"
    ref.assert_close(y, expected, bound, what, dtype=dt, shape=expected.shape)
    for name, v, v0 in zip(("x", "weight", "bias"), (x, w, b), copies):
        if v is not None:
            np.testing.assert_array_equal(v, v0, err_msg=f"{what}: {name} modified")
    return y


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_reference(simd, rng, dtype, activation):
    for lead, n_in, n_out in SHAPES:
        for bias in (True, False):
            x, w, b = problem(rng, lead, n_in, n_out, dtype, bias)
            what = f"linear x{x.shape} w{w.shape} bias={bias} act={activation} {simd}"
            y = check_linear(x, w, b, activation, what)
            assert y.shape == (*lead, n_out)
    # keyword and positional forms agree
    x, w, b = problem(rng, (6,), 10, 12, dtype)
    y1 = pyfastopt.linear(x, w, b, activation)
    y2 = pyfastopt.linear(x=x, weight=w, bias=b, activation=activation)
    np.testing.assert_array_equal(y1, y2)


def test_linear_default_arguments(rng):
    x, w, b = problem(rng, (5,), 8, 3, np.float64)
    check_linear(x, w, None, None, "linear(x, w)")
    expected, bound = ref.linear(x, w, None, None)
    ref.assert_close(pyfastopt.linear(x, w), expected, bound, "linear(x, w)")
    expected, bound = ref.linear(x, w, b, None)
    ref.assert_close(pyfastopt.linear(x, w, b), expected, bound, "linear(x, w, b)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_zero_in_features_is_act_bias(simd, dtype):
    b = np.array([-2.0, -0.5, 0.0, 0.5, 3.0], dtype)
    x, w = np.ones((3, 0), dtype), np.ones((5, 0), dtype)
    np.testing.assert_array_equal(pyfastopt.linear(x, w, b), np.broadcast_to(b, (3, 5)))
    np.testing.assert_array_equal(pyfastopt.linear(x, w), np.zeros((3, 5), dtype))
    relu = pyfastopt.linear(x, w, b, activation="relu")
    np.testing.assert_array_equal(relu, np.broadcast_to(np.maximum(b, 0), (3, 5)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_is_the_exact_erf_form(simd, dtype):
    """in_features = 1, weight 1: y = gelu(x) exactly the erf form, not the tanh one."""
    z = np.linspace(-12, 12, 4801).astype(dtype)
    x, w = z[:, None], np.ones((1, 1), dtype)
    y = check_linear(x, w, None, "gelu", f"gelu sweep {np.dtype(dtype).name}")
    _, bound = ref.linear(x, w, None, "gelu")
    z64 = z.astype(np.float64)
    tanh_form = 0.5 * z64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (z64 + 0.044715 * z64**3)))
    assert (np.abs(tanh_form - ref.gelu(z64)) > bound[:, 0]).any()  # the check can tell
    assert np.isfinite(y).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 40, 300])  # streamed rows and register tiles
def test_gelu_accuracy_relative_to_x(simd, dtype, rows):
    """gelu's own error, tighter than the generic bound: float32 within 4e-7 |x| (the
    vectorized erfc), float64 within 1e-15 |x| (the C library), over [-15, 15]."""
    z = np.linspace(-15, 15, 30 * rows + 1).astype(dtype)
    x = z[: (z.size // rows) * rows].reshape(rows, -1)
    y = np.stack(
        [pyfastopt.linear(col[:, None], np.ones((1, 1), dtype), None, "gelu")[:, 0] for col in x.T],
        axis=1,
    )
    want = ref.gelu(x.astype(np.float64))
    tol = (4e-7 if dtype == np.float32 else 1e-15) * np.abs(x.astype(np.float64)) + 1e-37
    assert np.all(np.abs(y - want) <= tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_exact_zeros(simd, rng, dtype):
    """relu output: exactly 0 where the pre-activation is clearly negative, positive where
    it is clearly positive, never negative."""
    for lead, n_in, n_out in [((1,), 7, 9), ((61,), 33, 70), ((2, 5), 129, 17)]:
        x, w, b = problem(rng, lead, n_in, n_out, dtype)
        y = np.asarray(pyfastopt.linear(x, w, b, activation="relu"))
        pre = ref.linear_pre(x, w, b)
        margin = 4 * ref.linear_pre_bound(x, w, b, dtype)
        neg, pos = pre < -margin, pre > margin
        assert neg.any() and pos.any()
        what = f"relu x{x.shape} w{w.shape}"
        assert not (y < 0).any() and not np.isnan(y).any(), f"{what}: negative or NaN output"
        assert (y[neg] == 0).all(), f"{what}: {int((y[neg] != 0).sum())} not exactly 0"
        assert (y[pos] > 0).all(), f"{what}: positive pre-activation clipped"
        linear_out = np.asarray(pyfastopt.linear(x, w, b))
        ref.assert_close(y[pos], linear_out[pos], margin[pos], f"{what}: relu vs identity")


def _x_layouts(rng, rows, n_in, dtype):
    big = rand(rng, (2 * rows + 1, 3 * n_in), dtype)
    ro = rand(rng, (rows, n_in), dtype)
    ro.flags.writeable = False
    return {
        "C": rand(rng, (rows, n_in), dtype),
        "x.T view": rand(rng, (n_in, rows), dtype).T,
        "strided": big[::2, ::3][:rows, :n_in],
        "negative strides": big[::-2, ::-3][:rows, :n_in],
        "unaligned": rand(rng, rows * n_in + 1, dtype)[1:].reshape(rows, n_in),
        "read-only": ro,
        "3-d Fortran": np.asfortranarray(rand(rng, (2, rows // 2, n_in), dtype)),
    }


def _w_layouts(rng, n_out, n_in, dtype):
    return {
        "C": rand(rng, (n_out, n_in), dtype),
        "transposed view (in, out).T": rand(rng, (n_in, n_out), dtype).T,
        "Fortran": np.asfortranarray(rand(rng, (n_out, n_in), dtype)),
        "negative strides": rand(rng, (n_out, 2 * n_in), dtype)[::-1, ::-2],
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_layouts(simd, rng, dtype):
    rows, n_in, n_out = 22, 37, 29
    b_views = {
        "C": rand(rng, n_out, dtype),
        "strided": rand(rng, 2 * n_out, dtype)[::2],
        "reversed": rand(rng, n_out, dtype)[::-1],
        "list": rand(rng, n_out, dtype).tolist(),
    }
    for nx, x in _x_layouts(rng, rows, n_in, dtype).items():
        for nw, w in _w_layouts(rng, n_out, n_in, dtype).items():
            for nb, b in b_views.items():
                if isinstance(b, list) and dtype == np.float32:
                    continue  # a list is float64: a mixed-dtype call, not this test's point
                what = f"x {nx}, weight {nw}, bias {nb} ({np.dtype(dtype).name})"
                check_linear(x, w, b, "gelu", what, dtype=dtype)


def test_linear_array_likes():
    x = [[1.0, 2.0], [3.0, -4.0], [0.5, 0.25]]
    w = [[1.0, -1.0], [2.0, 0.5], [0.0, 1.0]]
    b = [0.5, -1.0, 2.0]
    y = pyfastopt.linear(x, w, b)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    np.testing.assert_array_equal(y, np.array(x) @ np.array(w).T + np.array(b))  # exact
    np.testing.assert_array_equal(
        pyfastopt.linear(x[0], w, b, activation="relu"), np.maximum(y[0], 0)
    )


# ----------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_out(simd, rng, dtype):
    for lead, n_in, n_out in [((), 33, 17), ((40,), 33, 17), ((2, 3), 19, 23), ((0,), 4, 5)]:
        for activation in ACTIVATIONS:
            x, w, b = problem(rng, lead, n_in, n_out, dtype)
            out, buf = ref.guarded_out((*lead, n_out), dtype)
            what = f"linear out= x{x.shape} act={activation}"
            assert pyfastopt.linear(x, w, b, activation=activation, out=out) is out, what
            expected, bound = ref.linear(x, w, b, activation)
            ref.assert_close(out, expected, bound, what, dtype=dtype, shape=expected.shape)
            ref.assert_guards_intact(buf, what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_out_aliasing_x(simd, rng, dtype):
    """out may be x (in == out features) or the weight (rows == out == in), as with
    NumPy's out=: the result is as if every input were read first."""
    for rows, n in [(1, 5), (37, 33), (130, 64)]:
        for activation in ACTIVATIONS:
            x, w, b = problem(rng, (rows,), n, n, dtype)
            what = f"rows={rows} n={n} act={activation}"
            expected, bound = ref.linear(x, w, b, activation)
            xx = x.copy()
            assert pyfastopt.linear(xx, w, b, activation=activation, out=xx) is xx
            ref.assert_close(xx, expected, bound, f"out=x {what}")
            if rows >= n:
                xs, ww = x[:n], w.copy()
                expected, bound = ref.linear(xs, w, b, activation)
                assert pyfastopt.linear(xs, ww, b, activation=activation, out=ww) is ww
                ref.assert_close(ww, expected, bound, f"out=weight {what}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_out_rejected(dtype):
    x, w, b = np.ones((6, 5), dtype), np.ones((4, 5), dtype), np.ones(4, dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    read_only = np.zeros((6, 4), dtype)
    read_only.flags.writeable = False
    value_errors = {
        "wrong shape": np.zeros((6, 5), dtype),
        "transposed shape": np.zeros((4, 6), dtype),
        "flat": np.zeros(24, dtype),
        "strided": np.zeros((6, 8), dtype)[:, ::2],
        "Fortran order": np.zeros((6, 4), dtype, order="F"),
        "negative stride": np.zeros((6, 4), dtype)[::-1],
        "read-only": read_only,
    }
    for label, out in value_errors.items():
        with pytest.raises(ValueError, match=r"\bout\b"):
            pyfastopt.linear(x, w, b, out=out)
        assert (out == 0).all(), f"{label}: out modified by a failing call"
    for out in (np.zeros((6, 4), other), np.zeros((6, 4), np.int32), [[0.0] * 4] * 6):
        with pytest.raises((TypeError, ValueError), match=r"\bout\b"):
            pyfastopt.linear(x, w, b, out=out)


# ----------------------------------------------------------------------------- forward errors


@pytest.mark.parametrize("bad", [np.int64, np.int32, np.float16, np.complex128, np.bool_, object])
def test_linear_bad_dtype_names_the_argument(bad):
    x, w, b = np.ones((3, 4)), np.ones((2, 4)), np.ones(2)
    with pytest.raises(TypeError, match=r"\bx\b"):
        pyfastopt.linear(x.astype(bad), w, b)
    with pytest.raises(TypeError, match=r"\bweight\b"):
        pyfastopt.linear(x, w.astype(bad), b)
    with pytest.raises(TypeError, match=r"\bbias\b"):
        pyfastopt.linear(x, w, b.astype(bad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_shape_errors_name_the_argument(dtype):
    def a(*shape):
        return np.ones(shape, dtype)

    cases = [
        ((a(3, 4), a(2, 5), a(2)), r"\b(x|weight)\b", [(3, 4), (2, 5)]),
        ((a(4), a(2, 5), None), r"\b(x|weight)\b", [(4,), (2, 5)]),
        ((a(2, 3, 4), a(2, 3), None), r"\b(x|weight)\b", [(2, 3, 4), (2, 3)]),
        ((a(3, 4), a(4), None), r"\bweight\b", [(4,)]),
        ((a(3, 4), a(1, 2, 4), None), r"\bweight\b", [(1, 2, 4)]),
        ((a(3, 4), a(2, 4), a(3)), r"\bbias\b", [(3,)]),
        ((a(3, 4), a(2, 4), a(1, 2)), r"\bbias\b", [(1, 2)]),
        ((a(3, 4), a(2, 4), a(2, 1)), r"\bbias\b", [(2, 1)]),
        ((a(3, 4), a(2, 4), np.ones((), dtype)), r"\bbias\b", []),
        ((np.ones((), dtype), a(2, 4), None), r"\bx\b", []),
    ]
    for (x, w, b), pattern, shapes in cases:
        with pytest.raises(ValueError, match=pattern) as exc:
            pyfastopt.linear(x, w, b)
        for s in shapes:
            assert re.search(ref.shape_re(s), str(exc.value)), (
                f"message should name shape {s}: {exc.value}"
            )


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu6", "gelu-tanh", "RELU", ""])
def test_unknown_activation_named(activation):
    x, w = np.ones((3, 4)), np.ones((2, 4))
    with pytest.raises(ValueError, match=re.escape(activation) or None):
        pyfastopt.linear(x, w, activation=activation)


def test_activation_of_wrong_type():
    x, w = np.ones((3, 4)), np.ones((2, 4))
    for activation in (1, True, np.maximum, ("relu",)):
        with pytest.raises((TypeError, ValueError)):
            pyfastopt.linear(x, w, activation=activation)


# ----------------------------------------------------------------------------- backward

BACKWARD_SHAPES = [
    ((), 33, 17),
    ((1,), 1, 1),
    ((0,), 5, 3),  # no rows: dweight and dbias are zeros
    ((4,), 0, 6),
    ((7,), 40, 1),
    ((97,), 101, 127),
    ((300,), 65, 70),
    ((2, 3), 19, 23),  # leading dims flattened
    ((3, 5, 2), 7, 9),
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_matches_formulas(simd, rng, dtype):
    for lead, n_in, n_out in BACKWARD_SHAPES:
        x, w, _ = problem(rng, lead, n_in, n_out, dtype, bias=False)
        dy = rand(rng, (*lead, n_out), dtype)
        copies = [v.copy() for v in (dy, x, w)]
        what = f"linear_backward dy{dy.shape} x{x.shape} w{w.shape} {simd}"
        dx, dw, db = pyfastopt.linear_backward(dy, x, w)
        rx, rw, rb = ref.linear_backward(dy, x, w)
        bx, bw, bb = ref.linear_backward_bounds(dy, x, w, dtype)
        ref.assert_close(dx, rx, bx, f"{what}: dx", dtype=dtype, shape=x.shape)
        ref.assert_close(dw, rw, bw, f"{what}: dweight", dtype=dtype, shape=w.shape)
        ref.assert_close(db, rb, bb, f"{what}: dbias", dtype=dtype, shape=(n_out,))
        if np.prod(lead, dtype=np.int64) == 0:
            assert (np.asarray(dw) == 0).all() and (np.asarray(db) == 0).all(), what
        for v, v0, name in zip((dy, x, w), copies, ("dy", "x", "weight")):
            np.testing.assert_array_equal(v, v0, err_msg=f"{what}: {name} modified")

        res = pyfastopt.linear_backward(dy, x, w, need_dx=False)
        assert isinstance(res, tuple) and len(res) == 3 and res[0] is None, (
            f"{what}: need_dx=False must return (None, dweight, dbias)"
        )
        ref.assert_close(res[1], rw, bw, f"{what}: dweight (need_dx=False)", dtype=dtype)
        ref.assert_close(res[2], rb, bb, f"{what}: dbias (need_dx=False)", dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_leading_dims_flattened(simd, rng, dtype):
    n_in, n_out = 11, 13
    x, w, _ = problem(rng, (2, 3), n_in, n_out, dtype, bias=False)
    dy = rand(rng, (2, 3, n_out), dtype)
    dx, dw, db = pyfastopt.linear_backward(dy, x, w)
    assert dx.shape == (2, 3, n_in) and dw.shape == (n_out, n_in) and db.shape == (n_out,)
    dx2, dw2, db2 = pyfastopt.linear_backward(dy.reshape(6, n_out), x.reshape(6, n_in), w)
    bx, bw, bb = ref.linear_backward_bounds(dy, x, w, dtype)
    ref.assert_close(dx, dx2.reshape(2, 3, n_in), 2 * bx, "dx 3-d vs 2-d")
    ref.assert_close(dw, dw2, 2 * bw, "dweight 3-d vs 2-d")
    ref.assert_close(db, db2, 2 * bb, "dbias 3-d vs 2-d")
    # non-contiguous dy, x and weight (no unit stride anywhere)
    xt = rand(rng, (n_in, 3, 2), dtype).T  # (2, 3, n_in)
    dyt = rand(rng, (2 * n_out, 3, 2), dtype)[::-2].T  # (2, 3, n_out)
    wt = rand(rng, (n_in, n_out), dtype).T
    got = pyfastopt.linear_backward(dyt, xt, wt)
    bounds = ref.linear_backward_bounds(dyt, xt, wt, dtype)
    for name, g, r, bd in zip(
        ("dx", "dweight", "dbias"), got, ref.linear_backward(dyt, xt, wt), bounds
    ):
        ref.assert_close(g, r, bd, f"{name}, non-contiguous dy/x/weight", dtype=dtype)


def _loss_and_grads(x, w, b, g, activation):
    """loss = sum(act(x @ w.T + b) * g) with pyfastopt.linear; its gradients with
    pyfastopt.linear_backward (the activation derivative applied here, by the caller)."""
    pre = ref.linear_pre(x, w, b)
    if activation is None:
        dy = g
    elif activation == "relu":
        dy = g * (pre > 0)
    else:
        dy = g * ref.gelu_grad(pre)
    dx, dw, db = pyfastopt.linear_backward(dy, x, w)
    return dx, dw, db, pre


def _fd(f, v, h):
    """Central differences of the scalar f() w.r.t. every element of v (in place)."""
    grad = np.zeros_like(v)
    flat, gflat = v.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("lead", [(5,), (2, 3), ()], ids=["2-d", "3-d", "1-d"])
def test_linear_backward_finite_differences(rng, activation, lead):
    n_in, n_out = 7, 4
    x, w, b = problem(rng, lead, n_in, n_out, np.float64)
    g = rand(rng, (*lead, n_out), np.float64)
    dx, dw, db, pre = _loss_and_grads(x, w, b, g, activation)
    h = 1e-6
    if activation == "relu":  # keep every pre-activation away from the kink
        assert np.abs(pre).min() > 10 * h * (np.abs(x).max() + np.abs(w).max() + 1)

    def loss():
        y = pyfastopt.linear(x, w, b, activation=activation)
        return float(np.sum(np.asarray(y, np.float64) * g))

    for name, got, v in (("dx", dx, x), ("dweight", dw, w), ("dbias", db, b)):
        fd = _fd(loss, v, h)
        np.testing.assert_allclose(
            got, fd, rtol=1e-6, atol=1e-7, err_msg=f"{name} vs finite differences, {activation}"
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_errors(dtype):
    def a(*shape):
        return np.ones(shape, dtype)

    cases = [
        ((a(5, 3), a(5, 4), a(2, 4)), r"\b(dy|weight)\b"),  # dy last dim != out_features
        ((a(5, 2), a(5, 3), a(2, 4)), r"\b(x|weight)\b"),  # x last dim != in_features
        ((a(5, 2), a(6, 4), a(2, 4)), r"\b(dy|x)\b"),  # rows differ
        ((a(2, 3, 2), a(3, 2, 4), a(2, 4)), r"\b(dy|x)\b"),  # leading dims differ
        ((a(5, 2), a(5, 4), a(8)), r"\bweight\b"),
        ((np.ones((), dtype), a(4), a(1, 4)), r"\bdy\b"),
    ]
    for (dy, x, w), pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            pyfastopt.linear_backward(dy, x, w)
    dy, x, w = a(5, 2), a(5, 4), a(2, 4)
    for bad in (np.int64, np.complex64, np.float16):
        with pytest.raises(TypeError, match=r"\bdy\b"):
            pyfastopt.linear_backward(dy.astype(bad), x, w)
        with pytest.raises(TypeError, match=r"\bx\b"):
            pyfastopt.linear_backward(dy, x.astype(bad), w)
        with pytest.raises(TypeError, match=r"\bweight\b"):
            pyfastopt.linear_backward(dy, x, w.astype(bad))


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_for_any_thread_count(simd, rng, dtype):
    x, w, b = problem(rng, (300,), 257, 130, dtype)
    x3, w3, b3 = problem(rng, (4, 50), 96, 64, dtype)
    xv, wv, bv = problem(rng, (1,), 4096, 1000, dtype)
    dy_big = rand(rng, (2000, 64), dtype)
    x_big = rand(rng, (2000, 96), dtype)
    dy3 = rand(rng, (4, 50, 64), dtype)
    calls = {
        "linear 300x257->130 gelu": lambda: (pyfastopt.linear(x, w, b, activation="gelu"),),
        "linear 3-d relu": lambda: (pyfastopt.linear(x3, w3, b3, activation="relu"),),
        "linear 1x4096->1000": lambda: (pyfastopt.linear(xv, wv, bv),),
        "linear_backward 2000 rows": lambda: pyfastopt.linear_backward(dy_big, x_big, w3),
        "linear_backward 3-d": lambda: pyfastopt.linear_backward(dy3, x3, w3),
    }
    for label, call in calls.items():
        runs = []
        for t in (1, 2, 3):
            with pyfastopt.threads(t):
                runs.append([np.asarray(r) for r in call()])
        for t, run in zip((2, 3), runs[1:]):
            for i, (r, r1) in enumerate(zip(run, runs[0])):
                assert r.tobytes() == r1.tobytes(), (
                    f"{label} ({simd}, {np.dtype(dtype).name}): output {i} with {t} threads "
                    f"differs bitwise from 1 thread"
                )
    dx, dw, db = pyfastopt.linear_backward(dy_big, x_big, w3)
    rx, rw, rb = ref.linear_backward(dy_big, x_big, w3)
    bx, bw, bb = ref.linear_backward_bounds(dy_big, x_big, w3, dtype)
    ref.assert_close(dw, rw, bw, "dweight 2000 rows")
    ref.assert_close(db, rb, bb, "dbias 2000 rows")
    ref.assert_close(dx, rx, bx, "dx 2000 rows")


# ----------------------------------------------------------------------------- torch


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_torch(rng, activation):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    acts = {None: lambda t: t, "relu": torch.relu, "gelu": functional.gelu}
    for lead, n_in, n_out in [((7,), 33, 17), ((2, 3), 19, 23), ((), 12, 5), ((64,), 129, 70)]:
        for bias in (True, False):
            x, w, b = problem(rng, lead, n_in, n_out, np.float64, bias)
            g = rand(rng, (*lead, n_out), np.float64)
            xt = torch.tensor(x, requires_grad=True)
            wt = torch.tensor(w, requires_grad=True)
            bt = torch.tensor(b, requires_grad=True) if bias else None
            pre = functional.linear(xt, wt, bt)
            pre.retain_grad()
            yt = acts[activation](pre)
            (yt * torch.tensor(g)).sum().backward()
            what = f"vs torch x{x.shape} bias={bias} act={activation}"

            y = pyfastopt.linear(x, w, b, activation=activation)
            _, bound = ref.linear(x, w, b, activation)
            ref.assert_close(y, yt.detach().numpy(), 2 * bound, what, dtype=np.float64)

            dy = pre.grad.numpy()
            dx, dw, db = pyfastopt.linear_backward(dy, x, w)
            bx, bw, bb = ref.linear_backward_bounds(dy, x, w, np.float64)
            ref.assert_close(dx, xt.grad.numpy(), 2 * bx, f"{what}: dx", shape=x.shape)
            ref.assert_close(dw, wt.grad.numpy(), 2 * bw, f"{what}: dweight", shape=w.shape)
            if bias:
                ref.assert_close(db, bt.grad.numpy(), 2 * bb, f"{what}: dbias", shape=b.shape)

            # float32 forward as well: both within the float32 bound of the float64 truth
            x32, w32 = x.astype(np.float32), w.astype(np.float32)
            b32 = b.astype(np.float32) if bias else None
            y32 = pyfastopt.linear(x32, w32, b32, activation=activation)
            yt32 = acts[activation](
                functional.linear(
                    torch.from_numpy(x32),
                    torch.from_numpy(w32),
                    torch.from_numpy(b32) if bias else None,
                )
            ).numpy()
            _, bound32 = ref.linear(x32, w32, b32, activation)
            ref.assert_close(y32, yt32, 2 * bound32, f"{what} float32", dtype=np.float32)
