"""Gradient clipping: by global norm (one fused pass) and by value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .. import _core
from .._validate import boolean, nonnegative, real, type_name

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from .._typing import FloatArray

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

Grads = Union["FloatArray", Sequence["FloatArray"]]


def _as_list(grads: Any) -> list:
    if isinstance(grads, np.ndarray):
        return [grads]
    try:
        return list(grads)
    except TypeError:
        raise TypeError(
            f"grads must be an array or a list of arrays, got {type_name(grads)}"
        ) from None


def clip_grad_norm_(
    grads: Grads, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> float:
    r"""Scale ``grads`` in place so that their global norm is at most ``max_norm``.

    PyTorch's rule (``torch.nn.utils.clip_grad_norm_``): with
    :math:`n = \lVert (g_1, \dots, g_k) \rVert_p` over all gradients together,

    .. math:: g_i \leftarrow g_i \cdot \min\!\left(1, \frac{\text{max\_norm}}{n + 10^{-6}}\right)

    Args:
        grads: an array or a list of arrays (float32/float64, writable, C-contiguous;
            mixed dtypes allowed), modified in place.
        max_norm (float): >= 0.
        norm_type (float): ``2.0`` (default; one fused pass accumulated in float64 over
            every tensor in one parallel region), ``inf`` (max |g|, fused), or any other
            p > 0, ``0`` or ``-inf`` (computed with NumPy in float64, not fused).
        error_if_nonfinite (bool): raise RuntimeError if the norm is NaN or inf (as
            PyTorch); otherwise a NaN norm turns every gradient into NaN, as in PyTorch.

    Returns:
        float: the total norm before clipping.
    """
    grads = _as_list(grads)
    max_norm = nonnegative("max_norm", max_norm)
    norm_type = real("norm_type", norm_type)
    error_if_nonfinite = boolean("error_if_nonfinite", error_if_nonfinite)
    if not (norm_type >= 0 or norm_type == -math.inf):
        raise ValueError(f"norm_type must be >= 0 or +-inf, got {norm_type}")
    _core.ops.check_inplace(grads, "grads")  # whatever the norm turns out to be
    if not grads:
        return 0.0
    if norm_type == 2.0:
        total = math.sqrt(_core.ops.sum_squares(grads))
    elif norm_type == math.inf:
        total = _core.ops.max_abs(grads)
    else:
        flat = np.concatenate([np.abs(g.astype(np.float64)).ravel() for g in grads])
        if norm_type == -math.inf:
            total = float(flat.min()) if flat.size else math.inf
        elif norm_type == 0:
            total = float(np.count_nonzero(flat))
        else:
            # scaled by the largest magnitude so |g|**p neither overflows nor underflows
            # for large p (the p-norm of [1.04] is 1.04 for every p); NaN/inf propagate
            top = float(flat.max()) if flat.size else 0.0
            if top == 0.0 or not math.isfinite(top):
                total = top
            else:
                with np.errstate(under="ignore"):
                    total = top * float(np.sum((flat / top) ** norm_type)) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients is non-finite, so it cannot "
            "be clipped. To disable this error and scale the gradients by the non-finite "
            "norm anyway, set `error_if_nonfinite=False`"
        )
    coef = max_norm / (total + 1e-6)
    coef = 1.0 if coef >= 1.0 else coef  # NaN stays NaN, as torch.clamp(max=1) does
    if coef != 1.0:  # scaling by exactly 1 changes no bit: skip the pass
        _core.ops.scale_(grads, coef)
    return total


def clip_grad_value_(grads: Grads, clip_value: float) -> None:
    r"""Clamp every gradient element to ``[-clip_value, clip_value]`` in place.

    As ``torch.nn.utils.clip_grad_value_``: NaN elements stay NaN.

    Args:
        grads: an array or a list of arrays (float32/float64, writable, C-contiguous).
        clip_value (float): >= 0.
    """
    grads = _as_list(grads)
    clip_value = nonnegative("clip_value", clip_value)
    _core.ops.check_inplace(grads, "grads")
    if grads:
        _core.ops.clamp_(grads, -clip_value, clip_value)
