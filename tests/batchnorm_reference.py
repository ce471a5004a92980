"""Pure-NumPy float64 reference for ``pyfastopt.batch_norm_*``, written from PyTorch's
equations (``torch.nn.functional.batch_norm`` and its autograd formula), independent of
pyfastopt's kernels: textbook two-pass statistics over every axis but ``axis``.

Training (``F.batch_norm(training=True)``)::

    mean = x.mean(other axes);  var = ((x - mean) ** 2).mean(other axes)   (biased)
    invstd = 1 / sqrt(var + eps);  y = (x - mean) * invstd * w + b
    running_mean = (1 - f) * running_mean + f * mean
    running_var  = (1 - f) * running_var  + f * var * n / (n - 1)         (unbiased)

with ``f = momentum``, or ``f = 1 / (num_batches_tracked + 1)`` for ``momentum=None``
(``torch.nn.BatchNorm*`` increments ``num_batches_tracked`` and then uses
``1 / num_batches_tracked``). Evaluation: ``y = (x - running_mean) / sqrt(running_var +
eps) * w + b``. Backward (``xhat = (x - mean) * invstd``, sums over the other axes)::

    dbias = sum(dy);  dweight = sum(dy * xhat)
    dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
"""

from __future__ import annotations

import numpy as np


def _axes(ndim: int, axis: int) -> tuple[int, tuple[int, ...], list[int]]:
    axis = axis % ndim
    others = tuple(i for i in range(ndim) if i != axis)
    shape = [1] * ndim
    shape[axis] = -1
    return axis, others, shape


def _param(v, c: int, default: float) -> np.ndarray:
    return np.full(c, default) if v is None else np.asarray(v, dtype=np.float64)


def train(
    x,
    w=None,
    b=None,
    running_mean=None,
    running_var=None,
    momentum=0.1,
    eps=1e-5,
    axis=1,
    num_batches_tracked=None,
):
    """-> (y, mean, invstd, new_running_mean, new_running_var), all float64."""
    x = np.asarray(x, dtype=np.float64)
    axis, others, shape = _axes(x.ndim, axis)
    c = x.shape[axis]
    n = x.size // c if c else 0
    mean = x.mean(axis=others)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=others)
    invstd = 1.0 / np.sqrt(var + eps)
    w, b = _param(w, c, 1.0), _param(b, c, 0.0)
    y = (x - mean.reshape(shape)) * (invstd * w).reshape(shape) + b.reshape(shape)
    new_rm = new_rv = None
    if running_mean is not None:
        f = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
        new_rm = (1 - f) * np.asarray(running_mean, np.float64) + f * mean
        new_rv = (1 - f) * np.asarray(running_var, np.float64) + f * var * n / (n - 1)
    return y, mean, invstd, new_rm, new_rv


def infer(x, w, b, running_mean, running_var, eps=1e-5, axis=1):
    x = np.asarray(x, dtype=np.float64)
    axis, _, shape = _axes(x.ndim, axis)
    c = x.shape[axis]
    w, b = _param(w, c, 1.0), _param(b, c, 0.0)
    rm = np.asarray(running_mean, np.float64)
    scale = w / np.sqrt(np.asarray(running_var, np.float64) + eps)
    return (x - rm.reshape(shape)) * scale.reshape(shape) + b.reshape(shape)


def backward(dy, x, w, mean, invstd, axis=1):
    """-> (dx, dweight, dbias), float64."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    axis, others, shape = _axes(x.ndim, axis)
    c = x.shape[axis]
    w = _param(w, c, 1.0)
    mean = np.asarray(mean, np.float64).reshape(shape)
    invstd = np.asarray(invstd, np.float64).reshape(shape)
    xhat = (x - mean) * invstd
    dbias = dy.sum(axis=others)
    dweight = (dy * xhat).sum(axis=others)
    mean_dy = dy.mean(axis=others, keepdims=True)
    mean_dy_xhat = (dy * xhat).mean(axis=others, keepdims=True)
    dx = w.reshape(shape) * invstd * (dy - mean_dy - xhat * mean_dy_xhat)
    return dx, dweight, dbias
