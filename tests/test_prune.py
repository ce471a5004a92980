"""pyfastopt.prune: magnitude pruning (entries and rows), masks that hold, sparsity."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from pyfastopt import optim
from pyfastopt.prune import PruningMasks, magnitude_prune, masked, sparsity


def _weights(rng, shapes=((6, 5), (4, 6), (3, 4)), dtype=np.float32):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# ----------------------------------------------------------------------- unstructured
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amount", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
def test_layer_scope_exact_counts(rng, amount, dtype):
    ws = _weights(rng, dtype=dtype)
    before = [w.copy() for w in ws]
    masks = magnitude_prune(ws, amount)
    assert isinstance(masks, PruningMasks) and len(masks) == len(ws)
    for w, b, m in zip(ws, before, masks):
        k = round(amount * w.size)
        assert m.dtype == bool and m.shape == w.shape
        assert int((~m).sum()) == k
        np.testing.assert_array_equal(w, np.where(m, b, 0))  # zeroed in place, rest untouched
        if 0 < k < w.size:  # the pruned ones are the smallest
            assert np.abs(b[~m]).max() <= np.abs(b[m]).min()
        assert w.dtype == dtype
    assert masks.num_pruned == sum(round(amount * w.size) for w in ws)


def test_global_scope_ranks_all_weights_together():
    small = np.full((4, 4), 0.01, np.float32) * np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    big = np.full((4, 4), 10.0, np.float32) + np.arange(16, dtype=np.float32).reshape(4, 4)
    masks = magnitude_prune([small, big], 0.5, scope="global")
    assert not masks[0].any() and masks[1].all()  # the small layer goes entirely
    np.testing.assert_array_equal(small, 0)
    assert sparsity([small, big]) == 0.5
    # layer scope on the same data prunes half of each
    s2 = 0.01 * np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    b2 = 10.0 + np.arange(16, dtype=np.float32).reshape(4, 4)
    m2 = magnitude_prune([s2, b2], 0.5, scope="layer")
    assert [int((~m).sum()) for m in m2] == [8, 8]


def test_global_scope_mixed_dtypes_and_count(rng):
    ws = [rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((3, 9))]
    flat = np.concatenate([np.abs(w).ravel().astype(np.float64) for w in ws])
    masks = magnitude_prune(ws, 0.3, scope="global")
    k = round(0.3 * flat.size)
    assert masks.num_pruned == k
    threshold = np.sort(flat)[k - 1]
    for w, m in zip(ws, masks):
        assert np.all(np.abs(w[m]) >= threshold)


def test_ties_prune_earliest_position_first():
    w = np.ones((2, 3), np.float32)
    magnitude_prune(w, 0.5)
    np.testing.assert_array_equal(w, [[0, 0, 0], [1, 1, 1]])
    a, b = np.ones(4, np.float32), np.ones(4, np.float32)
    magnitude_prune([a, b], 0.75, scope="global")
    np.testing.assert_array_equal(a, 0)
    np.testing.assert_array_equal(b, [0, 0, 1, 1])


def test_round_half_to_even_and_idempotent():
    w = np.arange(1, 11, dtype=np.float64)  # 10 entries
    magnitude_prune(w, 0.25)  # 2.5 -> 2
    assert np.count_nonzero(w == 0) == 2
    magnitude_prune(w, 0.25)  # already-zero entries are the smallest: no change
    assert np.count_nonzero(w == 0) == 2
    magnitude_prune(w, 0.35)  # 3.5 -> 4
    np.testing.assert_array_equal(w, [0, 0, 0, 0, 5, 6, 7, 8, 9, 10])


def test_sign_does_not_matter():
    w = np.array([-3.0, 1.0, -0.5, 2.0], np.float32)
    magnitude_prune(w, 0.5)
    np.testing.assert_array_equal(w, [-3.0, 0.0, 0.0, 2.0])


# ------------------------------------------------------------------------------- rows
def test_rows_on_arrays(rng):
    w = rng.standard_normal((10, 4)).astype(np.float32)
    w[3] *= 0.01
    w[7] *= 0.02
    norms = np.linalg.norm(w.astype(np.float64), axis=1)
    before = w.copy()
    masks = magnitude_prune([w], 0.3, structured="rows")
    pruned_rows = np.flatnonzero(~masks[0][:, 0])
    np.testing.assert_array_equal(pruned_rows, np.sort(np.argsort(norms, kind="stable")[:3]))
    assert {3, 7} <= set(pruned_rows.tolist())
    assert np.all(masks[0] == masks[0][:, :1])  # whole rows
    np.testing.assert_array_equal(w, np.where(masks[0], before, 0))
    with pytest.raises(ValueError, match="2-D"):
        magnitude_prune(np.ones(5, np.float32), 0.5, structured="rows")


def test_rows_global_on_arrays(rng):
    a = rng.standard_normal((4, 3)) * 0.001
    b = rng.standard_normal((4, 3)) * 100
    masks = magnitude_prune([a, b], 0.5, scope="global", structured="rows")
    assert not masks[0].any() and masks[1].all()


# --------------------------------------------------------------------- masks that hold
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: optim.AdamW(p, lr=1e-2, weight_decay=0.1),
        lambda p: optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-3, nesterov=True),
        lambda p: optim.Adam(p, lr=1e-2, amsgrad=True, l1=1e-3),
        lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.5, centered=True),
    ],
)
def test_pruned_weights_stay_zero_through_masked_steps(rng, make_opt):
    ws = _weights(rng)
    bias = rng.standard_normal(3).astype(np.float32)
    params = [ws[0], bias, ws[1], ws[2]]
    opt = make_opt(params)
    # a few dense steps first, so the optimizer state is non-zero everywhere
    for _ in range(3):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
    masks = magnitude_prune(ws, 0.6)
    mopt = masked(opt, masks)
    sched = optim.lr_scheduler.CosineAnnealingLR(mopt, T_max=50)  # schedulers see the groups
    for _ in range(50):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        mopt.step(grads)
        sched.step()
        for w, m in zip(ws, masks):
            assert np.all(w[~m] == 0)  # exactly zero after every step
        for j, i in enumerate((0, 2, 3)):  # the state of pruned entries is zero too
            for v in opt.state[i].values():
                if isinstance(v, np.ndarray):
                    assert np.all(v[~masks[j]] == 0)
    for w, m in zip(ws, masks):
        assert np.all(w[m] != 0)  # the kept weights did train
    assert sparsity(ws) == pytest.approx(masks.num_pruned / masks.num_total)
    assert mopt.param_groups is opt.param_groups


def test_without_masking_adamw_revives_pruned_weights(rng):
    """The control: stale Adam moments do move pruned weights (so the test above bites)."""
    ws = _weights(rng)
    opt = optim.AdamW(ws, lr=1e-2, weight_decay=0.1)
    opt.step([rng.standard_normal(w.shape).astype(w.dtype) for w in ws])
    masks = magnitude_prune(ws, 0.6)
    opt.step([np.where(m, 1.0, 0.0).astype(w.dtype) for w, m in zip(ws, masks)])
    assert any(np.any(w[~m] != 0) for w, m in zip(ws, masks))


def test_apply_rezeroes(rng):
    ws = _weights(rng)
    masks = magnitude_prune(ws, 0.5)
    opt = optim.AdamW(ws, lr=1e-1, weight_decay=0.1)
    for _ in range(5):
        opt.step([rng.standard_normal(w.shape).astype(w.dtype) for w in ws])
        masks.apply_()
        assert all(np.all(w[~m] == 0) for w, m in zip(ws, masks))


def test_masked_errors(rng):
    ws = _weights(rng)
    masks = magnitude_prune(ws, 0.5)
    with pytest.raises(ValueError, match=r"arrays\[1\].*not a parameter"):
        masked(optim.SGD([ws[0], ws[2]], lr=0.1), masks)
    with pytest.raises(TypeError, match="masks"):
        masked(optim.SGD(ws, lr=0.1), [m for m in masks])


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("amount", [-0.1, 1.01, float("nan")])
def test_amount_out_of_range(amount):
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune([np.ones((2, 2), np.float32)], amount)


def test_argument_errors():
    w = np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match="amount"):
        magnitude_prune([w], True)
    with pytest.raises(TypeError, match="amount"):
        magnitude_prune([w], "0.5")
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune([w], 0.5, scope="all")
    with pytest.raises(ValueError, match="structured"):
        magnitude_prune([w], 0.5, structured="columns")
    with pytest.raises(ValueError, match="empty"):
        magnitude_prune([], 0.5)
    with pytest.raises(TypeError, match=r"arrays\[0\].*float32 or float64"):
        magnitude_prune([np.ones((2, 2), np.int32)], 0.5)
    with pytest.raises(TypeError, match="numpy array"):
        magnitude_prune([[1.0, 2.0]], 0.5)
    with pytest.raises(ValueError, match="C-contiguous"):
        magnitude_prune([np.ones((4, 4), np.float32)[:, ::2]], 0.5)
    ro = np.ones((2, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        magnitude_prune(ro, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        magnitude_prune(np.array([1.0, np.nan]), 0.5)
    with pytest.raises(ValueError, match="same array twice"):
        magnitude_prune([w, w], 0.5)
    with pytest.raises(TypeError, match="model_or_arrays"):
        magnitude_prune({"w": w}, 0.5)
    with pytest.raises(TypeError, match="model_or_arrays"):
        sparsity("w")


def test_sparsity_counts_zeros():
    assert sparsity(np.array([0.0, 1.0, 0.0, 2.0])) == 0.5
    assert sparsity([np.zeros((2, 2)), np.ones(4)]) == 0.5
    with pytest.raises(ValueError, match="no weight"):
        sparsity([np.zeros(0)])


# ------------------------------------------------------------------------------ models
nn = pytest.importorskip("pyfastopt.nn")


def _model(seed=0, dtype=np.float32):
    m = nn.Sequential(
        nn.Linear(12, 20, seed=seed, dtype=dtype),
        nn.BatchNorm1d(20, dtype=dtype),
        nn.ReLU(),
        nn.Dropout(0.2, seed=seed + 1),
        nn.Linear(20, 16, activation="relu", seed=seed + 2, dtype=dtype),
        nn.Linear(16, 5, seed=seed + 3, dtype=dtype),
    )
    # a few training forwards give the BatchNorm non-trivial running statistics
    rng = np.random.default_rng(seed)
    for _ in range(3):
        m(rng.standard_normal((32, 12)).astype(dtype) * 2 + 1)
    return m


def test_model_unstructured_prunes_linear_weights_only():
    m = _model()
    before = m.state_dict()
    masks = magnitude_prune(m, 0.5, scope="global")
    assert masks.names == ["0.weight", "4.weight", "5.weight"]
    assert masks.weights[0] is m[0].weight and masks.grads[0] is m[0].grad_weight
    n = sum(m[i].weight.size for i in (0, 4, 5))
    assert masks.num_pruned == round(0.5 * n)
    assert sparsity(m) == masks.num_pruned / n
    after = m.state_dict()
    for key in before:  # biases, BatchNorm parameters and statistics are untouched
        if not key.endswith("weight") or key.startswith("1."):
            np.testing.assert_array_equal(after[key], before[key])


def test_model_masked_adamw_training_keeps_zeros(rng):
    m = _model()
    masks = magnitude_prune(m, 0.7)
    opt = masked(optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1), masks)
    x = rng.standard_normal((64, 12)).astype(np.float32)
    y = rng.integers(0, 5, 64)
    m.train()
    losses = []
    for _ in range(50):
        loss, dlogits = nn.cross_entropy(m(x), y)
        losses.append(loss)
        m.backward(dlogits)
        opt.step(m.gradients())
        for w, k in zip(masks.weights, masks):
            assert np.all(w[~k] == 0)
    assert losses[-1] < 0.8 * losses[0]  # it did learn
    assert sparsity(m) == pytest.approx(masks.num_pruned / masks.num_total)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_rows_shrink_model_and_match_masked_output(rng, scope):
    new = _model()
    m = copy.deepcopy(new)  # the original, to compare with
    norms0 = np.linalg.norm(m[0].weight.astype(np.float64), axis=1)
    norms4 = np.linalg.norm(m[4].weight.astype(np.float64), axis=1)
    dropout = new[3]
    assert magnitude_prune(new, 0.5, scope=scope, structured="rows") is new  # in place
    assert isinstance(new, nn.Sequential) and len(new) == len(m)
    assert new[3] is dropout  # unaffected layers are kept as they are
    if scope == "layer":
        keep0 = np.sort(np.argsort(norms0, kind="stable")[10:])
        keep4 = np.sort(np.argsort(norms4, kind="stable")[8:])
    else:
        allnorms = np.concatenate([norms0, norms4])
        pruned = np.argsort(allnorms, kind="stable")[:18]
        keep0 = np.setdiff1d(np.arange(20), pruned)
        keep4 = np.setdiff1d(np.arange(16), pruned - 20)
    assert keep0.size + keep4.size == 18
    l0, bn, l4, l5 = new[0], new[1], new[4], new[5]
    assert (l0.in_features, l0.out_features) == (12, keep0.size)
    assert l0.weight.shape == (keep0.size, 12) and l0.bias.shape == (keep0.size,)
    for name in ("weight", "bias", "running_mean", "running_var"):
        np.testing.assert_array_equal(getattr(bn, name), getattr(m[1], name)[keep0])
    assert bn.num_features == keep0.size
    assert l4.weight.shape == (keep4.size, keep0.size) and l4.activation == "relu"
    np.testing.assert_array_equal(l4.weight, m[4].weight[np.ix_(keep4, keep0)])
    assert l5.weight.shape == (5, keep4.size)
    np.testing.assert_array_equal(l5.weight, m[5].weight[:, keep4])
    np.testing.assert_array_equal(l5.bias, m[5].bias)
    assert count(new) < count(m)

    # the masked model: drop the removed neurons' outgoing weights in the original
    ref = copy.deepcopy(m)
    ref[4].weight[:, np.setdiff1d(np.arange(20), keep0)] = 0
    ref[5].weight[:, np.setdiff1d(np.arange(16), keep4)] = 0
    ref.eval()
    new.eval()
    x = rng.standard_normal((40, 12)).astype(np.float32)
    np.testing.assert_allclose(new(x), ref(x), rtol=1e-5, atol=1e-5)


def count(model):
    return sum(p.size for _, p in model.named_parameters())


def test_rows_model_keeps_mode_and_trains(rng):
    new = magnitude_prune(_model(), 0.3, structured="rows")
    assert new.training and all(layer.training for layer in new)
    opt = optim.AdamW(new.parameters(), lr=1e-2)
    x = rng.standard_normal((16, 12)).astype(np.float32)
    _, d = nn.cross_entropy(new(x), rng.integers(0, 5, 16))
    new.backward(d)
    opt.step(new.gradients())
    m = _model()
    m.eval()
    assert not magnitude_prune(m, 0.3, structured="rows").training


def test_rows_keep_one_neuron_per_layer():
    m = _model()
    new = magnitude_prune(copy.deepcopy(m), 1.0, scope="global", structured="rows")
    assert [new[0].out_features, new[4].out_features, new[5].out_features] == [1, 1, 5]
    new = magnitude_prune(copy.deepcopy(m), 1.0, scope="layer", structured="rows")
    assert [new[0].out_features, new[4].out_features] == [1, 1]
    same = magnitude_prune(copy.deepcopy(m), 0.0, structured="rows")
    for (k, a), (_, b) in zip(m.state_dict().items(), same.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_rows_model_errors():
    with pytest.raises(ValueError, match="at least two Linear"):
        magnitude_prune(nn.Sequential(nn.Linear(3, 4, seed=0)), 0.5, structured="rows")
    with pytest.raises(ValueError, match="needs a Sequential"):
        magnitude_prune(nn.Linear(3, 4, seed=0), 0.5, structured="rows")
    inner = nn.Sequential(nn.ReLU())
    bad = nn.Sequential(nn.Linear(3, 4, seed=0), inner, nn.Linear(4, 2, seed=1))
    with pytest.raises(ValueError, match=r"layer 1 .*not feature-wise"):
        magnitude_prune(bad, 0.5, structured="rows")
    with pytest.raises(ValueError, match="no Linear"):
        magnitude_prune(nn.Sequential(nn.ReLU()), 0.5)
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune(_model(), 1.5, structured="rows")
