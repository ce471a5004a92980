"""Adam and AdamW, with optional AMSGrad, L1, and bfloat16 moments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, ClassVar

import numpy as np

from .._validate import boolean, choice, nonnegative, pair, unit_interval
from ._optimizer import Optimizer, _np_dtype

__all__ = ["Adam", "AdamW"]

_BF16 = "bfloat16"


def _check_betas(name: str, value: Any) -> tuple[float, float]:
    return pair(name, value, unit_interval)


def _check_state_dtype(name: str, value: Any) -> str | None:
    """None (the parameter's dtype) or 'bfloat16' (also spelled 'bf16', any case)."""
    return None if choice(name, value, (None, _BF16, "bf16"), fold_case=True) is None else _BF16


class Adam(Optimizer):
    r"""Adam (PyTorch's ``torch.optim.Adam`` equations), plus L1 and bfloat16 moments.

    With :math:`g_t` the gradient (negated when ``maximize``) and step :math:`t`:

    .. math::

        g_t &\leftarrow g_t + \lambda_2 \theta_{t-1} + \lambda_1 \operatorname{sign}(\theta_{t-1}) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ (amsgrad) or } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    ``decoupled_weight_decay=True`` (PyTorch >= 2.6's keyword; a per-group
    hyper-parameter, kept in ``state_dict``) replaces the coupled :math:`\lambda_2` term
    by decoupled decay :math:`\theta_{t-1} \leftarrow \theta_{t-1} (1 - \gamma
    \lambda)` before the update: ``Adam(..., decoupled_weight_decay=True)`` is
    :class:`AdamW` (same bits).

    Args:
        params: list of float32/float64 arrays (updated in place) or of param-group dicts.
        lr (float): learning rate :math:`\gamma` >= 0.  betas: :math:`(\beta_1, \beta_2)`,
            each in [0, 1).  eps (float): :math:`\epsilon` >= 0.
        weight_decay (float): L2 coefficient (coupled for Adam, decoupled for AdamW).
        amsgrad (bool): keep the running maximum of :math:`v_t`.
        maximize (bool): ascend instead of descend.  l1 (float): L1 coefficient.
        state_dtype: ``None`` (moments in the parameter's dtype) or ``"bfloat16"``
            (float32 parameters only).
        decoupled_weight_decay (bool, keyword only): decay as AdamW (see above).

    bfloat16 moments
        ``state_dtype="bfloat16"`` keeps ``exp_avg``/``exp_avg_sq`` (and the AMSGrad max)
        as bfloat16 bit patterns in ``uint16`` arrays: each step widens them to float32,
        computes in float32 and rounds back to nearest-even. Memory traffic per element
        drops from 28 to 20 bytes (param 4+4, grad 4, moments 2+2+2+2). The trade-off:
        bfloat16 keeps 8 significant bits, so each stored moment carries a relative
        rounding error up to 2^-9 per step; it is unbiased (ties to even) and the moments
        are running averages, so it acts like small noise on the step size rather than a
        drift. The bias-corrected step and the parameters themselves stay float32.
        ``tests/test_optim_bf16.py`` trains the same model with both state dtypes.

    Example:
        >>> import numpy as np
        >>> from pyfastopt.optim import Adam
        >>> w = np.zeros(4, np.float32)
        >>> opt = Adam([w], lr=0.1)
        >>> opt.step([np.ones(4, np.float32)])
        >>> np.round(w, 4)
        array([-0.1, -0.1, -0.1, -0.1], dtype=float32)

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
        Reddi et al., "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
    """

    _hyper: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        "lr": nonnegative,
        "betas": _check_betas,
        "eps": nonnegative,
        "weight_decay": nonnegative,
        "amsgrad": boolean,
        "maximize": boolean,
        "l1": nonnegative,
        "decoupled_weight_decay": boolean,
    }
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _kernel = "adam_step"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        maximize: bool = False,
        l1: float = 0.0,
        state_dtype: str | None = None,
        *,
        decoupled_weight_decay: bool = False,
    ) -> None:
        self.state_dtype = _check_state_dtype("state_dtype", state_dtype)
        super().__init__(
            params,
            {
                "lr": lr,
                "betas": betas,
                "eps": eps,
                "weight_decay": weight_decay,
                "amsgrad": amsgrad,
                "maximize": maximize,
                "l1": l1,
                "decoupled_weight_decay": decoupled_weight_decay,
            },
        )

    #: AdamW: every group decays decoupled, whatever a loaded state dict says (PyTorch)
    _always_decoupled = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`Optimizer.load_state_dict`, with PyTorch's rule for
        ``decoupled_weight_decay``: a saved group without it (a checkpoint from before the
        keyword) is coupled, and :class:`AdamW` stays decoupled whatever was saved."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
        if isinstance(groups, (list, tuple)):
            key = "decoupled_weight_decay"
            groups = [
                (
                    {**g, key: True if self._always_decoupled else g.get(key, False)}
                    if isinstance(g, Mapping)
                    else g
                )
                for g in groups
            ]
            state_dict = {**state_dict, "param_groups": groups}
        super().load_state_dict(state_dict)

    def _check_group_params(self, group: dict[str, Any], gi: int) -> None:
        if self.state_dtype == _BF16:
            for j, p in enumerate(group["params"]):
                if _np_dtype(p.dtype) != np.float32:
                    raise ValueError(
                        f"state_dtype='bfloat16' needs float32 parameters; "
                        f"param_groups[{gi}]['params'][{j}] is {p.dtype}"
                    )

    def _structure(self, group: dict[str, Any]) -> tuple:
        return (group["amsgrad"],)

    def _state_dtype(self, p: np.ndarray) -> np.dtype:
        return np.dtype(np.uint16) if self.state_dtype == _BF16 else p.dtype

    def _kernel_name(self) -> str:
        return "adam_bf16_step" if self.state_dtype == _BF16 else "adam_step"

    def _missing_state(
        self, p: np.ndarray, group: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        dt = self._state_dtype(p)  # bfloat16 zero is the all-zero bit pattern
        new = {name: self._zeros(p, dt) for name in ("exp_avg", "exp_avg_sq") if name not in state}
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            new["max_exp_avg_sq"] = self._zeros(p, dt)
        return new

    def _coef(
        self, group: dict[str, Any], state: dict[str, Any], new: dict[str, np.ndarray], step: int
    ) -> tuple:
        b1, b2 = group["betas"]
        return (
            group["lr"],
            b1,
            b2,
            group["eps"],
            group["weight_decay"],
            group["l1"],
            float(step),
            group["maximize"],
            group["amsgrad"],
            group["decoupled_weight_decay"],
        )


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (PyTorch's ``torch.optim.AdamW``).

    Same arguments as :class:`Adam`, but ``weight_decay`` (default 1e-2) multiplies the
    parameters by :math:`1 - \gamma\lambda` before the Adam update instead of being added
    to the gradient: :class:`Adam` with ``decoupled_weight_decay=True``, which its param
    groups and ``state_dict`` say (as PyTorch's AdamW does).

    References:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    _always_decoupled = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        maximize: bool = False,
        l1: float = 0.0,
        state_dtype: str | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            l1=l1,
            state_dtype=state_dtype,
            decoupled_weight_decay=True,
        )
