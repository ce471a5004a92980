"""Loss functions with their gradient: each returns ``(loss, dlogits)``.

``loss`` is a Python float (accumulated in float64), the gradient a fresh array of the
input's shape and dtype (never a view of an input or of a layer's workspace). Mean
reduction over the batch, as PyTorch's default ``reduction="mean"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import positive, probability

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from .._typing import ArrayLike, FloatArray

__all__ = ["cross_entropy", "distillation_loss", "mse_loss"]


def _float_array(x: Any, name: str) -> np.ndarray:
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    return x


def _logits(x: Any, name: str) -> np.ndarray:
    x = _float_array(x, name)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, C) with N, C >= 1, got {x.shape}")
    return x


def _labels(labels: Any, n: int, c: int) -> np.ndarray:
    lab = labels if isinstance(labels, np.ndarray) else np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers (class indices), got dtype {lab.dtype}")
    if lab.shape != (n,):
        raise ValueError(
            f"labels has shape {lab.shape}, expected ({n},) to match the logits' batch size"
        )
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= c:
        bad = lo if lo < 0 else hi
        raise ValueError(f"labels must be in [0, {c}) (the logits have {c} classes), got {bad}")
    return lab.astype(np.intp, copy=False)


def _softmax_parts(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(p, log_sum)`` with ``p = softmax(z)`` (fresh array, z's dtype) and
    ``log_sum = log(sum(exp(z - max)))`` per row, stably (the max is subtracted first)."""
    p = z - z.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    s = p.sum(axis=1, keepdims=True, dtype=np.float64)
    p *= (1.0 / s).astype(p.dtype)
    return p, np.log(s)


def cross_entropy(logits: ArrayLike, labels: ArrayLike) -> tuple[float, FloatArray]:
    r"""Softmax cross-entropy, mean over the batch (``F.cross_entropy``), fused with its
    gradient:

    .. math:: L = -\frac1N \sum_i \log \operatorname{softmax}(z_i)_{y_i}, \qquad
              \frac{\partial L}{\partial z_i} = \frac{\operatorname{softmax}(z_i) -
              \mathbb 1_{y_i}}N

    computed with the log-sum-exp shift (no overflow for any finite logits).

    Args:
        logits: ``(N, C)`` float32 or float64.
        labels: ``(N,)`` integer class indices in ``[0, C)``.

    Returns:
        ``(loss, dlogits)``: a float and a fresh ``(N, C)`` array of the logits' dtype.

    Raises:
        ValueError: shapes, or labels out of range (naming the bad label).
        TypeError: non-float logits or non-integer labels.
    """
    z = _logits(logits, "logits")
    n, c = z.shape
    lab = _labels(labels, n, c)
    rows = np.arange(n)
    zmax = z.max(axis=1)
    p, log_sum = _softmax_parts(z)
    # log softmax(z)_y = z_y - max - log_sum, in float64
    picked = z[rows, lab].astype(np.float64) - zmax - log_sum[:, 0]
    loss = float(-picked.sum() / n)
    p[rows, lab] -= 1.0
    p *= p.dtype.type(1.0 / n)
    return loss, p


def mse_loss(pred: ArrayLike, target: ArrayLike) -> tuple[float, FloatArray]:
    r"""Mean squared error over every element (``F.mse_loss``):
    :math:`L = \frac1M \sum (p - t)^2`, :math:`\partial L / \partial p = 2 (p - t) / M`.

    ``target`` must have ``pred``'s shape (no broadcasting: PyTorch warns about it, and
    it is almost always a bug). Returns ``(loss, dpred)`` (fresh, ``pred``'s dtype).
    """
    p = _float_array(pred, "pred")
    t = _float_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"mse_loss: pred has shape {p.shape}, target has shape {t.shape}")
    if p.size == 0:
        raise ValueError("mse_loss: pred is empty (the mean of nothing is undefined)")
    diff = np.subtract(p, t, dtype=p.dtype)
    loss = float(np.dot(diff.ravel().astype(np.float64), diff.ravel().astype(np.float64)) / p.size)
    diff *= p.dtype.type(2.0 / p.size)
    return loss, diff


def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike | None,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> tuple[float, FloatArray]:
    r"""Knowledge distillation (Hinton, Vinyals and Dean, 2015), gradient w.r.t. the
    student's logits only (the teacher is a constant):

    .. math:: L = \alpha T^2 \, \frac1N \sum_i \mathrm{KL}\big(\operatorname{softmax}(t_i/T)
              \,\|\, \operatorname{softmax}(s_i/T)\big) + (1 - \alpha)\, \mathrm{CE}(s, y)

    i.e. ``alpha * T**2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1),
    reduction="batchmean") + (1 - alpha) * F.cross_entropy(s, y)``. The ``T**2`` keeps
    the soft term's gradient, :math:`\alpha T (\operatorname{softmax}(s/T) -
    \operatorname{softmax}(t/T)) / N`, on the scale of the hard term's.

    Args:
        student_logits, teacher_logits: ``(N, C)``, same shape, float32 or float64 (the
            gradient has the student's dtype).
        labels: ``(N,)`` integer class indices, or None when ``alpha == 1`` (no hard term).
        temperature (float): ``T > 0``.
        alpha (float): weight of the soft term, in [0, 1].

    Returns:
        ``(loss, dstudent_logits)``.
    """
    s = _logits(student_logits, "student_logits")
    t = _logits(teacher_logits, "teacher_logits")
    if s.shape != t.shape:
        raise ValueError(
            f"distillation_loss: student_logits has shape {s.shape}, "
            f"teacher_logits has shape {t.shape}"
        )
    temp = positive("temperature", temperature, finite=True)
    alpha = probability("alpha", alpha, one=True)
    n = s.shape[0]
    if labels is None and alpha != 1.0:
        raise ValueError("labels may only be None when alpha == 1 (no hard-label term)")
    # soft term in float64: small, and KL of near-equal distributions cancels
    s64 = s.astype(np.float64) / temp
    t64 = t.astype(np.float64) / temp
    ps, lse_s = _softmax_parts(s64)
    pt, lse_t = _softmax_parts(t64)
    log_ps = s64 - s64.max(axis=1, keepdims=True) - lse_s
    log_pt = t64 - t64.max(axis=1, keepdims=True) - lse_t
    # p log p = 0 where the teacher gives 0 (a -inf logit): masked, not NaN
    kl_terms = np.multiply(pt, log_pt - log_ps, out=np.zeros_like(pt), where=pt > 0)
    kl = float(kl_terms.sum() / n)
    loss = alpha * temp * temp * kl
    grad = (ps - pt) * (alpha * temp / n)
    if alpha != 1.0:
        assert labels is not None  # refused above
        ce, dce = cross_entropy(s, labels)
        loss += (1.0 - alpha) * ce
        grad += (1.0 - alpha) * dce
    elif labels is not None:
        _labels(labels, n, s.shape[1])
    return float(loss), grad.astype(s.dtype, copy=False)
