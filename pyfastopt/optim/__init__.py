"""Optimizers: fused multi-tensor update steps with PyTorch's equations.

Each ``step(grads)`` updates every parameter of every group in one fused C++ pass per
tensor (read param, grad and state once, write once) and one parallel region, with a
variant per SIMD level giving the same bits, and the same bits for any thread count.

Classes: :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`RMSprop`, :class:`Adagrad`.
Clipping: :func:`clip_grad_norm_`, :func:`clip_grad_value_`. Schedules:
:mod:`pyfastopt.optim.lr_scheduler`. Checkpoints: ``opt.state_dict()`` /
``opt.load_state_dict()``, and :func:`save_state_dict` / :func:`load_state_dict_file`
for ``.npz`` files (JSON header, no pickle).
"""

from . import lr_scheduler
from ._optimizer import Optimizer, load_state_dict_file, save_state_dict
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "clip_grad_norm_",
    "clip_grad_value_",
    "load_state_dict_file",
    "lr_scheduler",
    "save_state_dict",
]
