"""pyfastopt's functions for CUDA device arrays, under the CPU API's names and rules.

Scalars are checked by the library's one argument checker (:mod:`pyfastopt._validate`,
as on the CPU: same exception types, same messages); arrays by the CUDA module's boundary (``cpp/cuda/device_array.cpp``). Every
function takes ``stream=`` (see :func:`pyfastopt.cuda.stream_handle`); by default the
work is queued on the first array's producer's current stream, and nothing waits for
the GPU unless a Python number must come back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._batchnorm import _check_axis, _check_eps, _update_factor
from .._validate import axis as check_axis
from .._validate import boolean, choice, integer, nonnegative, probability, real, u64
from ..quant._quantize import _QDTYPES, _params, _qdtype
from ._runtime import as_kind, require, resolve_stream

__all__ = [
    "axpby_",
    "batch_norm_backward",
    "batch_norm_infer",
    "batch_norm_train",
    "clip_grad_norm_",
    "clip_grad_value_",
    "dequantize",
    "dropout",
    "dropout_backward",
    "linear",
    "matmul",
    "matmul_int8",
    "quantize",
]

_ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2}


# ---------------------------------------------------------------------------- elementwise
def axpby_(y: Any, x: Any, a: float = 1.0, b: float = 1.0, *, stream: Any = None) -> None:
    """In place on the GPU: ``y = a * x + b * y`` with one rounding in the fma
    (``fma(a, x, b * y)``): the same bits as :func:`pyfastopt.ops.axpby_` on the CPU."""
    mod = require()
    a = real("a", a, allow_nan=True)
    b = real("b", b, allow_nan=True)
    mod.axpby_(y, x, a, b, resolve_stream(stream, y))


# ---------------------------------------------------------------------------- dropout
def dropout(
    x: Any,
    p: float = 0.5,
    seed: int = 0,
    training: bool = True,
    out: Any = None,
    *,
    offset: int = 0,
    return_mask: bool = False,
    stream: Any = None,
) -> Any:
    """Inverted dropout on the GPU, bit-identical to :func:`pyfastopt.dropout`.

    The mask is the CPU's: Philox4x32-10 keyed by ``seed`` at counters made of the
    element's flat C-order index and ``offset``, keep iff the 32-bit word >= round(p 2^32),
    kept values multiplied by ``1/(1-p)`` rounded to ``x``'s dtype. So for the same
    ``(seed, offset)`` a CPU and a GPU run drop the same elements and give the same bits
    (``pyfastopt.dropout_mask(shape, p, seed, offset=...)`` shows the mask on the host).

    ``return_mask=True`` also returns the mask bit-packed on the device (uint8,
    ``ceil(n / 8)`` bytes, little-endian bit order: ``np.packbits(mask, bitorder="little")``
    of the CPU). With ``training=False`` or ``p == 0`` ``x`` itself comes back (copied
    into ``out`` when one is given). The result is ``x``'s kind (see
    :func:`pyfastopt.cuda.as_kind`).
    """
    mod = require()
    p = probability("p", p)
    seed = u64("seed", seed)
    offset = u64("offset", offset)
    training = boolean("training", training)
    return_mask = boolean("return_mask", return_mask)
    s = resolve_stream(stream, x)
    if not training or p == 0.0:
        return _identity(mod, x, out, return_mask, s, "x")
    y, bits = mod.dropout(x, out, p, seed, offset, return_mask, "x", s)
    y = out if out is not None else as_kind(y, x)
    return (y, as_kind(bits, x)) if return_mask else y


def _identity(mod: Any, x: Any, out: Any, return_mask: bool, s: int, name: str) -> Any:
    """training=False or p == 0: x itself (copied into ``out`` when given), after the
    same checks as the kernel path (a float device array)."""
    desc = mod.describe(x, name, s)
    if desc["dtype"] not in ("float32", "float64"):
        raise TypeError(f"{name} must have dtype float32 or float64, got {desc['dtype']}")
    y = x
    if out is not None:
        mod.copy_(out, x, s)
        y = out
    if return_mask:
        n = math.prod(desc["shape"])
        ones = np.full((n + 7) // 8, 0xFF, np.uint8)
        if n % 8:
            ones[-1] = (1 << (n % 8)) - 1
        return y, as_kind(mod.from_host(ones, int(desc["device"]), s), x)
    return y


def dropout_backward(
    dy: Any, p: float, seed: int, *, offset: int = 0, out: Any = None, stream: Any = None
) -> Any:
    """Gradient of :func:`dropout` on the GPU: ``dx = dy * mask`` with the mask regenerated
    from ``(seed, offset)`` (nothing stored between forward and backward)."""
    mod = require()
    p = probability("p", p)
    seed = u64("seed", seed)
    offset = u64("offset", offset)
    s = resolve_stream(stream, dy)
    if p == 0.0:
        return _identity(mod, dy, out, False, s, "dy")
    y, _ = mod.dropout(dy, out, p, seed, offset, False, "dy", s)
    return out if out is not None else as_kind(y, dy)


# ---------------------------------------------------------------------------- quantization
def quantize(
    x: Any,
    scale: Any,
    zero_point: Any,
    dtype: Any = np.int8,
    axis: int | None = None,
    *,
    out: Any = None,
    stream: Any = None,
) -> Any:
    """:func:`pyfastopt.quant.quantize` on the GPU, with the CPU's exact rule: ``x / scale``
    as one correctly rounded division in ``x``'s dtype, round half to even, zero point
    added after rounding, saturation (NaN -> qmax). Same bits as the CPU.

    ``scale`` / ``zero_point`` are host scalars or host arrays (per channel along
    ``axis``), as on the CPU: they are small and are checked on the host.
    """
    mod = require()
    qdt = _qdtype(dtype)
    st = resolve_stream(stream, x)
    desc = mod.describe(x, "x", st)
    if desc["dtype"] not in ("float32", "float64"):
        raise TypeError(f"x must be a float32 or float64 device array, got dtype {desc['dtype']}")
    shape = tuple(desc["shape"])
    ax = None if axis is None else _axis_of(axis, len(shape))
    s, z, bax = _params(scale, zero_point, qdt, ax, shape, np.dtype(desc["dtype"]))
    q = mod.quantize(x, s, [float(v) for v in z], qdt.name, bax, out, st)
    return out if out is not None else as_kind(q, x)


def dequantize(
    q: Any,
    scale: Any,
    zero_point: Any,
    axis: int | None = None,
    *,
    out: Any = None,
    stream: Any = None,
) -> Any:
    """:func:`pyfastopt.quant.dequantize` on the GPU: ``(q - z) * s`` in float32, one
    rounding (the CPU's and torch's bits)."""
    mod = require()
    st = resolve_stream(stream, q)
    desc = mod.describe(q, "q", st)
    name = desc["dtype"]
    if name not in ("int8", "uint8"):
        raise TypeError(f"q must be an int8 or uint8 device array, got dtype {name}")
    shape = tuple(desc["shape"])
    ax = None if axis is None else _axis_of(axis, len(shape))
    s, z, bax = _params(scale, zero_point, np.dtype(name), ax, shape, np.float32)
    y = mod.dequantize(q, s, [float(v) for v in z], bax, out, st)
    return out if out is not None else as_kind(y, q)


def _axis_of(axis: Any, ndim: int) -> int:
    return check_axis("axis", axis, ndim)


def _zero_point(name: str, value: Any, dtype_name: str) -> int:
    """A zero point in the dtype's range (a 1-element integer array too, as on the CPU)."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        value = value.reshape(())
    lo, hi = _QDTYPES[np.dtype(dtype_name)]
    return integer(name, value, lo=lo, hi=hi)


def matmul_int8(
    a_q: Any,
    a_zero_point: int,
    b_q: Any,
    b_zero_point: int,
    *,
    stream: Any = None,
    use_cublaslt: bool = True,
) -> Any:
    """:func:`pyfastopt.quant.matmul_int8` on the GPU: the exact int32 result
    ``sum_k (a - za)(b - zb)`` modulo 2**32, the CPU's bits.

    The product runs on cuBLASLt's int8 tensor-core GEMM when the library is available
    and has an algorithm for the shapes (uint8 operands are shifted to int8 exactly
    first; zero points are applied afterwards from row and column sums), else on a dp4a
    kernel; both are exact integer arithmetic. ``use_cublaslt=False`` forces the dp4a
    kernel (tests compare the two).
    """
    mod = require()
    st = resolve_stream(stream, a_q)
    dts = []
    for name, x in (("a_q", a_q), ("b_q", b_q)):
        dt = mod.describe(x, name, st)["dtype"]
        if dt not in ("int8", "uint8"):
            raise TypeError(f"{name} must be an int8 or uint8 device array, got dtype {dt}")
        dts.append(dt)
    za = _zero_point("a_zero_point", a_zero_point, dts[0])
    zb = _zero_point("b_zero_point", b_zero_point, dts[1])
    use_cublaslt = boolean("use_cublaslt", use_cublaslt)
    c, _path = mod.matmul_int8(a_q, za, b_q, zb, use_cublaslt, st)
    return as_kind(c, a_q)


# ---------------------------------------------------------------------------- GEMM
def matmul(a: Any, b: Any, out: Any = None, *, stream: Any = None) -> Any:
    """:func:`numpy.matmul` semantics on the GPU (1-D promotion, batch broadcasting),
    float32 / float64 through cuBLASLt in full precision (float32 never uses TF32)."""
    mod = require()
    c = mod.matmul(a, b, out, resolve_stream(stream, a))
    return out if out is not None else as_kind(c, a)


def linear(
    x: Any,
    weight: Any,
    bias: Any = None,
    activation: str | None = None,
    out: Any = None,
    *,
    stream: Any = None,
) -> Any:
    """``act(x @ weight.T + bias)`` on the GPU (:func:`pyfastopt.linear`'s contract).

    The GEMM is cuBLASLt's, with bias and relu fused into its epilogue; ``"gelu"`` is the
    exact erf form (PyTorch's default, what the CPU computes), applied by a separate
    element-wise kernel after cuBLASLt's bias epilogue (cuBLASLt's own GELU epilogue is
    the tanh approximation, a different function).
    """
    mod = require()
    activation = choice("activation", activation, tuple(_ACTIVATIONS))
    y = mod.linear(x, weight, bias, _ACTIVATIONS[activation], out, resolve_stream(stream, x))
    return out if out is not None else as_kind(y, x)


# ---------------------------------------------------------------------------- batch norm
def batch_norm_train(
    x: Any,
    weight: Any,
    bias: Any,
    running_mean: Any = None,
    running_var: Any = None,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    *,
    num_batches_tracked: int | None = None,
    out: Any = None,
    stream: Any = None,
) -> tuple[Any, Any, Any]:
    """:func:`pyfastopt.batch_norm_train` on the GPU: the CPU's numerics (shifted sums in
    float64, per-channel math in float64, ``y = fma(p, x - m, q)`` in ``x``'s dtype) with
    deterministic reductions (fixed tasks combined in a fixed order; no atomics), so
    results are bitwise identical from run to run (not the CPU's bits: the summation
    order differs)."""
    mod = require()
    running = running_mean is not None or running_var is not None
    factor = _update_factor(momentum, num_batches_tracked, running)
    y, m, v = mod.batch_norm_train(
        x,
        weight,
        bias,
        running_mean,
        running_var,
        factor,
        _check_eps(eps, training=True),
        _check_axis(axis),
        out,
        resolve_stream(stream, x),
    )
    return (out if out is not None else as_kind(y, x)), as_kind(m, x), as_kind(v, x)


def batch_norm_infer(
    x: Any,
    weight: Any,
    bias: Any,
    running_mean: Any,
    running_var: Any,
    eps: float = 1e-5,
    axis: int = 1,
    *,
    out: Any = None,
    stream: Any = None,
) -> Any:
    """:func:`pyfastopt.batch_norm_infer` on the GPU (one fma per element, the CPU's
    per-channel coefficients)."""
    mod = require()
    y = mod.batch_norm_infer(
        x,
        weight,
        bias,
        running_mean,
        running_var,
        _check_eps(eps),
        _check_axis(axis),
        out,
        resolve_stream(stream, x),
    )
    return out if out is not None else as_kind(y, x)


def batch_norm_backward(
    dy: Any,
    x: Any,
    weight: Any,
    save_mean: Any,
    save_invstd: Any,
    axis: int = 1,
    *,
    out: Any = None,
    stream: Any = None,
) -> tuple[Any, Any, Any]:
    """:func:`pyfastopt.batch_norm_backward` on the GPU (deterministic reductions)."""
    mod = require()
    dx, dw, db = mod.batch_norm_backward(
        dy, x, weight, save_mean, save_invstd, _check_axis(axis), out, resolve_stream(stream, dy)
    )
    return (out if out is not None else as_kind(dx, x)), as_kind(dw, x), as_kind(db, x)


# ---------------------------------------------------------------------------- clipping
def _grad_list(grads: Any) -> list:
    if isinstance(grads, (list, tuple)):
        return list(grads)
    return [grads]


def clip_grad_norm_(
    grads: Any,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    *,
    stream: Any = None,
) -> Any:
    """:func:`pyfastopt.optim.clip_grad_norm_` on the GPU, without a host round trip.

    One deterministic fused reduction over every tensor (float64 accumulation, fixed
    chunks combined in a fixed order), then ``coef = min(1, max_norm / (norm + 1e-6))``
    on the device and one scaling pass (skipped on the device when ``coef == 1``).

    Returns:
        The total norm as a 0-d float64 device array of the gradients' kind (PyTorch
        returns a device tensor too); ``float(result)`` or ``.item()`` waits for it. An
        empty list gives the Python float 0.0. ``error_if_nonfinite=True`` has to wait for
        the norm (a host synchronisation), as in PyTorch.
    """
    mod = require()
    grads = _grad_list(grads)
    max_norm = nonnegative("max_norm", max_norm)
    norm_type = real("norm_type", norm_type)
    error_if_nonfinite = boolean("error_if_nonfinite", error_if_nonfinite)
    if not (norm_type >= 0 or norm_type == -math.inf):
        raise ValueError(f"norm_type must be >= 0 or +-inf, got {norm_type}")
    if not grads:
        return 0.0
    s = resolve_stream(stream, grads[0])
    if error_if_nonfinite:
        # check before scaling, as PyTorch does: a separate reduction pass
        probe = mod.clip_grad_norm_(grads, max_norm, norm_type, False, s)  # norm only
        total = float(mod.to_host(probe, s))
        if not math.isfinite(total):
            raise RuntimeError(
                f"The total norm of order {norm_type} for gradients is non-finite, so it "
                "cannot be clipped. To disable this error and scale the gradients by the "
                "non-finite norm anyway, set `error_if_nonfinite=False`"
            )
    total = mod.clip_grad_norm_(grads, max_norm, norm_type, True, s)
    return as_kind(total, grads[0])


def clip_grad_value_(grads: Any, clip_value: float, *, stream: Any = None) -> None:
    """:func:`pyfastopt.optim.clip_grad_value_` on the GPU (NaN stays NaN)."""
    mod = require()
    grads = _grad_list(grads)
    clip_value = nonnegative("clip_value", clip_value)
    if grads:
        mod.clip_grad_value_(grads, clip_value, resolve_stream(stream, grads[0]))
