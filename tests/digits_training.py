"""Shared by the tests that train on scikit-learn's digits (the `demo` extra; skip without it)."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import nn, optim


def digits_split(n_train: int = 1400):
    """(x_train, y_train, x_test, y_test): digits scaled to [0, 1], a fixed shuffle."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float = 3e-3,
    batch: int = 32,
    seed: int = 1,
) -> nn.Module:
    """AdamW on shuffled mini-batches (the last partial batch dropped); returns eval mode."""
    opt = optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        perm = rng.permutation(len(x))
        for i in range(0, len(perm) - batch + 1, batch):
            b = perm[i : i + batch]
            _, d = nn.cross_entropy(model(x[b]), y[b])
            model.backward(d, need_dx=False)
            opt.step(model.gradients())
    model.eval()
    return model
