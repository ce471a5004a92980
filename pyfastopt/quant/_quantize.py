"""Affine quantization of float tensors to int8/uint8 and back (per tensor or per channel).

The rule is ONNX QuantizeLinear's, computed in the input's float type:

.. math:: q = \\operatorname{clamp}\\big(\\operatorname{rint}(x / s) + z,\\; q_{min},\\; q_{max}\\big)

with one correctly rounded IEEE division (kernels may multiply by the reciprocal only
where that provably gives the same integer), ``rint`` rounding half to even, and the zero
point added after rounding. See :func:`quantize` for how this relates
to ``torch.quantize_per_tensor``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core
from .._validate import axis as check_axis
from .._validate import choice, integer, real, type_name

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    import numpy.typing as npt

    from .._typing import ArrayLike, QuantArray

__all__ = ["dequantize", "qrange", "quantize"]

_QDTYPES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}
_I8, _U8 = np.dtype(np.int8), np.dtype(np.uint8)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
# what a NaN input becomes: "qmax" (torch's, the default) or "qmin" (ONNX Runtime's)
_NAN_POLICIES = ("qmax", "qmin")
# Doubles at or beyond these round to float32 inf / 0 (ties to even).
_F32_ROUNDS_TO_MAX = 3.4028235677973366e38
_F32_ROUNDS_TO_ZERO = 7.006492321624085e-46


def qrange(dtype: Any) -> tuple[int, int]:
    """``(qmin, qmax)`` of a quantized dtype (int8: -128..127, uint8: 0..255)."""
    return _QDTYPES[_qdtype(dtype)]


def _qdtype(dtype: Any, name: str = "dtype") -> np.dtype:
    if dtype is np.int8:  # the common spellings without np.dtype() (per-call overhead)
        return _I8
    if dtype is np.uint8:
        return _U8
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be numpy.int8 or numpy.uint8, got {dtype!r}") from None
    if dt not in _QDTYPES:
        raise TypeError(f"{name} must be numpy.int8 or numpy.uint8, got {dt}")
    return dt


def _float_input(x: Any) -> np.ndarray:
    a = np.asarray(x)
    dt = a.dtype
    if dt is _F32 or dt is _F64 or dt in (np.float32, np.float64):
        return a
    if a.dtype == np.float16:
        return a.astype(np.float32)  # exact
    if a.dtype.kind in "iu":
        return a.astype(np.float64)  # exact up to 2**53
    raise TypeError(f"x must be a real floating or integer array, got dtype {a.dtype}")


def _params(
    scale: Any, zero_point: Any, qdt: np.dtype, axis: int | None, shape: tuple, in_dtype: Any
) -> tuple[list[float], list[int], int]:
    """Checked (scales, zero points, axis or -1) for the binding."""
    if isinstance(scale, (float, np.floating)) and isinstance(zero_point, (int, np.integer)):
        # fast path for scalars (bool is an int, but a bool zero point is an error below)
        sf, zp = float(scale), int(zero_point)
        if (
            math.isfinite(sf)
            and sf > 0.0
            and (1.2e-38 < sf < 3.4e38 or in_dtype == np.float64)  # survives float32
            and not isinstance(zero_point, (bool, np.bool_))
        ):
            zlo, zhi = _QDTYPES[qdt]
            if not zlo <= zp <= zhi:
                raise ValueError(
                    f"zero_point must be in [{zlo}, {zhi}] for {qdt}, got {zero_point!r}"
                )
            return [sf], [zp], -1
    lo_q, hi_q = _QDTYPES[qdt]
    if np.ndim(scale) == 0 and np.ndim(zero_point) == 0:
        # per tensor: the scalar rules (real / integer); the scale's range is checked below
        scale = real("scale", scale, allow_nan=True)
        zero_point = integer("zero_point", zero_point)
        if not lo_q <= zero_point <= hi_q:
            raise ValueError(
                f"zero_point must be in [{lo_q}, {hi_q}] for {qdt}, got {zero_point!r}"
            )
    s = np.asarray(scale)
    z = np.asarray(zero_point)
    if s.dtype.kind not in "fiu":
        raise TypeError(
            f"scale must be a real number or array, got {type_name(scale)} of dtype {s.dtype}"
        )
    if z.dtype.kind not in "iu":
        raise TypeError(
            f"zero_point must be an integer or an integer array, got {type_name(zero_point)}"
            f" of dtype {z.dtype}"
        )
    per_channel = s.ndim > 0 or z.ndim > 0
    if per_channel:
        if axis is None:
            raise ValueError(
                f"scale of shape {s.shape} / zero_point of shape {z.shape} are per-channel: "
                "give the channel axis"
            )
        channels = shape[axis]
        for name, a in (("scale", s), ("zero_point", z)):
            if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != channels):
                raise ValueError(
                    f"{name} has shape {a.shape} but the input of shape {shape} has {channels} "
                    f"channels along axis {axis}: expected shape ({channels},)"
                )
        if s.ndim == 0:
            s = np.full(channels, s)
        if z.ndim == 0:
            z = np.full(channels, z)
    s64 = s.astype(np.float64).reshape(-1)
    if s64.size:
        # positive and finite after rounding to the input's dtype (min is NaN if any is)
        lo, hi = float(s64.min()), float(s64.max())
        top, bottom = (
            (_F32_ROUNDS_TO_MAX, _F32_ROUNDS_TO_ZERO)
            if in_dtype == np.float32
            else (
                math.inf,
                0.0,
            )
        )
        if not (lo > bottom and hi < top):
            raise ValueError(
                f"scale must be positive and finite in {np.dtype(in_dtype)}, got {scale!r}"
            )
    zi = z.astype(np.int64).reshape(-1)
    if zi.size and (int(zi.min()) < lo_q or int(zi.max()) > hi_q):
        raise ValueError(f"zero_point must be in [{lo_q}, {hi_q}] for {qdt}, got {zero_point!r}")
    return s64.tolist(), zi.tolist(), (axis if per_channel and axis is not None else -1)


def _check_out(out: Any, src: np.ndarray) -> None:
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if np.may_share_memory(out, src):
        raise ValueError("out must not share memory with the input")


def quantize(
    x: ArrayLike,
    scale: float | ArrayLike,
    zero_point: int | ArrayLike,
    dtype: Any = np.int8,
    axis: int | None = None,
    *,
    nan: str = "qmax",
    out: QuantArray | None = None,
) -> QuantArray:
    r"""Quantize ``x`` to int8 or uint8.

    .. math:: q = \operatorname{clamp}(\operatorname{rint}(x / s) + z, q_{min}, q_{max})

    Args:
        x: array-like, float32 or float64 (float16 is widened to float32, integers to
            float64), any shape (0-d and empty included) and layout.
        scale: a positive finite scalar (per tensor), or a 1-D array of
            ``x.shape[axis]`` scales (per channel).
        zero_point: an integer in the dtype's range, or a 1-D integer array (per channel;
            a scalar is used for every channel).
        dtype: ``numpy.int8`` (range [-128, 127]) or ``numpy.uint8`` ([0, 255]).
        axis: the channel axis for per-channel parameters (negative counts from the end).
        nan: what a NaN element becomes: ``"qmax"`` (the default: the dtype's largest
            level, what ``torch.quantize_per_tensor`` gives) or ``"qmin"`` (the smallest
            level, whatever the zero point: what ONNX Runtime's QuantizeLinear gives, for
            ONNX graphs; uint8 NaN -> 0, int8 NaN -> -128). Either way the same bits on
            every SIMD level and thread count.
        out: optional result array (``dtype``, ``x``'s shape, C-contiguous, writable, not
            overlapping ``x``); saves the allocation and its page faults on large inputs.

    Returns:
        An array of ``dtype`` and ``x``'s shape (``out`` when given).

    Rounding and edge cases:
        * Computed in ``x``'s dtype: ``scale`` is rounded to it, ``x / scale`` is one
          correctly rounded division (every SIMD level gives the same bits), ``rint``
          rounds half to even, ``zero_point`` is added after rounding, then the result
          saturates. ``+inf`` gives qmax, ``-inf`` qmin.
        * NaN gives qmax, like ``torch.quantize_per_tensor`` (``nan="qmin"``: qmin, like
          ONNX Runtime's QuantizeLinear; the ONNX standard leaves it unspecified).
        * Versus ``torch.quantize_per_tensor`` (fbgemm): torch multiplies by the float32
          reciprocal ``1/scale`` and adds the zero point *before* rounding, so on exact
          ties with an odd zero point, and where ``x * (1/scale)`` and ``x / scale`` round
          to different sides of a half-integer, results differ by one level (a few
          elements per million at random inputs); everywhere else they are equal.
          ONNX QuantizeLinear is this function's rule exactly.
    """
    qdt = _qdtype(dtype)
    a = _float_input(x)
    ax = None if axis is None else check_axis("axis", axis, a.ndim)
    s, z, bax = _params(scale, zero_point, qdt, ax, a.shape, a.dtype)
    if nan != "qmax" and choice("nan", nan, _NAN_POLICIES) == "qmin":
        _check_out(out, a)
        q = _core.quant.quantize(a, s, z, qdt.char == "B", bax, out)
        # the kernel's NaN -> qmax, then those elements set to qmin: an exact select,
        # so the bits stay those of every SIMD level and thread count
        np.copyto(q, _QDTYPES[qdt][0], where=np.isnan(a))
        return q
    if out is not None:
        _check_out(out, a)
    return _core.quant.quantize(a, s, z, qdt.char == "B", bax, out)


def dequantize(
    q: ArrayLike,
    scale: float | ArrayLike,
    zero_point: int | ArrayLike,
    axis: int | None = None,
    *,
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    r"""Map int8/uint8 (or int32) values back to float32: :math:`y = (q - z) \cdot s`.

    Computed in float32 with ``scale`` rounded to float32: ``q - z`` is exact, so each
    result is the one rounding of the product -- bit for bit what
    ``torch.Tensor.dequantize`` gives per tensor, and per channel when the scales are
    float32 values (torch multiplies per-channel scales in their own dtype, so float64
    scales that are not float32 values can differ from torch by one float32 ulp).
    Parameters as in :func:`quantize` (``out``: float32, ``q``'s shape). int32 ``q``
    (biases, int32 accumulators) follows ONNX DequantizeLinear: the zero point must be
    0 and ``y = float32(q) * float32(scale)``, ONNX Runtime's bits.

    Returns:
        A float32 array of ``q``'s shape (``out`` when given).
    """
    a = np.asarray(q)
    if a.dtype == np.int32:
        return _dequantize_int32(a, scale, zero_point, axis, out)
    if a.dtype not in _QDTYPES:
        raise TypeError(f"q must be an int8, uint8 or int32 array, got dtype {a.dtype}")
    ax = None if axis is None else check_axis("axis", axis, a.ndim)
    s, z, bax = _params(scale, zero_point, a.dtype, ax, a.shape, np.float32)
    _check_out(out, a)
    return _core.quant.dequantize(a, s, z, bax, out)


def _dequantize_int32(
    a: np.ndarray, scale: Any, zero_point: Any, axis: int | None, out: np.ndarray | None
) -> npt.NDArray[np.float32]:
    """int32 values (biases, accumulators) to float32, as ONNX DequantizeLinear: the zero
    point must be 0, ``y = float32(q) * float32(scale)`` (the int32 -> float32 conversion
    rounds to nearest even beyond 2**24, as a C cast does in ONNX Runtime)."""
    z = np.asarray(zero_point)
    if z.dtype.kind not in "iu" or isinstance(zero_point, (bool, np.bool_)):
        raise TypeError(
            f"zero_point must be an integer or an integer array, got {type_name(zero_point)}"
            f" of dtype {z.dtype}"
        )
    if np.any(z != 0):
        raise ValueError(
            f"zero_point must be 0 for int32 input (ONNX DequantizeLinear), got {zero_point!r}"
        )
    ax = None if axis is None else check_axis("axis", axis, a.ndim)
    # the scale rules of the int8 path (finite, > 0, per-channel length), zero points 0
    s, _, bax = _params(
        scale, np.zeros(z.shape, np.int8), np.dtype(np.int8), ax, a.shape, np.float32
    )
    _check_out(out, a)
    if out is not None and out.dtype != np.float32:
        raise TypeError(f"out must be a float32 array, got dtype {out.dtype}")
    if out is not None and out.shape != a.shape:
        raise ValueError(f"out must have q's shape {a.shape}, got {out.shape}")
    s32 = np.asarray(s, dtype=np.float32)
    if bax >= 0:
        view = [1] * a.ndim
        view[bax] = s32.size
        s32 = s32.reshape(view)
    else:
        s32 = s32.reshape(())
    return np.multiply(a.astype(np.float32), s32, out=out, dtype=np.float32)
