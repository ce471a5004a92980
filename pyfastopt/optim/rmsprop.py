"""RMSprop (plain, centered, with momentum), with L2 and L1."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from .._validate import boolean, nonnegative
from ._optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop (PyTorch's ``torch.optim.RMSprop`` equations), plus L1.

    .. math::

        g_t &\leftarrow g_t + \lambda_2 \theta_{t-1} + \lambda_1 \operatorname{sign}(\theta_{t-1}) \\
        s_t &= \alpha s_{t-1} + (1 - \alpha) g_t^2 \\
        \bar g_t &= \alpha \bar g_{t-1} + (1 - \alpha) g_t \text{ (centered)} \\
        a_t &= \sqrt{s_t - \bar g_t^2} + \epsilon \text{ (centered) or } \sqrt{s_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / a_t, \quad \theta_t = \theta_{t-1} - \gamma b_t
            \text{ (momentum) or } \theta_t = \theta_{t-1} - \gamma g_t / a_t

    Args:
        params: arrays or param groups.  lr (float): :math:`\gamma` >= 0 (default 1e-2).
        alpha (float): smoothing :math:`\alpha` >= 0 (default 0.99).  eps (float) >= 0.
        weight_decay (float): coupled L2.  momentum (float): :math:`\mu` >= 0.
        centered (bool): normalise by the variance estimate.  l1 (float): L1 coefficient.
        maximize (bool): ascend instead of descend.

    References:
        Hinton, Srivastava & Swersky, Coursera "Neural Networks for Machine Learning",
        lecture 6e; Graves, "Generating Sequences With Recurrent Neural Networks", 2013
        (centered form).
    """

    _hyper: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        "lr": nonnegative,
        "alpha": nonnegative,
        "eps": nonnegative,
        "weight_decay": nonnegative,
        "momentum": nonnegative,
        "centered": boolean,
        "l1": nonnegative,
        "maximize": boolean,
    }
    _state_names = ("square_avg", "grad_avg", "momentum_buffer")
    _kernel = "rmsprop_step"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        l1: float = 0.0,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "alpha": alpha,
                "eps": eps,
                "weight_decay": weight_decay,
                "momentum": momentum,
                "centered": centered,
                "l1": l1,
                "maximize": maximize,
            },
        )

    def _structure(self, group: dict[str, Any]) -> tuple:
        return (group["centered"], group["momentum"] > 0.0)

    def _missing_state(
        self, p: np.ndarray, group: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        new = {}
        if "square_avg" not in state:
            new["square_avg"] = self._zeros(p)
        if group["centered"] and "grad_avg" not in state:
            new["grad_avg"] = self._zeros(p)
        if group["momentum"] > 0.0 and "momentum_buffer" not in state:
            new["momentum_buffer"] = self._zeros(p)
        return new

    def _coef_key(
        self, gi: int, state: dict[str, Any], new: dict[str, np.ndarray], step: int
    ) -> tuple:
        return (gi,)  # RMSprop's coefficients do not depend on the step

    def _coef(
        self, group: dict[str, Any], state: dict[str, Any], new: dict[str, np.ndarray], step: int
    ) -> tuple:
        return (
            group["lr"],
            group["alpha"],
            group["eps"],
            group["weight_decay"],
            group["l1"],
            group["momentum"],
            group["maximize"],
            group["centered"],
        )
