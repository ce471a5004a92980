"""Bench cases for the GEMM family: ``pyfastopt.matmul``, ``linear``, ``linear_backward``.

Shapes are written ``(M, K, N)``: ``x (M, K)`` times ``(K, N)`` (``matmul``) or times
``weight.T`` with ``weight (N, K)`` (``linear``, PyTorch's layout), giving ``(M, N)``.

* Compute-bound products (limit ``"fma"``, work = ``2 M N K`` flops): square ``matmul``
  (M = N = K); the three GEMMs of an MLP training step at ``(64, 784, 256)``,
  ``(256, 784, 512)`` and ``(32, 512, 10)`` -- forward ``linear(x, W)`` (``x @ W.T``),
  backward ``dy @ W`` and ``dy.T @ x`` (the transposed view read in place); the fused
  ``linear(x, W, b, activation="relu")``; the full ``linear_backward`` (dx, dW, db);
  one float64 ``matmul`` (still compared with the fp32 FMA peak: its ceiling is half of
  it); an 8x8x8 ``matmul`` that measures per-call overhead more than arithmetic.
* Skinny products, ``M`` = 1 or 8 (limit ``"bandwidth"``, work = bytes read and written:
  ``4 (K N + M K + M N)``): every weight element is used ``M`` times only, so streaming
  the weight matrix bounds them, not the FMA units. Large weights run against the
  ``a += s*b`` DRAM stream; a weight that fits in cache can beat it.

Compared with NumPy (``a @ b`` and ``np.matmul(a, b, out=buf)``: the harness keeps the
faster; for the fused layer also the preallocated ``matmul(out=); += b; maximum(out=)``
chain) and torch (``torch.matmul`` / ``torch.nn.functional.linear`` on tensors made
with ``from_numpy`` once in setup). pyfastopt is timed allocating its result and with
``out=``; the faster counts.

Correctness guard: inputs are standard normal, so a result element is about
``sqrt(K)`` in size and its rounding error (fp32 accumulation in NumPy's BLAS and in
pyfastopt, different orders) is at most a few ``eps * K``. ``atol = 1e-4 * sqrt(K)``
(``K`` = the reduction length of the product) with ``rtol = 1e-4`` is ~10x above that
at ``K = 4096`` and far below the ``O(1)`` error of a dropped or wrong term.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .registry import Case, Context, Prepared, register

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def _tol(k: int, dtype: Any = _F32) -> dict[str, float]:
    """Guard tolerances for a product whose reduction has length ``k``."""
    if np.dtype(dtype) == _F64:
        return {"rtol": 1e-9, "atol": 1e-9 * math.sqrt(k)}
    return {"rtol": 1e-4, "atol": 1e-4 * math.sqrt(k)}


def _shape_tag(m: int, k: int, n: int) -> str:
    return f"({m},{k},{n})"


def _to_numpy(returned: Any) -> np.ndarray:
    if hasattr(returned, "detach"):  # a torch tensor
        returned = returned.detach().cpu().numpy()
    return np.asarray(returned)


# --------------------------------------------------------------------------- matmul


def _setup_matmul(
    ctx: Context, a_shape: Any, b_shape: Any, dtype: Any, transpose_a: bool = False
) -> Prepared:
    """``a @ b`` for ``a`` of ``a_shape`` (read as ``a.T`` when ``transpose_a``)."""
    from .. import matmul  # resolved here: a build without it fails these cases only

    rng = ctx.rng()
    a = rng.standard_normal(a_shape, dtype=dtype)
    b = rng.standard_normal(b_shape, dtype=dtype)
    if transpose_a:
        a = a.T  # a strided view: every implementation reads the transpose in place
    out_shape = (a.shape[0], b.shape[1])
    out_pf = np.empty(out_shape, dtype=dtype)
    out_np = np.empty(out_shape, dtype=dtype)
    np_matmul = np.matmul

    def numpy_operator() -> Any:
        return a @ b

    impls: dict = {
        "pyfastopt": {
            "matmul(a, b)": functools.partial(matmul, a, b),
            "out=": functools.partial(matmul, a, b, out=out_pf),
        },
        "numpy": {
            "a @ b": numpy_operator,
            "matmul(out=)": functools.partial(np_matmul, a, b, out=out_np),
        },
    }
    torch = ctx.torch
    if torch is not None:
        at = torch.from_numpy(a)  # shares memory; a transposed view stays one
        bt = torch.from_numpy(b)
        out_t = torch.empty(out_shape, dtype=bt.dtype)
        impls["torch"] = {
            "torch.matmul": functools.partial(torch.matmul, at, bt),
            "matmul(out=)": functools.partial(torch.matmul, at, bt, out=out_t),
        }
    return Prepared(impls, output=lambda impl, returned: _to_numpy(returned))


# --------------------------------------------------------------------------- linear


def _setup_linear(ctx: Context, m: int, k: int, n: int, bias: bool, relu: bool) -> Prepared:
    """``linear(x, W[, b][, relu])`` with ``x (m, k)``, ``W (n, k)``, ``b (n,)``."""
    from .. import linear

    rng = ctx.rng()
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32) if bias else None
    wt = w.T
    activation = "relu" if relu else None
    out_pf = np.empty((m, n), dtype=np.float32)
    buf = np.empty((m, n), dtype=np.float32)
    np_matmul, maximum, add = np.matmul, np.maximum, np.add

    def numpy_operator() -> Any:
        y = x @ wt
        if b is not None:
            y = y + b
        return maximum(y, 0) if relu else y

    def numpy_preallocated() -> Any:
        np_matmul(x, wt, out=buf)
        if b is not None:
            add(buf, b, out=buf)
        if relu:
            maximum(buf, 0, out=buf)
        return buf

    spelled = "x @ W.T" + (" + b" if bias else "")
    impls: dict = {
        "pyfastopt": {
            "linear(x, W, ...)": functools.partial(linear, x, w, b, activation),
            "out=": functools.partial(linear, x, w, b, activation, out=out_pf),
        },
        "numpy": {
            (f"maximum({spelled}, 0)" if relu else spelled): numpy_operator,
            "preallocated out=": numpy_preallocated,
        },
    }
    torch = ctx.torch
    if torch is not None:
        F = torch.nn.functional
        xt, wt_t = torch.from_numpy(x), torch.from_numpy(w)
        bt = torch.from_numpy(b) if b is not None else None
        fl, relu_fn = F.linear, F.relu
        if relu:

            def torch_relu_linear() -> Any:
                return relu_fn(fl(xt, wt_t, bt))

            def torch_linear_relu_() -> Any:
                return fl(xt, wt_t, bt).relu_()

            impls["torch"] = {
                "F.relu(F.linear)": torch_relu_linear,
                "F.linear().relu_()": torch_linear_relu_,
            }
        else:
            impls["torch"] = functools.partial(fl, xt, wt_t, bt)
    return Prepared(impls, output=lambda impl, returned: _to_numpy(returned))


# --------------------------------------------------------------------------- backward


def _setup_linear_backward(ctx: Context, m: int, k: int, n: int) -> Prepared:
    """``(dx, dW, db) = (dy @ W, dy.T @ x, dy.sum(0))``, ``dy (m, n)``, ``x (m, k)``."""
    from .. import linear_backward

    rng = ctx.rng()
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    dy = rng.standard_normal((m, n), dtype=np.float32)
    dyt_np = dy.T
    dx_buf = np.empty((m, k), dtype=np.float32)
    dw_buf = np.empty((n, k), dtype=np.float32)
    db_buf = np.empty(n, dtype=np.float32)
    np_matmul, np_sum = np.matmul, np.sum

    def numpy_operator() -> Any:
        return dy @ w, dyt_np @ x, dy.sum(0)

    def numpy_preallocated() -> Any:
        np_matmul(dy, w, out=dx_buf)
        np_matmul(dyt_np, x, out=dw_buf)
        np_sum(dy, axis=0, out=db_buf)
        return dx_buf, dw_buf, db_buf

    impls: dict = {
        "pyfastopt": functools.partial(linear_backward, dy, x, w),
        "numpy": {
            "(dy @ W, dy.T @ x, dy.sum(0))": numpy_operator,
            "preallocated out=": numpy_preallocated,
        },
    }
    torch = ctx.torch
    if torch is not None:
        xt, wt, dyt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(dy)
        mm = torch.mm
        dyt_t = dyt.t()

        def torch_products() -> Any:  # what autograd's backward of F.linear computes
            return mm(dyt, wt), mm(dyt_t, xt), dyt.sum(0)

        impls["torch"] = {"(mm(dy, W), mm(dy.t(), x), dy.sum(0))": torch_products}

    def output(impl: str, returned: Any) -> np.ndarray:
        return np.concatenate([_to_numpy(r).ravel() for r in returned])

    return Prepared(impls, output=output)


# --------------------------------------------------------------------------- registry


def _register_matmul(
    name: str,
    a_shape: Any,
    b_shape: Any,
    dtype: Any,
    quick: bool,
    note: str,
    transpose_a: bool = False,
    limit: str = "fma",
) -> None:
    if transpose_a:
        k, m = a_shape
    else:
        m, k = a_shape
    n = b_shape[1]
    itemsize = np.dtype(dtype).itemsize
    work = 2 * m * n * k if limit == "fma" else itemsize * (k * n + m * k + m * n)
    register(
        Case(
            family="gemm",
            name=name,
            limit=limit,
            work=work,
            setup=functools.partial(
                _setup_matmul,
                a_shape=a_shape,
                b_shape=b_shape,
                dtype=dtype,
                transpose_a=transpose_a,
            ),
            quick=quick,
            note=note,
            **_tol(k, dtype),
        )
    )


def _register_linear(
    name: str,
    m: int,
    k: int,
    n: int,
    quick: bool,
    note: str,
    bias: bool = False,
    relu: bool = False,
    limit: str = "fma",
) -> None:
    work = 2 * m * n * k if limit == "fma" else 4 * (k * n + m * k + m * n)
    register(
        Case(
            family="gemm",
            name=name,
            limit=limit,
            work=work,
            setup=functools.partial(_setup_linear, m=m, k=k, n=n, bias=bias, relu=relu),
            quick=quick,
            note=note,
            **_tol(k),
        )
    )


def _register() -> None:
    # square matmul
    for size, quick in ((256, False), (512, False), (1024, False), (2048, False), (64, True)):
        _register_matmul(
            f"matmul f32 {size}^3",
            (size, size),
            (size, size),
            _F32,
            quick,
            note="C = A @ B, all (n, n); flops = 2 n^3",
        )
    # MLP training step: forward and the two backward products
    for (m, k, n), quick in (
        ((64, 784, 256), False),
        ((256, 784, 512), False),
        ((32, 512, 10), False),
        ((16, 32, 8), True),
    ):
        tag = _shape_tag(m, k, n)
        _register_linear(
            f"fwd x@W.T {tag}",
            m,
            k,
            n,
            quick,
            note="linear(x, W), x (M, K), W (N, K); flops = 2 M N K",
        )
        _register_matmul(
            f"bwd dy@W {tag}",
            (m, n),
            (n, k),
            _F32,
            quick,
            note="dx = dy @ W, (M, N) @ (N, K); flops = 2 M N K",
        )
        _register_matmul(
            f"bwd dy.T@x {tag}",
            (m, n),
            (m, k),
            _F32,
            quick,
            transpose_a=True,
            note="dW = dy.T @ x, (N, M) @ (M, K), transposed view read in place; flops = 2 M N K",
        )
    # skinny: weight-streaming bound
    for (m, k, n), quick in (
        ((8, 4096, 4096), False),
        ((1, 1024, 1024), False),
        ((1, 64, 64), True),
    ):
        tag = _shape_tag(m, k, n)
        bytes_note = "bytes = 4 (K N + M K + M N): weight + x + out"
        _register_matmul(
            f"skinny matmul x@B {tag}",
            (m, k),
            (k, n),
            _F32,
            quick,
            limit="bandwidth",
            note=f"x (M, K) @ B (K, N); {bytes_note}",
        )
        _register_linear(
            f"skinny linear x@W.T {tag}",
            m,
            k,
            n,
            quick,
            limit="bandwidth",
            note=f"linear(x, W), W (N, K); {bytes_note}",
        )
    # fused bias + relu
    for (m, k, n), quick in (((64, 784, 256), False), ((16, 32, 8), True)):
        _register_linear(
            f"linear+b+relu {_shape_tag(m, k, n)}",
            m,
            k,
            n,
            quick,
            bias=True,
            relu=True,
            note="linear(x, W, b, activation='relu') vs maximum(x @ W.T + b, 0); flops = 2 M N K",
        )
    # full linear_backward
    for (m, k, n), quick in (((256, 784, 512), False), ((16, 32, 8), True)):
        register(
            Case(
                family="gemm",
                name=f"linear_backward {_shape_tag(m, k, n)}",
                limit="fma",
                work=2 * (2 * m * n * k),
                setup=functools.partial(_setup_linear_backward, m=m, k=k, n=n),
                quick=quick,
                note="(dx, dW, db) = (dy @ W, dy.T @ x, dy.sum(0)); flops = 4 M N K",
                **_tol(max(m, n)),
            )
        )
    # float64 (compared with the fp32 FMA peak: its ceiling is 50%)
    for size, quick in ((512, False), (32, True)):
        _register_matmul(
            f"matmul f64 {size}^3",
            (size, size),
            (size, size),
            _F64,
            quick,
            note="float64; flops = 2 n^3, limit is the fp32 FMA peak (f64 ceiling: half)",
        )
    # per-call overhead
    for quick in (False, True):
        _register_matmul(
            "matmul f32 8^3 (overhead)",
            (8, 8),
            (8, 8),
            _F32,
            quick,
            note="8x8 @ 8x8: per-call overhead, not arithmetic",
        )


_register()
