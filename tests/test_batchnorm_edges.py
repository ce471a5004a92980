"""Batch norm edge cases decided as PyTorch 2.13 does (issue 16 points 6 and 9).

* eps must be > 0 in training ("batch_norm eps must be positive during training"); eval
  accepts eps = 0, as PyTorch. nn layers construct with eps = 0 and refuse it when they
  normalize with batch statistics.
* An empty batch (0 values per channel) in training: empty output, running statistics
  unchanged, the module's num_batches_tracked still counts it; NaN save_mean/invstd;
  backward gives an empty dx and zero dweight/dbias.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import nn

try:  # optional: the comparisons with PyTorch run where it is installed
    import torch
except ImportError:  # pragma: no cover
    torch = None

DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------------- eps
@pytest.mark.parametrize("eps", [0.0, -0.0, 0])
def test_train_refuses_eps_zero(eps):
    x = np.ones((4, 3), np.float32)  # a constant channel: 0/0 with eps = 0
    with pytest.raises(ValueError, match="eps must be positive during training"):
        pyfastopt.batch_norm_train(x, None, None, eps=eps)


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), float("inf")])
def test_train_and_eval_refuse_bad_eps(eps):
    x = np.ones((4, 3), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="eps"):
        pyfastopt.batch_norm_train(x, None, None, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        pyfastopt.batch_norm_infer(x, None, None, rm, rv, eps=eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eval_accepts_eps_zero(simd, dtype):
    x = np.arange(12, dtype=dtype).reshape(4, 3)
    rm = np.array([1.0, 2.0, 3.0], dtype)
    rv = np.array([4.0, 0.25, 1.0], dtype)
    y = pyfastopt.batch_norm_infer(x, None, None, rm, rv, eps=0.0)
    ref = (x.astype(np.float64) - rm) / np.sqrt(rv.astype(np.float64))
    np.testing.assert_allclose(y, ref, rtol=1e-6)


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d])
def test_layers_with_eps_zero(cls):
    shape = (4, 3) if cls is nn.BatchNorm1d else (4, 3, 2, 2)
    x = np.ones(shape, np.float32)
    layer = cls(3, eps=0.0)  # constructing is fine, as in PyTorch
    with pytest.raises(ValueError, match="eps must be positive during training"):
        layer(x)
    assert int(layer.num_batches_tracked) == 0  # nothing was counted or updated
    y = layer.eval()(x)  # eval: running statistics, eps = 0 is fine
    np.testing.assert_array_equal(y, x)
    no_stats = cls(3, eps=0.0, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="eps must be positive"):
        no_stats(x)  # batch statistics even in eval mode: training's rule


def test_device_batch_norm_train_has_the_same_eps_rule(monkeypatch):
    """pyfastopt.cuda.batch_norm_train checks eps with the CPU's training rule before it
    reaches the compiled module (checked here without a GPU, through a stand-in)."""
    from pyfastopt.cuda import _ops

    calls = []

    class Stub:
        def batch_norm_train(self, *args):
            calls.append(args)
            return None, None, None

    monkeypatch.setattr(_ops, "require", lambda: Stub())
    monkeypatch.setattr(_ops, "resolve_stream", lambda stream, x: 0)
    monkeypatch.setattr(_ops, "as_kind", lambda y, x: y)
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="eps must be positive during training"):
        _ops.batch_norm_train(x, None, None, eps=0.0)
    assert calls == []
    _ops.batch_norm_train(x, None, None, eps=1e-5)
    assert len(calls) == 1 and calls[0][6] == 1e-5


@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_eps_rules_match_torch():
    x = torch.ones(4, 3)
    with pytest.raises((RuntimeError, ValueError), match="eps must be positive during training"):
        torch.nn.functional.batch_norm(x, None, None, training=True, eps=0.0)
    torch.nn.functional.batch_norm(x, torch.zeros(3), torch.ones(3), training=False, eps=0.0)


# ------------------------------------------------------------------- empty batches
EMPTY = [((0, 3), 1), ((0, 3, 2), 1), ((2, 3, 0), 1), ((0, 3, 4, 4), 1), ((0, 4, 4, 3), -1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "axis"), EMPTY)
def test_train_on_an_empty_batch(simd, dtype, shape, axis):
    c = shape[axis]
    x = np.zeros(shape, dtype)
    rm = np.arange(c, dtype=dtype) + 5
    rv = np.arange(c, dtype=dtype) + 7
    rm0, rv0 = rm.copy(), rv.copy()
    w, b = np.ones(c, dtype), np.zeros(c, dtype)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, rm, rv, 0.1, 1e-5, axis)
    assert y.shape == shape and y.dtype == dtype
    assert mean.shape == invstd.shape == (c,) and mean.dtype == dtype
    assert np.isnan(mean).all() and np.isnan(invstd).all()
    assert rm.tobytes() == rm0.tobytes() and rv.tobytes() == rv0.tobytes()
    out = np.empty(shape, dtype)
    assert pyfastopt.batch_norm_train(x, w, b, rm, rv, 0.1, 1e-5, axis, out=out)[0] is out
    dx, dw, db = pyfastopt.batch_norm_backward(x, x, w, mean, invstd, axis)
    assert dx.shape == shape
    np.testing.assert_array_equal(dw, np.zeros(c, dtype))
    np.testing.assert_array_equal(db, np.zeros(c, dtype))


def test_an_empty_batch_is_still_validated():
    x = np.zeros((0, 3), np.float32)
    with pytest.raises(ValueError, match="weight"):
        pyfastopt.batch_norm_train(x, np.ones(4, np.float32), None)
    with pytest.raises(ValueError, match="running_mean"):
        pyfastopt.batch_norm_train(x, None, None, np.zeros(2, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="eps"):
        pyfastopt.batch_norm_train(x, None, None, eps=0.0)
    with pytest.raises(ValueError, match="more than 1 value"):
        pyfastopt.batch_norm_train(np.zeros((1, 3), np.float32), None, None)


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_layer_on_an_empty_last_batch_matches_torch(cls, momentum):
    """Full batch, empty batch, full batch: output shapes, running statistics and
    num_batches_tracked as torch's module (with momentum=None the empty batch counts)."""
    rng = np.random.default_rng(0)
    shape = (8, 3) if cls is nn.BatchNorm1d else (8, 3, 2, 2)
    batches = [
        rng.standard_normal(shape).astype(np.float32) * 2 + 1,
        np.zeros((0, *shape[1:]), np.float32),
        rng.standard_normal(shape).astype(np.float32),
    ]
    ours = cls(3, momentum=momentum)
    dx = []
    for x in batches:
        y = ours(x)
        assert y.shape == x.shape
        dx.append(ours.backward(np.ones_like(x)).copy())
        if x.shape[0] == 0:
            np.testing.assert_array_equal(ours.grad_weight, 0)
            np.testing.assert_array_equal(ours.grad_bias, 0)
    assert int(ours.num_batches_tracked) == 3
    if torch is None:
        return
    theirs = (torch.nn.BatchNorm1d if cls is nn.BatchNorm1d else torch.nn.BatchNorm2d)(
        3, momentum=momentum
    )
    for x in batches:
        t = torch.from_numpy(x).requires_grad_(True)
        theirs(t).sum().backward()
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-6)
    assert int(theirs.num_batches_tracked) == 3


@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_empty_batch_functional_matches_torch():
    x = torch.zeros(0, 3, 2, requires_grad=True)
    rm, rv = torch.full((3,), 5.0), torch.full((3,), 7.0)
    w = torch.ones(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    y = torch.nn.functional.batch_norm(x, rm, rv, w, b, training=True)
    y.sum().backward()
    rm_np, rv_np = np.full(3, 5.0, np.float32), np.full(3, 7.0, np.float32)
    ours, mean, invstd = pyfastopt.batch_norm_train(
        np.zeros((0, 3, 2), np.float32),
        np.ones(3, np.float32),
        np.zeros(3, np.float32),
        rm_np,
        rv_np,
    )
    assert tuple(y.shape) == ours.shape
    np.testing.assert_array_equal(rm_np, rm.numpy())
    np.testing.assert_array_equal(rv_np, rv.numpy())
    _, dw, db = pyfastopt.batch_norm_backward(
        np.zeros((0, 3, 2), np.float32), ours, np.ones(3, np.float32), mean, invstd
    )
    np.testing.assert_array_equal(dw, w.grad.numpy())
    np.testing.assert_array_equal(db, b.grad.numpy())
