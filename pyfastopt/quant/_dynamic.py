"""ONNX's ``DynamicQuantizeLinear`` as a function: :func:`dynamic_quantize_linear`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._quantize import quantize

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from .._typing import ArrayLike

__all__ = ["dynamic_quantize_linear"]


def dynamic_quantize_linear(x: ArrayLike) -> tuple[np.ndarray, np.float32, np.uint8]:
    """``(y, y_scale, y_zero_point)`` of ONNX ``DynamicQuantizeLinear``: ``x`` to uint8
    with qparams from its own range, bit for bit what ONNX Runtime computes.

    In float32, one rounding per operation:

    * ``lo = min(min(x), 0)``, ``hi = max(max(x), 0)`` (the range always holds 0);
    * ``y_scale = (hi - lo) / 255``, or 1 when ``hi == lo`` (all zeros, or empty ``x``:
      ONNX's formula would divide by zero there; this is ONNX Runtime's choice);
    * ``y_zero_point = round_half_even(clip(-lo / y_scale, 0, 255))``;
    * ``y = clip(round_half_even(x / y_scale) + y_zero_point, 0, 255)`` (a correctly
      rounded division, as :func:`pyfastopt.quant.quantize`).

    Args:
        x: float32 array of any shape (float16 and float64 are converted to float32, as
            the operator is defined on float32; float64 values may round).

    Returns:
        ``y`` (uint8, the shape of ``x``), ``y_scale`` (``numpy.float32``),
        ``y_zero_point`` (``numpy.uint8``).

    Raises:
        TypeError: ``x`` is not a float array.
        ValueError: ``x`` holds NaN or infinity (the range, so every value, would be
            meaningless; ONNX leaves it undefined, and ONNX Runtime 1.32 gives results
            that depend on the input's length: NaN skipped by the range of a 3-element
            input, a NaN scale and all-zero ``y`` for 40 elements, an infinite scale for
            ``inf``), or ``max - min`` overflows float32
            (beyond 3.4e38) or ``(max - min) / 255`` underflows to 0 (where ONNX's formula
            gives an infinite or zero scale and ONNX Runtime returns meaningless values).
    """
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TypeError(f"x must be a float32 array, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    zero = np.float32(0.0)
    if a.size:
        lo, hi = np.min(a), np.max(a)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("x must be finite: it holds NaN or infinity")
        lo, hi = min(lo, zero), max(hi, zero)
    else:
        lo = hi = zero
    with np.errstate(over="ignore"):
        scale = np.float32(1.0) if hi == lo else np.float32(hi - lo) / np.float32(255.0)
    if not np.isfinite(scale) or scale == 0:
        raise ValueError(
            f"x spans [{lo}, {hi}]: its width {'overflows' if scale else 'underflows'} "
            "float32, so no uint8 scale represents it (ONNX's formula gives an infinite "
            "or zero scale there)"
        )
    zp_float = np.clip(zero - lo / scale, np.float32(0.0), np.float32(255.0))
    zero_point = np.uint8(np.rint(zp_float))
    y = quantize(a, float(scale), int(zero_point), dtype=np.uint8)
    return y, np.float32(scale), zero_point
