"""Bench cases for ``pyfastopt.ops``: ``axpby_`` and ``l2_norm``.

Both are memory-bound (limit ``"bandwidth"``):

* ``axpby_(y, x, a, b)`` moves ``3 * n * itemsize`` bytes per call (read x, read y,
  write y). NumPy needs two or three passes; the harness keeps the faster of "with a
  temporary" and "with a preallocated buffer". torch: ``y.mul_(b).add_(x, alpha=a)``.
* ``l2_norm(arrays)`` reads ``n * itemsize`` bytes. NumPy: ``sqrt`` of BLAS dot
  products (float32 accumulation; pyfastopt accumulates in float64). torch:
  ``torch.linalg.vector_norm`` for one tensor; for a list, ``torch.nn.utils.
  get_total_norm`` (what ``clip_grad_norm_`` uses) or its ``_foreach_norm`` core,
  whichever is faster.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .. import ops
from .registry import Case, Context, Prepared, fmt_count, register

_A, _B = 0.1, 0.9  # momentum-like coefficients: y stays bounded however often it runs


def _dtype_tag(dtype: np.dtype) -> str:
    return {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]


# --------------------------------------------------------------------------- axpby_


def _setup_axpby(ctx: Context, n: int, dtype: Any) -> Prepared:
    rng = ctx.rng()
    x = rng.standard_normal(n, dtype=dtype)
    y0 = rng.standard_normal(n, dtype=dtype)
    y = y0.copy()  # one buffer for every implementation; reset() restores it
    tmp = np.empty_like(y)
    a, b = _A, _B
    multiply, add = np.multiply, np.add

    def numpy_temporary() -> None:
        multiply(y, b, out=y)
        add(y, a * x, out=y)  # a * x allocates an n-element temporary

    def numpy_preallocated() -> None:
        multiply(x, a, out=tmp)
        multiply(y, b, out=y)
        add(y, tmp, out=y)

    impls: dict = {
        "pyfastopt": functools.partial(ops.axpby_, y, x, a, b),
        "numpy": {"y*=b; y+=a*x": numpy_temporary, "preallocated tmp": numpy_preallocated},
    }
    torch = ctx.torch
    if torch is not None:
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)  # share memory with x, y

        def torch_axpby() -> Any:
            return yt.mul_(b).add_(xt, alpha=a)

        impls["torch"] = torch_axpby

    def reset() -> None:
        np.copyto(y, y0)

    def output(impl: str, returned: Any) -> np.ndarray:
        return y.copy()

    return Prepared(impls, reset=reset, output=output)


# --------------------------------------------------------------------------- l2_norm


def _setup_l2_single(ctx: Context, n: int, dtype: Any) -> Prepared:
    x = ctx.rng().standard_normal(n, dtype=dtype)
    dot, sqrt = np.dot, math.sqrt

    def numpy_dot() -> float:
        return sqrt(dot(x, x))

    impls: dict = {
        "pyfastopt": functools.partial(ops.l2_norm, x),
        "numpy": {"sqrt(dot(x, x))": numpy_dot},
    }
    torch = ctx.torch
    if torch is not None:
        impls["torch"] = functools.partial(torch.linalg.vector_norm, torch.from_numpy(x))
    return Prepared(impls)


def _grad_shapes(ntensors: int, total: int, seed: int = 7) -> list[tuple[int, ...]]:
    """Shapes of a plausible gradient list: (weight (h, w), bias (h,)) pairs whose sizes
    vary over two orders of magnitude and add up to about ``total`` elements."""
    rng = np.random.default_rng(seed)
    pairs = ntensors // 2
    share = rng.lognormal(0.0, 0.8, pairs)
    share = share / share.sum() * total
    shapes: list[tuple[int, ...]] = []
    for s in share:
        h = int(rng.integers(16, 257))
        w = max(1, round(float(s) / h) - 1)
        shapes.append((h, w))
        shapes.append((h,))
    if ntensors % 2:
        shapes.append((int(rng.integers(16, 257)),))
    return shapes


def _setup_l2_multi(ctx: Context, shapes: list[tuple[int, ...]], dtype: Any) -> Prepared:
    rng = ctx.rng()
    grads = [rng.standard_normal(shape, dtype=dtype) for shape in shapes]
    vdot, dot, sqrt = np.vdot, np.dot, math.sqrt

    def numpy_vdot() -> float:
        return sqrt(sum([float(vdot(g, g)) for g in grads]))

    def numpy_dot_ravel() -> float:
        total = 0.0
        for g in grads:
            v = g.ravel()
            total += float(dot(v, v))
        return sqrt(total)

    impls: dict = {
        "pyfastopt": functools.partial(ops.l2_norm, grads),
        "numpy": {"sum(vdot(g, g))": numpy_vdot, "sum(dot(g.ravel(), ...))": numpy_dot_ravel},
    }
    torch = ctx.torch
    if torch is not None:
        tensors = [torch.from_numpy(g) for g in grads]
        variants: dict[str, Any] = {}
        get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
        if get_total_norm is not None:
            variants["nn.utils.get_total_norm"] = functools.partial(get_total_norm, tensors)
        foreach_norm = getattr(torch, "_foreach_norm", None)
        if foreach_norm is not None:
            vector_norm, stack = torch.linalg.vector_norm, torch.stack

            def torch_foreach() -> Any:
                return vector_norm(stack(foreach_norm(tensors)))

            variants["vector_norm(stack(_foreach_norm))"] = torch_foreach
        if not variants:
            cat = torch.cat

            def torch_cat() -> Any:
                return torch.linalg.vector_norm(cat([t.reshape(-1) for t in tensors]))

            variants["vector_norm(cat)"] = torch_cat
        impls["torch"] = variants
    return Prepared(impls)


# --------------------------------------------------------------------------- registry


def _register() -> None:
    f32 = np.dtype(np.float32)
    tag = _dtype_tag(f32)
    for n, quick in ((10**4, False), (10**6, False), (10**7, False), (10**3, True)):
        register(
            Case(
                family="ops",
                name=f"axpby_ {tag} n={fmt_count(n)}",
                limit="bandwidth",
                work=3 * n * f32.itemsize,
                setup=functools.partial(_setup_axpby, n=n, dtype=f32),
                quick=quick,
                rtol=1e-5,
                atol=1e-6,
                note="in place y = a*x + b*y; bytes = 3 n itemsize",
            )
        )
    for n, quick in ((10**6, False), (10**7, False), (10**3, True)):
        register(
            Case(
                family="ops",
                name=f"l2_norm {tag} n={fmt_count(n)}",
                limit="bandwidth",
                work=n * f32.itemsize,
                setup=functools.partial(_setup_l2_single, n=n, dtype=f32),
                quick=quick,
                rtol=1e-4,
                atol=0.0,
                note="one tensor; pyfastopt accumulates in float64, NumPy/torch in float32",
            )
        )
    for ntensors, total, quick in ((200, 10**6, False), (20, 10**4, True)):
        shapes = _grad_shapes(ntensors, total)
        n = sum(math.prod(s) for s in shapes)
        register(
            Case(
                family="ops",
                name=f"l2_norm {tag} {ntensors} tensors n~{fmt_count(total)}",
                limit="bandwidth",
                work=n * f32.itemsize,
                setup=functools.partial(_setup_l2_multi, shapes=shapes, dtype=f32),
                quick=quick,
                rtol=1e-4,
                atol=0.0,
                note=f"multi-tensor: {ntensors} arrays, {n} elements in all",
            )
        )


_register()
