"""nn.GELU, nn.Sigmoid, nn.Tanh, nn.Identity: forward and backward against PyTorch (and
float64 NumPy where torch is absent)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyfastopt import nn

torch = pytest.importorskip("torch")

X_VALUES = np.array(
    [-40.0, -12.0, -5.0, -2.5, -1.0, -1e-3, -1e-7, 0.0, 1e-7, 1e-3, 0.5, 1.0, 3.0, 8.0, 40.0]
)


def _torch_layer(name):
    return {
        "gelu": torch.nn.GELU(),
        "gelu_tanh": torch.nn.GELU(approximate="tanh"),
        "sigmoid": torch.nn.Sigmoid(),
        "tanh": torch.nn.Tanh(),
        "identity": torch.nn.Identity(),
    }[name]


def _our_layer(name):
    return {
        "gelu": lambda: nn.GELU(),
        "gelu_tanh": lambda: nn.GELU("tanh"),
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "identity": nn.Identity,
    }[name]()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "sigmoid", "tanh", "identity"])
def test_forward_backward_vs_torch(name, dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([X_VALUES, rng.standard_normal(200) * 4]).astype(dtype).reshape(5, -1)
    dy = rng.standard_normal(x.shape).astype(dtype)
    layer = _our_layer(name)
    y = layer(x).copy()
    dx = layer.backward(dy)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    ty = _torch_layer(name)(tx)
    ty.backward(torch.tensor(dy.astype(np.float64)))
    want_y = ty.detach().numpy()
    want_dx = tx.grad.numpy()
    assert y.dtype == dtype and dx.dtype == dtype
    # float32: the kernel's gelu is accurate to 2e-7 |x|; float64 NumPy paths to ~1e-15
    tol = 2e-6 if dtype == np.float32 else (1e-12 if name != "gelu" else 2e-7)
    np.testing.assert_allclose(y, want_y, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, want_dx, rtol=max(tol, 1e-6), atol=max(tol, 1e-6))


def test_gelu_matches_fused_linear():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 9)).astype(np.float32)
    fused = nn.Linear(9, 5, activation="gelu", seed=3)
    plain = nn.Linear(9, 5, seed=3)
    got = nn.GELU()(plain(x))
    np.testing.assert_array_equal(got, fused(x))


def test_gelu_exact_in_float64():
    x = np.linspace(-6, 6, 101)
    want = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(nn.GELU()(x), want, rtol=1e-7, atol=1e-7)


def test_sigmoid_no_overflow_and_nan():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = nn.Sigmoid()(np.array([-1000.0, -80.0, 0.0, 80.0, 1000.0], np.float32))
    np.testing.assert_array_equal(y[[0, 2, 4]], [0.0, 0.5, 1.0])
    assert np.isnan(nn.Sigmoid()(np.array([np.nan]))[0])


def test_errors_and_empty():
    for layer in (nn.GELU(), nn.GELU("tanh"), nn.Sigmoid(), nn.Tanh()):
        with pytest.raises(TypeError, match="float32 or float64"):
            layer(np.arange(3))
        with pytest.raises(RuntimeError, match="before forward"):
            type(layer)().backward(np.zeros(3, np.float32))
        assert layer(np.zeros((0, 4), np.float32)).shape == (0, 4)
        y = layer(np.ones((2, 3), np.float32))
        with pytest.raises(ValueError, match="shape"):
            layer.backward(np.ones((3, 2), np.float32))
        assert layer.backward(np.ones_like(y), need_dx=False) is None
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


def test_in_sequential_training():
    rng = np.random.default_rng(2)
    model = nn.Sequential(
        nn.Linear(4, 8, seed=0), nn.GELU(), nn.Linear(8, 8, seed=1), nn.Tanh(),
        nn.Identity(), nn.Linear(8, 3, seed=2), nn.Sigmoid(),
    )  # fmt: skip
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = model(x)
    model.backward(np.ones_like(y))
    tm = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
        torch.nn.Identity(), torch.nn.Linear(8, 3), torch.nn.Sigmoid(),
    )  # fmt: skip
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    ty = tm(torch.from_numpy(x))
    ty.backward(torch.ones_like(ty))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model[0].grad_weight, tm[0].weight.grad.numpy(), rtol=1e-4, atol=1e-6
    )


def test_linear_from_weights():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    layer = nn.Linear.from_weights(w, b, activation="relu")
    assert layer.weight is w and layer.bias is b  # adopted, not copied
    assert (layer.in_features, layer.out_features, layer.dtype) == (3, 5, np.float32)
    ref = nn.Linear(3, 5, activation="relu")
    ref.load_state_dict({"weight": w, "bias": b})
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), ref(x))
    layer.train()
    layer.backward(np.ones((4, 5), np.float32))
    ref.backward(np.ones((4, 5), np.float32))
    np.testing.assert_array_equal(layer.grad_weight, ref.grad_weight)
    assert layer.state_dict().keys() == ref.state_dict().keys()
    # float64, no bias, read-only / strided inputs are copied
    w64 = np.asarray(rng.standard_normal((6, 4)))[:, ::1].T.T
    w64.flags.writeable = False
    layer = nn.Linear.from_weights(w64)
    assert layer.dtype == np.float64 and layer.bias is None and layer.weight is not w64
    assert nn.Linear.from_weights(w.T).weight.flags.c_contiguous
    with pytest.raises(TypeError, match=r"weight\.dtype"):
        nn.Linear.from_weights(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="2-D"):
        nn.Linear.from_weights(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="bias"):
        nn.Linear.from_weights(w, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="activation"):
        nn.Linear.from_weights(w, activation="swish")
