"""Batch normalization: training forward, inference forward and backward, with explicit
saved statistics (no autograd), for channels-first and channels-last layouts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _core
from ._validate import integer, nonnegative, nonnegative_int, probability

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from ._typing import ArrayLike, FloatArray

__all__ = ["batch_norm_backward", "batch_norm_infer", "batch_norm_train"]


def _check_eps(eps: Any, training: bool = False) -> float:
    """eps: a finite real >= 0; > 0 in training (PyTorch: "batch_norm eps must be positive
    during training"), since a constant channel would normalize to 0/0."""
    eps = nonnegative("eps", eps, finite=True)
    if training and eps == 0.0:
        raise ValueError(
            f"eps must be positive during training (batch_norm eps must be positive during "
            f"training, as in PyTorch: a constant channel would normalize to 0/0), got {eps}"
        )
    return eps


def _check_axis(axis: Any) -> int:
    return integer("axis", axis)  # its range is checked against x's ndim in C++


def _check_activation(activation: Any) -> bool:
    """activation: None or "relu" -> whether a ReLU is fused."""
    if activation is None:
        return False
    if isinstance(activation, str) and activation == "relu":
        return True
    raise ValueError(f"activation must be None or 'relu', got {activation!r}")


def _update_factor(momentum: Any, num_batches_tracked: Any, running: bool) -> float:
    """The weight of this batch in the running statistics."""
    if num_batches_tracked is not None:
        num_batches_tracked = nonnegative_int("num_batches_tracked", num_batches_tracked)
    if momentum is None:
        if not running:
            return 0.0
        if num_batches_tracked is None:
            raise ValueError(
                "momentum=None (cumulative moving average) needs num_batches_tracked, the "
                "number of batches already folded into running_mean/running_var (0 at first)"
            )
        return 1.0 / (num_batches_tracked + 1)
    return probability("momentum", momentum, one=True)


def batch_norm_train(
    x: ArrayLike,
    weight: ArrayLike | None,
    bias: ArrayLike | None,
    running_mean: FloatArray | None = None,
    running_var: FloatArray | None = None,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    *,
    num_batches_tracked: int | None = None,
    out: FloatArray | None = None,
    activation: str | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    r"""Batch normalization in training mode (PyTorch's ``F.batch_norm(training=True)``).

    For each channel :math:`c` (the entries along ``axis``), with :math:`n` the number of
    values per channel (the product of every other axis):

    .. math:: \mu_c = \frac1n \sum x, \qquad \sigma^2_c = \frac1n \sum (x - \mu_c)^2,
              \qquad y = \frac{x - \mu_c}{\sqrt{\sigma^2_c + \varepsilon}}\, w_c + b_c

    (the biased variance normalizes, as in PyTorch), and when running statistics are given
    they are updated in place with the *unbiased* variance:

    .. math:: \hat\mu \leftarrow (1 - f)\,\hat\mu + f \mu_c, \qquad
              \hat\sigma^2 \leftarrow (1 - f)\,\hat\sigma^2 + f \sigma^2_c \tfrac{n}{n-1}

    with :math:`f` = ``momentum``, or :math:`f = 1/(t+1)` with ``momentum=None`` and
    ``num_batches_tracked=t`` (a cumulative average: PyTorch's ``momentum=None``).

    Args:
        x: array-like, float32 or float64, at least 1-D; any strides (a non-contiguous
            input is copied once). ``axis`` is its channel axis.
        weight, bias: per-channel scale and shift, shape ``(C,)``, float32 or float64 (read
            as float64), or None for 1 and 0 (PyTorch's ``affine=False``).
        running_mean, running_var: both or neither. Updated in place, so they must be
            writable C-contiguous ndarrays of shape ``(C,)`` and ``x``'s dtype
            (``ValueError`` otherwise; ``DTypeError`` for the dtype) -- never a copy.
        momentum (float or None): weight of this batch in the running statistics, in
            [0, 1]; None selects the cumulative average (then ``num_batches_tracked`` is
            required when running statistics are given).
        eps (float): added to the variance, finite and > 0 (PyTorch's rule in training:
            with 0 a constant channel would come out NaN; :func:`batch_norm_infer`
            accepts 0).
        axis (int): the channel axis, negative values counting from the end: 1 for
            (N, C), (N, C, L) and (N, C, H, W); -1 for channels-last (N, H, W, C), whose
            C-contiguous memory is the fast path. Any axis of ``x`` is accepted.
        num_batches_tracked (int): batches already folded into the running statistics
            before this call (PyTorch's buffer of that name *before* its increment). Only
            used with ``momentum=None``; the caller increments it after the call.
        out: optional array for ``y``: writable, C-contiguous, ``x``'s shape and dtype;
            may be ``x`` itself (normalization in place). In a training loop a
            preallocated ``out`` saves the page faults of a fresh array on every call.
        activation: None, or ``"relu"`` for ``y = max(batch_norm(x), 0)`` in the same
            pass (NumPy's ``maximum(., 0)`` bit for bit: NaN stays NaN, ``-0.0`` becomes
            ``0.0``); its backward is ``batch_norm_backward(..., activation="relu",
            y=y)``. :class:`pyfastopt.nn.Sequential` uses it for a training-mode
            ``BatchNorm*`` followed by ``ReLU``.

    Returns:
        ``(y, save_mean, save_invstd)``: ``y`` with the shape and dtype of ``x``
        (C-contiguous), the batch mean and :math:`1/\sqrt{\sigma^2+\varepsilon}` per
        channel (shape ``(C,)``, ``x``'s dtype) for :func:`batch_norm_backward`.

    Raises:
        ValueError: exactly 1 value per channel (as PyTorch), shapes that do not
            match the channel count (the message names the argument and both shapes),
            ``axis`` out of range, ``momentum`` outside [0, 1], ``eps`` not > 0 (or NaN,
            inf).
        TypeError: dtypes other than float32/float64 (naming the argument).

    Empty batch (0 values per channel, e.g. ``x`` of shape ``(0, C)``, the empty last
    batch of a loader): decided as PyTorch 2.13's ``F.batch_norm(training=True)`` does --
    ``y`` is empty (``x``'s shape), the running statistics are left unchanged (PyTorch's
    ``BatchNorm`` module still counts the batch in ``num_batches_tracked``, and so does
    :class:`pyfastopt.nn.BatchNorm1d`), and ``save_mean`` / ``save_invstd`` are NaN (the
    mean of no values, as ``numpy.mean`` and ``torch.mean`` give); every argument is still
    validated. :func:`batch_norm_backward` of it gives an empty ``dx`` and zero
    ``dweight``/``dbias``, PyTorch's gradients.

    Notes:
        Statistics accumulate in float64 in one pass over ``x`` as sums of
        ``x - K`` and ``(x - K)**2`` with ``K`` the channel's first value, so a large mean
        with a small spread (1e4 + N(0, 1) in float32) loses nothing to cancellation; the
        normalization then computes ``y = p * (x - m) + q`` in ``x``'s dtype with one
        rounding (``m`` the mean rounded to that dtype). Reductions use fixed blocks
        combined in a fixed order: the results are bitwise identical for any thread
        count and SIMD level.

    Example:
        >>> import numpy as np, pyfastopt
        >>> x = np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32)
        >>> rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
        >>> y, mean, invstd = pyfastopt.batch_norm_train(x, None, None, rm, rv)
        >>> bool(abs(y.mean()) < 1e-6), y.dtype
        (True, dtype('float32'))
    """
    running = running_mean is not None or running_var is not None
    factor = _update_factor(momentum, num_batches_tracked, running)
    return _core.batchnorm.train(
        x,
        weight,
        bias,
        running_mean,
        running_var,
        factor,
        _check_eps(eps, training=True),
        _check_axis(axis),
        out,
        _check_activation(activation),
    )


def batch_norm_infer(
    x: ArrayLike,
    weight: ArrayLike | None,
    bias: ArrayLike | None,
    running_mean: ArrayLike,
    running_var: ArrayLike,
    eps: float = 1e-5,
    axis: int = 1,
    *,
    out: FloatArray | None = None,
) -> FloatArray:
    r"""Batch normalization in evaluation mode, with the running statistics:

    .. math:: y = (x - \hat\mu_c)\, p_c + b_c, \qquad p_c = \frac{w_c}{\sqrt{\hat\sigma^2_c + \varepsilon}}

    folded into one centre, scale and shift per channel (computed in float64) and one
    fused multiply-add per element in ``x``'s dtype. Centring on ``running_mean`` rather
    than folding it into the shift keeps large means exact in float32.

    Args:
        x: array-like, float32 or float64 (see :func:`batch_norm_train` for ``axis``).
        weight, bias: shape ``(C,)`` or None (1 and 0).
        running_mean, running_var: shape ``(C,)``, float32 or float64, read only.
        eps (float): finite and >= 0.
        axis (int): the channel axis (1: channels-first, -1: channels-last).
        out: optional array for ``y`` (see :func:`batch_norm_train`; may be ``x``).

    Returns:
        ``y``, the shape and dtype of ``x``. An empty ``x`` gives an empty ``y``.
    """
    return _core.batchnorm.infer(
        x, weight, bias, running_mean, running_var, _check_eps(eps), _check_axis(axis), out
    )


def batch_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike | None,
    save_mean: ArrayLike,
    save_invstd: ArrayLike,
    axis: int = 1,
    *,
    out: FloatArray | None = None,
    activation: str | None = None,
    y: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    r"""Gradients of :func:`batch_norm_train` (PyTorch's training-mode backward).

    With :math:`\hat x = (x - \mu_c)\,s_c` (``save_mean``, ``save_invstd`` from the forward
    pass) and means over the :math:`n` values of each channel:

    .. math:: \frac{\partial L}{\partial b_c} = \sum dy, \qquad
              \frac{\partial L}{\partial w_c} = \sum dy\,\hat x, \qquad
              dx = w_c s_c \Big(dy - \overline{dy} - \hat x\, \overline{dy\,\hat x}\Big)

    in two passes over the data: one reduction (the sums, in float64) and one element-wise
    pass (``dx``), both vectorized and threaded.

    Args:
        dy: upstream gradient, the shape and dtype of ``x``.
        x: the forward input (float32 or float64).
        weight: shape ``(C,)`` or None (1).
        save_mean, save_invstd: the statistics :func:`batch_norm_train` returned.
        axis (int): the channel axis used in the forward pass.
        out: optional array for ``dx``: writable, C-contiguous, ``x``'s shape and dtype;
            may be ``dy`` itself.
        activation: None, or ``"relu"`` for the backward of
            ``batch_norm_train(..., activation="relu")``: ``dy`` is the gradient of its
            output ``y`` (required, passed as ``y=``), and ``dy * (y > 0)`` (NumPy's
            product, bit for bit) enters both passes without a pass of its own. The result
            is bitwise that of the ReLU backward followed by the plain batch-norm backward.
        y: the forward output with ``activation="relu"`` (``x``'s shape and dtype); only
            with that activation.

    Returns:
        ``(dx, dweight, dbias)``: ``dx`` like ``x``; ``dweight`` and ``dbias`` of shape
        ``(C,)`` in ``x``'s dtype -- also when ``weight`` is None (PyTorch returns no
        gradient there; ignore them).

    Notes:
        The reduction pass also sums ``x - save_mean``, so the exact batch mean is
        recovered: a ``save_mean`` rounded to float32 does not cost accuracy when the mean
        is large compared with the spread. For the ``save_mean`` of the forward pass this
        is PyTorch's formula exactly; ``save_mean`` is not meant to be anything else.
    """
    relu = _check_activation(activation)
    if relu and y is None:
        raise ValueError(
            "y (the forward output) is required with activation='relu': its mask y > 0 is "
            "the ReLU's gradient"
        )
    if not relu and y is not None:
        raise ValueError("y is only used with activation='relu'; pass activation='relu' or y=None")
    return _core.batchnorm.backward(
        dy, x, weight, save_mean, save_invstd, _check_axis(axis), out, y if relu else None
    )


def _batch_norm_train_relu_maxpool(
    x: ArrayLike,
    weight: ArrayLike | None,
    bias: ArrayLike | None,
    running_mean: FloatArray | None,
    running_var: FloatArray | None,
    momentum: float | None,
    eps: float,
    *,
    num_batches_tracked: int | None = None,
    out: FloatArray | None = None,
    pooled_out: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Private (nn.Sequential's batch norm -> ReLU -> max pool 2x2): for a channels-last
    ``x`` of shape (N, H, W, C), H and W >= 2, ``batch_norm_train(x, ..., axis=-1,
    activation="relu")`` and ``max_pool2d(y, 2, layout="NHWC")`` in one call, bit for bit:
    returns ``(y, save_mean, save_invstd, pooled)``. The element-wise pass pools each pair
    of rows it writes while they are in cache (no pass reading ``y`` back)."""
    running = running_mean is not None or running_var is not None
    factor = _update_factor(momentum, num_batches_tracked, running)
    return _core.batchnorm.train_relu_maxpool(
        x,
        weight,
        bias,
        running_mean,
        running_var,
        factor,
        _check_eps(eps, training=True),
        out,
        pooled_out,
    )


def _batch_norm_backward_relu_maxpool(
    dy: ArrayLike,
    y: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike | None,
    save_mean: ArrayLike,
    save_invstd: ArrayLike,
    *,
    dz_out: FloatArray | None = None,
    out: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Private: the backward of :func:`_batch_norm_train_relu_maxpool` (``dy`` the pooled
    output's gradient, ``y`` the batch norm + ReLU output): ``dz =
    max_pool2d_backward(dy, y, 2, layout="NHWC") * (y > 0)`` then
    ``batch_norm_backward(dz, x, weight, save_mean, save_invstd, -1)``, bit for bit, with
    the batch norm's sums taken as the pool's backward writes ``dz`` (``dz_out``: scratch
    of ``x``'s shape). Returns ``(dx, dweight, dbias)``."""
    return _core.batchnorm.backward_relu_maxpool(
        dy, y, x, weight, save_mean, save_invstd, dz_out, out
    )
