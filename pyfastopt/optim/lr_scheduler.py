"""Learning-rate schedulers with PyTorch's constructor arguments and lr sequences.

Every scheduler here drives any *optimizer-like* object: anything with a
``param_groups`` attribute that is a list of dicts, each holding at least a float
``"lr"``. The optimizers in :mod:`pyfastopt.optim` have exactly that, and so does
``torch.optim.Optimizer``; nothing else of the optimizer is used (``OneCycleLR``
also reads and writes ``"momentum"`` or ``"betas"`` when ``cycle_momentum=True``).

Sequences
    Each scheduler produces the same learning rates as the PyTorch scheduler of the
    same name, computed with the same update rules: most of them are *recursive*
    (the new lr is computed from the group's current ``"lr"``), so they compose with
    changes made to the lr by something else, exactly as PyTorch's do. The closed
    form given in each class's docstring is what the recursion evaluates to when
    nothing else touches the lr; it is used directly only where PyTorch uses it
    (by :class:`SequentialLR` when a scheduler starts at a milestone).

Protocol
    * Constructing a scheduler with ``last_epoch=-1`` (the default) stores
      ``group["initial_lr"]`` (if not already there), records ``base_lrs`` and
      performs the first step, so ``last_epoch == 0`` afterwards and the groups
      hold the epoch-0 learning rate.
    * ``step()`` (no arguments; ``ReduceLROnPlateau.step(metrics)``) advances by one.
      Call it after the optimizer's step.
    * ``get_last_lr()`` returns the learning rates (a list of floats, one per group)
      set by the most recent step.
    * Passing ``last_epoch=k >= 0`` resumes a schedule: every group must then hold
      ``"initial_lr"`` already (``KeyError`` otherwise), as in PyTorch.

Checkpoints
    ``state_dict()`` returns a plain dict of the scheduler's attributes, the
    optimizer excluded (``SequentialLR`` nests its schedulers' state dicts under
    ``"_schedulers"``). Unlike PyTorch's, it holds **only JSON values** (``dict``
    with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``;
    no tuples, ``Counter``\\s or non-finite floats), so
    ``json.dumps(state, allow_nan=False)`` always works and
    ``load_state_dict(json.loads(...))`` restores it exactly; pyfastopt checkpoints
    are JSON inside ``.npz`` files, never pickles. The only encoded value is
    ``ReduceLROnPlateau``'s ``best``, which is stored as the string ``"inf"``,
    ``"-inf"`` or ``"nan"`` when it is not finite (before the first metric it is
    ``+-inf``).

    A scheduler's state does not include the learning rates held by the optimizer:
    like PyTorch, the recursive schedulers continue from the groups' current
    ``"lr"``, so restore the optimizer's param groups (its own state dict) as well:
    build the optimizer and the scheduler, then load the optimizer's state, then the
    scheduler's.

Example:
    >>> class Opt:  # any object with param_groups works
    ...     param_groups = [{"lr": 0.1}]
    >>> sched = StepLR(Opt(), step_size=2, gamma=0.5)
    >>> for _ in range(4):
    ...     # optimizer.step() ...
    ...     sched.step()
    >>> sched.get_last_lr()
    [0.025]
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

from .._validate import boolean, choice, integer, real

__all__ = [
    "ConstantLR",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]


# --------------------------------------------------------------------------- helpers


def _param_groups(optimizer: Any) -> list[dict[str, Any]]:
    """The optimizer's param groups, checked to be a list of dicts with an "lr"."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(
        isinstance(group, dict) and "lr" in group for group in groups
    ):
        raise TypeError(
            "optimizer must have a `param_groups` attribute that is a list of dicts, "
            f"each with an 'lr' entry; got {type(optimizer).__name__}"
        )
    return groups


def _real(name: str, value: Any) -> float:
    """A real number (the library's rule, :mod:`pyfastopt._validate`)."""
    return real(name, value)


def _integer(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer, ``>= minimum`` when given (:mod:`pyfastopt._validate`)."""
    return integer(name, value, lo=minimum)


def _per_group(name: str, value: Any, n_groups: int) -> list[float]:
    """A scalar repeated for every group, or a list/tuple with one value per group."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_groups:
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(value)} values, param_groups has {n_groups}."
            )
        return [_real(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [_real(name, value)] * n_groups


def _encode_float(x: float) -> float | str:
    """A float for JSON: non-finite values become "inf", "-inf" or "nan"."""
    return x if math.isfinite(x) else repr(x)


def _decode_float(x: float | str) -> float:
    return float(x)


# ------------------------------------------------------------------------ base class


class LRScheduler:
    r"""Base class of the epoch-indexed schedulers (everything but ReduceLROnPlateau).

    Subclasses implement ``_compute_lrs()`` (the recursive rule PyTorch's
    ``get_lr`` uses, evaluated at ``self.last_epoch``) and, where one exists,
    ``_closed_form_lrs()`` (the lr at ``self.last_epoch`` computed from
    ``base_lrs``).

    Args:
        optimizer: an object with ``param_groups``: a list of dicts with an "lr".
        last_epoch (int): index of the last epoch. ``-1`` (default) starts the
            schedule; a value ``>= 0`` resumes it and needs ``"initial_lr"`` in
            every group.

    Attributes:
        optimizer: the wrapped optimizer.
        base_lrs (list[float]): ``group["initial_lr"]`` of every group.
        last_epoch (int): the epoch index of the current learning rates.
    """

    def __init__(self, optimizer: Any, last_epoch: int = -1) -> None:
        groups = _param_groups(optimizer)
        last_epoch = _integer("last_epoch", last_epoch)
        if last_epoch == -1:
            for group in groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        f"resuming a scheduler with last_epoch={last_epoch} >= 0: restore "
                        "the optimizer's param groups first, or pass last_epoch=-1."
                    )
        self.optimizer = optimizer
        self.base_lrs: list[float] = [float(group["initial_lr"]) for group in groups]
        self.last_epoch = last_epoch
        self._initial_step()

    # -- stepping -------------------------------------------------------------------

    def _initial_step(self) -> None:
        """Reset the step counter and take the first step (epoch ``last_epoch + 1``)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        """Advance the schedule by one epoch (or batch) and update the groups' "lr".

        Call it after the optimizer's ``step()``.
        """
        self._step_count += 1
        self.last_epoch += 1
        self._set_lrs(self._compute_lrs())

    def _restart_at(self, epoch: int) -> None:
        """Jump to ``epoch`` (closed form where there is one): used by SequentialLR."""
        self.last_epoch = epoch
        lrs = self._closed_form_lrs()
        self._set_lrs(self._compute_lrs() if lrs is None else lrs)

    def _set_lrs(self, lrs: Sequence[float]) -> None:
        groups = self.optimizer.param_groups
        if len(lrs) != len(groups):
            raise RuntimeError(
                f"{type(self).__name__} computed {len(lrs)} learning rates for "
                f"{len(groups)} param groups"
            )
        for group, lr in zip(groups, lrs):
            group["lr"] = lr
        self._last_lr = [float(group["lr"]) for group in groups]

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _compute_lrs(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _closed_form_lrs(self) -> list[float] | None:
        return None

    # -- inspection and checkpoints -------------------------------------------------

    def get_last_lr(self) -> list[float]:
        """The learning rates set by the most recent step, one float per param group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's attributes (all but the optimizer) as a JSON-ready dict.

        The values are copies: later steps do not change a returned state dict.
        """
        return {
            key: copy.deepcopy(value) for key, value in self.__dict__.items() if key != "optimizer"
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes saved by :meth:`state_dict` (``state_dict`` is not kept)."""
        self.__dict__.update(copy.deepcopy(dict(state_dict)))


# ------------------------------------------------------------------------ schedulers


class StepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Closed form (``e = last_epoch``)::

        lr_e = base_lr * gamma ** (e // step_size)

    computed recursively: at every epoch ``e > 0`` that is a multiple of
    ``step_size`` the group's current lr is multiplied by ``gamma``; otherwise it is
    left as it is.

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        step_size (int): period of the decay, ``>= 1``.
        gamma (float): multiplicative factor. Default: 0.1.
        last_epoch (int): index of the last epoch. Default: -1 (start).

    Example:
        >>> sched = StepLR(optimizer, step_size=30, gamma=0.1)
        >>> for epoch in range(100):  # lr = 0.05 for epochs 0-29, 0.005 for 30-59, ...
        ...     train(...)
        ...     sched.step()
    """

    def __init__(
        self, optimizer: Any, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.step_size = _integer("step_size", step_size, minimum=1)
        self.gamma = _real("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _compute_lrs(self) -> list[float]:
        epoch = self.last_epoch
        if epoch == 0 or epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        n_decays = self.last_epoch // self.step_size
        return [base * self.gamma**n_decays for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` at each milestone epoch.

    Closed form (``e = last_epoch``; milestones counted with multiplicity)::

        lr_e = base_lr * gamma ** (number of milestones m with m <= e)

    computed recursively: at an epoch that occurs ``k`` times in ``milestones`` the
    current lr is multiplied by ``gamma ** k``. As in PyTorch, milestones may repeat
    and need not be sorted (they are stored sorted); a milestone 0 already applies
    at the first epoch.

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        milestones (iterable of int): epoch indices.
        gamma (float): multiplicative factor. Default: 0.1.
        last_epoch (int): index of the last epoch. Default: -1 (start).

    Example:
        >>> sched = MultiStepLR(optimizer, milestones=[30, 80], gamma=0.1)
        >>> for epoch in range(100):  # lr = 0.05 until 29, 0.005 until 79, then 0.0005
        ...     train(...)
        ...     sched.step()
    """

    def __init__(
        self,
        optimizer: Any,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
            raise TypeError(f"milestones must be an iterable of integers, got {milestones!r}")
        self.milestones = sorted(_integer(f"milestones[{i}]", m) for i, m in enumerate(milestones))
        self.gamma = _real("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _compute_lrs(self) -> list[float]:
        hits = self.milestones.count(self.last_epoch)
        if hits == 0:
            return self._current_lrs()
        factor = self.gamma**hits
        return [lr * factor for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        n_decays = bisect_right(self.milestones, self.last_epoch)
        return [base * self.gamma**n_decays for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every epoch.

    Closed form (``e = last_epoch``)::

        lr_e = base_lr * gamma ** e

    computed recursively (``lr <- lr * gamma`` at every step after the first).

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        gamma (float): multiplicative factor.
        last_epoch (int): index of the last epoch. Default: -1 (start).

    Example:
        >>> sched = ExponentialLR(optimizer, gamma=0.95)
        >>> for epoch in range(100):  # lr = base_lr * 0.95 ** epoch
        ...     train(...)
        ...     sched.step()
    """

    def __init__(self, optimizer: Any, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = _real("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _compute_lrs(self) -> list[float]:
        # The constructor's step keeps the group's lr (also when resuming).
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs.

    Closed form (``e = last_epoch``, no restarts, so it keeps oscillating with
    period ``2 * T_max`` after ``T_max``)::

        lr_e = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2

    computed, as in PyTorch, by the recursive update::

        lr_e = eta_min + (lr_{e-1} - eta_min) * (1 + cos(pi * e / T_max))
                                              / (1 + cos(pi * (e - 1) / T_max))

    except at epochs where the denominator vanishes (``(e - 1 - T_max)`` a multiple
    of ``2 * T_max``), where ``lr_e = lr_{e-1} + (base_lr - eta_min) *
    (1 - cos(pi / T_max)) / 2``.

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        T_max (int): half period (number of epochs to reach ``eta_min``), ``>= 1``.
        eta_min (float): minimum learning rate. Default: 0.0.
        last_epoch (int): index of the last epoch. Default: -1 (start).

    Example:
        >>> sched = CosineAnnealingLR(optimizer, T_max=100, eta_min=1e-5)
        >>> for epoch in range(100):
        ...     train(...)
        ...     sched.step()
    """

    def __init__(
        self, optimizer: Any, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        self.T_max = _integer("T_max", T_max, minimum=1)
        self.eta_min = _real("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def _compute_lrs(self) -> list[float]:
        e, period, floor = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and e > 0:
            # First step after resuming at last_epoch > 0: start from the closed form.
            return [
                floor + (base - floor) * (1 + math.cos(e * math.pi / period)) / 2
                for base in self.base_lrs
            ]
        if (e - 1 - period) % (2 * period) == 0:
            # The previous lr sat at eta_min (ratio below would be 0/0): climb again.
            rise = 1 - math.cos(math.pi / period)
            return [
                lr + (base - floor) * rise / 2
                for lr, base in zip(self._current_lrs(), self.base_lrs)
            ]
        ratio = (1 + math.cos(math.pi * e / period)) / (1 + math.cos(math.pi * (e - 1) / period))
        return [ratio * (lr - floor) + floor for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        e, period, floor = self.last_epoch, self.T_max, self.eta_min
        return [
            floor + (base - floor) * (1 + math.cos(math.pi * e / period)) / 2
            for base in self.base_lrs
        ]


class LinearLR(LRScheduler):
    r"""Scale the learning rate by a factor moving linearly from ``start_factor``
    to ``end_factor`` over ``total_iters`` epochs, then keep it.

    Closed form (``e = last_epoch``)::

        lr_e = base_lr * (start_factor
                          + (end_factor - start_factor) * min(e, total_iters) / total_iters)

    computed recursively: ``lr_0 = lr * start_factor`` and, for ``1 <= e <= total_iters``::

        lr_e = lr_{e-1} * (1 + (end_factor - start_factor)
                           / (total_iters * start_factor + (e - 1) * (end_factor - start_factor)))

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        start_factor (float): factor at epoch 0, in ``(0, 1]``. Default: 1/3.
        end_factor (float): factor from epoch ``total_iters`` on, in ``[0, 1]``.
            Default: 1.0.
        total_iters (int): number of epochs of the ramp, ``>= 1``. Default: 5.
        last_epoch (int): index of the last epoch. Default: -1 (start).

    Example:
        >>> # warm up: lr = 0.025, 0.03125, 0.0375, 0.04375, 0.05, 0.05, ...
        >>> sched = LinearLR(optimizer, start_factor=0.5, total_iters=4)
        >>> for epoch in range(100):
        ...     train(...)
        ...     sched.step()
    """

    def __init__(
        self,
        optimizer: Any,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        start_factor = _real("start_factor", start_factor)
        end_factor = _real("end_factor", end_factor)
        if not 0.0 < start_factor <= 1.0:
            raise ValueError(
                "start_factor (starting multiplicative factor) expected to be greater "
                f"than 0 and less or equal to 1, got {start_factor}"
            )
        if not 0.0 <= end_factor <= 1.0:
            raise ValueError(
                "end_factor (ending multiplicative factor) expected to be between 0 "
                f"and 1, got {end_factor}"
            )
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = _integer("total_iters", total_iters, minimum=1)
        super().__init__(optimizer, last_epoch)

    def _compute_lrs(self) -> list[float]:
        e = self.last_epoch
        if e == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or e > self.total_iters:
            return self._current_lrs()
        slope = self.end_factor - self.start_factor
        factor = 1.0 + slope / (self.total_iters * self.start_factor + (e - 1) * slope)
        return [lr * factor for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        done = min(self.total_iters, self.last_epoch)
        slope = self.end_factor - self.start_factor
        return [
            base * (self.start_factor + slope * done / self.total_iters) for base in self.base_lrs
        ]


class ConstantLR(LRScheduler):
    r"""Multiply the learning rate by a constant ``factor`` until epoch ``total_iters``.

    Closed form (``e = last_epoch``)::

        lr_e = base_lr * (factor if e < total_iters else 1)

    computed recursively, as PyTorch: at epoch 0 the group's lr is multiplied by
    ``factor``, at epoch ``total_iters`` it is multiplied by ``1 / factor`` (undoing it),
    and otherwise left as it is -- so it chains with other schedulers stepping the same
    optimizer (e.g. ``ConstantLR`` then ``ExponentialLR`` each epoch) exactly like
    PyTorch's. With ``total_iters=0`` PyTorch's recursion multiplies at epoch 0 and never
    undoes it; so does this one. With ``factor=0`` (where PyTorch divides by zero at
    ``total_iters``) the lr returns to ``base_lr`` at ``total_iters`` (the closed form).

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        factor (float): multiplier until the milestone, in ``[0, 1]``. Default: 1/3.
        total_iters (int): the epoch at which the factor is removed, ``>= 0``. Default: 5.
        last_epoch (int): index of the last epoch. Default: -1 (start).

    Example:
        >>> sched = ConstantLR(optimizer, factor=0.5, total_iters=4)
        >>> for epoch in range(100):  # lr = 0.025 for epochs 0-3, then 0.05
        ...     train(...)
        ...     sched.step()
    """

    def __init__(
        self,
        optimizer: Any,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        factor = _real("factor", factor)
        if not 0.0 <= factor <= 1.0:  # also NaN
            raise ValueError(
                f"Constant multiplicative factor expected to be between 0 and 1, got {factor}"
            )
        self.factor = factor
        self.total_iters = _integer("total_iters", total_iters, minimum=0)
        super().__init__(optimizer, last_epoch)

    def _compute_lrs(self) -> list[float]:
        e = self.last_epoch
        if e == 0:
            return [lr * self.factor for lr in self._current_lrs()]
        if e != self.total_iters:
            return self._current_lrs()
        if self.factor == 0.0:
            return list(self.base_lrs)
        return [lr * (1.0 / self.factor) for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        keep = self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor)
        return [base * keep for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    r"""Decay the learning rate polynomially to 0 over ``total_iters`` epochs, then keep it.

    Closed form (``e = last_epoch``)::

        lr_e = base_lr * (1 - min(e, total_iters) / total_iters) ** power

    computed recursively, as PyTorch (so it chains with other schedulers): for
    ``1 <= e <= total_iters``::

        lr_e = lr_{e-1} * ((1 - e / total_iters) / (1 - (e - 1) / total_iters)) ** power

    and the lr is left as it is at the constructor's step and after ``total_iters``.

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        total_iters (int): number of epochs of the decay, ``>= 1``. Default: 5.
        power (float): the polynomial's power, finite and ``>= 0``. Default: 1.0.
        last_epoch (int): index of the last epoch. Default: -1 (start).

    Example:
        >>> sched = PolynomialLR(optimizer, total_iters=4, power=1.0)
        >>> for epoch in range(100):  # lr = 0.05, 0.0375, 0.025, 0.0125, 0.0, 0.0, ...
        ...     train(...)
        ...     sched.step()
    """

    def __init__(
        self,
        optimizer: Any,
        total_iters: int = 5,
        power: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        self.total_iters = _integer("total_iters", total_iters, minimum=1)
        power = _real("power", power)
        if not 0.0 <= power < math.inf:  # also NaN; a negative power divides by 0 at the end
            raise ValueError(f"power must be a finite number >= 0, got {power}")
        self.power = power
        super().__init__(optimizer, last_epoch)

    def _compute_lrs(self) -> list[float]:
        e = self.last_epoch
        if self._is_initial or e > self.total_iters:
            return self._current_lrs()
        decay = ((1.0 - e / self.total_iters) / (1.0 - (e - 1) / self.total_iters)) ** self.power
        return [lr * decay for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        left = 1.0 - min(self.total_iters, self.last_epoch) / self.total_iters
        return [base * left**self.power for base in self.base_lrs]


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy: anneal up to ``max_lr``, then down far below the start.

    With ``T = total_steps`` (or ``epochs * steps_per_epoch``), per group
    ``initial_lr = max_lr / div_factor`` and ``min_lr = initial_lr / final_div_factor``,
    and ``anneal(a, b, p)`` being ``b + (a - b) / 2 * (1 + cos(pi * p))`` ("cos") or
    ``(b - a) * p + a`` ("linear"), the lr at step ``s = last_epoch`` is
    (closed form; this scheduler is not recursive)::

        two phases (default), u = pct_start * T - 1:
            s <= u:  anneal(initial_lr, max_lr, s / u)
            s >  u:  anneal(max_lr, min_lr, (s - u) / (T - 1 - u))
        three_phase=True, u = pct_start * T - 1, d = 2 * pct_start * T - 2:
            s <= u:      anneal(initial_lr, max_lr, s / u)
            u < s <= d:  anneal(max_lr, initial_lr, (s - u) / (d - u))
            s >  d:      anneal(initial_lr, min_lr, (s - d) / (T - 1 - d))

    With ``cycle_momentum=True`` the momentum follows the same phases inversely,
    between ``max_momentum`` (at ``initial_lr``) and ``base_momentum`` (at
    ``max_lr``), staying at ``max_momentum`` during a third phase. It is written to
    ``group["betas"][0]`` (a new tuple) if the groups have ``"betas"``, else to
    ``group["momentum"]``. The constructor (``last_epoch=-1``) stores
    ``initial_lr``, ``max_lr``, ``min_lr`` and, when cycling, ``max_momentum``
    and ``base_momentum`` in every group. Steps may go up to ``s = T``; further
    ones raise ``ValueError``.

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        max_lr (float or list): peak lr, for all groups or one per group.
        total_steps (int, optional): length of the cycle. Default: None, then
            ``epochs * steps_per_epoch``.
        epochs (int, optional): number of epochs, with ``steps_per_epoch``.
        steps_per_epoch (int, optional): steps per epoch, with ``epochs``.
        pct_start (float): fraction of the cycle spent increasing the lr, in
            ``[0, 1]``. Default: 0.3.
        anneal_strategy (str): ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        cycle_momentum (bool): cycle the momentum inversely to the lr. Default: True.
        base_momentum (float or list): momentum at the lr peak. Default: 0.85.
        max_momentum (float or list): momentum at the lr ends. Default: 0.95.
        div_factor (float): ``initial_lr = max_lr / div_factor``. Default: 25.
        final_div_factor (float): ``min_lr = initial_lr / final_div_factor``.
            Default: 1e4.
        three_phase (bool): use the three-phase schedule above. Default: False.
        last_epoch (int): index of the last batch. Default: -1 (start).

    Example:
        >>> sched = OneCycleLR(optimizer, max_lr=0.1, epochs=10, steps_per_epoch=len(loader))
        >>> for epoch in range(10):
        ...     for batch in loader:
        ...         train_batch(...)
        ...         sched.step()  # once per batch
    """

    def __init__(
        self,
        optimizer: Any,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        groups = _param_groups(optimizer)
        self.total_steps = self._cycle_length(total_steps, epochs, steps_per_epoch)

        pct_start = real("pct_start", pct_start, lo=0.0, hi=1.0)
        self.anneal_strategy = choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
        div_factor = real("div_factor", div_factor, lo=0.0, lo_open=True)
        final_div_factor = real("final_div_factor", final_div_factor, lo=0.0, lo_open=True)
        three_phase = boolean("three_phase", three_phase)

        # Phase table: the step each phase ends at, and which group entries it
        # anneals the lr and the momentum between.
        rise_end = float(pct_start * self.total_steps) - 1
        last = self.total_steps - 1
        self._phases: list[dict[str, Any]]
        if three_phase:
            self._phases = [
                {
                    "end": rise_end,
                    "lr": ["initial_lr", "max_lr"],
                    "momentum": ["max_momentum", "base_momentum"],
                },
                {
                    "end": float(2 * pct_start * self.total_steps) - 2,
                    "lr": ["max_lr", "initial_lr"],
                    "momentum": ["base_momentum", "max_momentum"],
                },
                {
                    "end": last,
                    "lr": ["initial_lr", "min_lr"],
                    "momentum": ["max_momentum", "max_momentum"],
                },
            ]
        else:
            self._phases = [
                {
                    "end": rise_end,
                    "lr": ["initial_lr", "max_lr"],
                    "momentum": ["max_momentum", "base_momentum"],
                },
                {
                    "end": last,
                    "lr": ["max_lr", "min_lr"],
                    "momentum": ["base_momentum", "max_momentum"],
                },
            ]

        max_lrs = _per_group("max_lr", max_lr, len(groups))
        last_epoch = _integer("last_epoch", last_epoch)
        if last_epoch == -1:
            for group, peak in zip(groups, max_lrs):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = boolean("cycle_momentum", cycle_momentum)
        self.use_beta1 = False
        if self.cycle_momentum:
            if groups and all("betas" in group for group in groups):
                self.use_beta1 = True
            elif not all("momentum" in group for group in groups):
                raise ValueError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` "
                    "option enabled: every param group needs a 'momentum' or a 'betas' entry"
                )
            top = _per_group("max_momentum", max_momentum, len(groups))
            bottom = _per_group("base_momentum", base_momentum, len(groups))
            if last_epoch == -1:
                for group, m_top, m_bottom in zip(groups, top, bottom):
                    self._set_momentum(group, m_top)
                    group["max_momentum"] = m_top
                    group["base_momentum"] = m_bottom

        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _cycle_length(total_steps: Any, epochs: Any, steps_per_epoch: Any) -> int:
        def positive_int(name: str, value: Any) -> int:
            return integer(name, value, lo=1)

        if total_steps is not None:
            return positive_int("total_steps", total_steps)
        if epochs is not None and steps_per_epoch is not None:
            return positive_int("epochs", epochs) * positive_int("steps_per_epoch", steps_per_epoch)
        raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")

    def _set_momentum(self, group: dict[str, Any], value: float) -> None:
        if self.use_beta1:
            group["betas"] = (value, *tuple(group["betas"])[1:])
        else:
            group["momentum"] = value

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _compute_lrs(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"Tried to step {step} times. The specified number of total steps is "
                f"{self.total_steps}"
            )
        # Locate the phase holding this step (the last phase takes everything after).
        begin = 0.0
        for index, phase in enumerate(self._phases):
            if step <= phase["end"] or index == len(self._phases) - 1:
                break
            begin = phase["end"]
        span = phase["end"] - begin
        if span == 0:
            raise ValueError(
                f"OneCycleLR phase {index} is empty at step {step} (pct_start and "
                f"total_steps={self.total_steps} give it zero length); change pct_start"
            )
        pct = (step - begin) / span

        lrs = []
        lr_from, lr_to = phase["lr"]
        m_from, m_to = phase["momentum"]
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal(group[lr_from], group[lr_to], pct))
            if self.cycle_momentum:
                self._set_momentum(group, self._anneal(group[m_from], group[m_to], pct))
        return lrs


class ReduceLROnPlateau(LRScheduler):
    r"""Reduce the learning rate when a metric stops improving.

    There is no closed form: after each ``step(metric)``:

    * the metric *improves* on ``best`` if (``mode``/``threshold_mode``)
      min/rel: ``metric < best * (1 - threshold)``; min/abs: ``metric < best - threshold``;
      max/rel: ``metric > best * (1 + threshold)``; max/abs: ``metric > best + threshold``.
      Then ``best = metric`` and the bad-epoch count is reset, else it grows by one;
    * during a cooldown (``cooldown`` epochs after a reduction) bad epochs are not
      counted;
    * when the count exceeds ``patience``, every group's lr becomes
      ``max(lr * factor, min_lr)`` (unless that changes it by ``eps`` or less), the
      count is reset and the cooldown starts.

    ``best`` starts at ``+inf`` (min) or ``-inf`` (max); ``last_epoch`` starts at 0
    and counts the steps. Unlike the other schedulers it sets no ``initial_lr``.

    Args:
        optimizer: object with ``param_groups`` (list of dicts with an "lr").
        mode (str): ``"min"`` or ``"max"``. Default: ``"min"``.
        factor (float): reduction factor, ``< 1``. Default: 0.1.
        patience (int): bad epochs tolerated before reducing, ``>= 0``. Default: 10.
        threshold (float): minimal significant change. Default: 1e-4.
        threshold_mode (str): ``"rel"`` or ``"abs"``. Default: ``"rel"``.
        cooldown (int): epochs to wait after a reduction, ``>= 0``. Default: 0.
        min_lr (float or list): lower bound(s) of the lr. Default: 0.
        eps (float): reductions of ``eps`` or less are skipped. Default: 1e-8.

    Example:
        >>> sched = ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=5)
        >>> for epoch in range(100):
        ...     train(...)
        ...     sched.step(validate(...))
    """

    def __init__(
        self,
        optimizer: Any,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0,
        eps: float = 1e-8,
    ) -> None:
        factor = _real("factor", factor)
        if factor >= 1.0:
            raise ValueError(f"factor should be < 1.0, got {factor}")
        groups = _param_groups(optimizer)
        self.optimizer = optimizer
        self.factor = factor
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(groups):
                raise ValueError(f"expected {len(groups)} min_lr values, got {len(min_lr)}")
            self.default_min_lr: float | None = None
            self.min_lrs = [_real(f"min_lr[{i}]", v) for i, v in enumerate(min_lr)]
        else:
            self.default_min_lr = _real("min_lr", min_lr)
            self.min_lrs = [self.default_min_lr] * len(groups)
        self.patience = _integer("patience", patience, minimum=0)
        self.cooldown = _integer("cooldown", cooldown, minimum=0)
        self.eps = _real("eps", eps)
        self.threshold = _real("threshold", threshold)
        self.mode = choice("mode", mode, ("min", "max"))
        self.threshold_mode = choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.last_epoch = 0
        self._last_lr = [float(group["lr"]) for group in groups]
        self._reset()

    @property
    def mode_worse(self) -> float:
        """The starting ``best``: ``inf`` in min mode, ``-inf`` in max mode."""
        return math.inf if self.mode == "min" else -math.inf

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _is_better(self, value: float, best: float) -> bool:
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < best * (1.0 - self.threshold)
            return value < best - self.threshold
        if self.threshold_mode == "rel":
            return value > best * (self.threshold + 1.0)
        return value > best + self.threshold

    def step(self, metrics: Any) -> None:  # type: ignore[override]
        """Record one epoch's metric: a real number (a NumPy scalar, a 0-d array or tensor
        too); NaN is allowed and never counts as an improvement, as in PyTorch."""
        current = real("metrics", metrics, allow_nan=True)
        self.last_epoch += 1

        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1

        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs do not count during a cooldown

        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the optimizer ({len(groups)}) differs "
                    f"from when ReduceLROnPlateau was created ({len(self.min_lrs)}); "
                    "set `min_lrs` to one value per param group."
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, floor in zip(groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, floor)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready attributes; a non-finite ``best`` is stored as a string."""
        state = super().state_dict()
        state["best"] = _encode_float(self.best)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best = _decode_float(self.best)
        if self.mode not in ("min", "max") or self.threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"invalid mode {self.mode!r} / threshold_mode {self.threshold_mode!r} in state_dict"
            )


class SequentialLR(LRScheduler):
    r"""Run schedulers one after another, switching at the milestone epochs.

    With schedulers ``S_0 .. S_n`` and milestones ``m_1 <= .. <= m_n`` (``m_0 = 0``),
    epoch ``e`` with ``m_k <= e < m_{k+1}`` is run by ``S_k`` at its own epoch
    ``e - m_k``; when there are closed forms::

        lr_e = S_k.closed_form(base_lr, e - m_k)

    Mechanics (as in PyTorch): the constructor resets every group's lr to its
    ``initial_lr``, moves every scheduler's ``last_epoch`` back by one (undoing
    their constructors' steps) and re-runs the first step of the scheduler active
    at epoch 0. On ``step()``, at a milestone the next scheduler is restarted at
    its epoch 0 (from its closed form where it has one, so from ``base_lrs``);
    otherwise the active scheduler's ``step()`` advances only that scheduler's
    ``last_epoch``. The state dict holds the schedulers' state dicts under
    ``"_schedulers"``.

    Args:
        optimizer: object with ``param_groups``; every scheduler must wrap this
            very object.
        schedulers (list): the schedulers, in order (not ``ReduceLROnPlateau``, not
            another ``SequentialLR``).
        milestones (list of int): ``len(schedulers) - 1`` epochs, non-decreasing.
        last_epoch (int): index of the last epoch. Default: -1.

    Example:
        >>> warmup = LinearLR(optimizer, start_factor=0.1, total_iters=5)
        >>> decay = CosineAnnealingLR(optimizer, T_max=95)
        >>> sched = SequentialLR(optimizer, schedulers=[warmup, decay], milestones=[5])
        >>> for epoch in range(100):
        ...     train(...)
        ...     sched.step()
    """

    def __init__(
        self,
        optimizer: Any,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
    ) -> None:
        if isinstance(schedulers, (str, bytes)) or not isinstance(schedulers, Iterable):
            raise TypeError(f"schedulers must be a list of schedulers, got {schedulers!r}")
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError(
                "SequentialLR expects at least one scheduler in schedulers, but got none."
            )
        for index, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(
                    f"schedulers[{index}] must be a pyfastopt lr scheduler, got "
                    f"{type(scheduler).__name__}"
                )
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(
                    "SequentialLR does not support `ReduceLROnPlateau` in schedulers, as "
                    "it needs a metric when stepping; got one at schedulers"
                    f"[{index}]."
                )
            if isinstance(scheduler, SequentialLR):
                raise TypeError(f"schedulers[{index}] is a SequentialLR; nesting is not supported")
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    "SequentialLR expects all schedulers to belong to the same optimizer, "
                    f"but schedulers[{index}] ({type(scheduler).__name__}) wraps a "
                    "different optimizer object."
                )
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
            raise TypeError(f"milestones must be a list of integers, got {milestones!r}")
        milestones = [_integer(f"milestones[{i}]", m) for i, m in enumerate(milestones)]
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "SequentialLR expects the number of milestones to be one less than the "
                f"number of schedulers, but got {len(schedulers)} schedulers and "
                f"{len(milestones)} milestones"
            )
        if any(a > b for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be non-decreasing, got {milestones}")
        groups = _param_groups(optimizer)
        last_epoch = _integer("last_epoch", last_epoch)

        self.optimizer = optimizer
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1

        # Back to the initial learning rates, and undo the schedulers' own first steps.
        for group in groups:
            group["lr"] = group["initial_lr"]
        for scheduler in schedulers:
            scheduler.last_epoch -= 1
        # Only the scheduler that runs epoch 0 takes its first step.
        first = schedulers[bisect_right(milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self) -> None:
        """Advance one epoch: restart the next scheduler at a milestone, else step
        the active one."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._restart_at(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready attributes, with the schedulers' state dicts under "_schedulers"."""
        state = {
            key: copy.deepcopy(value)
            for key, value in self.__dict__.items()
            if key not in ("optimizer", "_schedulers")
        }
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        sub_states = state.pop("_schedulers")
        if len(sub_states) != len(self._schedulers):
            raise ValueError(
                f"state_dict has {len(sub_states)} scheduler states, this SequentialLR "
                f"has {len(self._schedulers)} schedulers"
            )
        self.__dict__.update(copy.deepcopy(state))
        for scheduler, sub_state in zip(self._schedulers, sub_states):
            scheduler.load_state_dict(sub_state)
