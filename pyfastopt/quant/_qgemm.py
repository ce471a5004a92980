"""Exact int8 matrix products (C++ family ``qgemm``: AVX-512 VNNI / AVX2 / scalar kernels,
packed BLIS-style with the zero points folded in after the integer product)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    import numpy.typing as npt

    from .._typing import ArrayLike

__all__ = ["matmul_int8"]

_matmul_int8 = _core.qgemm.matmul_int8


def matmul_int8(
    a_q: ArrayLike, a_zero_point: Any, b_q: ArrayLike, b_zero_point: Any
) -> npt.NDArray[np.int32]:
    r"""Exact integer product of two quantized matrices.

    .. math:: C_{mn} = \sum_k (A_{mk} - z_a)(B_{kn} - z_b)  \quad (\text{int32})

    Args:
        a_q: ``(M, K)`` array of uint8 or int8 (a 1-D ``(K,)`` is a row; the result then
            drops that dimension, as :func:`numpy.matmul`).
        a_zero_point: integer in the range of ``a_q``'s dtype.
        b_q: ``(K, N)`` array of int8 or uint8 (a 1-D ``(K,)`` is a column).
        b_zero_point: integer in the range of ``b_q``'s dtype.

    Returns:
        ``(M, N)`` int32 array. The value is exact whenever the true sum fits in int32
        (the arithmetic is int32 modulo 2**32, so intermediate overflow never matters);
        that is always so for ``K <= 33025`` (``33025 * 255**2 < 2**31``).

    Any strides are read in place (transposed, sliced, negatively strided views); empty
    shapes give empty results and ``K == 0`` gives zeros. The GIL is released. Results do
    not depend on the thread count or the SIMD level.

    Raises:
        TypeError: ``a_q`` or ``b_q`` is not uint8/int8, or a zero point is not an integer
            (a float, bool, string, array of several values; named in the message).
        ValueError: inner dimensions differ (both shapes named), operands that are not 1-D
            or 2-D, or a zero point outside its dtype's range.

    Example:
        >>> import numpy as np
        >>> a = np.array([[130, 128]], dtype=np.uint8)
        >>> b = np.array([[1], [-1]], dtype=np.int8)
        >>> matmul_int8(a, 128, b, 0)
        array([[2]], dtype=int32)
    """
    return _matmul_int8(a_q, a_zero_point, b_q, b_zero_point)
