"""pyfastopt.nn layers: finite-difference gradients (float64), parity with torch.nn,
state dicts, freezing, dropout streams, train/eval, buffer reuse, a real training run."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from digits_training import digits_split, train

import pyfastopt
from pyfastopt import nn, optim

# ----------------------------------------------------------------------------- helpers


def _dropouts(model):
    return [m for _, m in model._walk() if isinstance(m, nn.Dropout)]


def _numeric_grad(f, arr, idx, h=1e-6):
    old = arr[idx]
    arr[idx] = old + h
    fp = f()
    arr[idx] = old - h
    fm = f()
    arr[idx] = old
    return (fp - fm) / (2 * h)


def check_gradients(model, x, rng, n_checks=12, tol=1e-6):
    """Compare backward with central differences of ``L = sum(w * model(x))`` for
    entries of x and of every parameter; dropout masks are held fixed (step reset)."""
    drops = _dropouts(model)
    steps = [d.step for d in drops]

    def loss():
        for d, s in zip(drops, steps):
            d.step = s
        return float(np.sum(w * model(x)))

    y = model(x).copy()
    w = rng.standard_normal(y.shape)
    loss()  # sets the saved state of the step under test
    dx = model.backward(w).copy()
    grads = [g.copy() for g in model.gradients()]
    assert len(grads) == len(model.parameters())
    targets = [(x, dx), *list(zip(model.parameters(), grads))]
    for arr, g in targets:
        flat = list(np.ndindex(arr.shape))
        for k in rng.choice(len(flat), size=min(n_checks, len(flat)), replace=False):
            idx = flat[k]
            num = _numeric_grad(loss, arr, idx)
            assert abs(num - g[idx]) <= tol * (1 + abs(num)), (idx, num, g[idx])
    return dx, grads


def _f64(layer):
    return layer


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(activation, bias, rng):
    layer = nn.Linear(7, 5, bias=bias, activation=activation, dtype=np.float64, seed=1)
    x = rng.standard_normal((6, 7))
    check_gradients(layer, x, rng)


def test_linear_gradients_leading_dims(rng):
    layer = nn.Linear(4, 3, activation="gelu", dtype=np.float64, seed=2)
    x = rng.standard_normal((2, 3, 4))
    dx, _ = check_gradients(layer, x, rng)
    assert dx.shape == x.shape


def test_gelu_backward_near_zero(rng):
    # pre-activations exactly 0 and tiny: y / z is replaced by its limit
    layer = nn.Linear(2, 3, bias=False, activation="gelu", dtype=np.float64, seed=0)
    x = np.array([[0.0, 0.0], [1e-9, -2e-9], [1.0, 2.0]])
    layer(x)
    dx = layer.backward(np.ones((3, 3)))
    z = x @ layer.weight.T
    from math import erf, exp, pi, sqrt

    d = np.vectorize(lambda v: 0.5 * (1 + erf(v / sqrt(2))) + v * exp(-v * v / 2) / sqrt(2 * pi))
    np.testing.assert_allclose(dx, d(z) @ layer.weight, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_gradients(inplace, rng):
    if inplace:  # the layer overwrites its input: give it a copy on every forward
        relu = nn.ReLU(inplace=True)
        orig = relu.forward
        relu.forward = lambda x: orig(x.copy())
    else:
        relu = nn.ReLU()
    check_gradients(relu, rng.standard_normal((5, 6)), rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_relu_inplace_values(dtype, layout, rng):
    x = np.asarray(rng.standard_normal((7, 33)), dtype=dtype, order=layout)
    x[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    ref = np.maximum(x, 0)
    y = nn.ReLU(inplace=True)(x)
    assert y is x
    np.testing.assert_array_equal(y, ref)  # NaN stays NaN
    assert not np.shares_memory(nn.ReLU()(ref), ref)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5)])
def test_batchnorm1d_train_gradients(shape, rng):
    bn = nn.BatchNorm1d(3, dtype=np.float64)
    bn.weight[:] = rng.uniform(0.5, 2, 3)
    bn.bias[:] = rng.standard_normal(3)
    check_gradients(bn, rng.standard_normal(shape) * 2 + 1, rng)


def test_batchnorm2d_train_gradients(rng):
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    bn.weight[:] = [0.7, 1.3]
    check_gradients(bn, rng.standard_normal((3, 2, 3, 4)), rng)


@pytest.mark.parametrize(
    ("cls", "shape"), [(nn.BatchNorm1d, (6, 4)), (nn.BatchNorm2d, (2, 4, 3, 3))]
)
def test_batchnorm_eval_gradients(cls, shape, rng):
    bn = cls(4, dtype=np.float64)
    bn.weight[:] = rng.uniform(0.5, 2, 4)
    bn.bias[:] = rng.standard_normal(4)
    bn.running_mean[:] = rng.standard_normal(4)
    bn.running_var[:] = rng.uniform(0.5, 2, 4)
    bn.eval()
    check_gradients(bn, rng.standard_normal(shape), rng)


def test_dropout_gradients_mask_fixed(rng):
    d = nn.Dropout(0.3, seed=5)
    d.step = 7
    x = rng.standard_normal((9, 11))
    _dx, _ = check_gradients(d, x, rng)
    assert d.step == 8


def test_flatten_gradients(rng):
    check_gradients(nn.Flatten(), rng.standard_normal((3, 2, 4)), rng)


def test_sequential_gradients(rng):
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 10, dtype=np.float64, seed=0),
        nn.BatchNorm1d(10, dtype=np.float64),
        nn.ReLU(),
        nn.Dropout(0.25, seed=3),
        nn.Linear(10, 6, activation="gelu", dtype=np.float64, seed=1),
        nn.Linear(6, 4, activation="relu", dtype=np.float64, seed=2),
    )
    check_gradients(model, rng.standard_normal((8, 3, 4)), rng, n_checks=6)


# ----------------------------------------------------------------------------- torch parity


def _torch_mlp(torch, model):
    """The torch twin of a Sequential(Linear, BatchNorm1d, ReLU, Linear), same weights."""
    tm = torch.nn.Sequential(
        torch.nn.Linear(model[0].in_features, model[0].out_features),
        torch.nn.BatchNorm1d(model[1].num_features),
        torch.nn.ReLU(),
        torch.nn.Linear(model[3].in_features, model[3].out_features),
    ).double()
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return tm


def test_matches_torch_mlp_training(rng):
    torch = pytest.importorskip("torch")
    model = nn.Sequential(
        nn.Linear(5, 8, dtype=np.float64, seed=0),
        nn.BatchNorm1d(8, dtype=np.float64),
        nn.ReLU(),
        nn.Linear(8, 3, dtype=np.float64, seed=1),
    )
    tm = _torch_mlp(torch, model)
    assert list(model.state_dict()) == list(tm.state_dict())
    for step in range(3):
        x = rng.standard_normal((16, 5)) + step
        labels = rng.integers(0, 3, 16)
        logits = model(x)
        loss, dlogits = nn.cross_entropy(logits, labels)
        dx = model.backward(dlogits)
        xt = torch.from_numpy(x).requires_grad_()
        tm.zero_grad()
        lt = torch.nn.functional.cross_entropy(tm(xt), torch.from_numpy(labels))
        lt.backward()
        assert loss == pytest.approx(lt.item(), rel=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
        tgrads = [p.grad.numpy() for p in tm.parameters()]
        for g, tg in zip(model.gradients(), tgrads):
            np.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-13)
    for k, v in tm.state_dict().items():  # running stats and num_batches_tracked
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-12, atol=1e-15)
    assert int(model[1].num_batches_tracked) == 3
    model.eval()
    tm.eval()
    x = rng.standard_normal((4, 5))
    np.testing.assert_allclose(
        model(x), tm(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-14
    )


def test_training_steps_with_dropout_and_adamw_match_torch(rng):
    # three full steps of the benchmark's block structure, torch applying pyfastopt's masks
    torch = pytest.importorskip("torch")
    model = nn.Sequential(
        nn.Linear(7, 9, dtype=np.float64, seed=0),
        nn.BatchNorm1d(9, dtype=np.float64),
        nn.ReLU(inplace=True),
        nn.Dropout(0.3, seed=5),
        nn.Linear(9, 4, dtype=np.float64, seed=1),
    )
    tm = torch.nn.Sequential(
        torch.nn.Linear(7, 9), torch.nn.BatchNorm1d(9), torch.nn.ReLU(), torch.nn.Linear(9, 4)
    ).double()
    sd = model.state_dict()
    tm.load_state_dict({k.replace("4.", "3."): torch.from_numpy(v) for k, v in sd.items()})
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    topt = torch.optim.AdamW(tm.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        x = rng.standard_normal((12, 7))
        labels = rng.integers(0, 4, 12)
        mask = pyfastopt.dropout_mask((12, 9), 0.3, 5, offset=model[3].step)
        loss, d = nn.cross_entropy(model(x), labels)
        model.backward(d, need_dx=False)
        opt.step(model.gradients())
        topt.zero_grad()
        h = tm[2](tm[1](tm[0](torch.from_numpy(x))))
        out = tm[3](h * torch.from_numpy(mask) / 0.7)
        lt = torch.nn.functional.cross_entropy(out, torch.from_numpy(labels))
        lt.backward()
        topt.step()
        assert loss == pytest.approx(lt.item(), rel=1e-10)
    for (name, p), tp in zip(model.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(model[1].running_var, tm[1].running_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_linear_activation_matches_torch_float32(activation, rng):
    torch = pytest.importorskip("torch")
    layer = nn.Linear(33, 17, activation=activation, seed=4)
    x = rng.standard_normal((10, 33)).astype(np.float32)
    dy = rng.standard_normal((10, 17)).astype(np.float32)
    y = layer(x)
    dx = layer.backward(dy)
    wt = torch.from_numpy(layer.weight.copy()).requires_grad_()
    bt = torch.from_numpy(layer.bias.copy()).requires_grad_()
    xt = torch.from_numpy(x).requires_grad_()
    z = torch.nn.functional.linear(xt, wt, bt)
    yt = torch.relu(z) if activation == "relu" else torch.nn.functional.gelu(z)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grad_weight, wt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grad_bias, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_batchnorm2d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    bn = nn.BatchNorm2d(3, momentum=0.3)
    bn.weight[:] = [0.5, 1.0, 2.0]
    bn.bias[:] = [0.1, -0.2, 0.3]
    tbn = torch.nn.BatchNorm2d(3, momentum=0.3)
    tbn.load_state_dict({k: torch.from_numpy(v) for k, v in bn.state_dict().items()})
    for _ in range(2):
        x = (rng.standard_normal((4, 3, 5, 5)) * 3 + 2).astype(np.float32)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        y = bn(x)
        dx = bn.backward(dy)
        xt = torch.from_numpy(x).requires_grad_()
        tbn.zero_grad()
        yt = tbn(xt)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.grad_weight, tbn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bn.grad_bias, tbn.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-6)
    bn.eval()
    tbn.eval()
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(
        bn(x), tbn(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs", [{"momentum": None}, {"affine": False}, {"track_running_stats": False}]
)
def test_batchnorm_options_match_torch(kwargs, rng):
    torch = pytest.importorskip("torch")
    bn = nn.BatchNorm1d(4, dtype=np.float64, **kwargs)
    tbn = torch.nn.BatchNorm1d(4, **kwargs).double()
    for step in range(3):
        x = rng.standard_normal((6, 4, 3)) * (step + 1)
        dy = rng.standard_normal(x.shape)
        xt = torch.from_numpy(x).requires_grad_()
        tbn.zero_grad()
        yt = tbn(xt)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(bn(x), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bn.backward(dy), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert list(bn.state_dict()) == list(tbn.state_dict())
    for k, v in tbn.state_dict().items():
        np.testing.assert_allclose(bn.state_dict()[k], v.numpy(), rtol=1e-12)
    bn.eval()
    tbn.eval()
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(bn(x), tbn(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)


def test_affine_false_gradients(rng):
    bn = nn.BatchNorm2d(3, affine=False, dtype=np.float64)
    assert bn.parameters() == [] and bn.weight is None
    check_gradients(bn, rng.standard_normal((2, 3, 2, 3)), rng)


def test_linear_one_dimensional_input(rng):
    layer = nn.Linear(5, 3, dtype=np.float64, seed=0)
    x = rng.standard_normal(5)
    np.testing.assert_allclose(layer(x), layer.weight @ x + layer.bias, rtol=1e-12)
    dx, _ = check_gradients(layer, x, rng)
    assert dx.shape == (5,)


def test_dropout_matches_torch_formula(rng):
    torch = pytest.importorskip("torch")
    d = nn.Dropout(0.4, seed=11)
    x = rng.standard_normal((6, 50)).astype(np.float32)
    y = d(x)
    mask = pyfastopt.dropout_mask(x.shape, 0.4, 11, offset=0)
    xt = torch.from_numpy(x).requires_grad_()
    yt = xt * torch.from_numpy(mask) / (1 - 0.4)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(d.backward(dy), xt.grad.numpy(), rtol=1e-6)


def test_default_init_matches_torch_distribution():
    layer = nn.Linear(400, 300, seed=0)
    bound = 1 / np.sqrt(400)
    assert layer.weight.dtype == np.float32 and layer.weight.flags.c_contiguous
    assert np.abs(layer.weight).max() <= bound
    assert np.abs(layer.weight).max() > 0.99 * bound  # uniform over the whole range
    assert abs(layer.weight.std() - bound / np.sqrt(3)) < 0.01 * bound
    assert np.abs(layer.bias).max() <= bound and layer.bias.std() > 0.5 * bound / np.sqrt(3)
    np.testing.assert_array_equal(nn.Linear(400, 300, seed=0).weight, layer.weight)
    assert not np.array_equal(nn.Linear(400, 300, seed=1).weight, layer.weight)
    bn = nn.BatchNorm1d(5)
    assert (bn.weight == 1).all() and (bn.bias == 0).all()
    assert (bn.running_mean == 0).all() and (bn.running_var == 1).all()


# ----------------------------------------------------------------------------- module API


def _mlp(dtype=np.float32):
    return nn.Sequential(
        nn.Linear(6, 8, dtype=dtype, seed=0),
        nn.BatchNorm1d(8, dtype=dtype),
        nn.ReLU(),
        nn.Dropout(0.2, seed=1),
        nn.Linear(8, 3, dtype=dtype, seed=2),
    )


def test_named_parameters_order_and_identity():
    model = _mlp()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    p1, p2 = model.parameters(), model.parameters()
    g1, g2 = model.gradients(), model.gradients()
    assert all(a is b for a, b in zip(p1, p2)) and all(a is b for a, b in zip(g1, g2))
    assert [p.shape for p in p1] == [g.shape for g in g1]
    assert model[0].weight is p1[0] and model[0].grad_weight is g1[0]
    sd = model.state_dict()
    assert list(sd) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "4.weight",
        "4.bias",
    ]
    assert len(model) == 5 and list(model) == model.layers
    assert isinstance(model[1:3], nn.Sequential) and model[1:3][0] is model[1]


def test_state_dict_round_trip(rng):
    model = _mlp()
    x = rng.standard_normal((10, 6)).astype(np.float32)
    for _ in range(3):
        model(x)
        _, d = nn.cross_entropy(model[-1]._y, rng.integers(0, 3, 10))
        model.backward(d)
        optim.SGD(model.parameters(), lr=0.1).step(model.gradients())
    sd = model.state_dict()
    assert sd["0.weight"] is not model[0].weight  # copies
    sd_before = {k: v.copy() for k, v in sd.items()}
    model[0].weight += 1  # the copy does not follow
    np.testing.assert_array_equal(sd["0.weight"], sd_before["0.weight"])
    other = _mlp()
    params = other.parameters()
    other.load_state_dict(sd)
    assert all(a is b for a, b in zip(params, other.parameters()))  # copied in place
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    assert int(other[1].num_batches_tracked) == 3
    model.load_state_dict(sd)
    model.eval()
    other.eval()
    np.testing.assert_array_equal(model(x), other(x))


def test_deepcopy_and_pickle_leave_workspaces_behind(rng):
    import copy
    import pickle

    model = _mlp()
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = model(x).copy()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone[0]._ws == {} and clone[0]._x is None and clone[1]._saved is None
        assert clone[0].weight is not model[0].weight
        np.testing.assert_array_equal(clone[0].weight, model[0].weight)
        assert clone[3].seed == model[3].seed and clone[3].step == model[3].step
        with pytest.raises(RuntimeError, match="before forward"):
            clone.backward(np.ones((64, 3), np.float32))
    model.eval()
    clone = copy.deepcopy(model)
    np.testing.assert_array_equal(clone(x), model(x))
    assert not np.array_equal(y, model(x))  # (eval differs from the training forward)


def test_load_state_dict_errors():
    model = _mlp()
    sd = model.state_dict()
    bad = dict(sd)
    del bad["1.running_var"]
    with pytest.raises(ValueError, match=r"missing keys.*1\.running_var"):
        model.load_state_dict(bad)
    bad = dict(sd, extra=np.zeros(2))
    with pytest.raises(ValueError, match=r"unexpected keys.*extra"):
        model.load_state_dict(bad)
    bad = dict(sd)
    bad["4.weight"] = np.zeros((3, 9), np.float32)
    w_before = model[0].weight.copy()
    sd["0.weight"] += 5
    bad["0.weight"] = sd["0.weight"]
    with pytest.raises(ValueError, match=r"'4.weight' has shape \(3, 9\).*\(3, 8\)"):
        model.load_state_dict(bad)
    np.testing.assert_array_equal(model[0].weight, w_before)  # nothing copied
    with pytest.raises(TypeError):
        model.load_state_dict([1, 2])


def test_freeze_leaves_parameters_untouched(rng):
    model = _mlp()
    model[0].freeze()
    assert len(model.parameters()) == 4 and len(model.gradients()) == 4
    assert all(p is not model[0].weight for p in model.parameters())
    frozen = model[0].weight.copy(), model[0].bias.copy()
    opt = optim.AdamW(model.parameters(), lr=0.1)
    x = rng.standard_normal((12, 6)).astype(np.float32)
    w4 = model[4].weight.copy()
    for _ in range(2):
        _, d = nn.cross_entropy(model(x), rng.integers(0, 3, 12))
        model.backward(d, need_dx=False)
        opt.step(model.gradients())
    np.testing.assert_array_equal(model[0].weight, frozen[0])
    np.testing.assert_array_equal(model[0].bias, frozen[1])
    assert (model[0].grad_weight == 0).all()  # not computed
    assert not np.array_equal(model[4].weight, w4)
    model.unfreeze()
    assert len(model.parameters()) == 6


def test_frozen_prefix_skips_backward(rng, monkeypatch):
    model = _mlp()
    model[0].freeze()
    model[1].freeze()
    calls = []
    for i, layer in enumerate(model):
        orig = layer.backward

        def spy(dy, need_dx=True, _orig=orig, _i=i):
            calls.append((_i, need_dx))
            return _orig(dy, need_dx)

        monkeypatch.setattr(layer, "backward", spy)
    model(rng.standard_normal((5, 6)).astype(np.float32))
    model.backward(np.ones((5, 3), np.float32), need_dx=False)
    assert calls == [(4, False)]  # nothing before layer 4 is trainable
    calls.clear()
    assert model.backward(np.ones((5, 3), np.float32)).shape == (5, 6)
    assert [i for i, _ in calls] == [4, 3, 2, 1, 0]


def test_need_dx_false_keeps_every_gradient(rng):
    # need_dx=False only skips the input gradient: every layer's parameters still get theirs
    model = _mlp(np.float64)
    x = rng.standard_normal((9, 6))
    dy = rng.standard_normal((9, 3))
    steps = [d.step for d in _dropouts(model)]
    model(x)
    model.backward(dy)
    full = [g.copy() for g in model.gradients()]
    model.zero_grad()
    for d, s in zip(_dropouts(model), steps):
        d.step = s
    model(x)
    assert model.backward(dy, need_dx=False) is None
    for g, f in zip(model.gradients(), full):
        assert np.abs(f).max() > 0
        np.testing.assert_array_equal(g, f)


def test_dropout_masks_fresh_each_step_and_reproducible():
    x = np.ones((40, 50), np.float32)
    a, b = nn.Dropout(0.5, seed=3), nn.Dropout(0.5, seed=3)
    ya = [a(x).copy() for _ in range(3)]
    yb = [b(x).copy() for _ in range(3)]
    for u, v in zip(ya, yb):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(ya[0], ya[1]) and not np.array_equal(ya[1], ya[2])
    assert set(np.unique(ya[0])) == {0.0, 2.0}
    assert 0.4 < (ya[0] == 0).mean() < 0.6
    assert not np.array_equal(nn.Dropout(0.5, seed=4)(x), ya[0])
    assert not np.array_equal(nn.Dropout(0.5)(x), nn.Dropout(0.5)(x))  # fresh entropy
    # backward uses the mask of the last forward
    dy = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    np.testing.assert_array_equal(a.backward(dy), dy * ya[2])  # ya = mask / (1 - p)


def test_train_eval_modes(rng):
    model = _mlp()
    x = rng.standard_normal((8, 6)).astype(np.float32)
    model(x)
    rm = model[1].running_mean.copy()
    model.eval()
    assert not any(m.training for _, m in model._walk())
    y1 = model(x).copy()
    y2 = model(x).copy()
    np.testing.assert_array_equal(y1, y2)  # dropout off, running stats fixed
    np.testing.assert_array_equal(model[1].running_mean, rm)
    assert model[3](x) is x  # dropout is the identity in eval mode
    h = model[1](model[0](x))
    ref = (model[0](x) - rm) / np.sqrt(model[1].running_var + 1e-5)
    np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-6)
    model.train()
    assert model[1].training and model[3].training
    assert not np.array_equal(model(x), y1)


def test_buffers_are_reused_and_steps_allocate_little(rng):
    model = nn.Sequential(
        nn.Linear(256, 512, seed=0),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Dropout(0.2, seed=1),
        nn.Linear(512, 10, seed=2),
    )
    opt = optim.AdamW(model.parameters())
    x = rng.standard_normal((128, 256)).astype(np.float32)
    labels = rng.integers(0, 10, 128)

    def step():
        _, d = nn.cross_entropy(model(x), labels)
        model.backward(d, need_dx=False)
        opt.step(model.gradients())

    step()
    y1 = model[0](x)
    y2 = model[0](x)
    assert y1 is y2  # the same workspace
    step()
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # one activation is 128 x 512 x 4 = 256 KiB; the losses' small arrays are far less
    assert peak < 64 * 1024, peak
    # a different batch size gets its own buffers, and the full size keeps its own
    model(x[:5])
    assert model[0](x) is y1


def test_bad_inputs():
    with pytest.raises(ValueError, match="activation"):
        nn.Linear(3, 4, activation="tanh")
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 4)
    with pytest.raises(TypeError, match="dtype"):
        nn.Linear(3, 4, dtype=np.int32)
    layer = nn.Linear(3, 4)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(\.\.\., 3\)"):
        layer(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="float64"):
        layer(np.zeros((2, 3)))
    layer(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3\).*\(2, 4\)"):
        layer.backward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(N, 3\)"):
        nn.BatchNorm1d(3)(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        nn.BatchNorm2d(3)(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm1d(3, momentum=2.0)
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.0)
    d = nn.Dropout(0.5)
    with pytest.raises(ValueError, match="p must be in"):
        d.p = -0.1
    with pytest.raises(TypeError, match="layer 1"):
        nn.Sequential(nn.ReLU(), "relu")
    with pytest.raises(TypeError, match="ReLU"):
        nn.ReLU()(np.zeros(3, np.int64))


def test_float64_layers_keep_dtype(rng):
    model = _mlp(np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    y = model(rng.standard_normal((4, 6)))
    assert y.dtype == np.float64


# ----------------------------------------------------------------------------- training


def test_mlp_learns_digits():
    xtr, ytr, xte, yte = digits_split()
    model = nn.Sequential(
        nn.Linear(64, 128, seed=0),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.1, seed=1),
        nn.Linear(128, 10, seed=2),
    )
    train(model, xtr, ytr, epochs=15)
    acc = (model(xte).argmax(1) == yte).mean()
    assert acc > 0.95, acc
