"""Element-wise building blocks for optimizer steps.

These are the first kernels behind the run-time dispatch: each has a scalar, AVX2 and
AVX-512 variant giving the same bits, runs many tensors in one parallel region, and
releases the GIL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

from . import _core
from ._validate import real

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from ._typing import ArrayLike, FloatArray

_axpby = _core.ops.axpby_

#: one array, or a sequence of them updated or reduced together (multi-tensor apply)
ArrayOrList = Union["FloatArray", Sequence["FloatArray"]]
ArrayLikeOrList = Union["ArrayLike", Sequence["ArrayLike"]]

__all__ = ["axpby_", "l2_norm", "sum_squares"]


def axpby_(y: ArrayOrList, x: ArrayLikeOrList, a: float = 1.0, b: float = 1.0) -> None:
    """In place: ``y = a * x + b * y``, fused into one pass.

    Parameters
    ----------
    y : ndarray or sequence of ndarrays
        Updated in place: writable, C-contiguous, float32 or float64 (``ValueError``
        otherwise; never a hidden copy).
    x : array-like or sequence of array-likes
        Same shape and dtype as ``y`` (element by element for sequences). May be
        non-contiguous or read-only; may be ``y`` itself.
    a, b : float
        Coefficients, rounded to ``y``'s dtype.

    Notes
    -----
    Each element is computed as ``fma(a, x, b * y)`` in ``y``'s dtype, identically on
    every SIMD level and thread count. IEEE semantics: ``b == 0`` still propagates NaN
    and inf from ``y``. A sequence of arrays is updated in one call and one parallel
    region (multi-tensor apply). Arrays updated in place must not share memory.

    Examples
    --------
    >>> import numpy as np, pyfastopt
    >>> y = np.ones(3, np.float32)
    >>> pyfastopt.ops.axpby_(y, np.arange(3, dtype=np.float32), a=2.0, b=0.5)
    >>> y
    array([0.5, 2.5, 4.5], dtype=float32)
    """
    if type(a) is not float or type(b) is not float:  # floats pass as they are: cheap
        a, b = real("a", a, allow_nan=True), real("b", b, allow_nan=True)
    _axpby(y, x, a, b)


def sum_squares(x: ArrayLikeOrList) -> float:
    """Sum of squares of all elements of an array or of a sequence of arrays.

    Accumulated in float64 whatever the input dtype (float32 or float64), in a fixed
    order: bitwise identical for any thread count and any SIMD level. Non-contiguous
    inputs are copied first. Empty inputs give 0.0.
    """
    return _core.ops.sum_squares(x)


def l2_norm(x: ArrayLikeOrList) -> float:
    """Global L2 norm ``sqrt(sum(x_i**2))`` over an array or a sequence of arrays.

    The gradient-clipping primitive: one pass over every tensor, in one parallel region,
    accumulated in float64 (so float32 gradients of any size do not lose precision).

    >>> import numpy as np, pyfastopt
    >>> pyfastopt.ops.l2_norm([np.array([3.0]), np.array([4.0], np.float32)])
    5.0
    """
    return math.sqrt(_core.ops.sum_squares(x))
