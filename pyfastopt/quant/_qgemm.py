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
    r"""Exact integer product of quantized matrices (ONNX MatMulInteger).

    .. math:: C_{...mn} = \sum_k (A_{...mk} - z_a)(B_{...kn} - z_b)  \quad (\text{int32})

    Args:
        a_q: ``(..., M, K)`` array of uint8 or int8 (a 1-D ``(K,)`` is a row; the result
            then drops that dimension, as :func:`numpy.matmul`).
        a_zero_point: integer in the range of ``a_q``'s dtype, or (as ONNX
            MatMulInteger) a 1-element array; per row: a 1-D array of ``M`` zero points
            (2-D ``a_q``), or for any ``a_q`` an array of shape ``(..., M, 1)`` whose
            leading dimensions broadcast against ``a_q``'s batch dimensions (ONNX's
            ``[D1, D2, M, 1]``).
        b_q: ``(..., K, N)`` array of int8 or uint8 (a 1-D ``(K,)`` is a column).
        b_zero_point: integer in the range of ``b_q``'s dtype, a 1-element array; per
            column: a 1-D array of ``N`` (2-D ``b_q``), or ``(..., 1, N)`` for any
            ``b_q`` (ONNX's ``[D1, D2, 1, N]``).

    Batch dimensions (all but the last two) broadcast as in :func:`numpy.matmul`
    (``(3, 1, M, K) x (4, K, N) -> (3, 4, M, N)``).

    Returns:
        ``(..., M, N)`` int32 array. The value is exact whenever the true sum fits in
        int32 (the arithmetic is int32 modulo 2**32, so intermediate overflow never
        matters); that is always so for ``K <= 33025`` (``33025 * 255**2 < 2**31``).

    Any strides are read in place (transposed, sliced, negatively strided views); empty
    shapes give empty results and ``K == 0`` gives zeros. The GIL is released. Results do
    not depend on the thread count or the SIMD level. A 2-D ``b_q`` (a weight) with an
    N-D ``a_q`` is one kernel call on ``a_q``'s rows; other batched products run one
    kernel call per matrix of the broadcast batch.

    Raises:
        TypeError: ``a_q`` or ``b_q`` is not uint8/int8, or a zero point is not an integer
            or integer array (a float, bool, string; named in the message).
        ValueError: inner dimensions differ or batch dimensions do not broadcast (both
            shapes named), 0-d operands, a zero point outside its dtype's range, or
            per-row/per-column zero points of the wrong shape.

    Per-row/per-column zero points go to the int8 GEMM with the operands: its output
    stage subtracts ``za[i] colsum(B)[j]`` and ``zb[j] (rowsum(A)[i] - K za[i])`` in the
    same int32 wrap-around arithmetic as the per-tensor path (the same values modulo
    2**32; no extra pass over the operands).

    Example:
        >>> import numpy as np
        >>> a = np.array([[130, 128]], dtype=np.uint8)
        >>> b = np.array([[1], [-1]], dtype=np.int8)
        >>> matmul_int8(a, 128, b, 0)
        array([[2]], dtype=int32)
    """
    a_zero_point = _one_element(a_zero_point)
    b_zero_point = _one_element(b_zero_point)
    a_q, b_q = _as_array(a_q, "a_q"), _as_array(b_q, "b_q")
    a_nd, b_nd = a_q.ndim, b_q.ndim
    za = _vector_zero_point(a_zero_point)
    zb = _vector_zero_point(b_zero_point)
    if a_nd <= 2 and b_nd <= 2 and (za is None or za.ndim == 1) and (zb is None or zb.ndim == 1):
        if za is None and zb is None:
            return _matmul_int8(a_q, a_zero_point, b_q, b_zero_point)
        return _matmul_int8_vector_zp(a_q, a_zero_point, za, b_q, b_zero_point, zb)
    return _matmul_int8_batched(a_q, a_zero_point, za, b_q, b_zero_point, zb)


def _as_array(x: Any, name: str) -> np.ndarray:
    """``x`` as an ndarray; a conversion failure is a TypeError naming ``name`` (a
    MemoryError stays one), as the binding's own conversion reports it."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except MemoryError:
        raise
    except Exception as exc:
        raise TypeError(
            f"{name} must be an array of uint8 or int8; converting it failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _one_element(z: Any) -> Any:
    """A 1-element array (ONNX's form of a per-tensor zero point) as a 0-d array."""
    if isinstance(z, np.ndarray) and z.ndim >= 1 and z.size == 1:
        return z.reshape(())
    return z


def _vector_zero_point(z: Any) -> np.ndarray | None:
    """The zero points as an array when ``z`` is an array of several values, else None
    (a scalar, 0-d or 1-element array: the binding's per-tensor rules apply)."""
    if isinstance(z, (np.ndarray, list, tuple)) and np.ndim(z) >= 1 and np.size(z) != 1:
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
    """2-D (or 1-D) operands with a 1-D per-row ``za`` and/or per-column ``zb``: one
    kernel call with the vectors (the binding checks the operands first: dtypes, ranks,
    shapes and the scalar zero points)."""
    a = np.asarray(a_q)
    b = np.asarray(b_q)
    if a.dtype not in _BYTE_DTYPES or b.dtype not in _BYTE_DTYPES:  # the binding's TypeError
        return _matmul_int8(a, 0 if za is not None else a_zp, b, 0 if zb is not None else b_zp)
    if za is not None and a.ndim != 2:
        raise ValueError(f"per-row a_zero_point needs a 2-D a_q, got shape {a.shape}")
    if zb is not None and b.ndim != 2:
        raise ValueError(f"per-column b_zero_point needs a 2-D b_q, got shape {b.shape}")
    if za is not None:
        _check_vector_zp("a_zero_point", za, a.dtype, a.shape[0], "row of a_q")
    if zb is not None:
        _check_vector_zp("b_zero_point", zb, b.dtype, b.shape[1], "column of b_q")
    return _matmul_int8(a, a_zp if za is None else za, b, b_zp if zb is None else zb)


_BYTE_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8))


def _byte_operand(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype not in _BYTE_DTYPES:
        raise TypeError(f"{name} must have dtype uint8 or int8, got {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least 1 dimension (matmul), got a 0-d array")
    return a


def _batched_zp(
    name: str, z: np.ndarray, dtype: np.dtype, shape: tuple[int, ...], per: str
) -> np.ndarray:
    """Per-row (``per == "row"``: shape ``(..., M, 1)``, or ``(M,)`` for a 2-D operand)
    or per-column (``"col"``: ``(..., 1, N)`` or ``(N,)``) zero points as int64, shaped
    to broadcast against ``shape`` (the operand with 1-D promotion done)."""
    if z.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or an integer array, got dtype {z.dtype}")
    info = np.iinfo(dtype)
    if z.size and (int(z.min()) < info.min or int(z.max()) > info.max):
        raise ValueError(
            f"{name} values must be in [{info.min}, {info.max}] (the {dtype} range), "
            f"got [{int(z.min())}, {int(z.max())}]"
        )
    m, n = shape[-2:]
    want = (m, 1) if per == "row" else (1, n)
    form = "(..., M, 1)" if per == "row" else "(..., 1, N)"
    if z.ndim == 1:
        length = m if per == "row" else n
        if len(shape) != 2 or z.shape[0] != length:
            raise ValueError(
                f"{name} of shape {z.shape}: a 1-D zero point holds one value per "
                f"{per} of a 2-D operand ({length}); for an operand of shape {shape} give "
                f"shape {form} = {shape[:-2] + want}"
            )
        return z.astype(np.int64).reshape(want)
    batch = shape[:-2]
    ok = z.shape[-2:] == want
    if ok:
        try:
            ok = np.broadcast_shapes(z.shape[:-2], batch) == batch
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(
            f"{name} of shape {z.shape} must have shape {form} broadcasting to "
            f"{batch + want} (one zero point per {per} of an operand of shape {shape})"
        )
    return z.astype(np.int64)


def _matmul_int8_batched(
    a_q: Any, a_zp: Any, za: np.ndarray | None, b_q: Any, b_zp: Any, zb: np.ndarray | None
) -> npt.NDArray[np.int32]:
    """N-D operands (numpy.matmul broadcasting) and N-D zero points: one kernel call per
    matrix of the broadcast batch (one call in all for a 2-D ``b_q``), per-row /
    per-column zero points handed to each call as vectors (the kernel's output stage
    applies them)."""
    a = _byte_operand("a_q", a_q)
    b = _byte_operand("b_q", b_q)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    m, k = a2.shape[-2:]
    kb, n = b2.shape[-2:]
    if k != kb:
        raise ValueError(
            f"matmul_int8: a_q.shape[-1] must equal b_q.shape[-2]; got a_q shape {a.shape} "
            f"and b_q shape {b.shape}"
        )
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(
            f"matmul_int8: the batch dimensions of a_q (shape {a.shape}) and b_q (shape "
            f"{b.shape}) do not broadcast"
        ) from None
    # per-tensor zero points go to the kernel (its checks: type, range); vectors: 0 there
    za_k = 0 if za is not None else a_zp
    zb_k = 0 if zb is not None else b_zp
    _matmul_int8(np.empty((0, k), a.dtype), za_k, np.empty((k, 0), b.dtype), zb_k)
    za64 = _batched_zp("a_zero_point", za, a.dtype, a2.shape, "row") if za is not None else None
    zb64 = _batched_zp("b_zero_point", zb, b.dtype, b2.shape, "col") if zb is not None else None

    out_shape = (*batch, m, n)
    if b2.ndim == 2 and len(batch) == a2.ndim - 2:
        # a weight: every row of every batch of a against the same b, one call
        za_all = za_k if za64 is None else np.broadcast_to(za64, (*batch, m, 1)).reshape(-1)
        zb_all = zb_k if zb64 is None else zb64.reshape(n)
        p = _matmul_int8(a2.reshape(-1, k), za_all, b2, zb_all).reshape(out_shape)
    else:
        p = np.empty(out_shape, np.int32)
        ab = np.broadcast_to(a2, (*batch, m, k))
        bb = np.broadcast_to(b2, (*batch, k, n))
        zab = None if za64 is None else np.broadcast_to(za64, (*batch, m, 1))
        zbb = None if zb64 is None else np.broadcast_to(zb64, (*batch, 1, n))
        for idx in np.ndindex(*batch):
            za_i = za_k if zab is None else zab[idx].reshape(m)
            zb_i = zb_k if zbb is None else zbb[idx].reshape(n)
            p[idx] = _matmul_int8(ab[idx], za_i, bb[idx], zb_i)
    if b.ndim == 1:
        p = p[..., 0]
    if a.ndim == 1:
        p = p[..., 0, :] if b.ndim != 1 else p[..., 0]
    return np.ascontiguousarray(p)
