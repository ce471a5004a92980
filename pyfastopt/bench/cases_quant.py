"""Bench cases for ``pyfastopt.quant``: quantize float32 -> int8 and dequantize back.

Memory-bound (limit ``"bandwidth_copy"``, the out-of-place stream): quantize reads 4 B
and writes 1 B per element, dequantize reads 1 B and writes 4 B, so ``work`` = 5 n bytes
(the ``y = s*x`` probe moves 8 B/element; a 5 B/element kernel with the same stream
efficiency reaches the same GB/s). Per tensor and per channel (axis 0 of an
``(n / 1000, 1000)`` matrix: each row its own scale, as weights are quantized).

Compared with:

* NumPy: ``np.clip(np.rint(x / s) + zp, qmin, qmax).astype(np.int8)`` (s a float32, so
  the arithmetic stays float32: the same rule and bits as pyfastopt), and the same with
  preallocated buffers (``divide/rint/add/clip(out=)`` then ``copyto``); dequantize
  ``(q.astype(float32) - zp) * s`` and its ``out=`` spelling.
* torch: ``torch.quantize_per_tensor`` / ``quantize_per_channel`` (returns a quantized
  tensor), ``Tensor.dequantize()``.

pyfastopt is timed allocating its result and writing into a preallocated ``out=`` (as
NumPy's fastest spelling does); the faster counts. At 1e7 elements the allocation's page
faults (40 MB of float32 for dequantize) cost as much as the kernel.

Correctness guard: integer outputs compared with ``atol = 1`` (torch multiplies by the
float32 reciprocal and can land one level away near exact ties; pyfastopt and NumPy agree
exactly); dequantized values within a float32 rounding.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from .registry import Case, Context, Prepared, fmt_count, register

_COLS = 1000


def _data(ctx: Context, n: int, per_channel: bool) -> tuple[np.ndarray, Any, Any]:
    rng = ctx.rng()
    x = (rng.standard_normal(n) * 2.0).astype(np.float32)
    scale: Any
    zp: Any
    if per_channel:
        x = x.reshape(-1, _COLS)
        scale = (np.abs(x).max(axis=1) / 127).astype(np.float32)
        zp = np.zeros(x.shape[0], np.int64)
    else:
        scale, zp = np.float32(np.abs(x).max() / 127), 0
    return x, scale, zp


def _to_numpy(returned: Any) -> np.ndarray:
    if getattr(returned, "is_quantized", False):  # a quantized torch tensor
        returned = returned.int_repr()
    if hasattr(returned, "numpy"):
        returned = returned.numpy()
    return np.asarray(returned).astype(np.float64)


def _setup_quantize(ctx: Context, n: int, per_channel: bool) -> Prepared:
    from ..quant import quantize

    x, scale, zp = _data(ctx, n, per_channel)
    s = scale[:, None] if per_channel else scale
    z = np.asarray(zp)[:, None] if per_channel else zp
    axis = 0 if per_channel else None
    tmp = np.empty_like(x)
    q_np = np.empty(x.shape, np.int8)
    q_pf = np.empty(x.shape, np.int8)

    def numpy_temporaries() -> Any:
        return np.clip(np.rint(x / s) + z, -128, 127).astype(np.int8)

    def numpy_preallocated() -> Any:
        np.divide(x, s, out=tmp)
        np.rint(tmp, out=tmp)
        np.add(tmp, z, out=tmp, casting="unsafe")
        np.clip(tmp, -128, 127, out=tmp)
        np.copyto(q_np, tmp, casting="unsafe")
        return q_np

    impls: dict = {
        "pyfastopt": {
            "quantize(x, s, zp)": functools.partial(quantize, x, scale, zp, np.int8, axis),
            "out=": functools.partial(quantize, x, scale, zp, np.int8, axis, out=q_pf),
        },
        "numpy": {"clip(rint(x / s) + zp)": numpy_temporaries, "out=": numpy_preallocated},
    }
    torch = ctx.torch
    if torch is not None:
        xt = torch.from_numpy(x)
        with warnings.catch_warnings():  # qint8 tensors: deprecation notice
            warnings.simplefilter("ignore")
            if per_channel:
                st = torch.from_numpy(scale.astype(np.float64))
                zt = torch.from_numpy(np.asarray(zp, np.int64))
                f = functools.partial(torch.quantize_per_channel, xt, st, zt, 0, torch.qint8)
            else:
                f = functools.partial(torch.quantize_per_tensor, xt, float(scale), 0, torch.qint8)

        # the qint8 deprecation notice, filtered once here (torch runs in a process of
        # its own): a catch_warnings() around every call cost it ~2 us per call
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        impls["torch"] = f
    return Prepared(impls, output=lambda impl, r: _to_numpy(r))


def _setup_dequantize(ctx: Context, n: int, per_channel: bool) -> Prepared:
    from ..quant import dequantize, quantize

    x, scale, zp = _data(ctx, n, per_channel)
    axis = 0 if per_channel else None
    q = quantize(x, scale, zp, np.int8, axis)
    s = scale[:, None] if per_channel else scale
    y_np = np.empty(x.shape, np.float32)
    y_pf = np.empty(x.shape, np.float32)

    def numpy_temporaries() -> Any:
        return (q.astype(np.float32) - np.float32(0)) * s

    def numpy_preallocated() -> Any:
        np.copyto(y_np, q, casting="unsafe")  # zp = 0: nothing to subtract
        np.multiply(y_np, s, out=y_np)
        return y_np

    impls: dict = {
        "pyfastopt": {
            "dequantize(q, s, zp)": functools.partial(dequantize, q, scale, zp, axis),
            "out=": functools.partial(dequantize, q, scale, zp, axis, out=y_pf),
        },
        "numpy": {"(q - zp) * s": numpy_temporaries, "out=": numpy_preallocated},
    }
    torch = ctx.torch
    if torch is not None:  # torch's quantized tensor holding the same integers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qi = torch.from_numpy(q)
            if per_channel:
                st = torch.from_numpy(scale.astype(np.float64))
                zt = torch.from_numpy(np.asarray(zp, np.int64))
                qt = torch._make_per_channel_quantized_tensor(qi, st, zt, 0)
            else:
                qt = torch._make_per_tensor_quantized_tensor(qi, float(scale), 0)
        impls["torch"] = qt.dequantize
    return Prepared(impls, output=lambda impl, r: _to_numpy(r))


def _register() -> None:
    for n, quick in ((10**6, False), (10**7, False), (10**4, True)):
        for per_channel in (False, True):
            gran = "per-channel" if per_channel else "per-tensor"
            register(
                Case(
                    family="quant",
                    name=f"quantize f32->s8 {gran} n={fmt_count(n)}",
                    limit="bandwidth_copy",
                    work=5 * n,
                    setup=functools.partial(_setup_quantize, n=n, per_channel=per_channel),
                    quick=quick,
                    rtol=0.0,
                    atol=1.0,
                    note="q = clip(rint(x / s) + zp); bytes = 5 n (read 4, write 1)",
                )
            )
            register(
                Case(
                    family="quant",
                    name=f"dequantize s8->f32 {gran} n={fmt_count(n)}",
                    limit="bandwidth_copy",
                    work=5 * n,
                    setup=functools.partial(_setup_dequantize, n=n, per_channel=per_channel),
                    quick=quick,
                    rtol=1e-7,
                    atol=0.0,
                    note="y = (q - zp) * s in float32; bytes = 5 n (read 1, write 4)",
                )
            )


_register()
