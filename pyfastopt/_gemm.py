"""Matrix products and the fused linear layer (C++ GEMM: packed BLIS-style micro-kernels
per SIMD level, threads from the pool, bias and activation fused into the write-back)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _core
from ._validate import boolean, choice

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from ._typing import ArrayLike, FloatArray

__all__ = ["gelu", "linear", "linear_backward", "matmul"]

_matmul = _core.gemm.matmul
_linear = _core.gemm.linear
_linear_backward = _core.gemm.linear_backward
_activate = _core.gemm.activate


_ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")
_GELU = {"none": "gelu", "tanh": "gelu_tanh"}


def matmul(a: ArrayLike, b: ArrayLike, out: FloatArray | None = None) -> Any:
    """Matrix product with :func:`numpy.matmul` semantics.

    * 2-D @ 2-D is the matrix product; a 1-D ``a`` is promoted to a row ``(1, K)`` and a
      1-D ``b`` to a column ``(K, 1)``, the promoted dimension is removed from the result
      (1-D @ 1-D gives a scalar, as NumPy).
    * More than 2 dimensions: a stack of matrices in the last two; the batch dimensions
      broadcast (``(3, 1, M, K) @ (4, K, N) -> (3, 4, M, N)``) without a Python loop.
    * float32 and float64 (the result has the inputs' dtype; float32 with float64 gives
      float64, as NumPy); other dtypes raise ``TypeError`` naming the argument.
    * Transposed, Fortran-order, sliced and negatively strided views are read in place by
      the packing routines (no copies).
    * ``out``: a writable C-contiguous array of exactly the result's shape and dtype
      (``ValueError`` / ``DTypeError`` otherwise; never a hidden copy). It may share
      memory with ``a`` or ``b`` (they are then copied first).

    Results are bitwise identical for any thread count. Each element is accumulated with
    fused multiply-adds in blocks of K (see ``cpp/include/pyfastopt/gemm.h``); the error
    is within the usual bound ``|C - AB| <= K eps |A||B|``.

    Raises:
        ValueError: 0-d operands, ``a.shape[-1] != b.shape[-2]`` (both shapes are named),
            batch dimensions that do not broadcast, or a bad ``out``.
        TypeError: a non-float dtype (naming ``a`` or ``b``).

    Returns:
        An ndarray of the inputs' dtype; a float for 1-D @ 1-D (as NumPy).
    """
    return _matmul(a, b, out)


def linear(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    activation: str | None = None,
    out: FloatArray | None = None,
) -> FloatArray:
    """Fully connected layer ``act(x @ weight.T + bias)``, as ``torch.nn.functional.linear``.

    Args:
        x: ``(..., in_features)``; any leading dimensions (1-D ``x`` gives 1-D output).
        weight: ``(out_features, in_features)`` (PyTorch's layout). Read in place whatever
            its strides: ``x @ weight.T`` is never formed by transposing a copy.
        bias: ``(out_features,)`` or None.
        activation: None, ``"relu"`` (``max(0, z)``; NaN stays NaN), ``"gelu"`` (the
            exact erf form ``z * Phi(z)``, PyTorch's default; float32 uses a vectorized
            erfc accurate to 2e-7 |z|) or ``"gelu_tanh"`` (PyTorch's
            ``gelu(approximate="tanh")``, see :func:`gelu`). Bias and activation are
            applied in the GEMM's write-back of each tile, not as extra passes over memory.
        out: optional result array ``(..., out_features)`` (C-contiguous, result dtype).

    Returns:
        ``(..., out_features)`` array of ``x``'s dtype (float64 if any operand is).
    """
    try:
        return _linear(x, weight, bias, activation, out)
    except ValueError:
        # The binding checks activation's value (ValueError); a wrong *type* is a
        # TypeError by the library's rule. Checked only on this error path, so a valid
        # call pays nothing for it.
        if activation is not None and not isinstance(activation, str):
            choice("activation", activation, _ACTIVATIONS)
        raise


def linear_backward(
    dy: ArrayLike, x: ArrayLike, weight: ArrayLike, need_dx: bool = True
) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients of ``y = x @ weight.T + bias`` (the pre-activation output).

    The caller applies the activation's derivative to ``dy`` first. Leading dimensions of
    ``dy (..., out_features)`` and ``x (..., in_features)`` must match and are flattened.

    Returns:
        ``(dx, dweight, dbias)``: ``dx = dy @ weight`` (shape of ``x``; None when
        ``need_dx`` is false, e.g. for a network's first layer), ``dweight = dy.T @ x``
        ``(out_features, in_features)`` and ``dbias = dy.sum(leading dims)`` (summed in
        float64, rounded once). Both products run on the GEMM kernels with the
        transposes absorbed by packing.
    """
    return _linear_backward(dy, x, weight, boolean("need_dx", need_dx))


def gelu(x: ArrayLike, approximate: str = "none", out: FloatArray | None = None) -> FloatArray:
    r"""GELU element-wise, as ``torch.nn.functional.gelu``.

    * ``approximate="none"``: :math:`x \Phi(x) = \tfrac{x}{2}(1 + \mathrm{erf}(x/\sqrt 2))`.
    * ``approximate="tanh"``: :math:`\tfrac{x}{2}(1 + \tanh(u))`,
      :math:`u = \sqrt{2/\pi}\,(x + 0.044715 x^3)`.

    The same kernel, and so the same bits, as ``linear(..., activation="gelu")`` /
    ``"gelu_tanh"``'s epilogue, on every SIMD level and thread count:

    * float64: per element with the C library (``erfc``; the tanh form as
      ``x * sigmoid(2u)`` with ``exp``): within a few ulp of the formula.
    * float32, erf form: a vectorized erfc, error below 2e-7 ``|x|``.
    * float32, tanh form: ``u`` rounded as PyTorch rounds it, then
      ``x * (x >= 0 ? 1 : e) / (1 + e)`` with ``e = exp(-2|u|)`` from a vectorized exp
      (no cancellation for negative ``x``, where ``1 + tanh(u)`` has one); error below
      5e-7 ``|x|``. Where ``2|u| > 87`` the result is ``x`` (``x > 0``) or ``-0``
      (``x < 0``), as PyTorch's float32 gives.

    Args:
        x: array-like, float32 or float64 (other dtypes: ``TypeError``), any shape and
            strides (a non-contiguous ``x`` is read through a private copy).
        approximate: ``"none"`` (default) or ``"tanh"``.
        out: optional result array: ``x``'s shape and dtype, writable, C-contiguous; may be
            ``x`` itself (in place).

    Returns:
        An array of ``x``'s shape and dtype (``out`` when given). NaN stays NaN.
    """
    act = _GELU.get(approximate) if isinstance(approximate, str) else None
    if act is None:
        act = _GELU[choice("approximate", approximate, tuple(_GELU))]
    return _activate(x, act, out)
