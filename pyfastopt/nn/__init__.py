"""Neural-network layers with explicit forward and backward passes (no autograd).

A model is a :class:`Sequential` of layers; a training step is ``y = model(x)``,
``loss, dy = cross_entropy(y, labels)``, ``model.backward(dy)``, then an optimizer step
on ``model.parameters()`` with ``model.gradients()``::

    import numpy as np, pyfastopt
    from pyfastopt import nn

    model = nn.Sequential(nn.Linear(784, 256, activation="relu", seed=0),
                          nn.Dropout(0.1, seed=1), nn.Linear(256, 10, seed=2))
    opt = pyfastopt.optim.AdamW(model.parameters(), lr=1e-3)
    for xb, yb in batches:
        loss, dlogits = nn.cross_entropy(model(xb), yb)
        model.backward(dlogits, need_dx=False)
        opt.step(model.gradients())

Layers reuse their output and gradient buffers between steps (a forward's output is
overwritten by the next forward: copy it to keep it); see :mod:`pyfastopt.nn.module`.
"""

from .conv import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d, Residual
from .layers import (
    GELU,
    BatchNorm1d,
    BatchNorm2d,
    Dropout,
    Flatten,
    Identity,
    Linear,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import cross_entropy, distillation_loss, mse_loss
from .module import Module, Sequential

__all__ = [
    "GELU",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Identity",
    "Linear",
    "MaxPool2d",
    "Module",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "cross_entropy",
    "distillation_loss",
    "mse_loss",
]
