"""Float64 NumPy reference optimizers: the oracle for ``pyfastopt.optim``.

Plain, functional loops over tensors, written for clarity, not speed. Each class mirrors
the public constructor of the optimizer of the same name (``RefSGD`` <-> ``SGD`` ...) and
implements the update equations of ``torch.optim`` (its single-tensor form), plus the
``l1`` extension of pyfastopt. Nothing here calls pyfastopt or torch.

Usage::

    ref = RefAdam([p.astype(np.float64) for p in params], lr=1e-3, amsgrad=True)
    ref.step([g.astype(np.float64) for g in grads])
    ref.params            # flat list of float64 arrays, updated in place
    ref.param_groups      # list of dicts; change ``"lr"`` between steps like in torch
    ref.state             # per-parameter dicts (torch's key names), aligned with params

Notation used in the docstrings: ``p`` a parameter, ``g`` its gradient, ``t`` the step
number (1 for the first step), ``lr`` the group's learning rate read at every step.
Every rule starts with the same gradient preparation ("prep"):

.. math::

    g &\\leftarrow -g \\quad \\text{if maximize} \\\\
    g &\\leftarrow g + \\lambda\\, p \\quad \\text{(coupled weight decay, if } \\lambda \\ne 0) \\\\
    g &\\leftarrow g + \\ell_1\\, \\operatorname{sign}(p) \\quad (\\text{if } \\ell_1 \\ne 0)

so both penalties shrink weights whether or not ``maximize`` is set. ``sign`` is NumPy's
(``sign(0) = 0``, ``sign(nan) = nan``; a NaN parameter stays NaN whatever its sign term).

Moving averages use PyTorch's ``lerp`` where PyTorch does (Adam's first moment,
RMSprop's centred mean), including its two-branch evaluation
``lerp(a, b, w) = a + w (b - a)`` if ``w < 0.5`` else ``b - (b - a)(1 - w)``. In float64
the branch only matters for non-finite values: ``lerp(inf, 1, 0.1)`` is NaN, which is
how a moment poisoned by an infinite gradient behaves in torch.

The constructor takes an optional keyword ``dtype`` (default float64) that runs the same
equations in another floating dtype; the test-suite uses float64 only (float32 is a
convenience for studying rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "REFERENCES",
    "RefAdagrad",
    "RefAdam",
    "RefAdamW",
    "RefRMSprop",
    "RefSGD",
    "bf16_bits",
    "bf16_from_bits",
    "bf16_round",
]


# ---------------------------------------------------------------------------- bfloat16


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest, ties to even.

    The top 16 bits of the float32 pattern are kept after adding ``0x7FFF`` plus the
    lowest kept bit (the usual integer trick for round-half-even). NaN maps to a quiet NaN
    with its sign kept; infinities and values that round past the largest bfloat16 become
    infinities (IEEE overflow under round-to-nearest).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    rounded = ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        quiet = ((u >> 16) | 0x0040).astype(np.uint16)  # keep sign and payload, set quiet bit
        rounded = np.where(nan, quiet, rounded)
    return rounded


def bf16_from_bits(b: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact)."""
    b = np.ascontiguousarray(b, dtype=np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even) and back to float32.

    NaN stays NaN, +-inf stay +-inf, signed zeros keep their sign.
    """
    return bf16_from_bits(bf16_bits(x))


# ---------------------------------------------------------------------------- helpers


def _lerp(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """``a + w (b - a)`` evaluated like PyTorch: the branch depends on ``w`` only."""
    if abs(w) < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (1.0 - w)


def _check_nonneg(name: str, value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"invalid {name}: {value!r}")


class _RefOptimizer:
    """Param groups, defaults and per-parameter state shared by the references.

    ``params`` is a list of arrays or a list of dicts with a ``"params"`` list and any
    hyper-parameters overriding the constructor's defaults. The arrays are *not* copied:
    pass float64 copies, they are updated in place.
    """

    def __init__(
        self, params: Sequence[Any], defaults: dict[str, Any], dtype: Any = np.float64
    ) -> None:
        self.dtype = np.dtype(dtype)
        params = list(params)
        if not params:
            raise ValueError("params is empty")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups: list[dict[str, Any]] = []
        for group in params:
            full = dict(defaults)
            full.update(group)
            full["params"] = list(group["params"])
            for p in full["params"]:
                if p.dtype != self.dtype:
                    raise TypeError(f"reference params must be {self.dtype}, got {p.dtype}")
            self._validate(full)
            self.param_groups.append(full)
        self.params: list[np.ndarray] = [p for g in self.param_groups for p in g["params"]]
        ids = [id(p) for p in self.params]
        if len(set(ids)) != len(ids):
            raise ValueError("a parameter appears twice")
        self.state: list[dict[str, Any]] = [{"step": 0} for _ in self.params]

    def _validate(self, group: dict[str, Any]) -> None:
        for name in ("lr", "weight_decay", "l1"):
            _check_nonneg(name, group[name])

    def _prep_grad(
        self, p: np.ndarray, g: np.ndarray, group: dict[str, Any], coupled_wd: bool = True
    ) -> np.ndarray:
        """The common gradient preparation: maximize, coupled weight decay, l1."""
        g = np.array(g, dtype=self.dtype)  # private copy
        if group["maximize"]:
            g = -g
        if coupled_wd and group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        if group["l1"] != 0:
            g = g + group["l1"] * np.sign(p)
        return g

    def step(self, grads: Sequence[np.ndarray]) -> None:
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"expected {len(self.params)} gradients, got {len(grads)}")
        for i, p in enumerate(self.params):
            if np.shape(grads[i]) != p.shape:
                raise ValueError(f"grads[{i}]: shape {np.shape(grads[i])} != param shape {p.shape}")
        i = 0
        # NaN/inf inputs are part of the contract: IEEE results, no warnings
        with np.errstate(all="ignore"):
            for group in self.param_groups:
                for p in group["params"]:
                    st = self.state[i]
                    st["step"] += 1
                    self._update(p, np.asarray(grads[i]), st, group)
                    i += 1

    def _update(
        self, p: np.ndarray, g: np.ndarray, st: dict[str, Any], group: dict[str, Any]
    ) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------- SGD


class RefSGD(_RefOptimizer):
    r"""SGD with momentum, dampening, Nesterov momentum, maximize, weight decay and l1.

    After the gradient preparation (see the module docstring), with momentum
    :math:`\mu`, dampening :math:`\tau` and buffer :math:`b`:

    .. math::

        b_t &= g_t \quad (t = 1: \text{the buffer starts as the gradient itself,
               no dampening}) \\
        b_t &= \mu\, b_{t-1} + (1 - \tau)\, g_t \quad (t > 1) \\
        d_t &= g_t + \mu\, b_t \ \text{(nesterov)}, \quad b_t \ \text{(otherwise)},
               \quad g_t \ (\mu = 0,\ \text{no buffer}) \\
        p_t &= p_{t-1} - \mathrm{lr}\, d_t
    """

    def __init__(
        self,
        params: Sequence[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
        l1: float = 0.0,
        *,
        dtype: Any = np.float64,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "l1": l1,
        }
        super().__init__(params, defaults, dtype)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        _check_nonneg("momentum", group["momentum"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening == 0")

    def _update(self, p, g, st, group):
        g = self._prep_grad(p, g, group)
        mu = group["momentum"]
        if mu != 0:
            if "momentum_buffer" not in st:
                buf = g.copy()
            else:
                buf = mu * st["momentum_buffer"] + (1.0 - group["dampening"]) * g
            st["momentum_buffer"] = buf
            direction = g + mu * buf if group["nesterov"] else buf
        else:
            direction = g
        p -= group["lr"] * direction


# ---------------------------------------------------------------------------- Adam / AdamW


class RefAdam(_RefOptimizer):
    r"""Adam (coupled weight decay), with amsgrad, maximize, l1 and bias corrections.

    After the gradient preparation, with :math:`\beta_1, \beta_2`, :math:`\epsilon`:

    .. math::

        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1)
             = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad m_0 = 0 \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad v_0 = 0 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad, NaN-propagating)},
             \quad v_t \ \text{(otherwise)} \\
        p_t &= p_{t-1} - \frac{\mathrm{lr}}{1 - \beta_1^t}\,
               \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    ``state_dtype="bfloat16"`` models pyfastopt's compressed state: the moments are
    computed from their stored values, then rounded to float32 and to bfloat16 (nearest
    even) when stored; the parameter update uses the stored (rounded) moments.
    """

    decoupled = False

    def __init__(
        self,
        params: Sequence[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        maximize: bool = False,
        l1: float = 0.0,
        state_dtype: Any = None,
        *,
        dtype: Any = np.float64,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if state_dtype not in (None, "bfloat16"):
            raise ValueError(f"state_dtype must be None or 'bfloat16', got {state_dtype!r}")
        self.state_dtype = state_dtype
        # torch >= 2.6: Adam(decoupled_weight_decay=True) is AdamW
        self.decoupled = self.decoupled or bool(decoupled_weight_decay)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "l1": l1,
        }
        super().__init__(params, defaults, dtype)

    def _validate(self, group):
        super()._validate(group)
        _check_nonneg("eps", group["eps"])
        b1, b2 = group["betas"]
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"invalid betas: {group['betas']!r}")

    def _store(self, x: np.ndarray) -> np.ndarray:
        if self.state_dtype == "bfloat16":
            return bf16_round(x.astype(np.float32)).astype(self.dtype)
        return x

    def _update(self, p, g, st, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        t = st["step"]
        if "exp_avg" not in st:
            st["exp_avg"] = np.zeros_like(p)
            st["exp_avg_sq"] = np.zeros_like(p)
            if group["amsgrad"]:
                st["max_exp_avg_sq"] = np.zeros_like(p)
        if self.decoupled and wd != 0:
            p *= 1.0 - lr * wd  # decoupled decay first (AdamW)
        g = self._prep_grad(p, g, group, coupled_wd=not self.decoupled)
        m = self._store(_lerp(st["exp_avg"], g, 1.0 - b1))
        v = self._store(st["exp_avg_sq"] * b2 + (1.0 - b2) * g * g)
        st["exp_avg"], st["exp_avg_sq"] = m, v
        if group["amsgrad"]:
            prev = st["max_exp_avg_sq"]
            # NaN-propagating maximum, like torch.maximum
            vmax = self._store(np.maximum(prev, v))
            st["max_exp_avg_sq"] = vmax
            v = vmax
        step_size = lr / (1.0 - b1**t)
        bc2_sqrt = math.sqrt(1.0 - b2**t)
        denom = np.sqrt(v) / bc2_sqrt + eps
        p -= step_size * (m / denom)


class RefAdamW(RefAdam):
    r"""AdamW: Adam with decoupled weight decay (default :math:`\lambda = 10^{-2}`).

    .. math::

        p &\leftarrow p\,(1 - \mathrm{lr}\,\lambda) \quad \text{(before everything else)} \\
        g &\leftarrow \pm g + \ell_1 \operatorname{sign}(p)
            \quad \text{(no coupled decay term; sign of the decayed } p) \\
        &\text{then Adam's moments and update exactly as in } \texttt{RefAdam}.
    """

    decoupled = True

    def __init__(
        self,
        params: Sequence[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        maximize: bool = False,
        l1: float = 0.0,
        state_dtype: Any = None,
        *,
        dtype: Any = np.float64,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, maximize, l1, state_dtype, dtype=dtype
        )


# ---------------------------------------------------------------------------- RMSprop


class RefRMSprop(_RefOptimizer):
    r"""RMSprop with centring, momentum, maximize, weight decay and l1.

    After the gradient preparation, with smoothing :math:`\alpha` and momentum :math:`\mu`:

    .. math::

        s_t &= \alpha s_{t-1} + (1 - \alpha) g_t^2, \qquad s_0 = 0 \\
        a_t &= \operatorname{lerp}(a_{t-1}, g_t, 1 - \alpha), \quad
        d_t = \sqrt{s_t - a_t^2} + \epsilon \quad \text{(centered)}; \qquad
        d_t = \sqrt{s_t} + \epsilon \quad \text{(otherwise)} \\
        b_t &= \mu b_{t-1} + g_t / d_t, \ b_0 = 0, \quad p_t = p_{t-1} - \mathrm{lr}\, b_t
            \quad (\mu > 0) \\
        p_t &= p_{t-1} - \mathrm{lr}\, g_t / d_t \quad (\mu = 0)

    (Unlike SGD, the momentum buffer starts at zero, so the first step is ``g/d``.)
    """

    def __init__(
        self,
        params: Sequence[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        l1: float = 0.0,
        maximize: bool = False,
        *,
        dtype: Any = np.float64,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "l1": l1,
            "maximize": maximize,
        }
        super().__init__(params, defaults, dtype)

    def _validate(self, group):
        super()._validate(group)
        for name in ("eps", "momentum", "alpha"):
            _check_nonneg(name, group[name])

    def _update(self, p, g, st, group):
        alpha, eps, mu = group["alpha"], group["eps"], group["momentum"]
        if "square_avg" not in st:
            st["square_avg"] = np.zeros_like(p)
            if mu > 0:
                st["momentum_buffer"] = np.zeros_like(p)
            if group["centered"]:
                st["grad_avg"] = np.zeros_like(p)
        g = self._prep_grad(p, g, group)
        sq = st["square_avg"] * alpha + (1.0 - alpha) * g * g
        st["square_avg"] = sq
        if group["centered"]:
            ga = _lerp(st["grad_avg"], g, 1.0 - alpha)
            st["grad_avg"] = ga
            denom = np.sqrt(sq - ga * ga) + eps
        else:
            denom = np.sqrt(sq) + eps
        if mu > 0:
            buf = st["momentum_buffer"] * mu + g / denom
            st["momentum_buffer"] = buf
            p -= group["lr"] * buf
        else:
            p -= group["lr"] * (g / denom)


# ---------------------------------------------------------------------------- Adagrad


class RefAdagrad(_RefOptimizer):
    r"""Adagrad with learning-rate decay, initial accumulator, maximize, weight decay, l1.

    After the gradient preparation:

    .. math::

        S_0 &= \text{initial\_accumulator\_value}, \qquad S_t = S_{t-1} + g_t^2 \\
        \eta_t &= \frac{\mathrm{lr}}{1 + (t - 1)\,\text{lr\_decay}} \\
        p_t &= p_{t-1} - \eta_t\, \frac{g_t}{\sqrt{S_t} + \epsilon}
    """

    def __init__(
        self,
        params: Sequence[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        eps: float = 1e-10,
        l1: float = 0.0,
        initial_accumulator_value: float = 0.0,
        maximize: bool = False,
        *,
        dtype: Any = np.float64,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "eps": eps,
            "l1": l1,
            "initial_accumulator_value": initial_accumulator_value,
            "maximize": maximize,
        }
        super().__init__(params, defaults, dtype)
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                self.state[i]["sum"] = np.full_like(p, group["initial_accumulator_value"])
                i += 1

    def _validate(self, group):
        super()._validate(group)
        for name in ("eps", "lr_decay", "initial_accumulator_value"):
            _check_nonneg(name, group[name])

    def _update(self, p, g, st, group):
        g = self._prep_grad(p, g, group)
        clr = group["lr"] / (1.0 + (st["step"] - 1) * group["lr_decay"])
        s = st["sum"] + g * g
        st["sum"] = s
        p -= clr * (g / (np.sqrt(s) + group["eps"]))


REFERENCES: dict[str, type[_RefOptimizer]] = {
    "SGD": RefSGD,
    "Adam": RefAdam,
    "AdamW": RefAdamW,
    "RMSprop": RefRMSprop,
    "Adagrad": RefAdagrad,
}
