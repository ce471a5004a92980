"""pyfastopt.optim against the float64 NumPy oracle (tests/optim_reference.py) and, where
it is installed, torch.optim.

One table, ``OPTIMIZERS_UNDER_TEST``, drives every invariant: trajectories against the
reference (float64 tight, float32 with an error budget derived below), learning-rate
changes, param groups, bitwise identity across SIMD levels and thread counts, checkpoints,
NaN/inf propagation and step-for-step agreement with torch. Input validation, 0-size
tensors, many tiny tensors and the bfloat16 state follow.

Tolerances
----------
float64: the kernels and the reference perform the same equations in the same precision,
so after 120 steps they differ by a few hundred ulps at most; ``rtol=1e-10`` (plus
``atol=1e-12`` for elements that pass near zero, where the error is relative to the
largest magnitude on the trajectory, not the final one) is six orders of magnitude below
any change of equation (a misplaced eps, an off-by-one bias correction).

float32: the float64 reference runs from the same float32 initial values and float32
gradients (exact in float64). Each float32 step rounds ``p`` (and the decay multiply) to
about one ulp of ``|p|`` and the update ``u`` to a few ulps of ``|u|``; the state the
update reads (moments, accumulators) carries a relative error that grows at most like
the number of steps it remembers (1/(1-beta), or t for Adagrad's sum). Summed over the
trajectory, elementwise:

    |p32 - p64| <= C * eps32 * (sum_t |p_t| + 10 * sum_t |u_t|)

with the sums taken along the float64 trajectory. Running the reference itself in
float32 arithmetic (a stand-in for any correctly rounded float32 implementation) uses at
most 0.42 of the bound with C = 1 over every configuration and 3 seeds; the tests use
C = 2. A wrong equation changes ``p`` by O(sum_t |u_t|), i.e. 10^4-10^5 times the
budget (a sign error on l1 alone moves SGD by 2*lr*l1*steps = 4.8e-2 here, against a
budget of ~4e-5).
"""

from __future__ import annotations

import copy
import importlib.util
import numbers
import re

import numpy as np
import optim_reference as ref
import pytest
from conftest import DTYPES, SIMD_LEVELS

import pyfastopt
from pyfastopt import _core

# Skip only while the optimizer module does not exist yet; a broken import must fail.
if importlib.util.find_spec("pyfastopt.optim") is None:  # pragma: no cover
    pytest.skip("pyfastopt.optim is not built yet", allow_module_level=True)
import pyfastopt.optim as optim

if not hasattr(optim, "Adam"):  # pragma: no cover
    pytest.skip("pyfastopt.optim has no optimizers yet", allow_module_level=True)


# ---------------------------------------------------------------- the table

# (name, class name, constructor kwargs). Every option of every optimizer appears at least
# once, alone and in combination.
OPTIMIZERS_UNDER_TEST = [
    ("sgd", "SGD", {"lr": 0.01}),
    ("sgd_momentum", "SGD", {"lr": 0.01, "momentum": 0.9}),
    ("sgd_momentum_dampening", "SGD", {"lr": 0.01, "momentum": 0.9, "dampening": 0.3}),
    ("sgd_nesterov", "SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    ("sgd_weight_decay", "SGD", {"lr": 0.01, "weight_decay": 0.1}),
    ("sgd_weight_decay_l1", "SGD", {"lr": 0.01, "weight_decay": 0.1, "l1": 0.02}),
    ("sgd_maximize", "SGD", {"lr": 0.01, "maximize": True}),
    (
        "sgd_nesterov_wd_maximize",
        "SGD",
        {"lr": 0.01, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05, "maximize": True},
    ),
    (
        "sgd_momentum_l1_maximize",
        "SGD",
        {"lr": 0.01, "momentum": 0.9, "dampening": 0.1, "l1": 0.02, "maximize": True},
    ),
    ("adam", "Adam", {}),
    ("adam_amsgrad", "Adam", {"lr": 0.01, "amsgrad": True}),
    ("adam_weight_decay", "Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adam_l1", "Adam", {"lr": 0.01, "l1": 0.01}),
    ("adam_maximize", "Adam", {"lr": 0.01, "maximize": True}),
    ("adam_betas_eps", "Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6}),
    (
        "adam_everything",
        "Adam",
        {
            "lr": 0.01,
            "betas": (0.85, 0.995),
            "eps": 1e-7,
            "weight_decay": 0.1,
            "amsgrad": True,
            "maximize": True,
            "l1": 0.01,
        },
    ),
    (
        "adam_decoupled",  # torch >= 2.6: Adam(decoupled_weight_decay=True) is AdamW
        "Adam",
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
    (
        "adam_decoupled_amsgrad_maximize",
        "Adam",
        {"weight_decay": 0.05, "amsgrad": True, "maximize": True, "decoupled_weight_decay": True},
    ),
    ("adamw", "AdamW", {}),
    ("adamw_amsgrad", "AdamW", {"lr": 0.01, "amsgrad": True}),
    ("adamw_wd_maximize", "AdamW", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
    ("adamw_l1", "AdamW", {"lr": 0.01, "weight_decay": 0.1, "l1": 0.01, "amsgrad": True}),
    ("rmsprop", "RMSprop", {}),
    ("rmsprop_centered", "RMSprop", {"lr": 1e-3, "centered": True}),
    ("rmsprop_momentum", "RMSprop", {"lr": 1e-3, "momentum": 0.9}),
    (
        "rmsprop_centered_momentum_wd",
        "RMSprop",
        {"lr": 1e-3, "centered": True, "momentum": 0.9, "weight_decay": 0.1},
    ),
    (
        "rmsprop_alpha_eps_maximize",
        "RMSprop",
        {"lr": 1e-3, "alpha": 0.9, "eps": 1e-6, "maximize": True},
    ),
    (
        "rmsprop_momentum_l1_maximize",
        "RMSprop",
        {"lr": 1e-3, "momentum": 0.5, "l1": 0.01, "maximize": True},
    ),
    ("adagrad", "Adagrad", {}),
    ("adagrad_lr_decay", "Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ("adagrad_initial_accumulator", "Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5}),
    (
        "adagrad_wd_l1_maximize",
        "Adagrad",
        {"lr": 0.1, "weight_decay": 0.1, "l1": 0.01, "maximize": True, "eps": 1e-6},
    ),
    (
        "adagrad_everything",
        "Adagrad",
        {
            "lr": 0.1,
            "lr_decay": 0.02,
            "initial_accumulator_value": 0.1,
            "weight_decay": 0.05,
            "eps": 1e-8,
        },
    ),
]

ROWS = [pytest.param(cls, kw, id=name) for name, cls, kw in OPTIMIZERS_UNDER_TEST]
# torch.optim has every option but l1
TORCH_ROWS = [
    pytest.param(cls, kw, id=name) for name, cls, kw in OPTIMIZERS_UNDER_TEST if not kw.get("l1")
]
BF16_ROWS = [
    pytest.param(cls, kw, id=name)
    for name, cls, kw in OPTIMIZERS_UNDER_TEST
    if cls in ("Adam", "AdamW")
]
CLASSES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]

SHAPES = [(0,), (1,), (7,), (33, 5), (1000,), (4, 4, 17)]
# ~20 tensors, 0, 1, odd sizes and three above the 64K single-thread cutoff
BIG_SIZES = [0, 1, 70_001, 3, 17, 0, 100_003, 5, 64, 65, 1, 129, 131_072, 2, 31, 33, 7, 1000, 8, 9]
EPS32 = float(np.finfo(np.float32).eps)
STEPS = 120


# ---------------------------------------------------------------- helpers


def make(cls, params, kw):
    return getattr(optim, cls)(params, **kw)


def make_ref(cls, params64, kw):
    return ref.REFERENCES[cls](params64, **kw)


def lr_of(cls, kw):
    return kw.get("lr", {"SGD": 0.01, "Adam": 1e-3, "AdamW": 1e-3}.get(cls, 1e-2))


def init_params(rng, shapes, dtype):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grad_stream(seed, shapes, dtype, steps):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield [rng.standard_normal(s).astype(dtype) for s in shapes]


def to64(arrays):
    return [np.array(a, dtype=np.float64) for a in arrays]


def leaves(obj, path=""):
    """Every leaf of a (nested) state dict as (path, value), in a deterministic order."""
    if isinstance(obj, dict):
        out = []
        for k in sorted(obj, key=repr):
            out += leaves(obj[k], f"{path}/{k}")  # 0 and "0" alike (JSON keys)
        return out
    if isinstance(obj, (list, tuple)):
        out = []
        for i, v in enumerate(obj):
            out += leaves(v, f"{path}[{i}]")
        return out
    return [(path, obj)]


def fingerprint(params, sd):
    """Bytes of every param and every state leaf (dtype, shape and content)."""
    parts = [(p.dtype.str, p.shape, p.tobytes()) for p in params]
    for path, v in leaves(sd):
        if isinstance(v, np.ndarray):
            parts.append((path, v.dtype.str, v.shape, v.tobytes()))
        else:
            parts.append((path, repr(v)))
    return parts


def param_state(sd, i):
    """Per-parameter state of flat parameter ``i`` (torch layout: sd["state"][i])."""
    state = sd["state"]
    return state[i] if i in state else state[str(i)]


def assert_same_nonfinite(got, want, what):
    for name, f in (("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        bad = np.flatnonzero(f(got) != f(want))
        assert bad.size == 0, f"{what}: {name} positions differ at {bad[:10]}"


def assert_close(got, want, rtol, atol, what):
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert_same_nonfinite(got64, want64, what)
    fin = np.isfinite(want64)
    err = np.abs(got64[fin] - want64[fin])
    tol = atol + rtol * np.abs(want64[fin])
    if err.size and not np.all(err <= tol):
        k = int(np.argmax(err - tol))
        raise AssertionError(
            f"{what}: {int(np.sum(err > tol))}/{err.size} elements off; worst "
            f"got {got64[fin][k]!r} want {want64[fin][k]!r} (|diff| {err[k]:.3e}, "
            f"tol {tol[k]:.3e}, rel {err[k] / max(abs(want64[fin][k]), 1e-300):.3e})"
        )


def assert_within_budget(got, want, budget, what):
    """|got - want| <= budget elementwise (budget from the float32 error model)."""
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got64 - want64)
    if err.size and not np.all(err <= budget):
        k = int(np.argmax(err - budget))
        raise AssertionError(
            f"{what}: {int(np.sum(err > budget))}/{err.size} elements off; worst "
            f"got {got64.flat[k]!r} want {want64.flat[k]!r} (|diff| {err.flat[k]:.3e}, "
            f"budget {budget.flat[k]:.3e}, |diff|/sum|u| "
            f"{err.flat[k] / max(budget.flat[k], 1e-300):.2f} x budget)"
        )


class Budget:
    """Accumulates sum_t |p_t| and sum_t |u_t| along the float64 reference trajectory."""

    def __init__(self, params64):
        self.p = [np.zeros(p.shape) for p in params64]
        self.u = [np.zeros(p.shape) for p in params64]

    def add(self, before, after):
        for i, (b, a) in enumerate(zip(before, after)):
            self.p[i] += np.abs(a)
            self.u[i] += np.abs(a - b)

    def f32(self, i, c=2.0):
        return c * EPS32 * (self.p[i] + 10.0 * self.u[i]) + 1e-30

    def bf16(self, i):
        # two correctly rounded bfloat16 stores of the same moment can differ by one
        # bfloat16 ulp (2^-8 relative); the update reads m / sqrt(v): <= 1.5 * 2^-8 of |u|
        # per step, plus the float32 budget for everything else.
        return 1.5 * 2.0**-8 * self.u[i] + self.f32(i)


def run_pair(
    cls, kw, dtype, shapes, steps, seed, lr_schedule=None, groups=None, check_every_step=False
):
    """Run pyfastopt and the float64 reference side by side; return both and the budget."""
    rng = np.random.default_rng(seed)
    params = init_params(rng, shapes, dtype)
    params64 = to64(params)
    if groups is None:
        opt, r = make(cls, params, kw), make_ref(cls, params64, kw)
    else:
        cut = groups["cut"]
        opt = make(
            cls,
            [{"params": params[:cut], **groups["g0"]}, {"params": params[cut:], **groups["g1"]}],
            kw,
        )
        r = make_ref(
            cls,
            [
                {"params": params64[:cut], **groups["g0"]},
                {"params": params64[cut:], **groups["g1"]},
            ],
            kw,
        )
    budget = Budget(params64)
    for k, grads in enumerate(grad_stream(seed + 1, shapes, dtype, steps)):
        if lr_schedule is not None:
            lr = lr_schedule(k)
            opt.param_groups[0]["lr"] = lr
            r.param_groups[0]["lr"] = lr
        before = [p.copy() for p in r.params]
        opt.step(grads)
        r.step(to64(grads))
        budget.add(before, r.params)
        if check_every_step:
            compare(params, r.params, budget, dtype, f"step {k + 1}")
    return params, r, budget


def compare(params, ref_params, budget, dtype, what=""):
    for i, (p, q) in enumerate(zip(params, ref_params)):
        assert p.dtype == dtype, f"param {i} changed dtype to {p.dtype}"
        if dtype == np.float64:
            assert_close(p, q, rtol=1e-10, atol=1e-12, what=f"{what} param {i} {p.shape}")
        else:
            assert_within_budget(p, q, budget.f32(i), f"{what} param {i} {p.shape}")


# ---------------------------------------------------------------- a. trajectories


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_matches_reference(cls, kw, dtype):
    params, r, budget = run_pair(cls, kw, dtype, SHAPES, STEPS, seed=11)
    compare(params, r.params, budget, dtype, f"{cls}{kw} after {STEPS} steps")


@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_float32_every_step(cls, kw):
    """The float32 budget holds after every step, not only at the end."""
    run_pair(cls, kw, np.float32, SHAPES[:4], 30, seed=5, check_every_step=True)


# ---------------------------------------------------------------- b. learning rate changes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_lr_changes_between_steps(cls, kw, dtype):
    base = lr_of(cls, kw)
    schedule = [base * f for f in (1.0, 0.1, 3.0, 0.0, 0.5, 2.0, 1.0, 0.25)]
    run_pair(
        cls,
        kw,
        dtype,
        SHAPES[:4],
        40,
        seed=21,
        lr_schedule=lambda k: schedule[k % len(schedule)],
        check_every_step=True,
    )


# ---------------------------------------------------------------- c. param groups


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_param_groups(cls, kw, dtype):
    base = lr_of(cls, kw)
    groups = {
        "cut": 3,
        "g0": {"lr": base * 0.5, "weight_decay": 0.05},
        "g1": {"lr": base * 2.0, "l1": 0.003},
    }
    params, r, budget = run_pair(cls, kw, dtype, SHAPES, 60, seed=31, groups=groups)
    compare(params, r.params, budget, dtype, "groups")


@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_param_groups_visible_and_defaulted(cls, kw):
    a, b = np.zeros(3), np.zeros(4)
    opt = make(cls, [{"params": [a], "lr": 0.125}, {"params": [b]}], kw)
    assert len(opt.param_groups) == 2
    assert opt.param_groups[0]["lr"] == 0.125
    assert opt.param_groups[1]["lr"] == lr_of(cls, kw)
    for key in ("weight_decay", "l1", "maximize"):
        assert key in opt.param_groups[1], key


@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_mixed_dtypes_in_one_optimizer(cls, kw):
    rng = np.random.default_rng(41)
    params = [
        rng.standard_normal(s).astype(d) for s, d in zip(SHAPES, [np.float32, np.float64] * 3)
    ]
    params64 = to64(params)
    opt, r = make(cls, params, kw), make_ref(cls, params64, kw)
    budget = Budget(params64)
    for _ in range(20):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        before = [p.copy() for p in r.params]
        opt.step(grads)
        r.step(to64(grads))
        budget.add(before, r.params)
    for i, (p, q) in enumerate(zip(params, r.params)):
        assert p.dtype == (np.float32, np.float64)[i % 2]
        if p.dtype == np.float64:
            assert_close(p, q, rtol=1e-10, atol=1e-12, what=f"mixed param {i}")
        else:
            assert_within_budget(p, q, budget.f32(i), f"mixed param {i}")


# ---------------------------------------------------------------- d. bitwise determinism


def _determinism_case(cls, kw, dtype, steps=3):
    rng = np.random.default_rng(51)
    p0 = [rng.standard_normal(n).astype(dtype) for n in BIG_SIZES]
    grads = [[rng.standard_normal(n).astype(dtype) for n in BIG_SIZES] for _ in range(steps)]
    results = {}
    previous = _core.config.get_simd_level()
    try:
        for level in SIMD_LEVELS:
            _core.config.set_simd_level(level)
            for t in (1, 2, 3):
                with pyfastopt.threads(t):
                    params = [p.copy() for p in p0]
                    opt = make(cls, params, kw)
                    for g in grads:
                        opt.step(g)
                    results[(level, t)] = fingerprint(params, opt.state_dict())
    finally:
        _core.config.set_simd_level(previous)
    first_key = next(iter(results))
    for key, fp in results.items():
        assert len(fp) == len(results[first_key])
        for a, b in zip(fp, results[first_key]):
            assert a == b, f"{key} differs from {first_key} at {a[0]}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_bitwise_across_simd_and_threads(cls, kw, dtype):
    _determinism_case(cls, kw, dtype)


# ---------------------------------------------------------------- e. checkpoints


def _checkpoint_case(cls, kw, dtype, tmp_path):
    rng = np.random.default_rng(61)
    params = init_params(rng, SHAPES, dtype)
    opt = make(cls, params, kw)
    stream = list(grad_stream(62, SHAPES, dtype, 20))
    for g in stream[:10]:
        opt.step(g)
    opt.param_groups[0]["lr"] = lr_of(cls, kw) * 0.5  # must travel with the checkpoint
    sd = copy.deepcopy(opt.state_dict())  # a snapshot, whether or not it aliases opt

    resumed = [p.copy() for p in params]
    opt2 = make(cls, resumed, kw)
    opt2.load_state_dict(sd)

    path = tmp_path / "opt.npz"
    optim.save_state_dict(sd, path)
    with np.load(path, allow_pickle=False) as z:  # a plain npz, no pickled objects
        assert len(z.files) > 0
    sd_file = optim.load_state_dict_file(path)
    from_file = [p.copy() for p in params]
    opt3 = make(cls, from_file, kw)
    opt3.load_state_dict(sd_file)

    # the file keeps every array's dtype and an integer step
    flat_mem = {path_: v for path_, v in leaves(sd)}
    flat_file = {path_: v for path_, v in leaves(sd_file)}
    arrays_mem = {k: v for k, v in flat_mem.items() if isinstance(v, np.ndarray)}
    arrays_file = {k: v for k, v in flat_file.items() if isinstance(v, np.ndarray)}
    assert arrays_mem.keys() == arrays_file.keys()
    for k, v in arrays_mem.items():
        assert arrays_file[k].dtype == v.dtype, k
        assert arrays_file[k].tobytes() == v.tobytes(), k
    steps = [v for k, v in flat_file.items() if k.endswith("/step")]
    assert steps, "no 'step' entry in the loaded state dict"
    for s in steps:
        assert isinstance(s, numbers.Integral) and not isinstance(s, bool), repr(s)
        assert int(s) == 10

    for g in stream[10:]:
        opt.step(g)
        opt2.step(g)
        opt3.step(g)
    assert fingerprint(params, opt.state_dict()) == fingerprint(resumed, opt2.state_dict())
    assert fingerprint(params, opt.state_dict()) == fingerprint(from_file, opt3.state_dict())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_state_dict_round_trip(cls, kw, dtype, tmp_path):
    _checkpoint_case(cls, kw, dtype, tmp_path)


@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_state_dict_keeps_state_dtype(cls, kw):
    for dtype in DTYPES:
        params = [np.ones(5, dtype), np.ones((2, 3), dtype)]
        opt = make(cls, params, kw)
        opt.step([np.ones(5, dtype), np.ones((2, 3), dtype)])
        for path, v in leaves(opt.state_dict()):
            if isinstance(v, np.ndarray) and v.ndim > 0 and v.dtype.kind == "f":
                assert v.dtype == dtype, path


# ---------------------------------------------------------------- f. NaN / inf


def _torch_run(torch, cls, kw, p0, grad_list, per_step=None):
    tparams = [torch.tensor(p.copy()) for p in p0]
    topt = getattr(torch.optim, cls)(tparams, foreach=False, **kw)
    for k, grads in enumerate(grad_list):
        for t, g in zip(tparams, grads):
            t.grad = torch.tensor(g.copy())
        topt.step()
        if per_step is not None:
            per_step(k, [t.detach().numpy() for t in tparams], topt)
    return tparams, topt


def _nan_inf_grads(seed, shapes, dtype, steps, bad_steps=(3, 9)):
    out = []
    for k, grads in enumerate(grad_stream(seed, shapes, dtype, steps)):
        if k in bad_steps:
            for g in grads:
                flat = g.reshape(-1)
                for pos, val in ((1, np.nan), (2, np.inf), (5, -np.inf), (11, np.inf)):
                    if flat.size > pos + k:
                        flat[pos + k] = val
        out.append(grads)
    return out


@pytest.mark.parametrize(("cls", "kw"), TORCH_ROWS)
def test_nan_inf_propagate_like_torch(cls, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(71)
    p0 = init_params(rng, SHAPES, np.float64)
    grad_list = _nan_inf_grads(72, SHAPES, np.float64, 15)
    params = [p.copy() for p in p0]
    opt = make(cls, params, kw)
    for g in grad_list:
        opt.step(g)
    tparams, topt = _torch_run(torch, cls, kw, p0, grad_list)
    sd = opt.state_dict()
    for i, (p, t) in enumerate(zip(params, tparams)):
        assert_close(p, t.detach().numpy(), rtol=1e-12, atol=1e-13, what=f"param {i}")
        tstate = topt.state[t]
        mine = param_state(sd, i)
        for key, tv in tstate.items():
            if key == "step":
                assert int(mine[key]) == int(tv)
            elif tv is not None:
                assert_close(
                    np.asarray(mine[key]),
                    tv.numpy(),
                    rtol=1e-12,
                    atol=1e-13,
                    what=f"state {key} of param {i}",
                )


@pytest.mark.parametrize(("cls", "kw"), [r for r in ROWS if r.values[1].get("l1")])
def test_nan_inf_l1_rows_like_reference(cls, kw):
    """l1 rows have no torch counterpart: params follow the (torch-validated) oracle."""
    rng = np.random.default_rng(73)
    p0 = init_params(rng, SHAPES, np.float64)
    grad_list = _nan_inf_grads(74, SHAPES, np.float64, 15)
    params = [p.copy() for p in p0]
    opt, r = make(cls, params, kw), make_ref(cls, to64(p0), kw)
    for g in grad_list:
        opt.step(g)
        r.step(g)
    for i, (p, q) in enumerate(zip(params, r.params)):
        assert_close(p, q, rtol=1e-10, atol=1e-12, what=f"param {i}")


def test_nan_inf_reach_every_element(simd):
    """Non-finite gradients in vector bodies and scalar tails, every SIMD level."""
    for cls in CLASSES:
        for dtype in DTYPES:
            n = 67
            p = np.ones(n, dtype)
            g = np.zeros(n, dtype)
            g[::3] = np.nan
            kw = {"lr": 0.1} if cls == "SGD" else {}
            make(cls, [p], kw).step([g])
            assert np.all(np.isnan(p[::3])), (cls, dtype)
            mask = np.ones(n, bool)
            mask[::3] = False
            assert np.all(np.isfinite(p[mask])), (cls, dtype)


# ---------------------------------------------------------------- g. against torch.optim


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cls", "kw"), TORCH_ROWS)
def test_step_for_step_like_torch(cls, kw, dtype):
    torch = pytest.importorskip("torch")
    steps = 50
    rng = np.random.default_rng(81)
    p0 = init_params(rng, SHAPES, dtype)
    grad_list = list(grad_stream(82, SHAPES, dtype, steps))
    params = [p.copy() for p in p0]
    opt = make(cls, params, kw)
    r = make_ref(cls, to64(p0), kw)
    budget = Budget(r.params)

    def check(k, tparams, _topt):
        opt.step(grad_list[k])
        before = [q.copy() for q in r.params]
        r.step(to64(grad_list[k]))
        budget.add(before, r.params)
        for i, (p, t) in enumerate(zip(params, tparams)):
            what = f"step {k + 1} param {i} {p.shape}"
            if dtype == np.float64:
                assert_close(p, t, rtol=1e-12, atol=1e-13, what=what)
            else:
                # torch and pyfastopt each stay within the float32 budget of the exact
                # trajectory, so they stay within twice the budget of each other
                assert_within_budget(p, t, 2.0 * budget.f32(i), what)

    _torch_run(torch, cls, kw, p0, grad_list, per_step=check)


# ---------------------------------------------------------------- h. bad input


def _shape_re(shape):
    return r"[\(\[]" + r",\s*".join(str(s) for s in shape) + r",?[\)\]]"


def _bad_setup(cls):
    rng = np.random.default_rng(91)
    params = [rng.standard_normal(4), rng.standard_normal(7), rng.standard_normal((3, 5))]
    kw = {"lr": 0.01, "momentum": 0.9} if cls == "SGD" else {}
    opt = make(cls, params, kw)
    r = make_ref(cls, to64(params), kw)
    for g in grad_stream(92, [p.shape for p in params], np.float64, 2):
        opt.step(g)
        r.step(g)
    return params, opt, r


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_grads_touch_nothing(cls):
    params, opt, r = _bad_setup(cls)
    good = [np.ones(4), np.ones(7), np.ones((3, 5))]
    before = fingerprint(params, opt.state_dict())
    cases = [
        (ValueError, None, good[:2]),
        (ValueError, None, [*good, np.ones(2)]),
        (ValueError, None, []),
        (
            ValueError,
            [r"\b2\b", _shape_re((5, 3)), _shape_re((3, 5))],
            [good[0], good[1], np.ones((5, 3))],
        ),
        (
            ValueError,
            [r"\b2\b", _shape_re((15,)), _shape_re((3, 5))],
            [good[0], good[1], np.ones(15)],
        ),
        (ValueError, [r"\b1\b", _shape_re((6,)), _shape_re((7,))], [good[0], np.ones(6), good[2]]),
        ((TypeError, ValueError), None, [good[0], good[1], np.ones((3, 5), np.int64)]),
        ((TypeError, ValueError), None, [good[0], good[1], np.ones((3, 5), np.float32)]),
        ((TypeError, ValueError), None, [good[0], good[1], np.ones((3, 5), np.complex128)]),
    ]
    for exc, patterns, grads in cases:
        with pytest.raises(exc) as info:
            opt.step(grads)
        for pat in patterns or ():
            assert re.search(pat, str(info.value)), (pat, str(info.value))
        assert fingerprint(params, opt.state_dict()) == before, (
            f"{cls}: a rejected step changed params or state ({str(info.value)!r})"
        )
    # the step counter did not move either: the next good step matches the reference
    g = next(grad_stream(93, [p.shape for p in params], np.float64, 1))
    opt.step(g)
    r.step(g)
    for i, (p, q) in enumerate(zip(params, r.params)):
        assert_close(p, q, rtol=1e-10, atol=1e-12, what=f"param {i} after rejected steps")


def _readonly(n):
    a = np.zeros(n)
    a.setflags(write=False)
    return a


def _twice(a):
    return [a, np.zeros(2), a]


BAD_PARAMS = {
    "strided": lambda: [np.zeros(3), np.zeros(20)[::2]],
    "fortran": lambda: [np.asfortranarray(np.zeros((4, 5)))],
    "read-only": lambda: [np.zeros(3), _readonly(5)],
    "empty list": lambda: [],
    "twice": lambda: _twice(np.zeros(3)),
    "twice across groups": lambda: (lambda a: [{"params": [a]}, {"params": [np.zeros(2), a]}])(
        np.zeros(3)
    ),
}


@pytest.mark.parametrize("what", list(BAD_PARAMS))
@pytest.mark.parametrize("cls", CLASSES)
def test_bad_params_at_construction(cls, what):
    kw = {"lr": 0.01} if cls == "SGD" else {}
    with pytest.raises(ValueError):
        make(cls, BAD_PARAMS[what](), kw)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex128])
@pytest.mark.parametrize("cls", CLASSES)
def test_bad_param_dtype_at_construction(cls, dtype):
    kw = {"lr": 0.01} if cls == "SGD" else {}
    with pytest.raises((TypeError, ValueError)):
        make(cls, [np.zeros(3, dtype)], kw)


BAD_HYPER = {
    "SGD": [
        ("lr", {"lr": -0.1}),
        ("momentum", {"lr": 0.1, "momentum": -0.5}),
        ("weight_decay", {"lr": 0.1, "weight_decay": -1e-3}),
        ("l1", {"lr": 0.1, "l1": -1e-3}),
        ("nesterov", {"lr": 0.1, "nesterov": True}),
        ("nesterov", {"lr": 0.1, "nesterov": True, "momentum": 0.0}),
        ("nesterov|dampening", {"lr": 0.1, "nesterov": True, "momentum": 0.9, "dampening": 0.1}),
    ],
    "Adam": [
        ("lr", {"lr": -1e-3}),
        ("eps", {"eps": -1e-8}),
        ("beta", {"betas": (1.0, 0.999)}),
        ("beta", {"betas": (-0.1, 0.999)}),
        ("beta", {"betas": (0.9, 1.0)}),
        ("beta", {"betas": (0.9, -1e-3)}),
        ("beta", {"betas": (0.9, 1.5)}),
        ("weight_decay", {"weight_decay": -0.1}),
        ("l1", {"l1": -0.1}),
    ],
    "RMSprop": [
        ("lr", {"lr": -1e-3}),
        ("eps", {"eps": -1e-8}),
        ("momentum", {"momentum": -0.1}),
        ("weight_decay", {"weight_decay": -0.1}),
        ("l1", {"l1": -0.1}),
    ],
    "Adagrad": [
        ("lr", {"lr": -1e-3}),
        ("eps", {"eps": -1e-10}),
        ("weight_decay", {"weight_decay": -0.1}),
        ("l1", {"l1": -0.1}),
    ],
}
BAD_HYPER["AdamW"] = BAD_HYPER["Adam"]
BAD_HYPER_CASES = [
    pytest.param(cls, word, kw, id=f"{cls}-{word}-{i}")
    for cls, lst in BAD_HYPER.items()
    for i, (word, kw) in enumerate(lst)
]


@pytest.mark.parametrize(("cls", "word", "kw"), BAD_HYPER_CASES)
def test_bad_hyperparameters(cls, word, kw):
    p = np.ones(4)
    with pytest.raises(ValueError, match=word):
        make(cls, [p], kw)
    # the same value given per group is refused too
    group = {"params": [p], **kw}
    defaults = {"lr": 0.1} if cls == "SGD" else {}
    with pytest.raises(ValueError, match=word):
        make(cls, [group], defaults)
    assert np.all(p == 1.0)


# torch refuses these as well (same constructor checks)
TORCH_PARITY_BAD = [
    ("RMSprop", "alpha", {"alpha": -0.1}),
    ("Adagrad", "lr_decay", {"lr_decay": -0.1}),
    ("Adagrad", "initial_accumulator_value", {"initial_accumulator_value": -0.1}),
]


@pytest.mark.parametrize(("cls", "word", "kw"), TORCH_PARITY_BAD)
def test_bad_hyperparameters_torch_parity(cls, word, kw):
    with pytest.raises(ValueError, match=word):
        make(cls, [np.ones(4)], kw)


# ---------------------------------------------------------------- i. sizes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_zero_size_only(cls, kw, dtype):
    params = [np.zeros(0, dtype), np.zeros((3, 0), dtype), np.zeros((0, 4, 2), dtype)]
    opt = make(cls, params, kw)
    for _ in range(3):
        opt.step([np.zeros(p.shape, dtype) for p in params])
    assert [p.shape for p in params] == [(0,), (3, 0), (0, 4, 2)]
    opt.state_dict()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cls", "kw"), ROWS)
def test_many_small_tensors(cls, kw, dtype):
    rng = np.random.default_rng(101)
    shapes = [
        tuple(int(d) for d in rng.integers(0, 4, size=rng.integers(1, 3))) for _ in range(200)
    ]
    params, r, budget = run_pair(cls, kw, dtype, shapes, 10, seed=102)
    compare(params, r.params, budget, dtype, "200 tensors")


# ---------------------------------------------------------------- bfloat16 state


def _bf16_kw(kw):
    return {**kw, "state_dtype": "bfloat16"}


@pytest.mark.parametrize(("cls", "kw"), BF16_ROWS)
def test_bf16_state_matches_reference(cls, kw):
    rng = np.random.default_rng(111)
    params = init_params(rng, SHAPES, np.float32)
    params64 = to64(params)
    opt = make(cls, params, _bf16_kw(kw))
    r = make_ref(cls, params64, _bf16_kw(kw))
    budget = Budget(params64)
    for grads in grad_stream(112, SHAPES, np.float32, STEPS):
        before = [p.copy() for p in r.params]
        opt.step(grads)
        r.step(to64(grads))
        budget.add(before, r.params)
    for i, (p, q) in enumerate(zip(params, r.params)):
        assert p.dtype == np.float32
        assert_within_budget(p, q, budget.bf16(i), f"bf16 param {i} {p.shape}")


@pytest.mark.parametrize(("cls", "kw"), BF16_ROWS)
def test_bf16_state_is_rounded_to_nearest_even(cls, kw):
    """One step from a known state: the stored moments are the reference's bits."""
    rng = np.random.default_rng(121)
    shapes = [(1,), (7,), (300,), (33, 5)]
    params = init_params(rng, shapes, np.float32)
    opt = make(cls, params, _bf16_kw(kw))
    stream = list(grad_stream(122, shapes, np.float32, 12))
    for g in stream[:10]:
        opt.step(g)
    for g in stream[10:]:
        sd = opt.state_dict()
        r = make_ref(cls, to64(params), _bf16_kw(kw))
        keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if kw.get("amsgrad") else [])
        for i in range(len(params)):
            st = param_state(sd, i)
            for key in keys:
                assert st[key].dtype == np.uint16, (key, st[key].dtype)
                r.state[i][key] = ref.bf16_from_bits(st[key]).astype(np.float64)
            r.state[i]["step"] = int(st["step"])
        opt.step(g)
        r.step(to64(g))
        sd = opt.state_dict()
        for i in range(len(params)):
            st = param_state(sd, i)
            for key in keys:
                want = ref.bf16_bits(r.state[i][key].astype(np.float32)).astype(np.int32)
                got = st[key].astype(np.int32)
                # same bits, except where float32 evaluation order moves a value across
                # a rounding boundary: then one bfloat16 ulp apart
                off = np.abs(got - want)
                assert off.max(initial=0) <= 1, (key, i, off.max())
                assert np.mean(off) < 0.01, (key, i, np.mean(off))


@pytest.mark.parametrize(("cls", "kw"), BF16_ROWS)
def test_bf16_bitwise_across_simd_and_threads(cls, kw):
    _determinism_case(cls, _bf16_kw(kw), np.float32)


@pytest.mark.parametrize(("cls", "kw"), BF16_ROWS)
def test_bf16_state_dict_round_trip(cls, kw, tmp_path):
    _checkpoint_case(cls, _bf16_kw(kw), np.float32, tmp_path)


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_bf16_state_needs_float32(cls):
    p = np.ones(3)
    with pytest.raises((TypeError, ValueError)):
        make(cls, [p], {"state_dtype": "bfloat16"}).step([np.ones(3)])
    assert np.all(p == 1.0)
    with pytest.raises((TypeError, ValueError)):
        make(cls, [np.ones(3, np.float32)], {"state_dtype": "float16"})


# ---------------------------------------------------------------- the oracle itself


def test_bf16_round_reference():
    one = 1.0
    ulp = 2.0**-7  # bfloat16 spacing in [1, 2)
    x = np.array(
        [
            one,
            one + ulp / 2,
            one + 1.5 * ulp,
            one + ulp / 2 + 2.0**-20,
            one + ulp / 4,
            np.inf,
            -np.inf,
            np.nan,
            -0.0,
            3.4e38,
            -3.4e38,
        ],
        np.float32,
    )
    y = ref.bf16_round(x)
    assert y.dtype == np.float32
    assert y[0] == 1.0
    assert y[1] == 1.0  # tie -> even (mantissa 0)
    assert y[2] == one + 2 * ulp  # tie -> even (mantissa 2, not 1)
    assert y[3] == one + ulp  # just above the tie
    assert y[4] == 1.0
    assert np.isposinf(y[5]) and np.isneginf(y[6]) and np.isnan(y[7])
    assert y[8] == 0.0 and np.signbit(y[8])
    assert np.isposinf(y[9]) and np.isneginf(y[10])  # past the largest bfloat16
    assert np.array_equal(ref.bf16_from_bits(ref.bf16_bits(y)), y, equal_nan=True)


# ---------------------------------------------------------------- changing the params
def _replace_setup(cls):
    kw = {"lr": 0.01, "momentum": 0.9} if cls == "SGD" else {}
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(5), rng.standard_normal(3)]
    opt = make(cls, params, kw)
    for g in grad_stream(8, [p.shape for p in params], np.float64, 3):
        opt.step(g)  # steady state: the cached plan is in use
    return opt, params, kw


@pytest.mark.parametrize("cls", CLASSES)
def test_replacing_a_param_in_a_group_is_noticed(cls):
    """group["params"][i] = new: the next step updates the new array (not the old one),
    which starts with fresh state as a new tensor does in PyTorch; the others keep theirs."""
    opt, params, kw = _replace_setup(cls)
    old = params[0]
    old_before = old.copy()
    new = np.full(5, 0.5)
    opt.param_groups[0]["params"][0] = new
    grads = [np.full(5, 0.25), np.full(3, -0.5)]
    keep = {k: v.copy() for k, v in opt.state[1].items() if isinstance(v, np.ndarray)}
    steps_other = opt.state[1]["step"]
    opt.step(grads)
    assert np.array_equal(old, old_before), "the replaced array was still updated"
    # the new array got a first step, exactly as a fresh optimizer gives it
    fresh = np.full(5, 0.5)
    make(cls, [fresh], kw).step([grads[0]])
    assert np.array_equal(new, fresh)
    assert opt.state[0]["step"] == 1 and opt.state[1]["step"] == steps_other + 1
    assert any(not np.array_equal(opt.state[1][k], v) for k, v in keep.items()) or not keep


@pytest.mark.parametrize("cls", CLASSES)
def test_params_list_edits_and_replacement_are_noticed(cls):
    opt, params, _ = _replace_setup(cls)
    extra = np.zeros(4)
    opt.param_groups[0]["params"].append(extra)
    with pytest.raises(ValueError, match="3 parameters"):
        opt.step([np.ones(5), np.ones(3)])
    opt.step([np.ones(5), np.ones(3), np.ones(4)])
    assert not np.array_equal(extra, np.zeros(4))
    assert opt.state[2]["step"] == 1 and opt.state[0]["step"] == 4
    # a whole new list in the group: its arrays are adopted, state follows the arrays
    first = params[0]
    opt.param_groups[0]["params"] = [extra, first]
    before = first.copy()
    opt.step([np.ones(4), np.ones(5)])
    assert not np.array_equal(first, before)
    assert opt.state[0]["step"] == 2 and opt.state[1]["step"] == 5  # extra, then first
    # removing a parameter
    del opt.param_groups[0]["params"][0]
    opt.step([np.ones(5)])
    assert opt.state[0]["step"] == 6 and list(opt.state) == [0]


@pytest.mark.parametrize("cls", CLASSES)
def test_a_bad_replacement_is_refused_at_the_next_step(cls):
    opt, params, _ = _replace_setup(cls)
    snapshot = [p.copy() for p in params]
    opt.param_groups[0]["params"][1] = np.zeros(6)[::2]  # strided: not updatable in place
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\]"):
        opt.step([np.ones(5), np.ones(3)])
    opt.param_groups[0]["params"][1] = params[0]  # the same array twice
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([np.ones(5), np.ones(5)])
    assert all(np.array_equal(p, s) for p, s in zip(params, snapshot))
    opt.param_groups[0]["params"][1] = params[1]  # back as it was: steps resume
    opt.step([np.ones(5), np.ones(3)])
    assert opt.state[0]["step"] == 4 and opt.state[1]["step"] == 4
