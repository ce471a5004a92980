"""Bench cases for ``pyfastopt.batch_norm_*``: a training step (forward + backward) and
the evaluation forward, float32, channels-first (axis=1) and channels-last (axis=-1).

Memory-bound. ``work`` counts the *minimal* bytes, not what an implementation moves:

* forward + backward (``limit="bandwidth"``, the ``a += s*b`` stream): the training
  forward reads x twice (statistics, then normalization) and writes y; the backward reads
  x and dy and writes dx: 24 B/element. pyfastopt's backward is two passes (a reduction
  over x and dy, then dx), so it actually moves 32 B/element;
* evaluation forward (``limit="bandwidth_copy"``, the ``y = s*x`` stream): read x,
  write y, 8 B/element.

Implementations, each one call doing the whole step:

* ``pyfastopt``: ``batch_norm_train`` (running statistics updated in place) then
  ``batch_norm_backward``; ``batch_norm_infer``. Timed allocating ``y`` and ``dx`` (as
  torch does) and writing into preallocated ``out=`` arrays (as NumPy's fastest spelling
  does); the faster counts. A fresh 25 MB result is page-faulted in on every call whenever
  the allocator cannot reuse a freed block (here: y is still alive when dx is allocated),
  which costs about as much as the whole backward pass.
* ``numpy``: the textbook formulas with float32 reductions over the non-channel axes
  (``x.mean``, centred ``var``), ``xhat`` kept for the backward,
  ``dx = w*invstd*(dy - sum(dy)/n - xhat*sum(dy*xhat)/n)``, with temporaries and with
  preallocated buffers and ``out=`` ufuncs; eval as ``x*scale + shift`` with per-channel
  constants computed once, with and without ``out=`` (the faster variant counts).
* ``torch``: ``torch.nn.functional.batch_norm(training=True)`` on a leaf tensor with
  ``requires_grad`` (x, weight, bias), then ``y.backward(dy)`` -- autograd's own
  batch-norm backward; channels-last cases use a ``channels_last`` tensor. Eval:
  ``F.batch_norm(training=False)`` under ``torch.no_grad()``.

Correctness guard: the returned ``y`` and ``dx`` (forward + backward) or ``y`` (eval),
compared with NumPy's at ``rtol=1e-3, atol=1e-4`` (NumPy's float32 reductions are the
least accurate of the three).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .registry import Case, Context, Prepared, register

EPS = 1e-5
MOMENTUM = 0.1

# (shape, axis, quick)
SHAPES = [
    ((32, 64, 56, 56), 1, False),
    ((64, 256, 14, 14), 1, False),
    ((256, 1024), 1, False),
    ((32, 56, 56, 64), -1, False),
    ((4, 16, 12, 12), 1, True),
    ((4, 12, 12, 16), -1, True),
]


def _name(shape: tuple[int, ...], axis: int) -> str:
    layout = {2: "NC", 3: "NCL", 4: "NCHW"}[len(shape)] if axis == 1 else "NHWC"
    return f"{layout} {'x'.join(map(str, shape))}"


def _inputs(ctx: Context, shape: tuple[int, ...], axis: int) -> Any:
    rng = ctx.rng()
    x = rng.standard_normal(shape, dtype=np.float32) * 2.0 + 0.5
    dy = rng.standard_normal(shape, dtype=np.float32)
    c = shape[axis]
    w = (rng.standard_normal(c) * 0.5 + 1.0).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    axes = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    return x, dy, w, b, c, axes


def _torch_view(torch: Any, a: np.ndarray, axis: int) -> Any:
    """NumPy (channels at ``axis``) -> torch NC... tensor sharing memory (channels_last
    strides for axis=-1)."""
    t = torch.from_numpy(a)
    return t.movedim(-1, 1) if axis == -1 and a.ndim > 2 else t


def _from_torch(t: Any, axis: int, ndim: int) -> np.ndarray:
    t = t.detach()
    if axis == -1 and ndim > 2:
        t = t.movedim(1, -1)
    return t.numpy()


def _setup_train(ctx: Context, shape: tuple[int, ...], axis: int) -> Prepared:
    from .. import batch_norm_backward, batch_norm_train

    x, dy, w, b, c, axes = _inputs(ctx, shape, axis)
    n = x.size // c
    rm_pf, rv_pf = np.zeros(c, np.float32), np.ones(c, np.float32)

    def pyfastopt_step() -> Any:
        y, mean, invstd = batch_norm_train(x, w, b, rm_pf, rv_pf, MOMENTUM, EPS, axis)
        dx, _, _ = batch_norm_backward(dy, x, w, mean, invstd, axis)
        return y, dx

    y_pf, dx_pf = np.empty_like(x), np.empty_like(x)

    def pyfastopt_out() -> Any:
        y, mean, invstd = batch_norm_train(x, w, b, rm_pf, rv_pf, MOMENTUM, EPS, axis, out=y_pf)
        dx, _, _ = batch_norm_backward(dy, x, w, mean, invstd, axis, out=dx_pf)
        return y, dx

    rm_np, rv_np = np.zeros(c, np.float32), np.ones(c, np.float32)
    bshape = [1] * x.ndim
    bshape[axis % x.ndim] = c
    wb, bb = w.reshape(bshape), b.reshape(bshape)

    def numpy_step() -> Any:
        mean = x.mean(axis=axes, keepdims=True)
        xc = x - mean
        var = np.mean(xc * xc, axis=axes, keepdims=True)
        invstd = 1.0 / np.sqrt(var + np.float32(EPS))
        xhat = xc * invstd
        y = xhat * wb + bb
        rm_np[:] = (1 - MOMENTUM) * rm_np + MOMENTUM * mean.ravel()
        rv_np[:] = (1 - MOMENTUM) * rv_np + MOMENTUM * var.ravel() * (n / (n - 1))
        sum_dy = dy.sum(axis=axes, keepdims=True)
        sum_dy_xhat = np.sum(dy * xhat, axis=axes, keepdims=True)
        dx = (wb * invstd) * (dy - sum_dy / n - xhat * (sum_dy_xhat / n))
        return y, dx

    xc, tmp, xhat, y_np, dx_np = (np.empty_like(x) for _ in range(5))

    def numpy_preallocated() -> Any:
        mean = x.mean(axis=axes, keepdims=True)
        np.subtract(x, mean, out=xc)
        np.multiply(xc, xc, out=tmp)
        var = tmp.mean(axis=axes, keepdims=True)
        invstd = 1.0 / np.sqrt(var + np.float32(EPS))
        np.multiply(xc, invstd, out=xhat)
        np.multiply(xhat, wb, out=y_np)
        np.add(y_np, bb, out=y_np)
        rm_np[:] = (1 - MOMENTUM) * rm_np + MOMENTUM * mean.ravel()
        rv_np[:] = (1 - MOMENTUM) * rv_np + MOMENTUM * var.ravel() * (n / (n - 1))
        mean_dy = dy.sum(axis=axes, keepdims=True) / n
        np.multiply(dy, xhat, out=tmp)
        proj = tmp.sum(axis=axes, keepdims=True) / n
        np.multiply(xhat, proj, out=dx_np)
        np.subtract(dy, dx_np, out=dx_np)
        np.subtract(dx_np, mean_dy, out=dx_np)
        np.multiply(dx_np, wb * invstd, out=dx_np)
        return y_np, dx_np

    impls: dict = {
        "pyfastopt": {"allocating": pyfastopt_step, "out=": pyfastopt_out},
        "numpy": {"temporaries": numpy_step, "preallocated out=": numpy_preallocated},
    }
    torch = ctx.torch
    if torch is not None:
        F = torch.nn.functional
        xt = _torch_view(torch, x, axis).detach().requires_grad_(True)
        dyt = _torch_view(torch, dy, axis)
        wt = torch.from_numpy(w.copy()).requires_grad_(True)
        bt = torch.from_numpy(b.copy()).requires_grad_(True)
        rm_t, rv_t = torch.zeros(c), torch.ones(c)

        def torch_step() -> Any:
            xt.grad = wt.grad = bt.grad = None
            y = F.batch_norm(xt, rm_t, rv_t, wt, bt, training=True, momentum=MOMENTUM, eps=EPS)
            y.backward(dyt)
            return y, xt.grad

        impls["torch"] = torch_step

    def output(impl: str, returned: Any) -> np.ndarray:
        y, dx = returned
        if impl == "torch":
            y, dx = _from_torch(y, axis, x.ndim), _from_torch(dx, axis, x.ndim)
        return np.concatenate([np.ravel(y), np.ravel(dx)])

    return Prepared(impls, output=output)


def _setup_eval(ctx: Context, shape: tuple[int, ...], axis: int) -> Prepared:
    from .. import batch_norm_infer

    x, _, w, b, c, _ = _inputs(ctx, shape, axis)
    rng = np.random.default_rng(ctx.seed + 2)
    rm = rng.standard_normal(c).astype(np.float32)
    rv = rng.uniform(0.5, 2.0, c).astype(np.float32)
    bshape = [1] * x.ndim
    bshape[axis % x.ndim] = c
    scale = (w / np.sqrt(rv + np.float32(EPS))).astype(np.float32)
    shift = (b - rm * scale).astype(np.float32).reshape(bshape)
    scale = scale.reshape(bshape)
    out = np.empty_like(x)

    def numpy_preallocated() -> Any:
        np.multiply(x, scale, out=out)
        np.add(out, shift, out=out)
        return out

    y_pf = np.empty_like(x)
    impls: dict = {
        "pyfastopt": {
            "allocating": functools.partial(batch_norm_infer, x, w, b, rm, rv, EPS, axis),
            "out=": functools.partial(batch_norm_infer, x, w, b, rm, rv, EPS, axis, out=y_pf),
        },
        "numpy": {
            "x * scale + shift": lambda: x * scale + shift,
            "preallocated out=": numpy_preallocated,
        },
    }
    torch = ctx.torch
    if torch is not None:
        F = torch.nn.functional
        xt = _torch_view(torch, x, axis)
        args = [torch.from_numpy(a) for a in (rm, rv, w, b)]

        def torch_eval() -> Any:
            with torch.no_grad():
                return F.batch_norm(xt, *args, training=False, eps=EPS)

        impls["torch"] = torch_eval

    def output(impl: str, returned: Any) -> np.ndarray:
        return _from_torch(returned, axis, x.ndim) if impl == "torch" else np.asarray(returned)

    return Prepared(impls, output=output)


def _register() -> None:
    for shape, axis, quick in SHAPES:
        n = math.prod(shape)
        register(
            Case(
                family="batchnorm",
                name=f"train fwd+bwd f32 {_name(shape, axis)}",
                limit="bandwidth",
                work=24 * n,
                setup=functools.partial(_setup_train, shape=shape, axis=axis),
                quick=quick,
                rtol=1e-3,
                atol=1e-4,
                note="bytes = 24 n (fwd: read x twice, write y; bwd: read x, dy, write dx)",
            )
        )
    for shape, axis, quick in SHAPES:
        n = math.prod(shape)
        register(
            Case(
                family="batchnorm",
                name=f"eval fwd f32 {_name(shape, axis)}",
                limit="bandwidth_copy",
                work=8 * n,
                setup=functools.partial(_setup_eval, shape=shape, axis=axis),
                quick=quick,
                rtol=1e-4,
                atol=1e-5,
                note="bytes = 8 n (read x, write y)",
            )
        )


_register()
