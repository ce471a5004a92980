"""PyTorch-parity leftovers of the optimizers' arguments (issue 16 point 8).

* ``Adam(decoupled_weight_decay=True)`` (torch >= 2.6) behaves as AdamW; the flag is a
  per-group hyper-parameter, in ``param_groups`` and ``state_dict``, with torch's loading
  rules.
* lr / weight_decay / betas accept any real number ``float()`` converts: NumPy scalars and
  0-d arrays (torch accepts tensors). The 0-d array cases rely on the shared argument
  checks of pyfastopt/_validate.py (branch health-py).
"""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import optim

SHAPES = [(7,), (33, 5), (0,), (1000,)]


def _params(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grads(steps, dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


def _run(make, steps=8, dtype=np.float32):
    params = _params(dtype)
    opt = make(params)
    for g in _grads(steps, dtype):
        opt.step(g)
    return params, opt


# ----------------------------------------------------------- decoupled_weight_decay
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kw",
    [
        {"weight_decay": 0.1},
        {"weight_decay": 0.05, "amsgrad": True, "maximize": True, "l1": 0.01},
        {"weight_decay": 0.02, "state_dtype": "bfloat16"},
    ],
)
def test_adam_decoupled_is_adamw_bit_for_bit(simd, dtype, kw):
    if kw.get("state_dtype") and dtype != np.float32:
        pytest.skip("bfloat16 moments need float32 parameters")
    a, opt_a = _run(
        lambda p: optim.Adam(p, lr=0.01, decoupled_weight_decay=True, **kw), dtype=dtype
    )
    w, opt_w = _run(lambda p: optim.AdamW(p, lr=0.01, **kw), dtype=dtype)
    c, _ = _run(lambda p: optim.Adam(p, lr=0.01, **kw), dtype=dtype)
    for x, y in zip(a, w):
        assert x.tobytes() == y.tobytes()
    assert any(x.tobytes() != z.tobytes() for x, z in zip(a, c) if x.size)  # coupled differs
    assert opt_a.param_groups[0]["decoupled_weight_decay"] is True
    assert opt_w.param_groups[0]["decoupled_weight_decay"] is True
    assert optim.Adam(_params()).param_groups[0]["decoupled_weight_decay"] is False


def test_decoupled_is_keyword_only_and_a_bool():
    with pytest.raises(TypeError):
        optim.Adam(_params(), 1e-3, (0.9, 0.999), 1e-8, 0.0, False, False, 0.0, None, True)
    for bad in ("yes", None, 1):
        with pytest.raises(TypeError, match="decoupled_weight_decay"):
            optim.Adam(_params(), decoupled_weight_decay=bad)
    with pytest.raises(TypeError):
        optim.AdamW(_params(), decoupled_weight_decay=True)  # as torch's AdamW


def test_decoupled_per_group():
    a, b = _params(seed=3)[:2]
    a_ref, b_ref = a.copy(), b.copy()
    opt = optim.Adam(
        [{"params": [a], "decoupled_weight_decay": True}, {"params": [b]}],
        lr=0.01,
        weight_decay=0.1,
    )
    ref_w = optim.AdamW([a_ref], lr=0.01, weight_decay=0.1)
    ref_c = optim.Adam([b_ref], lr=0.01, weight_decay=0.1)
    rng = np.random.default_rng(4)
    for _ in range(5):
        ga, gb = rng.standard_normal(a.shape).astype(a.dtype), rng.standard_normal(b.shape)
        gb = gb.astype(b.dtype)
        opt.step([ga, gb])
        ref_w.step([ga])
        ref_c.step([gb])
    assert a.tobytes() == a_ref.tobytes() and b.tobytes() == b_ref.tobytes()


def test_decoupled_travels_with_checkpoints(tmp_path):
    params, opt = _run(
        lambda p: optim.Adam(p, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)
    )
    sd = opt.state_dict()
    assert sd["param_groups"][0]["decoupled_weight_decay"] is True
    optim.save_state_dict(sd, tmp_path / "c.npz")
    resumed = [p.copy() for p in params]
    opt2 = optim.Adam(resumed, lr=0.01, weight_decay=0.1)  # built coupled ...
    opt2.load_state_dict(optim.load_state_dict_file(tmp_path / "c.npz"))  # ... loads decoupled
    assert opt2.param_groups[0]["decoupled_weight_decay"] is True
    for g in _grads(4, seed=9):
        opt.step(g)
        opt2.step(g)
    for x, y in zip(params, resumed):
        assert x.tobytes() == y.tobytes()


def test_loading_rules_match_torch():
    """A saved group without the key is coupled (pre-2.6 checkpoints); AdamW stays
    decoupled whatever it loads; Adam loading an AdamW state dict becomes decoupled."""
    _, adam = _run(lambda p: optim.Adam(p, weight_decay=0.1))
    _, adamw = _run(lambda p: optim.AdamW(p))
    old = adam.state_dict()
    for g in old["param_groups"]:
        del g["decoupled_weight_decay"]
    fresh = optim.Adam(_params(), decoupled_weight_decay=True)
    fresh.load_state_dict(old)
    assert fresh.param_groups[0]["decoupled_weight_decay"] is False
    w = optim.AdamW(_params())
    w.load_state_dict(adam.state_dict())
    assert w.param_groups[0]["decoupled_weight_decay"] is True
    a = optim.Adam(_params())
    a.load_state_dict(adamw.state_dict())
    assert a.param_groups[0]["decoupled_weight_decay"] is True
    torch = pytest.importorskip("torch")
    t = [torch.zeros(3, requires_grad=True)]
    t_old = torch.optim.Adam(t, weight_decay=0.1).state_dict()
    for g in t_old["param_groups"]:
        del g["decoupled_weight_decay"]
    t_fresh = torch.optim.Adam(t, decoupled_weight_decay=True)
    t_fresh.load_state_dict(t_old)
    assert t_fresh.param_groups[0]["decoupled_weight_decay"] is False
    t_w = torch.optim.AdamW(t)
    t_w.load_state_dict(torch.optim.Adam(t, weight_decay=0.1).state_dict())
    assert t_w.param_groups[0]["decoupled_weight_decay"] is True


def test_decoupled_like_torch():
    torch = pytest.importorskip("torch")
    params = _params(np.float64)
    tparams = [torch.tensor(p.copy()) for p in params]
    kw = {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "decoupled_weight_decay": True}
    opt = optim.Adam(params, **kw)
    topt = torch.optim.Adam(tparams, foreach=False, **kw)
    for g in _grads(20, np.float64):
        opt.step(g)
        for t, gi in zip(tparams, g):
            t.grad = torch.tensor(gi)
        topt.step()
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p, t.numpy(), rtol=1e-12, atol=1e-13)
    ours = set(opt.state_dict()["param_groups"][0])
    theirs = set(topt.state_dict()["param_groups"][0])
    # torch's keys minus its implementation switches (foreach, fused, ...), plus our l1
    assert ours - {"l1"} == theirs - {"foreach", "capturable", "differentiable", "fused"}


# --------------------------------------------------- real numbers float() converts
NUMBERS = {
    "numpy float32": np.float32,
    "numpy float64": np.float64,
    "0-d float64 array": lambda v: np.array(v),
    "0-d float32 array": lambda v: np.array(v, np.float32),
}
CASES = [
    ("SGD", {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.01}),
    ("AdamW", {"lr": 0.01, "betas": (0.85, 0.995), "weight_decay": 0.02}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.01}),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.01}),
]


def _convert(kw, conv):
    out = {}
    for k, v in kw.items():
        out[k] = tuple(conv(b) for b in v) if k == "betas" else conv(v)
    return out


@pytest.mark.parametrize("number", sorted(NUMBERS))
@pytest.mark.parametrize(("cls", "kw"), CASES, ids=[c[0] for c in CASES])
def test_hyperparameters_accept_numpy_numbers(cls, kw, number):
    """The trajectory is the one the same values as Python floats give (float32 values
    are converted exactly, so compare with float(that value))."""
    conv = NUMBERS[number]
    np_kw = _convert(kw, conv)
    float_kw = {
        k: tuple(float(b) for b in v) if k == "betas" else float(v) for k, v in np_kw.items()
    }
    ours, opt = _run(lambda p: getattr(optim, cls)(p, **np_kw))
    ref, _ = _run(lambda p: getattr(optim, cls)(p, **float_kw))
    for x, y in zip(ours, ref):
        assert x.tobytes() == y.tobytes()
    group = opt.param_groups[0]
    assert type(group["lr"]) is float and type(group["weight_decay"]) is float
    if "betas" in group:
        assert all(type(b) is float for b in group["betas"])


@pytest.mark.parametrize("number", sorted(NUMBERS))
def test_group_values_set_later_accept_numpy_numbers(number):
    """A scheduler or the user may put a NumPy number in a group between steps."""
    conv = NUMBERS[number]
    params, opt = _run(lambda p: optim.Adam(p, lr=0.01))
    ref = [p.copy() for p in params]
    opt_ref = optim.Adam(ref, lr=0.01)
    opt_ref.load_state_dict(opt.state_dict())
    opt.param_groups[0]["lr"] = conv(0.005)
    opt.param_groups[0]["betas"] = (conv(0.5), conv(0.9))
    opt_ref.param_groups[0]["lr"] = float(conv(0.005))
    opt_ref.param_groups[0]["betas"] = (float(conv(0.5)), float(conv(0.9)))
    for g in _grads(3, seed=5):
        opt.step(g)
        opt_ref.step(g)
    for x, y in zip(params, ref):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("bad", [np.array(0.1 + 0j), 0.1 + 0j, True, np.bool_(True), "0.1", None])
def test_non_real_hyperparameters_are_refused(bad):
    """Complex numbers, bools and strings are not real numbers, whatever float() does."""
    with pytest.raises(TypeError, match="lr"):
        optim.Adam(_params(), lr=bad)
