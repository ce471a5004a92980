"""Bench cases for ``pyfastopt.optim``: one Adam, AdamW or SGD-momentum step.

Each case times one ``step`` over float32 parameters, either one tensor (1e5, 1e6, 1e7
elements) or 200 tensors of 5e4 (the multi-tensor case, 1e7 in all). The gradients are
fixed arrays, so a step is pure optimizer work. All three are memory-bound, and ``work``
is the bytes a fused step moves per element:

* Adam / AdamW: read param, grad, m, v; write param, m, v = 28 B/element, compared with
  the Adam-like in-place stream (``limit="bandwidth_adam"``);
* SGD with momentum: read param, grad, buffer; write param, buffer = 20 B/element,
  compared with the SGD-like stream (``limit="bandwidth_sgd"``).

Implementations:

* ``pyfastopt``: ``opt.step(grads)``, Python-side argument handling included.
* ``numpy``: the same update with preallocated scratch (one buffer as large as the
  largest tensor, shared by all tensors) and in-place ufuncs (``out=``), bias corrections
  as Python floats, a Python loop over the tensors. Adam has two variants, the harness
  keeps the faster: "torch's order" (``sqrt(v) / sqrt(bc2) + eps``, as PyTorch writes
  it) and "folded constants" (the same quotient with the constants moved out:
  ``c * m / (sqrt(v) + eps * c)``, one pass fewer).
* ``torch``: ``torch.optim.<Adam|AdamW|SGD>`` with ``foreach=True`` and with
  ``fused=True`` (both run on CPU in the torch versions that have them; a variant that
  cannot be built or fails its first step is left out), the faster one counts. ``.grad``
  is set once, sharing memory with the NumPy gradients; ``opt.step()`` is timed.

All implementations update the same parameter arrays (torch through ``from_numpy``
views) and each keeps its own optimizer state. Optimizer steps are stateful, so
``reset()`` puts the parameters back and sets every implementation's state to the same
*warm* state (step 10, nonzero moments / momentum buffer): the correctness guard then
compares one steady-state step, the code path that is timed, including the bias
corrections (a first step from zero state would make Adam's update ``lr * sign(g)`` and
skip SGD's momentum blend). During timing the steps go on from there without resets:
with fixed gradients Adam's moments converge and the parameters drift by at most ``lr``
per step, SGD's buffer converges to ``g / (1 - momentum)``; everything stays finite and
far from float32 limits for millions of steps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import optim
from .registry import Case, Context, Prepared, fmt_count, register

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 1e-2  # AdamW's (decoupled); Adam runs without weight decay
MOMENTUM = 0.9
WARM_STEP = 10  # the step count of the state every implementation starts from


@dataclass(frozen=True)
class _Kind:
    """One optimizer under test."""

    label: str  # the case name's prefix
    bytes_per_element: int
    limit: str
    make_pyfastopt: Callable[[list[np.ndarray]], Any]
    torch_class: str  # attribute of torch.optim
    torch_kwargs: dict[str, Any]
    state_names: tuple[str, ...]  # pyfastopt's and torch's state arrays (same names)
    note: str


ADAM = _Kind(
    label="Adam",
    bytes_per_element=28,
    limit="bandwidth_adam",
    make_pyfastopt=lambda ps: optim.Adam(ps, lr=LR, betas=BETAS, eps=EPS),
    torch_class="Adam",
    torch_kwargs={"lr": LR, "betas": BETAS, "eps": EPS},
    state_names=("exp_avg", "exp_avg_sq"),
    note="lr=1e-3; 28 B/element (read p, g, m, v; write p, m, v)",
)
ADAMW = _Kind(
    label="AdamW wd=1e-2",
    bytes_per_element=28,
    limit="bandwidth_adam",
    make_pyfastopt=lambda ps: optim.AdamW(
        ps, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY
    ),
    torch_class="AdamW",
    torch_kwargs={"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": WEIGHT_DECAY},
    state_names=("exp_avg", "exp_avg_sq"),
    note="lr=1e-3, decoupled weight decay 1e-2; 28 B/element",
)
SGD_MOMENTUM = _Kind(
    label="SGD momentum=0.9",
    bytes_per_element=20,
    limit="bandwidth_sgd",
    make_pyfastopt=lambda ps: optim.SGD(ps, lr=LR, momentum=MOMENTUM),
    torch_class="SGD",
    torch_kwargs={"lr": LR, "momentum": MOMENTUM},
    state_names=("momentum_buffer",),
    note="lr=1e-3; 20 B/element (read p, g, buf; write p, buf)",
)
KINDS = (ADAM, ADAMW, SGD_MOMENTUM)


# --------------------------------------------------------------------------- NumPy


def _scratch_views(params: list[np.ndarray]) -> list[np.ndarray]:
    """One scratch buffer as large as the largest tensor; a view of it per tensor."""
    scratch = np.empty(max(p.size for p in params), dtype=params[0].dtype)
    return [scratch[: p.size].reshape(p.shape) for p in params]


class NumpyAdam:
    """Adam / AdamW (PyTorch's equations, no AMSGrad) with in-place NumPy ufuncs.

    ``state`` holds ``exp_avg`` / ``exp_avg_sq`` lists and the shared ``step`` count;
    assign them (e.g. with ``np.copyto``) to start from a given state.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        if weight_decay and not decoupled:
            raise ValueError("NumpyAdam: coupled weight decay is not implemented")
        self.params = list(params)
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.decay = 1.0 - lr * weight_decay if decoupled and weight_decay else None
        self.exp_avg = [np.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [np.zeros_like(p) for p in self.params]
        self.tmp = _scratch_views(self.params)
        self.step_count = 0

    def _moments(
        self,
        p: Any,
        g: Any,
        m: Any,
        v: Any,
        tmp: Any,
        multiply: Any = np.multiply,
        add: Any = np.add,
    ) -> None:
        b1, b2 = self.b1, self.b2
        if self.decay is not None:
            multiply(p, self.decay, out=p)
        multiply(m, b1, out=m)  # m = b1 m + (1 - b1) g
        multiply(g, 1.0 - b1, out=tmp)
        add(m, tmp, out=m)
        multiply(v, b2, out=v)  # v = b2 v + (1 - b2) g^2
        multiply(g, g, out=tmp)
        multiply(tmp, 1.0 - b2, out=tmp)
        add(v, tmp, out=v)

    def step_torch_order(self, grads: Any) -> None:
        """``p -= lr/bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``, in PyTorch's order."""
        self.step_count += 1
        t = self.step_count
        step_size = self.lr / (1.0 - self.b1**t)
        inv_c = 1.0 / math.sqrt(1.0 - self.b2**t)
        eps = self.eps
        multiply, add, divide, sqrt = np.multiply, np.add, np.divide, np.sqrt
        for p, g, m, v, tmp in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, self.tmp):
            self._moments(p, g, m, v, tmp)
            sqrt(v, out=tmp)
            multiply(tmp, inv_c, out=tmp)
            add(tmp, eps, out=tmp)
            divide(m, tmp, out=tmp)
            multiply(tmp, -step_size, out=tmp)
            add(p, tmp, out=p)

    def step_folded(self, grads: Any) -> None:
        """The same update as ``p -= (lr/bc1 * c) * m / (sqrt(v) + eps * c)``, c = sqrt(bc2)."""
        self.step_count += 1
        t = self.step_count
        c = math.sqrt(1.0 - self.b2**t)
        scale = -self.lr / (1.0 - self.b1**t) * c
        eps_c = self.eps * c
        multiply, add, divide, sqrt = np.multiply, np.add, np.divide, np.sqrt
        for p, g, m, v, tmp in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, self.tmp):
            self._moments(p, g, m, v, tmp)
            sqrt(v, out=tmp)
            add(tmp, eps_c, out=tmp)
            divide(m, tmp, out=tmp)
            multiply(tmp, scale, out=tmp)
            add(p, tmp, out=p)


class NumpySGD:
    """SGD with momentum (PyTorch's equations, no dampening/Nesterov) with in-place ufuncs."""

    def __init__(self, params: Any, lr: float, momentum: float) -> None:
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self.momentum_buffer = [np.zeros_like(p) for p in self.params]
        self.tmp = _scratch_views(self.params)
        self.step_count = 0

    def step(self, grads: Any) -> None:
        first = self.step_count == 0
        self.step_count += 1
        mu, neg_lr = self.momentum, -self.lr
        multiply, add, copyto = np.multiply, np.add, np.copyto
        for p, g, buf, tmp in zip(self.params, grads, self.momentum_buffer, self.tmp):
            if first:
                copyto(buf, g)
            else:
                multiply(buf, mu, out=buf)  # buf = mu buf + g
                add(buf, g, out=buf)
            multiply(buf, neg_lr, out=tmp)  # p -= lr buf
            add(p, tmp, out=p)


# --------------------------------------------------------------------------- setup


def _setup(ctx: Context, kind: _Kind, ntensors: int, n_each: int) -> Prepared:
    rng = ctx.rng()
    f32 = np.float32
    p0 = [rng.standard_normal(n_each, dtype=f32) for _ in range(ntensors)]
    grads = [rng.standard_normal(n_each, dtype=f32) for _ in range(ntensors)]
    # the warm state: plausible moments / momentum buffer after WARM_STEP steps
    warm: dict[str, list[np.ndarray]] = {}
    for name in kind.state_names:
        if name == "exp_avg_sq":
            warm[name] = [
                (0.01 * (rng.standard_normal(n_each, dtype=f32) ** 2 + 0.01)).astype(f32)
                for _ in range(ntensors)
            ]
        else:
            warm[name] = [0.5 * rng.standard_normal(n_each, dtype=f32) for _ in range(ntensors)]
    params = [p.copy() for p in p0]  # shared by every implementation; reset() restores

    pf = kind.make_pyfastopt(params)
    pf_groups = pf.state_dict()["param_groups"]
    if kind is SGD_MOMENTUM:
        ref: Any = NumpySGD(params, LR, MOMENTUM)
        numpy_impl: Any = functools.partial(ref.step, grads)
    else:
        ref = NumpyAdam(
            params,
            LR,
            BETAS,
            EPS,
            weight_decay=WEIGHT_DECAY if kind is ADAMW else 0.0,
            decoupled=kind is ADAMW,
        )
        numpy_impl = {
            "torch's order": functools.partial(ref.step_torch_order, grads),
            "folded constants": functools.partial(ref.step_folded, grads),
        }
    impls: dict[str, Any] = {
        "pyfastopt": functools.partial(pf.step, grads),
        "numpy": numpy_impl,
    }

    torch = ctx.torch
    torch_opts: list[Any] = []
    tparams: list[Any] = []
    if torch is not None:
        tparams = [torch.from_numpy(p) for p in params]  # views: they update `params`
        for t, g in zip(tparams, grads):
            t.grad = torch.from_numpy(g)
        cls = getattr(torch.optim, kind.torch_class)
        variants = {}
        for flag in ("foreach", "fused"):
            try:
                opt = cls(tparams, **kind.torch_kwargs, **{flag: True})
            except (TypeError, ValueError, RuntimeError):  # a torch without this variant
                continue
            torch_opts.append(opt)
            variants[f"{flag}=True"] = opt.step
        if variants:
            impls["torch"] = variants

    def reset() -> None:
        for p, p_init in zip(params, p0):
            np.copyto(p, p_init)
        state = {
            i: {"step": WARM_STEP, **{name: warm[name][i] for name in kind.state_names}}
            for i in range(ntensors)
        }
        pf.load_state_dict({"state": state, "param_groups": pf_groups})  # copies the arrays
        ref.step_count = WARM_STEP
        for name in kind.state_names:
            for dst, src in zip(getattr(ref, name), warm[name]):
                np.copyto(dst, src)
        for opt in torch_opts:
            opt.state.clear()
            for i, t in enumerate(tparams):
                st: dict[str, Any] = {
                    name: torch.from_numpy(warm[name][i].copy()) for name in kind.state_names
                }
                if kind is not SGD_MOMENTUM:
                    st["step"] = torch.tensor(float(WARM_STEP), dtype=torch.float32)
                opt.state[t] = st

    def output(impl: str, returned: Any) -> np.ndarray:
        return np.concatenate([p.ravel() for p in params])

    return Prepared(impls, reset=reset, output=output)


# --------------------------------------------------------------------------- registry

#: (tensors, elements per tensor, quick)
SIZES = (
    (1, 10**5, False),
    (1, 10**6, False),
    (1, 10**7, False),
    (200, 5 * 10**4, False),
    (1, 10**5, True),
    (20, 5 * 10**3, True),
)


def case_name(kind: _Kind, ntensors: int, n_each: int) -> str:
    size = f"n={fmt_count(n_each)}" if ntensors == 1 else f"{ntensors}x{fmt_count(n_each)}"
    return f"{kind.label} f32 {size}"


def _register() -> None:
    for kind in KINDS:
        for ntensors, n_each, quick in SIZES:
            n = ntensors * n_each
            multi = f"; {ntensors} tensors, {fmt_count(n)} elements in all" if ntensors > 1 else ""
            register(
                Case(
                    family="optim",
                    name=case_name(kind, ntensors, n_each),
                    limit=kind.limit,
                    work=kind.bytes_per_element * n,
                    setup=functools.partial(_setup, kind=kind, ntensors=ntensors, n_each=n_each),
                    quick=quick,
                    rtol=1e-5,
                    atol=1e-7,
                    note=kind.note + multi,
                )
            )


_register()
