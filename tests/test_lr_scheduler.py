"""pyfastopt.optim.lr_scheduler: closed forms, step-for-step parity with torch (when
importable), JSON state-dict round trips and argument validation.

The schedulers only need an object with ``param_groups``; a stub stands in for the
optimizer. The torch comparisons build the same scheduler (same call, through the
other module) on a torch optimizer with the same param groups.
"""

from __future__ import annotations

import copy
import json
import math
from bisect import bisect_right
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest

from pyfastopt.optim import lr_scheduler as sched_mod

MOMENTUM_GROUPS = ({"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.9})
BETAS_GROUPS = ({"lr": 0.1, "betas": (0.9, 0.999)}, {"lr": 0.01, "betas": (0.9, 0.999)})
PLAIN_GROUPS = ({"lr": 0.1}, {"lr": 0.01})
# Groups of a run being resumed with last_epoch >= 0 (lr already moved off initial_lr).
RESUME_GROUPS = (
    {"lr": 0.05, "initial_lr": 0.1, "momentum": 0.9},
    {"lr": 0.004, "initial_lr": 0.01, "momentum": 0.9},
)
BASE = (0.1, 0.01)  # the groups' starting lrs
REL = 1e-12


class StubOptimizer:
    """The least an optimizer needs for the schedulers: param_groups."""

    def __init__(self, groups=MOMENTUM_GROUPS):
        self.param_groups = [dict(g) for g in groups]


def torch_optimizer(torch, groups):
    """A torch optimizer with the same param groups (SGD, or Adam for betas)."""
    param_groups = [{"params": [torch.zeros(1, requires_grad=True)], **g} for g in groups]
    if "betas" in groups[0]:
        return torch.optim.Adam(param_groups)
    return torch.optim.SGD(param_groups, lr=0.1)


# ----------------------------------------------------------------- closed forms


def step_cf(step_size, gamma=0.1):
    return lambda i, e: BASE[i] * gamma ** (e // step_size)


def multistep_cf(milestones, gamma=0.1):
    return lambda i, e: BASE[i] * gamma ** sum(1 for m in milestones if m <= e)


def exp_cf(gamma):
    return lambda i, e: BASE[i] * gamma**e


def cos_cf(t_max, eta_min=0.0):
    return lambda i, e: eta_min + (BASE[i] - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2


def linear_cf(start=1 / 3, end=1.0, total=5):
    return lambda i, e: BASE[i] * (start + (end - start) * min(e, total) / total)


def constant_cf(factor=1 / 3, total=5):
    return lambda i, e: BASE[i] * (factor if e < total else 1.0)


def poly_cf(total=5, power=1.0):
    return lambda i, e: BASE[i] * (1.0 - min(e, total) / total) ** power


def seq_cf(parts, milestones):
    def f(i, e):
        k = bisect_right(milestones, e)
        return parts[k](i, e - (milestones[k - 1] if k else 0))

    return f


def _piecewise(knots, e, strategy):
    """Anneal through (step, value) knots; the last segment extends past its end."""
    for k in range(len(knots) - 1):
        (s0, v0), (s1, v1) = knots[k], knots[k + 1]
        if e <= s1 or k == len(knots) - 2:
            p = (e - s0) / (s1 - s0)
            if strategy == "cos":
                return v1 + (v0 - v1) * (1 + math.cos(math.pi * p)) / 2
            return v0 + (v1 - v0) * p
    raise AssertionError  # pragma: no cover


def onecycle_cf(
    max_lr,
    total,
    pct=0.3,
    strategy="cos",
    div=25.0,
    final_div=1e4,
    three=False,
    base_m=0.85,
    max_m=0.95,
):
    peaks = max_lr if isinstance(max_lr, list) else [max_lr, max_lr]
    up, down = pct * total - 1, 2 * pct * total - 2

    def lr(i, e):
        start = peaks[i] / div
        knots = [(0, start), (up, peaks[i])]
        knots += [(down, start)] if three else []
        knots += [(total - 1, start / final_div)]
        return _piecewise(knots, e, strategy)

    def momentum(i, e):
        top = max_m[i] if isinstance(max_m, list) else max_m
        bottom = base_m[i] if isinstance(base_m, list) else base_m
        knots = [(0, top), (up, bottom)] + ([(down, top)] if three else [])
        knots += [(total - 1, top)]
        return _piecewise(knots, e, strategy)

    return lr, momentum


# ----------------------------------------------------------------- the case table


class Case(NamedTuple):
    id: str
    build: Callable[[Any, Any], Any]  # (scheduler module, optimizer) -> scheduler
    closed: Callable[[int, int], float] | None = None  # (group, epoch) -> lr
    momentum: Callable[[int, int], float] | None = None  # (group, epoch) -> momentum
    steps: int = 150
    groups: tuple = MOMENTUM_GROUPS


def _onecycle_case(case_id, steps=None, groups=MOMENTUM_GROUPS, closed_kw=None, **kw):
    total = kw.get("total_steps") or kw["epochs"] * kw["steps_per_epoch"]
    closed_kw = dict(closed_kw or {})
    lr, mom = onecycle_cf(kw["max_lr"], total, **closed_kw)
    if not kw.get("cycle_momentum", True):
        mom = None
    return Case(
        case_id,
        lambda m, o: m.OneCycleLR(o, **kw),
        lr,
        mom,
        steps if steps is not None else total,
        groups,
    )


CASES = [
    # StepLR
    Case("step-3-0.5", lambda m, o: m.StepLR(o, step_size=3, gamma=0.5), step_cf(3, 0.5)),
    Case("step-1-0.97", lambda m, o: m.StepLR(o, 1, 0.97), step_cf(1, 0.97)),
    Case("step-30-default", lambda m, o: m.StepLR(o, step_size=30), step_cf(30)),
    Case("step-gamma0", lambda m, o: m.StepLR(o, step_size=10, gamma=0.0), step_cf(10, 0.0)),
    Case("step-gamma1.5", lambda m, o: m.StepLR(o, step_size=40, gamma=1.5), step_cf(40, 1.5)),
    # MultiStepLR
    Case(
        "multistep",
        lambda m, o: m.MultiStepLR(o, milestones=[10, 30, 60], gamma=0.5),
        multistep_cf([10, 30, 60], 0.5),
    ),
    Case(
        "multistep-repeats",
        lambda m, o: m.MultiStepLR(o, [5, 5, 20, 20, 20, 70], 0.5),
        multistep_cf([5, 5, 20, 20, 20, 70], 0.5),
    ),
    Case(
        "multistep-unsorted-default-gamma",
        lambda m, o: m.MultiStepLR(o, (50, 10, 120)),
        multistep_cf([50, 10, 120]),
    ),
    Case(
        "multistep-zero-milestone",
        lambda m, o: m.MultiStepLR(o, [0, 3, 200], 0.3),
        multistep_cf([0, 3, 200], 0.3),
    ),
    # ExponentialLR
    Case("exp-0.95", lambda m, o: m.ExponentialLR(o, gamma=0.95), exp_cf(0.95)),
    Case("exp-0.999", lambda m, o: m.ExponentialLR(o, 0.999), exp_cf(0.999)),
    Case("exp-1.0", lambda m, o: m.ExponentialLR(o, 1.0), exp_cf(1.0)),
    Case("exp-1.01", lambda m, o: m.ExponentialLR(o, 1.01), exp_cf(1.01)),
    # CosineAnnealingLR (continues past T_max: periodic)
    Case("cos-10", lambda m, o: m.CosineAnnealingLR(o, T_max=10), cos_cf(10)),
    Case("cos-1", lambda m, o: m.CosineAnnealingLR(o, T_max=1), cos_cf(1)),
    Case("cos-1-etamin", lambda m, o: m.CosineAnnealingLR(o, 1, eta_min=1e-3), cos_cf(1, 1e-3)),
    Case("cos-37-etamin", lambda m, o: m.CosineAnnealingLR(o, 37, 0.001), cos_cf(37, 0.001)),
    Case(
        "cos-100-etamin",
        lambda m, o: m.CosineAnnealingLR(o, 100, eta_min=0.005),
        cos_cf(100, 0.005),
        steps=250,
    ),
    Case("cos-500", lambda m, o: m.CosineAnnealingLR(o, 500), cos_cf(500)),
    # LinearLR
    Case("linear-defaults", lambda m, o: m.LinearLR(o), linear_cf()),
    Case(
        "linear-constant",
        lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=1.0),
        linear_cf(1.0, 1.0),
    ),
    Case(
        "linear-warmup",
        lambda m, o: m.LinearLR(o, 0.25, 1.0, total_iters=4),
        linear_cf(0.25, 1.0, 4),
    ),
    Case(
        "linear-to-zero",
        lambda m, o: m.LinearLR(o, 1.0, 0.0, total_iters=100),
        linear_cf(1.0, 0.0, 100),
    ),
    Case("linear-decrease", lambda m, o: m.LinearLR(o, 0.5, 0.1, 50), linear_cf(0.5, 0.1, 50)),
    Case("linear-total-1", lambda m, o: m.LinearLR(o, 0.1, total_iters=1), linear_cf(0.1, 1.0, 1)),
    # ConstantLR
    Case("constant-defaults", lambda m, o: m.ConstantLR(o), constant_cf()),
    Case(
        "constant-0.4-4",  # torch's own scheduler input
        lambda m, o: m.ConstantLR(o, factor=0.4, total_iters=4),
        constant_cf(0.4, 4),
    ),
    Case("constant-1", lambda m, o: m.ConstantLR(o, 1.0, 10), constant_cf(1.0, 10)),
    Case("constant-long", lambda m, o: m.ConstantLR(o, 0.1, 120), constant_cf(0.1, 120)),
    Case("constant-total-0", lambda m, o: m.ConstantLR(o, 0.5, total_iters=0)),  # torch only
    # PolynomialLR
    Case("poly-defaults", lambda m, o: m.PolynomialLR(o), poly_cf()),
    Case(
        "poly-0.9-4",  # torch's own scheduler input
        lambda m, o: m.PolynomialLR(o, power=0.9, total_iters=4),
        poly_cf(4, 0.9),
    ),
    Case("poly-2-100", lambda m, o: m.PolynomialLR(o, 100, 2.0), poly_cf(100, 2.0)),
    Case("poly-0.5-1", lambda m, o: m.PolynomialLR(o, total_iters=1, power=0.5), poly_cf(1, 0.5)),
    Case("poly-power-0", lambda m, o: m.PolynomialLR(o, 7, power=0.0), poly_cf(7, 0.0)),
    # OneCycleLR (stepped up to last_epoch == total_steps, the last step torch allows)
    _onecycle_case("onecycle-cos", max_lr=1.0, total_steps=120),
    _onecycle_case(
        "onecycle-three-phase",
        max_lr=1.0,
        total_steps=150,
        three_phase=True,
        closed_kw={"three": True},
    ),
    _onecycle_case(
        "onecycle-linear",
        max_lr=0.5,
        total_steps=130,
        anneal_strategy="linear",
        closed_kw={"strategy": "linear"},
    ),
    _onecycle_case(
        "onecycle-linear-three",
        max_lr=[1.0, 0.2],
        total_steps=140,
        anneal_strategy="linear",
        three_phase=True,
        closed_kw={"strategy": "linear", "three": True},
    ),
    _onecycle_case(
        "onecycle-divs-pct",
        max_lr=[0.4, 0.05],
        total_steps=111,
        pct_start=0.25,
        div_factor=10.0,
        final_div_factor=100.0,
        closed_kw={"pct": 0.25, "div": 10.0, "final_div": 100.0},
    ),
    _onecycle_case(
        "onecycle-epochs",
        max_lr=0.3,
        epochs=10,
        steps_per_epoch=12,
        base_momentum=[0.8, 0.7],
        max_momentum=0.99,
        closed_kw={"base_m": [0.8, 0.7], "max_m": 0.99},
    ),
    _onecycle_case("onecycle-no-momentum", max_lr=0.3, total_steps=100, cycle_momentum=False),
    _onecycle_case("onecycle-betas", max_lr=0.3, total_steps=100, groups=BETAS_GROUPS),
    _onecycle_case(
        "onecycle-betas-three",
        max_lr=0.3,
        total_steps=100,
        three_phase=True,
        base_momentum=0.8,
        groups=BETAS_GROUPS,
        closed_kw={"three": True, "base_m": 0.8},
    ),
    _onecycle_case(
        "onecycle-pct-0", max_lr=0.3, total_steps=100, pct_start=0.0, closed_kw={"pct": 0.0}
    ),
    _onecycle_case(
        "onecycle-pct-1",
        max_lr=0.3,
        total_steps=100,
        pct_start=1.0,
        steps=99,
        closed_kw={"pct": 1.0},
    ),
    # SequentialLR
    Case(
        "seq-warmup-exp",
        lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, 0.1, total_iters=5), m.ExponentialLR(o, 0.9)], milestones=[5]
        ),
        seq_cf([linear_cf(0.1, 1.0, 5), exp_cf(0.9)], [5]),
    ),
    Case(
        "seq-warmup-cos",
        lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, 0.01, total_iters=10), m.CosineAnnealingLR(o, 90, 1e-4)], [10]
        ),
        seq_cf([linear_cf(0.01, 1.0, 10), cos_cf(90, 1e-4)], [10]),
    ),
    Case(
        "seq-three",
        lambda m, o: m.SequentialLR(
            o,
            [
                m.StepLR(o, 4, 0.5),
                m.LinearLR(o, 0.5, total_iters=7),
                m.MultiStepLR(o, [3, 30], 0.2),
            ],
            [20, 50],
        ),
        seq_cf([step_cf(4, 0.5), linear_cf(0.5, 1.0, 7), multistep_cf([3, 30], 0.2)], [20, 50]),
    ),
    Case(
        "seq-milestone-0",
        lambda m, o: m.SequentialLR(o, [m.ExponentialLR(o, 0.5), m.StepLR(o, 3)], [0]),
        seq_cf([exp_cf(0.5), step_cf(3)], [0]),
    ),
    Case(
        "seq-equal-milestones",
        lambda m, o: m.SequentialLR(
            o, [m.StepLR(o, 2), m.ExponentialLR(o, 0.5), m.CosineAnnealingLR(o, 20)], [7, 7]
        ),
        seq_cf([step_cf(2), exp_cf(0.5), cos_cf(20)], [7, 7]),
    ),
    Case(
        "seq-single", lambda m, o: m.SequentialLR(o, [m.CosineAnnealingLR(o, 30)], []), cos_cf(30)
    ),
    Case(
        "seq-constant-poly",
        lambda m, o: m.SequentialLR(
            o, [m.ConstantLR(o, 0.25, total_iters=3), m.PolynomialLR(o, 40, 2.0)], [8]
        ),
        seq_cf([constant_cf(0.25, 3), poly_cf(40, 2.0)], [8]),
    ),
    Case(
        "seq-poly-constant",
        lambda m, o: m.SequentialLR(
            o, [m.PolynomialLR(o, 10, 0.5), m.ConstantLR(o, 0.1, total_iters=20)], [15]
        ),
        seq_cf([poly_cf(10, 0.5), constant_cf(0.1, 20)], [15]),
    ),
    Case(
        "seq-onecycle-second",  # OneCycleLR rewrites initial_lr: compare with torch only
        lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, 0.5, total_iters=4), m.OneCycleLR(o, 1.0, total_steps=100)], [10]
        ),
        steps=109,
    ),
    # Resuming with last_epoch >= 0 (needs initial_lr in the groups): torch only
    Case("resume-step", lambda m, o: m.StepLR(o, 3, 0.5, last_epoch=5), groups=RESUME_GROUPS),
    Case(
        "resume-multistep",
        lambda m, o: m.MultiStepLR(o, [4, 9, 40], last_epoch=6),
        groups=RESUME_GROUPS,
    ),
    Case("resume-exp", lambda m, o: m.ExponentialLR(o, 0.9, last_epoch=7), groups=RESUME_GROUPS),
    Case(
        "resume-cos",
        lambda m, o: m.CosineAnnealingLR(o, 20, 1e-3, last_epoch=7),
        groups=RESUME_GROUPS,
    ),
    Case(
        "resume-linear",
        lambda m, o: m.LinearLR(o, 0.2, total_iters=10, last_epoch=3),
        groups=RESUME_GROUPS,
    ),
    Case(
        "resume-constant",
        lambda m, o: m.ConstantLR(o, 0.5, total_iters=6, last_epoch=2),
        groups=RESUME_GROUPS,
    ),
    Case(
        "resume-poly",
        lambda m, o: m.PolynomialLR(o, total_iters=12, power=1.5, last_epoch=4),
        groups=RESUME_GROUPS,
    ),
]
CLOSED_CASES = [c for c in CASES if c.closed is not None]


def _ids(cases):
    return [c.id for c in cases]


def group_values(opt):
    """Everything the schedulers write into the groups: lr and momentum/betas."""
    out = []
    for g in opt.param_groups:
        out.append(g["lr"])
        if "momentum" in g:
            out.append(g["momentum"])
        if "betas" in g:
            out.extend(g["betas"])
    return out


def snapshot(sched):
    state = [sched.get_last_lr(), sched.last_epoch, group_values(sched.optimizer)]
    if hasattr(sched, "_schedulers"):
        state.append([s.last_epoch for s in sched._schedulers])
    return state


# ------------------------------------------------------- (1) closed forms, 100+ steps


@pytest.mark.parametrize("case", CLOSED_CASES, ids=_ids(CLOSED_CASES))
def test_matches_closed_form(case):
    opt = StubOptimizer(case.groups)
    sched = case.build(sched_mod, opt)
    assert case.steps >= 99
    for e in range(case.steps + 1):
        assert sched.last_epoch == e
        last = sched.get_last_lr()
        assert all(type(v) is float for v in last)
        for i, group in enumerate(opt.param_groups):
            want = case.closed(i, e)
            assert math.isclose(last[i], want, rel_tol=REL, abs_tol=1e-300 if want else 1e-17), (
                e,
                i,
                last[i],
                want,
            )
            assert group["lr"] == last[i]
            if case.momentum is not None:
                got = group["betas"][0] if "betas" in group else group["momentum"]
                assert math.isclose(got, case.momentum(i, e), rel_tol=REL), (e, i)
        if e < case.steps:
            sched.step()


def test_constructor_protocol():
    opt = StubOptimizer()
    sched = sched_mod.StepLR(opt, step_size=2, gamma=0.5)
    assert sched.last_epoch == 0
    assert sched.base_lrs == [0.1, 0.01]
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert sched.get_last_lr() == [0.1, 0.01]
    # get_last_lr hands out a copy
    sched.get_last_lr().append(1.0)
    assert len(sched.get_last_lr()) == 2
    # initial_lr already present is kept (setdefault), base_lrs follow it
    opt2 = StubOptimizer(({"lr": 0.5, "initial_lr": 0.2},))
    sched2 = sched_mod.ExponentialLR(opt2, 0.5)
    assert sched2.base_lrs == [0.2]
    assert sched2.get_last_lr() == [0.5]
    # step() takes no epoch, and there is no `verbose`
    with pytest.raises(TypeError):
        sched.step(3)
    with pytest.raises(TypeError):
        sched_mod.StepLR(StubOptimizer(), 2, verbose=False)


def test_recursive_forms_follow_outside_changes():
    """Like torch's, the schedulers scale the group's current lr, not base_lrs."""
    opt = StubOptimizer()
    sched = sched_mod.ExponentialLR(opt, 0.5)
    opt.param_groups[0]["lr"] = 1.0
    sched.step()
    assert sched.get_last_lr() == [0.5, 0.005]


# Several schedulers stepping one optimizer each epoch (torch's "chained" scheduler
# inputs from its optim_db, and more): each scales the lr the others left, so the lr is
# base_lr times the product of every scheduler's closed-form factor.
CHAINS = [
    (
        "constant+exp",  # torch's optim_db input
        lambda m, o: [m.ConstantLR(o, factor=0.4, total_iters=4), m.ExponentialLR(o, gamma=0.9)],
        [constant_cf(0.4, 4), exp_cf(0.9)],
    ),
    (
        "poly+step",
        lambda m, o: [m.PolynomialLR(o, total_iters=30, power=0.9), m.StepLR(o, 7, 0.5)],
        [poly_cf(30, 0.9), step_cf(7, 0.5)],
    ),
    (
        "linear+constant+poly",
        lambda m, o: [
            m.LinearLR(o, 0.2, total_iters=5),
            m.ConstantLR(o, 0.5, total_iters=12),
            m.PolynomialLR(o, total_iters=40, power=2.0),
        ],
        [linear_cf(0.2, 1.0, 5), constant_cf(0.5, 12), poly_cf(40, 2.0)],
    ),
    (
        "exp+poly",
        lambda m, o: [m.ExponentialLR(o, 0.95), m.PolynomialLR(o, 25)],
        [exp_cf(0.95), poly_cf(25)],
    ),
]


@pytest.mark.parametrize(("build", "parts"), [c[1:] for c in CHAINS], ids=[c[0] for c in CHAINS])
def test_chained_schedulers_closed_form(build, parts):
    opt = StubOptimizer(PLAIN_GROUPS)
    scheds = build(sched_mod, opt)
    for e in range(60):
        for i, group in enumerate(opt.param_groups):
            want = BASE[i] * math.prod(part(i, e) / BASE[i] for part in parts)
            assert math.isclose(group["lr"], want, rel_tol=1e-12, abs_tol=1e-300), (e, i)
            assert scheds[-1].get_last_lr()[i] == group["lr"]
        for sched in scheds:
            sched.step()


@pytest.mark.parametrize("build", [c[1] for c in CHAINS], ids=[c[0] for c in CHAINS])
def test_chained_schedulers_match_torch(build):
    torch = pytest.importorskip("torch")
    ours_opt = StubOptimizer(PLAIN_GROUPS)
    ref_opt = torch_optimizer(torch, PLAIN_GROUPS)
    ours, ref = build(sched_mod, ours_opt), build(torch.optim.lr_scheduler, ref_opt)
    for _ in range(60):
        assert [g["lr"] for g in ours_opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]
        assert [s.get_last_lr() for s in ours] == [s.get_last_lr() for s in ref]
        ref_opt.step()
        for a, b in zip(ours, ref):
            a.step()
            b.step()
    state = [s.state_dict() for s in ours]
    assert json.loads(json.dumps(state, allow_nan=False)) == state


def test_constant_factor_0_returns_to_base_lr():
    """factor=0: PyTorch divides by zero at total_iters; here the lr goes back to base."""
    opt = StubOptimizer(PLAIN_GROUPS)
    sched = sched_mod.ConstantLR(opt, factor=0.0, total_iters=3)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    assert lrs == [0.0, 0.0, 0.0, 0.1, 0.1, 0.1]


def test_sequential_advances_only_the_active_scheduler():
    opt = StubOptimizer()
    first = sched_mod.LinearLR(opt, 0.5, total_iters=3)
    second = sched_mod.ExponentialLR(opt, 0.5)
    seq = sched_mod.SequentialLR(opt, [first, second], milestones=[5])
    assert (seq.last_epoch, first.last_epoch, second.last_epoch) == (0, 0, -1)
    assert seq.get_last_lr() == [0.05, 0.005]
    for _ in range(5):
        seq.step()
    assert (seq.last_epoch, first.last_epoch, second.last_epoch) == (5, 4, 0)
    assert seq.get_last_lr() == [0.1, 0.01]  # restarted from base_lrs
    for _ in range(3):
        seq.step()
    assert (first.last_epoch, second.last_epoch) == (4, 3)
    assert seq.get_last_lr() == pytest.approx([0.0125, 0.00125], rel=REL)


def test_onecycle_betas_and_bounds():
    opt = StubOptimizer(BETAS_GROUPS)
    sched = sched_mod.OneCycleLR(opt, max_lr=0.3, total_steps=10)
    for g in opt.param_groups:
        assert isinstance(g["betas"], tuple)
        assert g["betas"] == (0.95, 0.999)
        assert g["max_lr"] == 0.3
        assert g["initial_lr"] == 0.3 / 25.0
        assert g["min_lr"] == 0.3 / 25.0 / 1e4
    for _ in range(10):
        sched.step()  # up to last_epoch == total_steps
    with pytest.raises(ValueError, match="total steps"):
        sched.step()
    # momentum untouched without cycling, and groups without momentum are fine then
    opt = StubOptimizer(PLAIN_GROUPS)
    sched_mod.OneCycleLR(opt, max_lr=0.3, total_steps=10, cycle_momentum=False)
    assert "momentum" not in opt.param_groups[0]


# ------------------------------------------------------------ ReduceLROnPlateau


def _run_plateau(metrics, groups=PLAIN_GROUPS, **kw):
    opt = StubOptimizer(groups)
    sched = sched_mod.ReduceLROnPlateau(opt, **kw)
    assert sched.last_epoch == 0
    assert sched.get_last_lr() == [g["lr"] for g in groups]
    lrs = []
    for metric in metrics:
        sched.step(metric)
        lrs.append(sched.get_last_lr())
        assert lrs[-1] == [g["lr"] for g in opt.param_groups]
    assert sched.last_epoch == len(metrics)
    return lrs


def test_plateau_min_rel():
    lrs = _run_plateau(
        [10, 9.5, 9.2, 9.1, 8.0, 8.0, 8.0, 8.0, 7.1, 7.0, 7.0, 7.0],
        mode="min",
        factor=0.5,
        patience=2,
        threshold=0.1,
    )
    halvings = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert lrs == [[0.1 * 0.5**k, 0.01 * 0.5**k] for k in halvings]


def test_plateau_max_abs_cooldown():
    metrics = [1, 1.4, 1.6, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 3.5, 3.0, 3.0]
    lrs = _run_plateau(
        metrics, mode="max", factor=0.1, patience=1, threshold=0.5, threshold_mode="abs", cooldown=2
    )
    # reduced at epoch 6; epochs 7-8 are the cooldown; 2.7 is not > 2.2 + 0.5;
    # 3.5 improves; two bad epochs after it reduce again at epoch 12.
    reductions = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2]
    want = [[0.1 * 0.1**k, 0.01 * 0.1**k] for k in reductions]
    for got_pair, want_pair in zip(lrs, want):
        assert got_pair == pytest.approx(want_pair, rel=REL)


def test_plateau_min_lr_and_eps():
    lrs = _run_plateau(
        [1.0] * 9,
        factor=0.1,
        patience=0,
        threshold=0.0,
        threshold_mode="abs",
        min_lr=[0.005, 0.0],
        eps=1e-8,
    )
    # group 0 stops at min_lr; group 1 stops once a cut would be <= eps (1e-8 -> 1e-9)
    want0 = [0.1, 0.01, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005]
    want1 = [0.01, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-8, 1e-8]
    assert [v[0] for v in lrs] == pytest.approx(want0, rel=REL)
    assert [v[1] for v in lrs] == pytest.approx(want1, rel=1e-9)


def test_plateau_accepts_numpy_metrics():
    lrs = _run_plateau([np.float32(3.0), np.array(2.0), np.float64(2.0), 2], patience=1, factor=0.5)
    assert lrs[-1] == [0.05, 0.005]


def plateau_metrics(n, mode):
    """Deterministic metric curve with plateaus, noise, spikes and exact repeats."""
    out = []
    for t in range(n):
        v = 1.0 / (1 + t // 25) + 0.02 * ((t * 37) % 11) / 11
        if t % 13 == 0:
            v += 0.5
        out.append(v if mode == "min" else -v)
    return out


PLATEAU_CONFIGS = [
    {"mode": "min"},
    {"mode": "min", "threshold_mode": "abs", "threshold": 0.01, "patience": 2},
    {"mode": "max", "threshold": 0.05, "patience": 1, "cooldown": 2, "factor": 0.5},
    {
        "mode": "max",
        "threshold_mode": "abs",
        "threshold": 0.0,
        "patience": 0,
        "cooldown": 1,
        "factor": 0.7,
        "min_lr": [1e-3, 1e-5],
    },
    {"mode": "min", "patience": 3, "cooldown": 5, "factor": 0.3, "min_lr": 1e-4, "eps": 1e-3},
]


# ------------------------------------------------------------ (2) parity with torch


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    ours_opt = StubOptimizer(case.groups)
    ref_opt = torch_optimizer(torch, case.groups)
    ours = case.build(sched_mod, ours_opt)
    ref = case.build(torch.optim.lr_scheduler, ref_opt)
    for _ in range(case.steps):
        assert snapshot(ours) == snapshot(ref)
        if hasattr(ref, "base_lrs"):
            assert ours.base_lrs == ref.base_lrs
        ref_opt.step()  # torch warns if its scheduler steps before the optimizer
        ours.step()
        ref.step()
    assert snapshot(ours) == snapshot(ref)


@pytest.mark.parametrize("config", PLATEAU_CONFIGS)
def test_plateau_matches_torch(config):
    torch = pytest.importorskip("torch")
    ours_opt = StubOptimizer()
    ref_opt = torch_optimizer(torch, MOMENTUM_GROUPS)
    ours = sched_mod.ReduceLROnPlateau(ours_opt, **config)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, **config)
    reductions = 0
    for metric in plateau_metrics(160, config["mode"]):
        before = ours.get_last_lr()
        ours.step(metric)
        ref.step(metric)
        reductions += ours.get_last_lr() != before
        assert ours.get_last_lr() == ref.get_last_lr()
        assert group_values(ours_opt) == group_values(ref_opt)
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter, ours.last_epoch) == (
            ref.best,
            ref.num_bad_epochs,
            ref.cooldown_counter,
            ref.last_epoch,
        )
    assert reductions >= 2  # the curve does exercise the reductions


# --------------------------------------------------- (3) JSON state-dict round trips


def _json_round_trip(state):
    text = json.dumps(state, allow_nan=False)
    restored = json.loads(text)
    assert restored == state  # no tuples, int keys, Counters or non-finite floats
    return restored


def _restore_optimizer(dst, src):
    """What loading the optimizer's own state does: copy the param groups' values."""
    for g_dst, g_src in zip(dst.param_groups, src.param_groups):
        g_dst.clear()
        g_dst.update(copy.deepcopy(g_src))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
@pytest.mark.parametrize("split", [0, 7, 0.5])
def test_state_dict_round_trip(case, split):
    k = int(case.steps * split) if isinstance(split, float) else split
    opt_a = StubOptimizer(case.groups)
    a = case.build(sched_mod, opt_a)
    for _ in range(k):
        a.step()
    state = a.state_dict()
    assert "optimizer" not in state
    restored = _json_round_trip(state)

    opt_b = StubOptimizer(case.groups)
    b = case.build(sched_mod, opt_b)  # the constructor moves opt_b's lrs ...
    _restore_optimizer(opt_b, opt_a)  # ... then the optimizer's state is loaded ...
    b.load_state_dict(restored)  # ... then the scheduler's
    assert b.state_dict() == state
    for _ in range(case.steps - k):
        a.step()
        b.step()
        assert snapshot(b) == snapshot(a)
    assert b.state_dict() == a.state_dict()


def test_state_dict_is_a_copy():
    opt = StubOptimizer()
    sched = sched_mod.MultiStepLR(opt, [3, 1, 3])
    state = sched.state_dict()
    assert state["milestones"] == [1, 3, 3]
    state["milestones"].append(2)
    state["base_lrs"][0] = 5.0
    assert sched.milestones == [1, 3, 3]
    assert sched.base_lrs == [0.1, 0.01]
    sched.load_state_dict(state)
    state["milestones"].clear()
    assert sched.milestones == [1, 3, 3, 2]


@pytest.mark.parametrize("config", PLATEAU_CONFIGS)
@pytest.mark.parametrize("split", [0, 1, 40])
def test_plateau_state_dict_round_trip(config, split):
    metrics = plateau_metrics(120, config["mode"])
    opt_a = StubOptimizer()
    a = sched_mod.ReduceLROnPlateau(opt_a, **config)
    for metric in metrics[:split]:
        a.step(metric)
    state = a.state_dict()
    if split == 0:
        assert state["best"] == ("inf" if config["mode"] == "min" else "-inf")
    restored = _json_round_trip(state)
    opt_b = StubOptimizer()
    b = sched_mod.ReduceLROnPlateau(opt_b, **config)
    _restore_optimizer(opt_b, opt_a)
    b.load_state_dict(restored)
    assert b.best == a.best
    for metric in metrics[split:]:
        a.step(metric)
        b.step(metric)
        assert (b.get_last_lr(), b.best, b.num_bad_epochs, b.cooldown_counter) == (
            a.get_last_lr(),
            a.best,
            a.num_bad_epochs,
            a.cooldown_counter,
        )
        assert group_values(opt_b) == group_values(opt_a)


# ------------------------------------------------------------- (4) bad arguments

# (id, call(module, optimizer, other optimizer), exception, text the message must contain, torch raises too)
BAD_ARGS = [
    ("constant-factor-1.5", lambda m, o, other: m.ConstantLR(o, 1.5), ValueError, "between", True),
    ("constant-factor-neg", lambda m, o, other: m.ConstantLR(o, -0.1), ValueError, "0 and 1", True),
    (
        "constant-factor-nan",
        lambda m, o, other: m.ConstantLR(o, math.nan),
        ValueError,
        "factor",
        False,
    ),
    ("constant-factor-str", lambda m, o, other: m.ConstantLR(o, "x"), TypeError, "factor", True),
    (
        "constant-total-neg",
        lambda m, o, other: m.ConstantLR(o, 0.5, total_iters=-1),
        ValueError,
        "total_iters",
        False,
    ),
    (
        "constant-total-float",
        lambda m, o, other: m.ConstantLR(o, 0.5, total_iters=2.5),
        TypeError,
        "total_iters",
        False,
    ),
    (
        "poly-total-0",
        lambda m, o, other: m.PolynomialLR(o, total_iters=0),
        ValueError,
        "total_iters",
        False,
    ),
    ("poly-power-neg", lambda m, o, other: m.PolynomialLR(o, 5, -1.0), ValueError, "power", False),
    (
        "poly-power-inf",
        lambda m, o, other: m.PolynomialLR(o, 5, math.inf),
        ValueError,
        "power",
        False,
    ),
    ("poly-power-str", lambda m, o, other: m.PolynomialLR(o, 5, "2"), TypeError, "power", False),
    ("no-param-groups", lambda m, o, other: m.StepLR(object(), 3), TypeError, "optimizer", True),
    (
        "groups-without-lr",
        lambda m, o, other: m.ExponentialLR(StubOptimizer(({"x": 1},)), 0.9),
        TypeError,
        "optimizer",
        False,
    ),
    (
        "resume-without-initial-lr",
        lambda m, o, other: m.StepLR(o, 3, last_epoch=4),
        KeyError,
        "initial_lr",
        True,
    ),
    ("step-size-0", lambda m, o, other: m.StepLR(o, step_size=0), ValueError, "step_size", False),
    (
        "step-size-float",
        lambda m, o, other: m.StepLR(o, step_size=2.5),
        TypeError,
        "step_size",
        False,
    ),
    ("step-gamma-str", lambda m, o, other: m.StepLR(o, 3, gamma="0.1"), TypeError, "gamma", False),
    (
        "multistep-not-iterable",
        lambda m, o, other: m.MultiStepLR(o, milestones=5),
        TypeError,
        "milestones",
        True,
    ),
    (
        "multistep-float-milestone",
        lambda m, o, other: m.MultiStepLR(o, [3, 4.5]),
        TypeError,
        "milestones",
        False,
    ),
    (
        "multistep-gamma-none",
        lambda m, o, other: m.MultiStepLR(o, [3], gamma=None),
        TypeError,
        "gamma",
        False,
    ),
    (
        "exp-gamma-str",
        lambda m, o, other: m.ExponentialLR(o, gamma="0.9"),
        TypeError,
        "gamma",
        False,
    ),
    ("cos-tmax-0", lambda m, o, other: m.CosineAnnealingLR(o, T_max=0), ValueError, "T_max", False),
    (
        "cos-eta-min-str",
        lambda m, o, other: m.CosineAnnealingLR(o, 10, eta_min="0"),
        TypeError,
        "eta_min",
        False,
    ),
    (
        "linear-start-0",
        lambda m, o, other: m.LinearLR(o, start_factor=0.0),
        ValueError,
        "start_factor",
        True,
    ),
    (
        "linear-start-above-1",
        lambda m, o, other: m.LinearLR(o, start_factor=1.5),
        ValueError,
        "start_factor",
        True,
    ),
    (
        "linear-end-negative",
        lambda m, o, other: m.LinearLR(o, end_factor=-0.1),
        ValueError,
        "end_factor",
        True,
    ),
    (
        "linear-end-above-1",
        lambda m, o, other: m.LinearLR(o, end_factor=1.1),
        ValueError,
        "end_factor",
        True,
    ),
    (
        "linear-total-0",
        lambda m, o, other: m.LinearLR(o, total_iters=0),
        ValueError,
        "total_iters",
        False,
    ),
    (
        "onecycle-no-length",
        lambda m, o, other: m.OneCycleLR(o, 0.1),
        ValueError,
        "total_steps",
        True,
    ),
    (
        "onecycle-epochs-only",
        lambda m, o, other: m.OneCycleLR(o, 0.1, epochs=3),
        ValueError,
        "steps_per_epoch",
        True,
    ),
    (
        "onecycle-total-0",
        lambda m, o, other: m.OneCycleLR(o, 0.1, total_steps=0),
        ValueError,
        "total_steps",
        True,
    ),
    (
        # the library's rule, pyfastopt._validate: a float is the wrong type for a count
        # (TypeError; torch says ValueError)
        "onecycle-total-float",
        lambda m, o, other: m.OneCycleLR(o, 0.1, total_steps=10.0),
        TypeError,
        "total_steps",
        False,
    ),
    (
        "onecycle-epochs-0",
        lambda m, o, other: m.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=5),
        ValueError,
        "epochs",
        True,
    ),
    (
        "onecycle-steps-per-epoch-neg",
        lambda m, o, other: m.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-1),
        ValueError,
        "steps_per_epoch",
        True,
    ),
    (
        "onecycle-pct-above-1",
        lambda m, o, other: m.OneCycleLR(o, 0.1, 10, pct_start=1.5),
        ValueError,
        "pct_start",
        True,
    ),
    (
        "onecycle-anneal",
        lambda m, o, other: m.OneCycleLR(o, 0.1, 10, anneal_strategy="exp"),
        ValueError,
        "anneal_strategy",
        True,
    ),
    (
        "onecycle-max-lr-length",
        lambda m, o, other: m.OneCycleLR(o, [0.1], 10),
        ValueError,
        "max_lr",
        True,
    ),
    (
        "onecycle-max-lr-str",
        lambda m, o, other: m.OneCycleLR(o, "0.1", 10),
        TypeError,
        "max_lr",
        False,
    ),
    (
        "onecycle-base-momentum-length",
        lambda m, o, other: m.OneCycleLR(o, 0.1, 10, base_momentum=[0.8, 0.8, 0.8]),
        ValueError,
        "base_momentum",
        True,
    ),
    (
        "onecycle-max-momentum-length",
        lambda m, o, other: m.OneCycleLR(o, 0.1, 10, max_momentum=(0.9,)),
        ValueError,
        "max_momentum",
        True,
    ),
    (
        "onecycle-no-momentum",
        lambda m, o, other: m.OneCycleLR(StubOptimizer(PLAIN_GROUPS), 0.1, 10),
        ValueError,
        "momentum",
        False,
    ),
    (
        "onecycle-div-0",
        lambda m, o, other: m.OneCycleLR(o, 0.1, 10, div_factor=0),
        ValueError,
        "div_factor",
        False,
    ),
    (
        "onecycle-final-div-neg",
        lambda m, o, other: m.OneCycleLR(o, 0.1, 10, final_div_factor=-1.0),
        ValueError,
        "final_div_factor",
        False,
    ),
    (
        "onecycle-empty-phase",
        lambda m, o, other: m.OneCycleLR(o, 0.1, 10, pct_start=0.1),
        ValueError,
        "pct_start",
        False,
    ),
    (
        "plateau-factor-1",
        lambda m, o, other: m.ReduceLROnPlateau(o, factor=1.0),
        ValueError,
        "factor",
        True,
    ),
    (
        "plateau-mode",
        lambda m, o, other: m.ReduceLROnPlateau(o, mode="avg"),
        ValueError,
        "mode",
        True,
    ),
    (
        "plateau-threshold-mode",
        lambda m, o, other: m.ReduceLROnPlateau(o, threshold_mode="pct"),
        ValueError,
        "threshold_mode",
        True,
    ),
    (
        "plateau-min-lr-length",
        lambda m, o, other: m.ReduceLROnPlateau(o, min_lr=[0.1]),
        ValueError,
        "min_lr",
        True,
    ),
    (
        "plateau-patience-neg",
        lambda m, o, other: m.ReduceLROnPlateau(o, patience=-1),
        ValueError,
        "patience",
        False,
    ),
    (
        "plateau-patience-float",
        lambda m, o, other: m.ReduceLROnPlateau(o, patience=1.5),
        TypeError,
        "patience",
        False,
    ),
    (
        "plateau-cooldown-neg",
        lambda m, o, other: m.ReduceLROnPlateau(o, cooldown=-2),
        ValueError,
        "cooldown",
        False,
    ),
    (
        "plateau-eps-str",
        lambda m, o, other: m.ReduceLROnPlateau(o, eps="1e-8"),
        TypeError,
        "eps",
        False,
    ),
    (
        "seq-no-schedulers",
        lambda m, o, other: m.SequentialLR(o, [], []),
        ValueError,
        "scheduler",
        True,
    ),
    (
        "seq-milestone-count",
        lambda m, o, other: m.SequentialLR(o, [m.StepLR(o, 3), m.StepLR(o, 4)], []),
        ValueError,
        "milestones",
        True,
    ),
    (
        "seq-too-many-milestones",
        lambda m, o, other: m.SequentialLR(o, [m.StepLR(o, 3)], [4]),
        ValueError,
        "milestones",
        True,
    ),
    (
        "seq-other-optimizer",
        lambda m, o, other: m.SequentialLR(o, [m.StepLR(o, 3), m.StepLR(other, 3)], [5]),
        ValueError,
        "same optimizer",
        True,
    ),
    (
        "seq-plateau",
        lambda m, o, other: m.SequentialLR(o, [m.StepLR(o, 3), m.ReduceLROnPlateau(o)], [5]),
        ValueError,
        "ReduceLROnPlateau",
        True,
    ),
    (
        "seq-not-a-scheduler",
        lambda m, o, other: m.SequentialLR(o, [m.StepLR(o, 3), object()], [5]),
        TypeError,
        "schedulers[1]",
        True,
    ),
    (
        "seq-decreasing-milestones",
        lambda m, o, other: m.SequentialLR(
            o, [m.StepLR(o, 3), m.StepLR(o, 2), m.StepLR(o, 4)], [9, 4]
        ),
        ValueError,
        "milestones",
        False,
    ),
    (
        "seq-nested",
        lambda m, o, other: m.SequentialLR(
            o, [m.SequentialLR(o, [m.StepLR(o, 3)], []), m.StepLR(o, 2)], [5]
        ),
        TypeError,
        "nest",
        False,
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "text"), [b[1:4] for b in BAD_ARGS], ids=[b[0] for b in BAD_ARGS]
)
def test_bad_arguments(call, exc, text):
    with pytest.raises(exc) as info:
        call(sched_mod, StubOptimizer(), StubOptimizer())
    assert text in str(info.value)


TORCH_REJECTS = [b for b in BAD_ARGS if b[4]]


@pytest.mark.parametrize(
    ("call", "exc"), [b[1:3] for b in TORCH_REJECTS], ids=[b[0] for b in TORCH_REJECTS]
)
def test_torch_rejects_the_same(call, exc):
    """Where torch validates an argument too, it raises the same exception type."""
    torch = pytest.importorskip("torch")
    with pytest.raises(exc):
        call(
            torch.optim.lr_scheduler,
            torch_optimizer(torch, MOMENTUM_GROUPS),
            torch_optimizer(torch, MOMENTUM_GROUPS),
        )


def test_onecycle_pct_start_accepts_any_real_number():
    """pct_start=0 (an int) is a real number like 0.0 (torch insists on a float)."""
    lrs = []
    for pct in (0, 0.0, np.float32(0.0), np.array(0.0)):
        opt = StubOptimizer()
        sched = sched_mod.OneCycleLR(opt, 0.1, 10, pct_start=pct)
        lrs.append([(sched.step(), sched.get_last_lr())[1] for _ in range(9)])
    assert all(r == lrs[0] for r in lrs)


def test_plateau_load_rejects_bad_mode():
    sched = sched_mod.ReduceLROnPlateau(StubOptimizer())
    state = sched.state_dict()
    state["mode"] = "median"
    with pytest.raises(ValueError, match="mode"):
        sched.load_state_dict(state)


def test_sequential_load_rejects_wrong_count():
    opt = StubOptimizer()
    seq = sched_mod.SequentialLR(opt, [sched_mod.StepLR(opt, 3), sched_mod.StepLR(opt, 4)], [5])
    state = seq.state_dict()
    state["_schedulers"].pop()
    with pytest.raises(ValueError, match="scheduler"):
        seq.load_state_dict(state)
