"""Adagrad with learning-rate decay, L2 and L1."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from .._validate import boolean, nonnegative
from ._optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad (PyTorch's ``torch.optim.Adagrad`` equations), plus L1.

    .. math::

        g_t &\leftarrow g_t + \lambda_2 \theta_{t-1} + \lambda_1 \operatorname{sign}(\theta_{t-1}) \\
        \tilde\gamma_t &= \gamma / (1 + (t - 1) \eta) \\
        s_t &= s_{t-1} + g_t^2 \qquad (s_0 = \text{initial\_accumulator\_value}) \\
        \theta_t &= \theta_{t-1} - \tilde\gamma_t \, g_t / (\sqrt{s_t} + \epsilon)

    Args:
        params: arrays or param groups.  lr (float): :math:`\gamma` >= 0 (default 1e-2).
        lr_decay (float): :math:`\eta` >= 0.  weight_decay (float): coupled L2.
        eps (float) >= 0 (default 1e-10).  l1 (float): L1 coefficient.
        initial_accumulator_value (float) >= 0.  maximize (bool).

    References:
        Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR 2011.
    """

    _hyper: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        "lr": nonnegative,
        "lr_decay": nonnegative,
        "weight_decay": nonnegative,
        "eps": nonnegative,
        "l1": nonnegative,
        "initial_accumulator_value": nonnegative,
        "maximize": boolean,
    }
    _state_names = ("sum", "", "")
    _kernel = "adagrad_step"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        eps: float = 1e-10,
        l1: float = 0.0,
        initial_accumulator_value: float = 0.0,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "lr_decay": lr_decay,
                "weight_decay": weight_decay,
                "eps": eps,
                "l1": l1,
                "initial_accumulator_value": initial_accumulator_value,
                "maximize": maximize,
            },
        )

    def _missing_state(
        self, p: np.ndarray, group: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        if "sum" in state:
            return {}
        return {"sum": self._full(p, group["initial_accumulator_value"])}

    def _coef(
        self, group: dict[str, Any], state: dict[str, Any], new: dict[str, np.ndarray], step: int
    ) -> tuple:
        return (
            group["lr"],
            group["lr_decay"],
            group["eps"],
            group["weight_decay"],
            group["l1"],
            float(step),
            group["maximize"],
        )
