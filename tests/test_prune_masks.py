"""pyfastopt.prune: masks kept by the layers (PyTorch's semantics) and filter pruning."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from pyfastopt import nn, optim
from pyfastopt.prune import (
    is_pruned,
    magnitude_prune,
    masked,
    prune_filters,
    remove,
    sparsity,
)


def _mlp(seed=0, dtype=np.float32):
    m = nn.Sequential(
        nn.Linear(12, 20, seed=seed, dtype=dtype),
        nn.ReLU(),
        nn.Linear(20, 16, activation="relu", seed=seed + 1, dtype=dtype),
        nn.Linear(16, 5, seed=seed + 2, dtype=dtype),
    )
    return m


def _train(model, opt, rng, steps, dtype=np.float32):
    for _ in range(steps):
        x = rng.standard_normal((16, 12)).astype(dtype)
        y = model(x)
        model.backward((y - 1.0) / y.shape[0])
        opt.step(model.gradients())


OPTIMIZERS = {
    "adam": lambda p: optim.Adam(p, lr=1e-2, weight_decay=0.1),
    "adamw": lambda p: optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd_momentum": lambda p: optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=0.1),
    "rmsprop": lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.9, weight_decay=0.1),
    "adagrad": lambda p: optim.Adagrad(p, lr=1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_optimizer_keeps_pruned_weights_zero(rng, name, dtype):
    m = _mlp(dtype=dtype)
    opt = OPTIMIZERS[name](m.parameters())
    _train(m, opt, rng, 3, dtype)  # optimizer state exists before pruning (stale momentum)
    masks = magnitude_prune(m, 0.6)
    before = [w.copy() for w in masks.weights]
    for layer in (m[0], m[2], m[3]):
        assert layer.weight_mask.dtype == dtype and layer.weight_mask.shape == layer.weight.shape
        assert set(np.unique(layer.weight_mask)) <= {0.0, 1.0}
    _train(m, opt, rng, 40, dtype)
    for w, b, keep in zip(masks.weights, before, masks):
        assert np.all(w[~keep] == 0)
        assert np.any(w[keep] != b[keep])  # the kept weights do train
    for _, layer in m._walk():
        if hasattr(layer, "weight_mask"):
            np.testing.assert_array_equal(layer.grad_weight[layer.weight_mask == 0], 0)
    checked = 0
    for pi, keep in zip((0, 2, 4), masks):  # weights' positions in m.parameters()
        for v in opt.state[pi].values():  # pruned entries of momentum/moments stay zero
            if isinstance(v, np.ndarray):
                assert np.all(v[~keep] == 0)
                checked += 1
    assert checked >= 3
    sd = m.state_dict()
    for i in (0, 2, 3):
        keep = sd[f"{i}.weight_mask"] != 0
        assert np.all(sd[f"{i}.weight"][~keep] == 0)
        assert int((~keep).sum()) == round(0.6 * keep.size)


def test_pruned_entries_frozen_even_with_read_only_grads(rng):
    m = _mlp()
    magnitude_prune(m, 0.5)
    opt = optim.Adam(m.parameters(), lr=1e-2)
    grads = []
    for p in m.parameters():
        g = np.ones_like(p)
        g.flags.writeable = False
        grads.append(g)
    opt.step(grads)
    for layer in (m[0], m[2], m[3]):
        assert np.all(layer.weight[layer.weight_mask == 0] == 0)
    assert all(not g.flags.writeable and np.all(g == 1) for g in grads)  # not modified


def test_forward_reapplies_mask_after_manual_edit(rng):
    m = _mlp()
    magnitude_prune(m, 0.5)
    m[0].weight[...] = 1.0  # an edit outside any optimizer
    x = rng.standard_normal((4, 12)).astype(np.float32)
    m(x)
    np.testing.assert_array_equal(m[0].weight, m[0].weight_mask)


def test_masked_wrapper_still_works(rng):
    m = _mlp()
    masks = magnitude_prune(m, 0.7)
    opt = masked(optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1), masks)
    _train(m, opt, rng, 20)
    for w, keep in zip(masks.weights, masks):
        assert np.all(w[~keep] == 0)


def test_prune_again_never_revives_and_amount_is_total(rng):
    m = _mlp()
    magnitude_prune(m, 0.5)
    first = m[0].weight_mask.copy()
    opt = optim.Adam(m.parameters(), lr=1e-2)
    _train(m, opt, rng, 5)
    magnitude_prune(m, 0.3)  # a smaller amount: the earlier mask still holds
    np.testing.assert_array_equal(m[0].weight_mask, first)
    magnitude_prune(m, 0.8)
    assert np.all(m[0].weight_mask <= first)
    assert int((m[0].weight_mask == 0).sum()) == round(0.8 * m[0].weight.size)


def test_state_dict_round_trip_keeps_masks(rng):
    m = _mlp()
    magnitude_prune(m, 0.6, scope="global")
    _train(m, optim.Adam(m.parameters(), lr=1e-2), rng, 5)
    sd = m.state_dict()
    assert {"0.weight_mask", "2.weight_mask", "3.weight_mask"} <= set(sd)
    assert "0.bias_mask" not in sd and "0.weight_orig" not in sd
    # into a fresh, unpruned model: the masks come with the state
    fresh = _mlp(seed=5)
    assert not is_pruned(fresh)
    fresh.load_state_dict(sd)
    assert is_pruned(fresh)
    for key in sd:
        np.testing.assert_array_equal(fresh.state_dict()[key], sd[key])
    opt = optim.Adam(fresh.parameters(), lr=1e-2, weight_decay=0.1)
    _train(fresh, opt, rng, 10)
    for i in (0, 2, 3):
        assert np.all(fresh[i].weight[fresh[i].weight_mask == 0] == 0)
    # into an already pruned model with other masks: the loaded masks replace them
    other = _mlp(seed=7)
    magnitude_prune(other, 0.2)
    other.load_state_dict(sd)
    np.testing.assert_array_equal(other[0].weight_mask, sd["0.weight_mask"])
    _train(other, optim.SGD(other.parameters(), lr=1e-2, momentum=0.9), rng, 5)
    assert np.all(other[0].weight[sd["0.weight_mask"] == 0] == 0)


def test_copies_keep_masks_holding(rng):
    m = _mlp()
    magnitude_prune(m, 0.5)
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        _train(c, optim.Adam(c.parameters(), lr=1e-2, weight_decay=0.1), rng, 5)
        assert np.all(c[0].weight[c[0].weight_mask == 0] == 0)


def test_remove_makes_pruning_permanent(rng):
    m = _mlp()
    magnitude_prune(m, 0.5)
    zeros = m[0].weight == 0
    remove(m[0])
    assert not hasattr(m[0], "weight_mask") and "0.weight_mask" not in m.state_dict()
    assert np.all(m[0].weight[zeros] == 0)
    assert is_pruned(m)  # the other layers are still pruned
    remove(m)
    assert not is_pruned(m) and not any(k.endswith("_mask") for k in m.state_dict())
    _train(m, optim.Adam(m.parameters(), lr=1e-2), rng, 3)
    assert np.any(m[0].weight[zeros] != 0)  # no longer held: they train again
    with pytest.raises(ValueError, match="has to be pruned"):
        remove(m[0])
    with pytest.raises(TypeError):
        remove(np.zeros(3))


def test_quantize_model_sees_zeros(rng):
    quant = pytest.importorskip("pyfastopt.quant")
    m = _mlp()
    magnitude_prune(m, 0.6)
    _train(m, optim.Adam(m.parameters(), lr=1e-2, weight_decay=0.1), rng, 10)
    m[2].weight[...] = 3.0  # even an edit by hand: quantize_model applies the masks
    q = quant.quantize_model(m)
    qweights = [layer.weight_q for layer in q.layers]
    assert len(qweights) == 3
    for qw, i in zip(qweights, (0, 2, 3)):
        assert np.all(qw[m[i].weight_mask == 0] == 0)
    assert sparsity(m) >= 0.6 - 1e-9


def test_torch_state_dict_of_pruned_module_loads(rng):
    torch = pytest.importorskip("torch")
    tprune = pytest.importorskip("torch.nn.utils.prune")
    lin = torch.nn.Linear(12, 20)
    tprune.l1_unstructured(lin, "weight", amount=0.5)
    sd = {k: v.detach().numpy() for k, v in lin.state_dict().items()}
    assert "weight_orig" in sd and "weight_mask" in sd
    ours = nn.Linear(12, 20, seed=0)
    ours.load_state_dict(sd)
    np.testing.assert_array_equal(ours.weight, lin.weight.detach().numpy())
    np.testing.assert_array_equal(ours.weight_mask, sd["weight_mask"])
    x = rng.standard_normal((3, 12)).astype(np.float32)
    np.testing.assert_allclose(ours(x), lin(torch.from_numpy(x)).detach().numpy(), rtol=1e-5)


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5, 0.77])
def test_torch_parity_l1_unstructured_picks_same_weights(rng, amount):
    torch = pytest.importorskip("torch")
    tprune = pytest.importorskip("torch.nn.utils.prune")
    layer = nn.Linear(30, 17, seed=3)
    conv = nn.Conv2d(4, 6, 3, seed=4)
    m = nn.Sequential(layer, nn.ReLU(), nn.Flatten())
    tl = torch.nn.Linear(30, 17)
    tc = torch.nn.Conv2d(4, 6, 3)
    with torch.no_grad():  # distinct magnitudes: no ties
        tl.weight.copy_(torch.from_numpy(layer.weight))
        tc.weight.copy_(torch.from_numpy(conv.weight))
    magnitude_prune(m, amount)
    magnitude_prune(nn.Sequential(conv), amount)
    tprune.l1_unstructured(tl, "weight", amount=amount)
    tprune.l1_unstructured(tc, "weight", amount=amount)
    np.testing.assert_array_equal(layer.weight_mask, tl.weight_mask.numpy())
    np.testing.assert_array_equal(conv.weight_mask, tc.weight_mask.numpy())
    np.testing.assert_array_equal(layer.weight, tl.weight.detach().numpy())
    # torch's global_unstructured over both picks the same entries as scope="global"
    layer2, conv2 = nn.Linear(30, 17, seed=3), nn.Conv2d(4, 6, 3, seed=4)
    tl2, tc2 = torch.nn.Linear(30, 17), torch.nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        tl2.weight.copy_(torch.from_numpy(layer2.weight))
        tc2.weight.copy_(torch.from_numpy(conv2.weight))
    magnitude_prune(nn.Sequential(layer2, conv2), amount, scope="global")
    tprune.global_unstructured(
        [(tl2, "weight"), (tc2, "weight")], pruning_method=tprune.L1Unstructured, amount=amount
    )
    np.testing.assert_array_equal(layer2.weight_mask, tl2.weight_mask.numpy())
    np.testing.assert_array_equal(conv2.weight_mask, tc2.weight_mask.numpy())


def test_conv_weights_masked_through_training(rng):
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, seed=0),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3, seed=1),
    )
    magnitude_prune(m, 0.5)
    opt = optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(10):
        y = m(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))
        m.backward(y / 2)
        opt.step(m.gradients())
    assert np.all(m[0].weight[m[0].weight_mask == 0] == 0)
    assert int((m[0].weight_mask == 0).sum()) == round(0.5 * m[0].weight.size)


# ----------------------------------------------------------------------- filters
def _cnn(layout="NCHW", dtype=np.float64, seed=0):
    bn = {"layout": layout, "dtype": dtype}
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, layout=layout, dtype=dtype, seed=seed),
        nn.BatchNorm2d(8, **bn),
        nn.ReLU(),
        nn.MaxPool2d(2, layout=layout),
        nn.Conv2d(8, 6, 3, padding=1, layout=layout, dtype=dtype, seed=seed + 1),
        nn.ReLU(),
        nn.Residual(
            nn.Conv2d(6, 5, 3, padding=1, layout=layout, dtype=dtype, seed=seed + 2),
            nn.BatchNorm2d(5, **bn),
            nn.ReLU(),
            nn.Conv2d(5, 6, 1, layout=layout, dtype=dtype, seed=seed + 3),
        ),
        nn.Conv2d(6, 4, 3, padding=1, layout=layout, dtype=dtype, seed=seed + 4),
        nn.Flatten(layout=layout),
        nn.Linear(4 * 4 * 4, 3, dtype=dtype, seed=seed + 5),
    )
    rng = np.random.default_rng(seed)
    for _ in range(3):  # non-trivial running statistics
        m(_image(rng, 8, layout, dtype))
    for layer in (m[1], m[6][1]):  # and non-trivial affine parameters
        layer.weight[...] = rng.uniform(0.5, 1.5, layer.weight.shape)
        layer.bias[...] = rng.uniform(-0.5, 0.5, layer.bias.shape)
    return m.eval()


def _image(rng, n, layout, dtype):
    x = rng.standard_normal((n, 3, 8, 8)).astype(dtype)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x


def _gone(conv, amount, norm):
    """The filters L1/L2 ranking removes, computed independently (float64 NumPy)."""
    w = conv.weight.astype(np.float64).reshape(conv.out_channels, -1)
    score = np.abs(w).sum(1) if norm == 1 else np.sqrt((w * w).sum(1))
    k = min(round(amount * conv.out_channels), conv.out_channels - 1)
    gone = np.zeros(conv.out_channels, bool)
    gone[np.argsort(score, kind="stable")[:k]] = True
    return gone


def _silenced(original, amount, norm):
    """A copy of ``original`` whose prunable channels are zeroed (filters, bias, BN)."""
    ref = copy.deepcopy(original)
    gones = []
    for conv, bn in ((ref[0], ref[1]), (ref[6][0], ref[6][1]), (ref[7], None)):
        gone = _gone(conv, amount, norm)
        conv.weight[gone] = 0
        conv.bias[gone] = 0
        if bn is not None:
            bn.weight[gone] = 0
            bn.bias[gone] = 0
        gones.append(gone)
    return ref, gones


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 1.0])
def test_prune_filters_shrinks_and_matches_silenced_model(rng, layout, norm, amount):
    original = _cnn(layout)
    ref, gones = _silenced(original, amount, norm)
    model = copy.deepcopy(original)
    out = prune_filters(model, amount, norm=norm)
    assert out is model
    kept = [int((~g).sum()) for g in gones]
    assert model[0].out_channels == kept[0] and model[0].weight.shape[0] == kept[0]
    assert model[1].num_features == kept[0] and model[4].in_channels == kept[0]
    assert model[4].out_channels == 6  # feeds the residual add: never pruned
    assert model[6][0].out_channels == kept[1] and model[6][1].num_features == kept[1]
    assert model[6][3].in_channels == kept[1] and model[6][3].out_channels == 6
    assert model[7].out_channels == kept[2] and model[9].in_features == kept[2] * 16
    np.testing.assert_array_equal(model[0].weight, original[0].weight[~gones[0]])
    np.testing.assert_array_equal(model[1].running_var, original[1].running_var[~gones[0]])
    np.testing.assert_array_equal(model[4].weight, original[4].weight[:, ~gones[0]])
    cols = np.repeat(~gones[2], 16)  # Flatten's (c, h, w) order in both layouts
    np.testing.assert_array_equal(model[9].weight, original[9].weight[:, cols])
    assert all(min(k, 1) == 1 for k in kept)
    x = _image(rng, 5, layout, np.float64)
    np.testing.assert_allclose(model(x), ref(x), rtol=1e-12, atol=1e-12)
    # and it still trains (backward through the smaller layers)
    model.train()
    opt = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    y = model(x)
    model.backward(y / y.shape[0])
    opt.step(model.gradients())


def test_prune_filters_global_scope_and_masks_cut(rng):
    original = _cnn()
    m = copy.deepcopy(original)
    magnitude_prune(m, 0.4)  # unstructured masks first: they are cut with the channels
    prune_filters(m, 0.5, norm=2, scope="global")
    total = sum(c.out_channels for c in (original[0], original[6][0], original[7]))
    now = sum(c.out_channels for c in (m[0], m[6][0], m[7]))
    assert total - now == round(0.5 * total)
    for layer in (m[0], m[4], m[6][0], m[7], m[9]):
        assert layer.weight_mask.shape == layer.weight.shape
        assert np.all(layer.weight[layer.weight_mask == 0] == 0)
    m.train()
    opt = optim.Adam(m.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        y = m(_image(rng, 4, "NCHW", np.float64))
        m.backward(y / 4)
        opt.step(m.gradients())
    for layer in (m[0], m[4], m[6][0], m[7], m[9]):
        assert np.all(layer.weight[layer.weight_mask == 0] == 0)


def test_prune_filters_errors():
    with pytest.raises(TypeError, match="Sequential"):
        prune_filters(nn.Conv2d(3, 4, 3), 0.5)
    with pytest.raises(ValueError, match="norm"):
        prune_filters(_cnn(), 0.5, norm=3)
    with pytest.raises(ValueError, match="amount"):
        prune_filters(_cnn(), 1.5)
    with pytest.raises(ValueError, match="scope"):
        prune_filters(_cnn(), 0.5, scope="net")
    depthwise = nn.Sequential(
        nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=6), nn.Conv2d(6, 2, 1)
    )
    with pytest.raises(ValueError, match=r"layer 2 \(Conv2d\) has groups=6"):
        prune_filters(depthwise, 0.5)
    with pytest.raises(ValueError, match="no Conv2d"):
        prune_filters(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), 0.5)
    with pytest.raises(ValueError, match="no Conv2d"):  # only feeds a residual add
        prune_filters(nn.Sequential(nn.Residual(nn.Conv2d(3, 3, 1))), 0.5)


def test_torch_parity_forward_and_masked_gradient(rng):
    torch = pytest.importorskip("torch")
    tprune = pytest.importorskip("torch.nn.utils.prune")
    ours = nn.Linear(10, 7, dtype=np.float64, seed=1)
    tl = torch.nn.Linear(10, 7).double()
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(ours.weight))
        tl.bias.copy_(torch.from_numpy(ours.bias))
    magnitude_prune(nn.Sequential(ours), 0.4)
    tprune.l1_unstructured(tl, "weight", amount=0.4)
    x = rng.standard_normal((5, 10))
    dy = rng.standard_normal((5, 7))
    y = ours(x)
    ours.backward(dy)
    tx = torch.from_numpy(x)
    ty = tl(tx)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    # torch's gradient is the one of weight_orig: the full gradient times the mask
    np.testing.assert_allclose(
        ours.grad_weight, tl.weight_orig.grad.numpy(), rtol=1e-12, atol=1e-12
    )
    assert np.all(ours.grad_weight[ours.weight_mask == 0] == 0)


def test_magnitude_prune_structured_filters_is_prune_filters_l1(rng):
    a, b = _cnn(), _cnn()
    assert magnitude_prune(a, 0.5, structured="filters") is a
    prune_filters(b, 0.5, norm=1)
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])
    with pytest.raises(TypeError, match="Sequential"):
        magnitude_prune([np.ones((2, 2), np.float32)], 0.5, structured="filters")


def test_onnx_save_sees_zeros(rng, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from pyfastopt import onnx as pfo_onnx

    m = _mlp()
    magnitude_prune(m, 0.6)
    m[0].weight[...] = 2.0  # an edit by hand: save applies the masks first
    path = tmp_path / "pruned.onnx"
    pfo_onnx.save(m, path)
    inits = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    mask = m[0].weight_mask
    match = [a for a in inits if a.shape in (mask.shape, mask.T.shape) and a.size == mask.size]
    assert match
    expected = (2.0 * mask).astype(np.float32)  # the edit, with the pruned entries zero
    assert any(np.array_equal(a, expected) or np.array_equal(a, expected.T) for a in match)
