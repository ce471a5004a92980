"""Stochastic gradient descent with momentum, dampening, Nesterov, L2 and L1."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from .._validate import boolean, nonnegative
from ._optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent (PyTorch's ``torch.optim.SGD`` equations), plus L1.

    With :math:`g_t` the gradient (negated when ``maximize``):

    .. math::

        g_t &\leftarrow g_t + \lambda_2 \theta_{t-1} + \lambda_1 \operatorname{sign}(\theta_{t-1}) \\
        b_t &= \begin{cases} g_t & t = 1 \\ \mu b_{t-1} + (1 - \tau) g_t & t > 1 \end{cases} \\
        g_t &\leftarrow g_t + \mu b_t \text{ (nesterov)} \quad\text{or}\quad g_t \leftarrow b_t \\
        \theta_t &= \theta_{t-1} - \gamma g_t

    (the momentum lines only when :math:`\mu \ne 0`).

    Args:
        params: list of float32/float64 arrays (updated in place) or of param-group dicts.
        lr (float): learning rate :math:`\gamma` (required, >= 0).
        momentum (float): :math:`\mu` >= 0.  dampening (float): :math:`\tau` >= 0.
        weight_decay (float): L2 coefficient :math:`\lambda_2` (coupled, added to the gradient).
        nesterov (bool): Nesterov momentum (needs momentum > 0 and dampening == 0).
        maximize (bool): ascend instead of descend.
        l1 (float): L1 coefficient :math:`\lambda_1`.

    One :meth:`step` updates every parameter in one fused pass (read param, grad and the
    momentum buffer once, write once) and one parallel region.

    Example:
        >>> import numpy as np
        >>> from pyfastopt.optim import SGD
        >>> w = np.ones(3, np.float32)
        >>> opt = SGD([w], lr=0.1, momentum=0.9)
        >>> opt.step([np.full(3, 2.0, np.float32)])
        >>> w
        array([0.8, 0.8, 0.8], dtype=float32)

    References:
        Sutskever et al., "On the importance of initialization and momentum in deep
        learning", ICML 2013; ``torch.optim.SGD``.
    """

    _hyper: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        "lr": nonnegative,
        "momentum": nonnegative,
        "dampening": nonnegative,
        "weight_decay": nonnegative,
        "nesterov": boolean,
        "maximize": boolean,
        "l1": nonnegative,
    }
    _state_names = ("momentum_buffer", "", "")
    _kernel = "sgd_step"

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
        l1: float = 0.0,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "dampening": dampening,
                "weight_decay": weight_decay,
                "nesterov": nesterov,
                "maximize": maximize,
                "l1": l1,
            },
        )

    def _check_combination(self, group: dict[str, Any]) -> None:
        if group.get("nesterov") and (
            group.get("momentum", 0.0) <= 0.0 or group.get("dampening", 0.0) != 0.0
        ):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening == 0, got "
                f"momentum={group.get('momentum')}, "
                f"dampening={group.get('dampening')}"
            )

    def _structure(self, group: dict[str, Any]) -> tuple:
        return (group["momentum"] != 0.0,)

    def _missing_state(
        self, p: np.ndarray, group: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        # Created as zeros; on the step that creates it the kernel's first-step branch
        # overwrites it with the gradient (PyTorch: buf = grad.clone() on first use).
        if group["momentum"] != 0.0 and "momentum_buffer" not in state:
            return {"momentum_buffer": self._zeros(p)}
        return {}

    def _coef_key(
        self, gi: int, state: dict[str, Any], new: dict[str, np.ndarray], step: int
    ) -> tuple:
        return (gi, "momentum_buffer" in new)  # only "buffer starts now" varies per tensor

    def _coef(
        self, group: dict[str, Any], state: dict[str, Any], new: dict[str, np.ndarray], step: int
    ) -> tuple:
        return (
            group["lr"],
            group["momentum"],
            group["dampening"],
            group["weight_decay"],
            group["l1"],
            group["maximize"],
            group["nesterov"],
            "momentum_buffer" in new,
        )
