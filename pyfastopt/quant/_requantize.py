"""ONNX's requantization of int32 accumulators: ``requantize`` and ``qlinear_matmul``
(QLinearMatMul), computed as ONNX Runtime does: the multiplier in float32, each
accumulator converted to float32, one float32 product, round half to even, zero point
added, saturated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import integer, type_name
from ._qgemm import matmul_int8

if TYPE_CHECKING:
    import numpy.typing as npt

    from .._typing import ArrayLike

__all__ = ["qlinear_matmul", "requantize"]

_OUT = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def _scale(name: str, s: Any) -> np.ndarray:
    a = np.asarray(s)
    if a.dtype.kind not in "fiu" or isinstance(s, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number or array, got {type_name(s)}")
    a = a.astype(np.float32)
    if a.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D (per column), got shape {a.shape}")
    if not np.all(np.isfinite(a)) or not np.all(a > 0):
        raise ValueError(f"{name} must be finite and > 0, got {s!r}")
    return a


def _zero_point(name: str, z: Any, dtype: np.dtype) -> int:
    """One integer in ``dtype``'s range (a Python/NumPy integer, 0-d or 1-element array)."""
    if np.ndim(z) and np.size(z) != 1:
        raise ValueError(f"{name} must be one value (per tensor), got shape {np.shape(z)}")
    lo, hi = _OUT[dtype]
    return integer(name, np.asarray(z).reshape(()) if np.ndim(z) else z, lo=lo, hi=hi)


def requantize(
    acc: ArrayLike, scale: float | ArrayLike, zero_point: int, dtype: Any = np.uint8
) -> npt.NDArray[Any]:
    r"""int32 accumulators to 8 bits, as ONNX Runtime requantizes:
    :math:`q = \mathrm{sat}(\mathrm{rint}(\mathrm{f32}(acc) \cdot s) + z)`.

    Args:
        acc: int32 array (e.g. :func:`matmul_int8`'s result).
        scale: the multiplier (``a_scale * b_scale / y_scale``), a positive float
            rounded to float32, or a 1-D array of one per column (last axis).
        zero_point: the output zero point, in ``dtype``'s range.
        dtype: ``numpy.uint8`` or ``numpy.int8``.

    Rounding is half to even on the float32 product (ONNX Runtime's); the int32 ->
    float32 conversion rounds beyond 2**24, as ONNX Runtime's does.
    """
    a = np.asarray(acc)
    if a.dtype != np.int32:
        raise TypeError(f"acc must be an int32 array, got dtype {a.dtype}")
    dt = np.dtype(dtype)
    if dt not in _OUT:
        raise TypeError(f"dtype must be numpy.uint8 or numpy.int8, got {dtype!r}")
    s = _scale("scale", scale)
    if s.ndim == 1 and (a.ndim == 0 or s.shape[0] != a.shape[-1]):
        raise ValueError(
            f"scale of shape {s.shape} must hold one multiplier per column of acc {a.shape}"
        )
    z = _zero_point("zero_point", zero_point, dt)
    lo, hi = _OUT[dt]
    v = a.astype(np.float32) * s  # float32 * float32: one rounding
    return np.clip(np.rint(v) + np.float32(z), lo, hi).astype(dt)


def qlinear_matmul(
    a: ArrayLike,
    a_scale: float,
    a_zero_point: Any,
    b: ArrayLike,
    b_scale: float | ArrayLike,
    b_zero_point: Any,
    y_scale: float,
    y_zero_point: int,
    dtype: Any = None,
) -> npt.NDArray[Any]:
    r"""ONNX QLinearMatMul: ``requantize(matmul_int8(a, za, b, zb), a_scale * b_scale /
    y_scale, y_zero_point)`` with the multiplier computed in float32 as ONNX Runtime does
    (``float32(float32(a_scale * b_scale) / y_scale)``). ``b_scale`` and ``b_zero_point``
    may be per column (1-D of ``N``); ``a_zero_point`` per row (see :func:`matmul_int8`).
    ``a`` and ``b`` may be N-D with batch dimensions broadcasting as in
    :func:`matmul_int8` (QLinearMatMul's matmul semantics).
    The output dtype is ``y_zero_point``'s when it is a NumPy integer, else ``dtype``
    (default uint8)."""
    acc = matmul_int8(a, a_zero_point, b, b_zero_point)
    sa = _scale("a_scale", a_scale)
    if sa.ndim:
        raise ValueError(f"a_scale must be a scalar, got shape {sa.shape}")
    sb = _scale("b_scale", b_scale)
    sy = _scale("y_scale", y_scale)
    if sy.ndim:
        raise ValueError(f"y_scale must be a scalar, got shape {sy.shape}")
    mult = (sa * sb).astype(np.float32) / sy
    if dtype is None:
        zy = np.asarray(y_zero_point)
        dtype = zy.dtype if zy.dtype in _OUT else np.uint8
    return requantize(acc, mult.astype(np.float32), y_zero_point, dtype)
