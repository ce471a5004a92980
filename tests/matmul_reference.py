"""Pure-NumPy float64 references and forward-error bounds for ``pyfastopt.matmul``,
``pyfastopt.linear`` and ``pyfastopt.linear_backward``.

The references never call pyfastopt: every operand is copied to float64 and multiplied
with ``np.matmul`` (elementwise IEEE products where NaN/inf semantics matter).

Error bound
-----------
A dot product of length K evaluated in any order, with or without FMA, in a format with
unit roundoff u = eps/2 satisfies (Higham, "Accuracy and Stability of Numerical
Algorithms", 2nd ed., section 3.1; the blocked/packed GEMM of BLIS is one such order)::

    |fl(A @ B) - A @ B| <= gamma_K * (|A| @ |B|),     gamma_K = K u / (1 - K u)

elementwise. The float64 reference has the same kind of error with u = 2**-53, so the
check used here is::

    |C - C_ref| <= c * K * eps(dtype) * (|A| @ |B|) + tiny(dtype),     c = 2

which covers both roundings with a margin of 2 (for float32 results the reference's own
error is ~1e-9 of the bound). It is tight: dropping one product ``a[i, k] * b[k, j]``,
reading a neighbouring tile, accumulating float64 in float32 or losing a k block makes
most affected elements miss it by orders of magnitude (``test_matmul``'s self-tests
check this by mutating correct results).

Also here: ``guarded_out`` (an out= buffer with sentinel guards, to catch writes outside
out and elements never written) and ``shape_re`` (a regex for a shape in a message).
"""

from __future__ import annotations

import math

import numpy as np

GUARD = 7  # elements of sentinel on each side of a guarded out= buffer
GUARD_VALUE = -123.25

C_BOUND = 2.0
SQRT1_2 = 1.0 / math.sqrt(2.0)
# max |d/dz gelu(z)| = Phi(z*) + z* phi(z*) at z* = sqrt(2) ~ 1.1289; relu is 1-Lipschitz
GELU_LIPSCHITZ = 1.13
# evaluating gelu (erf, then 0.5*z*(1 + .)) in working precision: a few ulps of |z|
# (1 + erf(z/sqrt 2) cancels for z << 0, so the error is absolute, relative to |z|)
ACT_ULPS = 8.0

_erf = np.frompyfunc(math.erf, 1, 1)


def f64(x) -> np.ndarray:
    """A float64 copy (exact for float32 input)."""
    return np.array(x, dtype=np.float64)


def result_dtype(*arrays) -> np.dtype:
    """NumPy's promotion for float32/float64 operands (float32 @ float64 -> float64)."""
    return np.result_type(*[np.asarray(a).dtype for a in arrays])


def eps(dtype) -> float:
    return float(np.finfo(dtype).eps)


def tiny(dtype) -> float:
    return float(np.finfo(dtype).tiny)


# ----------------------------------------------------------------------------- matmul


def matmul(a, b) -> np.ndarray:
    """np.matmul on float64 copies, always as an ndarray (0-d for vector @ vector)."""
    return np.asarray(np.matmul(f64(a), f64(b)))


def matmul_ieee(a, b) -> np.ndarray:
    """Elementwise products then a sum: IEEE NaN/inf semantics whatever the BLAS does
    (0 * inf = NaN, inf - inf = NaN). 2-D operands only; small sizes."""
    a, b = f64(a), f64(b)
    with np.errstate(invalid="ignore", over="ignore"):
        return (a[:, :, None] * b[None, :, :]).sum(axis=1)


def gemm_bound(a, b, dtype, c: float = C_BOUND) -> np.ndarray:
    """Elementwise bound on |C - C_ref| for C = a @ b computed in ``dtype``."""
    a, b = np.abs(f64(a)), np.abs(f64(b))
    k = a.shape[-1]
    return c * k * eps(dtype) * np.asarray(np.matmul(a, b)) + tiny(dtype)


def first_violation(got, expected, bound) -> tuple[int, np.ndarray]:
    """(number of elements outside the bound, flat indices of them)."""
    got = np.asarray(got, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, judged below
        err = np.abs(got - expected)
    ok = err <= bound  # False for NaN
    both_nan = np.isnan(got) & np.isnan(expected)
    same_inf = np.isinf(expected) & (got == expected)
    bad = ~(ok | both_nan | same_inf)
    return int(bad.sum()), np.flatnonzero(bad.ravel())


def assert_close(got, expected, bound, what: str, dtype=None, shape=None) -> None:
    """dtype/shape exact, values within the elementwise bound (NaN where NaN, same inf)."""
    g = np.asarray(got)
    if dtype is not None:
        assert g.dtype == np.dtype(dtype), f"{what}: dtype {g.dtype}, expected {np.dtype(dtype)}"
    if shape is not None:
        assert g.shape == tuple(shape), f"{what}: shape {g.shape}, expected {tuple(shape)}"
    expected = np.broadcast_to(np.asarray(expected, np.float64), g.shape)
    bound = np.broadcast_to(np.asarray(bound, np.float64), g.shape)
    n_bad, where = first_violation(g, expected, bound)
    if n_bad:
        i = int(where[0])
        idx = np.unravel_index(i, g.shape) if g.ndim else ()
        gv, ev, bv = g.ravel()[i], expected.ravel()[i], bound.ravel()[i]
        raise AssertionError(
            f"{what}: {n_bad} of {g.size} elements outside the error bound; first at "
            f"{tuple(int(j) for j in idx)}: got {gv!r}, reference {ev!r}, |err| "
            f"{abs(float(gv) - float(ev)):.3e} > bound {bv:.3e}"
        )


def assert_matmul_close(got, a, b, what: str = "matmul") -> None:
    """``got`` == np.matmul(a, b) in dtype, shape and value (within ``gemm_bound``)."""
    a, b = np.asarray(a), np.asarray(b)
    dt = result_dtype(a, b)
    expected = matmul(a, b)
    g = np.asarray(got)
    assert isinstance(got, (np.ndarray, np.generic)), f"{what}: returned {type(got).__name__}"
    assert_close(g, expected, gemm_bound(a, b, dt), what, dtype=dt, shape=expected.shape)


# ----------------------------------------------------------------------------- linear


def gelu(z) -> np.ndarray:
    """Exact (erf) GELU in float64: 0.5 * z * (1 + erf(z / sqrt(2)))."""
    z = f64(z)
    return 0.5 * z * (1.0 + _erf(z * SQRT1_2).astype(np.float64))


def gelu_grad(z) -> np.ndarray:
    """d/dz gelu(z) = Phi(z) + z * phi(z)."""
    z = f64(z)
    phi = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return 0.5 * (1.0 + _erf(z * SQRT1_2).astype(np.float64)) + z * phi


def activate(z, activation) -> np.ndarray:
    z = f64(z)
    if activation is None:
        return z
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "gelu":
        return gelu(z)
    raise ValueError(activation)


def linear_pre(x, weight, bias=None) -> np.ndarray:
    """x @ weight.T + bias in float64 (pre-activation)."""
    y = np.asarray(np.matmul(f64(x), f64(weight).T))
    if bias is not None:
        y = y + f64(bias)
    return y


def linear_pre_bound(x, weight, bias, dtype, c: float = C_BOUND) -> np.ndarray:
    """Bound on the pre-activation: the GEMM bound with K + 1 terms (the bias add)."""
    ax, aw = np.abs(f64(x)), np.abs(f64(weight))
    k = ax.shape[-1]
    mag = np.asarray(np.matmul(ax, aw.T))
    if bias is not None:
        mag = mag + np.abs(f64(bias))
    return c * (k + 1) * eps(dtype) * mag + tiny(dtype)


def linear(x, weight, bias=None, activation=None) -> tuple[np.ndarray, np.ndarray]:
    """(reference y in float64, elementwise error bound for y computed in x's dtype)."""
    dt = np.asarray(x).dtype
    pre = linear_pre(x, weight, bias)
    bound = linear_pre_bound(x, weight, bias, dt)
    y = activate(pre, activation)
    if activation == "gelu":
        bound = GELU_LIPSCHITZ * bound + ACT_ULPS * eps(dt) * (np.abs(pre) + np.abs(y))
    return y, bound


def rows(a: np.ndarray) -> np.ndarray:
    """(..., n) -> (prod(...), n), also when n == 0; a 1-D array is one row."""
    return a.reshape(int(np.prod(a.shape[:-1], dtype=np.int64)), a.shape[-1])


def linear_backward(dy, x, weight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias) in float64: dy @ W, dy2.T @ x2, dy2.sum(0), leading dims
    of dy/x flattened into rows."""
    dy, x, w = f64(dy), f64(x), f64(weight)
    dx = np.asarray(np.matmul(dy, w))
    dy2, x2 = rows(dy), rows(x)
    return dx, dy2.T @ x2, dy2.sum(axis=0)


def linear_backward_bounds(dy, x, weight, dtype, c: float = C_BOUND):
    """Elementwise bounds for (dx, dweight, dbias), each a GEMM/sum bound in ``dtype``."""
    ady, ax, aw = np.abs(f64(dy)), np.abs(f64(x)), np.abs(f64(weight))
    e, t = eps(dtype), tiny(dtype)
    ady2, ax2 = rows(ady), rows(ax)
    n = ady2.shape[0]
    dx_b = c * aw.shape[0] * e * np.asarray(np.matmul(ady, aw)) + t
    dw_b = c * n * e * (ady2.T @ ax2) + t
    db_b = c * n * e * ady2.sum(axis=0) + t
    return dx_b, dw_b, db_b


# ----------------------------------------------------------------------------- test helpers


def guarded_out(shape, dtype):
    """(out, buf): a C-contiguous out= inside a buffer with sentinel guards either side,
    pre-filled with NaN so an element the kernel never writes is caught."""
    size = int(np.prod(shape, dtype=np.int64))
    buf = np.full(size + 2 * GUARD, GUARD_VALUE, dtype)
    buf[GUARD : GUARD + size] = np.nan
    out = buf[GUARD : GUARD + size].reshape(shape)
    assert out.flags.c_contiguous and out.flags.writeable
    return out, buf


def assert_guards_intact(buf, what: str) -> None:
    lo, hi = buf[:GUARD], buf[-GUARD:]
    assert (lo == GUARD_VALUE).all() and (hi == GUARD_VALUE).all(), (
        f"{what}: out= guard elements overwritten (write outside out): {lo}, {hi}"
    )


def shape_re(shape) -> str:
    """Regex for a shape tuple as Python prints it, spaces optional: (3, 4), (4,)."""
    inner = r"\s*,\s*".join(str(d) for d in shape)
    if len(shape) == 1:
        inner += r"\s*,?"
    return r"\(\s*" + inner + r"\s*\)"
