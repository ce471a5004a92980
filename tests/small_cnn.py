"""The small CNN the int8 CNN tests quantize (test_quant_cnn.py, test_qconv_simd.py):
every layer kind quantize_model handles, its warmed-up BatchNorm statistics, and its
input data."""

from __future__ import annotations

import numpy as np

import pyfastopt.nn as nn


def small_cnn(layout="NCHW", seed=0):
    """conv-BN-ReLU, max pool, a residual block, depthwise, 1x1, avg pools, linear."""
    L = layout
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, layout=L, seed=seed),
        nn.BatchNorm2d(8, layout=L),
        nn.ReLU(),
        nn.MaxPool2d(2, layout=L),
        nn.Residual(
            nn.Conv2d(8, 8, 3, padding=1, activation="relu", layout=L, seed=seed + 1),
            nn.Conv2d(8, 8, 3, padding=1, layout=L, seed=seed + 2),
            nn.BatchNorm2d(8, layout=L),
        ),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, layout=L, seed=seed + 3),
        nn.ReLU(),
        nn.Conv2d(8, 12, 1, layout=L, seed=seed + 4),
        nn.AvgPool2d(2, layout=L),
        nn.AdaptiveAvgPool2d(1, layout=L),
        nn.Flatten(layout=L),
        nn.Linear(12, 5, seed=seed + 5),
    )


def warm_batchnorm(model, x):
    """Non-trivial BatchNorm statistics and affine parameters, then eval mode."""
    rng = np.random.default_rng(5)
    model.train()
    for _, m in model._walk():
        if isinstance(m, nn.BatchNorm2d):
            m.weight[...] = rng.uniform(0.5, 2.0, m.weight.shape)
            m.bias[...] = rng.uniform(-0.5, 0.5, m.bias.shape)
    for i in range(3):
        model(x[i::3] * (1 + 0.5 * i) + 0.1 * i)
    model.eval()
    return model


def cnn_data(layout, n=96):
    """n random float32 3x12x12 images in ``layout``."""
    x = np.random.default_rng(3).standard_normal((n, 3, 12, 12)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x
