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
        a_zero_point: integer in the range of ``a_q``'s dtype, or (as ONNX MatMulInteger)
            a 1-element array, or a 1-D integer array of ``M`` per-row zero points.
        b_q: ``(K, N)`` array of int8 or uint8 (a 1-D ``(K,)`` is a column).
        b_zero_point: integer in the range of ``b_q``'s dtype, a 1-element array, or a
            1-D integer array of ``N`` per-column zero points.

    Returns:
        ``(M, N)`` int32 array. The value is exact whenever the true sum fits in int32
        (the arithmetic is int32 modulo 2**32, so intermediate overflow never matters);
        that is always so for ``K <= 33025`` (``33025 * 255**2 < 2**31``).

    Any strides are read in place (transposed, sliced, negatively strided views); empty
    shapes give empty results and ``K == 0`` gives zeros. The GIL is released. Results do
    not depend on the thread count or the SIMD level.

    Raises:
        TypeError: ``a_q`` or ``b_q`` is not uint8/int8, or a zero point is not an integer
            or integer array (a float, bool, string; named in the message).
        ValueError: inner dimensions differ (both shapes named), operands that are not 1-D
            or 2-D, a zero point outside its dtype's range, or per-row/per-column zero
            points whose length is not ``M``/``N``.

    Per-row/per-column zero points run the product with zero points 0 and subtract the
    row/column-sum corrections in int64, wrapped to int32 at the end: the same values
    (modulo 2**32) as the per-tensor path, at the cost of one more pass over each operand.

    Example:
        >>> import numpy as np
        >>> a = np.array([[130, 128]], dtype=np.uint8)
        >>> b = np.array([[1], [-1]], dtype=np.int8)
        >>> matmul_int8(a, 128, b, 0)
        array([[2]], dtype=int32)
    """
    a_zero_point = _one_element(a_zero_point)
    b_zero_point = _one_element(b_zero_point)
    za = _vector_zero_point(a_zero_point)
    zb = _vector_zero_point(b_zero_point)
    if za is None and zb is None:
        return _matmul_int8(a_q, a_zero_point, b_q, b_zero_point)
    return _matmul_int8_vector_zp(a_q, a_zero_point, za, b_q, b_zero_point, zb)


def _one_element(z: Any) -> Any:
    """A 1-element 1-D array (ONNX's form of a per-tensor zero point) as a 0-d array."""
    if isinstance(z, np.ndarray) and z.ndim == 1 and z.size == 1:
        return z.reshape(())
    return z


def _vector_zero_point(z: Any) -> np.ndarray | None:
    """The zero points as a 1-D array when ``z`` is an array of several values, else None
    (a scalar, 0-d or 1-element array: the binding's per-tensor rules apply)."""
    if isinstance(z, (np.ndarray, list, tuple)) and np.ndim(z) == 1 and np.size(z) > 1:
        return np.asarray(z)
    return None


def _check_vector_zp(name: str, z: np.ndarray, dtype: np.dtype, length: int, dim: str) -> None:
    if z.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or an integer array, got dtype {z.dtype}")
    info = np.iinfo(dtype)
    if z.size and (int(z.min()) < info.min or int(z.max()) > info.max):
        raise ValueError(
            f"{name} values must be in [{info.min}, {info.max}] (the {dtype} range), "
            f"got [{int(z.min())}, {int(z.max())}]"
        )
    if z.shape != (length,):
        raise ValueError(f"{name} of shape {z.shape} must hold one zero point per {dim} ({length})")


def _matmul_int8_vector_zp(
    a_q: Any, a_zp: Any, za: np.ndarray | None, b_q: Any, b_zp: Any, zb: np.ndarray | None
) -> npt.NDArray[np.int32]:
    a = np.asarray(a_q)
    b = np.asarray(b_q)
    # dtypes, ranks, shapes and the scalar zero points: the binding's checks, on a call
    # with the same operands (its result is the product with zero points 0 when both
    # are vectors, else with the scalar one folded in)
    p = _matmul_int8(a, 0 if za is not None else a_zp, b, 0 if zb is not None else b_zp)
    if za is not None and a.ndim != 2:
        raise ValueError(f"per-row a_zero_point needs a 2-D a_q, got shape {a.shape}")
    if zb is not None and b.ndim != 2:
        raise ValueError(f"per-column b_zero_point needs a 2-D b_q, got shape {b.shape}")
    k = a.shape[-1]
    m = a.shape[0] if a.ndim == 2 else 1
    n = b.shape[1] if b.ndim == 2 else 1
    a2 = a.reshape(m, k).astype(np.int64)
    b2 = b.reshape(k, n).astype(np.int64)
    acc = p.reshape(m, n).astype(np.int64)
    if za is not None:
        _check_vector_zp("a_zero_point", za, a.dtype, m, "row of a_q")
        zav = za.astype(np.int64)[:, None]
        # scalar b zero point already folded in p: sum_k (A - 0)(B - zb) -> subtract za*sum_k(B - zb)
        bz = b2 if zb is not None else b2 - int(np.asarray(b_zp).reshape(()))
        acc -= zav * bz.sum(axis=0)[None, :]
    if zb is not None:
        _check_vector_zp("b_zero_point", zb, b.dtype, n, "column of b_q")
        zbv = zb.astype(np.int64)[None, :]
        az = a2 - (
            za.astype(np.int64)[:, None] if za is not None else int(np.asarray(a_zp).reshape(()))
        )
        acc -= zbv * az.sum(axis=1)[:, None]
    # int64 -> int32 wraps modulo 2**32, as the kernel's arithmetic does
    return acc.astype(np.int32).reshape(p.shape)
