"""The :class:`Module` base class and :class:`Sequential`.

No autograd: every layer has an explicit ``forward(x)`` and ``backward(dy) -> dx``, and
``backward`` must follow the ``forward`` whose gradient it computes.

Buffer rule (a training step allocates nothing large)
-----------------------------------------------------
* Each layer owns its output buffers and reuses them while the input shape stays the
  same (two shapes are kept, so the last, shorter batch of an epoch does not evict the
  full one). **The array** ``forward`` **returns is a workspace: the layer's next
  forward of the same shape overwrites it** -- copy it (``y.copy()``) to keep it.
  Likewise the ``dx`` that ``backward`` returns is overwritten by the next backward.
* Layers never modify their inputs (``ReLU(inplace=True)`` excepted, as in PyTorch), and
  keep a reference to the forward input that ``backward`` needs: do not modify ``x``
  between ``forward(x)`` and ``backward``.
* ``backward`` *overwrites* the gradient arrays (``grad_weight``, ...); it does not
  accumulate into them as PyTorch's ``.grad`` does, so there is nothing to zero between
  steps. The gradient arrays are allocated once, with their parameters, and are the same
  objects for the module's lifetime: optimizers and all-reduce may hold them.
* The loss functions return fresh arrays (they never alias their inputs).

Threads
-------
* **Eval mode is thread-safe**: several threads may call ``forward`` of one model in
  eval mode at once (an inference server sharing one model). Each thread gets its own
  output buffers (the same reuse rule, per thread: the array a thread's ``forward``
  returns is overwritten by *that thread's* next forward of the same shape), so one
  thread never overwrites another's result. The buffers live as long as the thread and
  the model (memory: the activations of one batch per thread).
* **Training mode is not**: it reuses one set of buffers and keeps what ``backward``
  needs on the layers, so one model trains in one thread at a time. ``Sequential``
  detects two threads inside its ``forward``/``backward`` at once in training mode and
  raises ``RuntimeError`` instead of computing garbage (use a copy of the model per
  thread, ``copy.deepcopy(model)``, or ``eval()``). ``backward`` after an eval-mode
  ``forward`` (fine-tuning with frozen statistics) is for one thread too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _masks
from .._validate import boolean

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from .._typing import ArrayLike

__all__ = ["Module", "Sequential"]


class Module:
    """Base class: parameters with gradients, buffers, train/eval and freezing.

    A subclass lists its parameters in ``_param_names`` (attribute names, weight before
    bias; an attribute may be None, e.g. ``bias=False``), each with a gradient attribute
    ``grad_<name>`` of the same shape, and its non-trainable state in ``_buffer_names``
    (e.g. running statistics). Containers override :meth:`_children`.
    """

    _param_names: tuple[str, ...] = ()
    _buffer_names: tuple[str, ...] = ()
    #: eval-mode workspaces, one per calling thread (created on first use)
    _local: threading.local

    def __init__(self) -> None:
        self.training = True
        self.frozen = False
        self._ws: dict[str, dict[tuple, np.ndarray]] = {}

    # ------------------------------------------------------------------ calls
    def forward(self, x: ArrayLike) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        """Gradient of the last forward: sets the parameter gradients, returns ``dx``.

        ``need_dx=False`` skips ``dx`` where it costs something (the first layer of a
        network) and returns None.
        """
        raise NotImplementedError

    def __call__(self, x: ArrayLike) -> np.ndarray:
        return self.forward(x)

    # ------------------------------------------------------------------ structure
    def _children(self) -> list[tuple[str, Module]]:
        return []

    def _own_params(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(name, param, grad) of this module's own, non-None parameters."""
        out = []
        for name in self._param_names:
            p = getattr(self, name)
            if p is not None:
                out.append((name, p, getattr(self, "grad_" + name)))
        return out

    def _walk(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._children():
            yield from child._walk(f"{prefix}{name}.")

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """Every parameter, frozen or not, as ``[(name, array)]``: layers in order, each
        layer's weight before its bias, names like ``"0.weight"`` (buffers such as
        running statistics are not parameters: see :meth:`state_dict`)."""
        return [
            (prefix + name, p) for prefix, mod in self._walk() for name, p, _ in mod._own_params()
        ]

    def parameters(self) -> list[np.ndarray]:
        """The trainable (not frozen) parameters, in :meth:`named_parameters` order. The
        same array objects on every call: an optimizer updates them in place."""
        return [p for _, mod in self._walk() if not mod.frozen for _, p, _ in mod._own_params()]

    def gradients(self) -> list[np.ndarray]:
        """The gradients of :meth:`parameters`, aligned with it (same objects every call,
        overwritten by each ``backward``)."""
        return [g for _, mod in self._walk() if not mod.frozen for _, _, g in mod._own_params()]

    def zero_grad(self) -> None:
        """Set every gradient to zero (``backward`` overwrites them, so a training loop
        does not need this; it is for code that reads gradients without a backward)."""
        for _, mod in self._walk():
            for _, _, g in mod._own_params():
                g.fill(0)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> Module:
        """Training mode (batch statistics, dropout on) or, with ``mode=False``, eval."""
        mode = boolean("mode", mode)
        for _, mod in self._walk():
            mod.training = mode
        return self

    def eval(self) -> Module:
        """Evaluation mode: running statistics, dropout off. Same as ``train(False)``."""
        return self.train(False)

    def freeze(self) -> Module:
        """Leave this module's parameters (and its children's) out of
        :meth:`parameters` / :meth:`gradients` and stop computing their gradients. The
        layers still run forward and pass gradients through to earlier layers. Freezing
        does not change the mode: a frozen BatchNorm in training mode still normalizes
        with batch statistics and updates its running statistics (PyTorch's behaviour
        with ``requires_grad=False``); call :meth:`eval` on it to fix them too."""
        for _, mod in self._walk():
            mod.frozen = True
        return self

    def unfreeze(self) -> Module:
        """Undo :meth:`freeze`. Build optimizers after freezing/unfreezing: an optimizer
        holds the parameter list it was given."""
        for _, mod in self._walk():
            mod.frozen = False
        return self

    def _has_trainable(self) -> bool:
        return any(not mod.frozen and mod._own_params() for _, mod in self._walk())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed like PyTorch's ``state_dict``
        (``"0.weight"``, ``"1.running_mean"``, ``"1.num_batches_tracked"``, ...); a pruned
        layer adds ``"<layer>.weight_mask"`` and its ``weight`` is the masked one."""
        out: dict[str, np.ndarray] = {}
        for prefix, mod in self._walk():
            mod._apply_masks()
            for name, p, _ in mod._own_params():
                out[prefix + name] = p.copy()
            for name in mod._buffer_names:
                out[prefix + name] = np.array(getattr(mod, name), copy=True)
        return out

    def _state_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for prefix, mod in self._walk():
            for name, p, _ in mod._own_params():
                out[prefix + name] = p
            for name in mod._buffer_names:
                out[prefix + name] = getattr(mod, name)
        return out

    def load_state_dict(self, state: Any) -> None:
        """Copy ``state`` (as :meth:`state_dict` returns, or PyTorch's converted to
        NumPy) into the existing arrays, so optimizers keep holding the right objects.

        Pruning masks (:mod:`pyfastopt.prune`): a ``"<layer>.weight_mask"`` in ``state``
        attaches that mask to a Linear/Conv2d that has none (or replaces its mask), and
        PyTorch's pruned keys ``weight_orig`` + ``weight_mask`` load as ``weight =
        weight_orig * weight_mask`` with the mask.

        Raises:
            ValueError: a missing or unexpected key, or a shape mismatch (naming the key
                and both shapes). Everything is checked before anything is copied.
            TypeError: ``state`` is not a mapping, or a value is not numeric.
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        state = _from_torch_pruned(state)
        modules = dict(self._walk())
        own = self._state_arrays()
        attach = []  # (module, param name): masks in `state` for layers not pruned yet
        for key in state:
            if key.endswith("_mask") and key not in own and key[: -len("_mask")] in own:
                prefix, _, pname = key[: -len("_mask")].rpartition(".")
                mod = modules.get(prefix + "." if prefix else "")
                if mod is not None and pname in mod._param_names and mod._maskable:
                    attach.append((mod, pname))
                    own[key] = own[key[: -len("_mask")]]  # same shape; attached below
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise ValueError(
                f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        values = {}
        for key, dst in own.items():
            src = np.asarray(state[key])
            if src.dtype.kind not in "fiub":
                raise TypeError(
                    f"load_state_dict: {key!r} has dtype {src.dtype}, expected a numeric array"
                )
            if src.shape != dst.shape:
                raise ValueError(
                    f"load_state_dict: {key!r} has shape {src.shape}, the model's is {dst.shape}"
                )
            values[key] = src
        for mod, pname in attach:
            mod._set_mask(pname, np.ones(getattr(mod, pname).shape, dtype=bool))
        own = self._state_arrays()
        for key, dst in own.items():
            np.copyto(dst, values[key], casting="unsafe")
        for _, mod in self._walk():  # masks may have changed: re-derive and re-apply
            for pname in list(mod.__dict__.get("_pruned", {})):
                mod._set_mask(pname, getattr(mod, pname + "_mask") != 0)

    # ------------------------------------------------------------------ pruning masks
    #: layers whose weight can carry a pruning mask (Linear, Conv2d)
    _maskable = False

    def _set_mask(self, name: str, keep: np.ndarray) -> None:
        """Attach (or replace) the pruning mask of parameter ``name``: ``<name>_mask`` (a
        buffer, 1.0 kept / 0.0 pruned, the parameter's dtype, in ``state_dict`` as
        PyTorch's), zero the pruned entries, and register them with the optimizers."""
        p = getattr(self, name)
        keep = np.asarray(keep, dtype=bool)
        pruned = self.__dict__.setdefault("_pruned", {})
        pruned[name] = ~keep
        setattr(self, name + "_mask", keep.astype(p.dtype))
        if name + "_mask" not in self._buffer_names:
            self._buffer_names = (*self._buffer_names, name + "_mask")
        np.copyto(p, 0, where=pruned[name])
        grad = getattr(self, "grad_" + name, None)
        if grad is not None:
            np.copyto(grad, 0, where=pruned[name])
        _masks.register(p, pruned[name])

    def _remove_mask(self, name: str) -> None:
        pruned = self.__dict__.get("_pruned", {})
        if name not in pruned:
            raise ValueError(f"{type(self).__name__}.{name} is not pruned (nothing to remove)")
        p = getattr(self, name)
        np.copyto(p, 0, where=pruned.pop(name))
        _masks.unregister(p)
        delattr(self, name + "_mask")
        self._buffer_names = tuple(n for n in self._buffer_names if n != name + "_mask")

    def _apply_masks(self) -> None:
        """Set the pruned entries of this module's own parameters to exactly zero."""
        pruned = self.__dict__.get("_pruned")
        if pruned:
            for name, where in pruned.items():
                np.copyto(getattr(self, name), 0, where=where)

    def _mask_grads(self) -> None:
        pruned = self.__dict__.get("_pruned")
        if pruned:
            for name, where in pruned.items():
                np.copyto(getattr(self, "grad_" + name), 0, where=where)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name, where in state.get("_pruned", {}).items():  # copies are pruned too
            _masks.register(getattr(self, name), where)

    # ------------------------------------------------------------------ copies
    #: attributes that refer to the last forward (inputs, outputs, saved statistics)
    _transient = ("_x", "_y", "_saved", "_shape")

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and ``copy.deepcopy`` carry parameters, gradients and buffers, not the
        workspaces or what the last forward saved (a copy starts with a forward)."""
        state = self.__dict__.copy()
        state["_ws"] = {}
        state.pop("_local", None)  # per-thread eval workspaces (threading.local)
        state.pop("_guard", None)  # the training-mode concurrency guard
        for name in self._transient:
            if name in state:
                state[name] = None
        return state

    # ------------------------------------------------------------------ workspace
    def _eval_workspace(self) -> dict[str, dict[tuple, np.ndarray]]:
        """This thread's workspace dict, created on first use (see "Threads")."""
        local = self.__dict__.get("_local")
        if local is None:  # setdefault: two threads creating it at once agree on one
            local = self.__dict__.setdefault("_local", threading.local())
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = {}
        return ws

    def _buffer(self, name: str, shape: tuple, dtype: Any) -> np.ndarray:
        """A reusable array for ``name`` of this shape and dtype (two shapes kept): one
        set per module in training mode, one set per module and thread in eval mode."""
        if self.training:
            ws = self._ws
        else:
            try:  # the common case inline: this thread's workspace exists
                ws = self._local.ws
            except AttributeError:
                ws = self._eval_workspace()
        slot = ws.get(name)
        if slot is None:
            slot = ws[name] = {}
        key = (shape, np.dtype(dtype))
        arr = slot.get(key)
        if arr is None:
            if len(slot) >= 2:
                slot.pop(next(iter(slot)))
            arr = slot[key] = np.empty(shape, dtype)
        return arr

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = self._children()
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(c).replace("\n", "\n  ") for name, c in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _from_torch_pruned(state: Any) -> Any:
    """PyTorch's pruned-module keys (``weight_orig`` + ``weight_mask``) as ours
    (``weight`` = ``weight_orig * weight_mask`` + ``weight_mask``)."""
    keys = list(state.keys())
    origs = [k for k in keys if k.endswith("_orig")]
    if not origs:
        return state
    out = {k: state[k] for k in keys}
    for key in origs:
        base = key[: -len("_orig")]
        if base not in out and base + "_mask" in out:
            orig = np.asarray(out.pop(key))
            out[base] = orig * (np.asarray(out[base + "_mask"]) != 0)
    return out


def _bn_relu_pool(layers: list[Module], i: int) -> bool:
    """Whether layers ``i - 2 .. i`` are a batch norm whose last forward was fused with
    the ReLU after it (training statistics), that ReLU, and a ``MaxPool2d`` whose last
    input was exactly that output."""
    from .conv import MaxPool2d  # here: conv and layers import this module
    from .layers import ReLU, _BatchNorm

    pool, relu, bn = layers[i], layers[i - 1], layers[i - 2]
    if type(pool) is not MaxPool2d or type(relu) is not ReLU or not isinstance(bn, _BatchNorm):
        return False
    saved = bn._saved
    return (
        relu._fused
        and saved is not None
        and saved[0] == "train"
        and saved[4] is not None
        and relu._y is saved[4]
        and pool._x is saved[4]
    )


class Sequential(Module):
    """Layers applied in order; ``backward`` runs them in reverse.

    Indexable (``model[0]``, slices give a new Sequential sharing the layers), iterable
    and sized like the list ``.layers``. ``backward`` computes a layer's ``dx`` only when
    an earlier layer has trainable parameters (or the caller asks for the input gradient
    with ``need_dx=True``, the default): with ``need_dx=False`` the first Linear skips its
    ``dy @ W`` product, and frozen leading layers cost no backward at all.
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential: layer {i} is a {type(layer).__name__}, not a pyfastopt.nn.Module"
                )
        self.layers: list[Module] = list(layers)

    def _children(self) -> list[tuple[str, Module]]:
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, x: ArrayLike) -> np.ndarray:
        out: Any = x
        if not self.training:  # thread-safe: per-thread buffers (module docstring)
            for layer in self.layers:
                out = layer.forward(out)
            return out
        guard = self._enter_training("forward")
        try:
            return self._train_forward(out)
        finally:
            guard.release()

    def _train_forward(self, out: Any) -> Any:
        """Training forward. A training-mode ``BatchNorm*`` directly followed by a
        ``ReLU`` runs as one fused batch norm + ReLU (one pass fewer over the activations
        forward and backward, the same bits); the ReLU then passes its gradient through.
        When a channels-last ``MaxPool2d(2)`` follows, the batch norm's element-wise pass
        also pools each pair of rows as it writes them (no pass reading the ReLU's output
        back; the same bits)."""
        from .layers import ReLU, _BatchNorm  # here: layers imports this module

        layers = self.layers
        i, n = 0, len(layers)
        while i < n:
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < n else None
            if (
                type(nxt) is ReLU
                and isinstance(nxt, ReLU)  # for the type checker
                and isinstance(layer, _BatchNorm)
                and layer._fuses_relu()
            ):
                if i + 2 < n:
                    pooled = layer._forward_relu_pool(out, nxt, layers[i + 2])
                    if pooled is not None:
                        out = pooled
                        i += 3
                        continue
                out = layer._forward(out, True)
                nxt._take_fused(out)
                i += 2
            else:
                out = layer.forward(out)
                i += 1
        return out

    def _enter_training(self, what: str) -> Any:
        """The training-mode guard: one thread at a time (re-entry by the same thread is
        fine), RuntimeError for a second thread."""
        guard = self.__dict__.get("_guard")
        if guard is None:
            guard = self.__dict__.setdefault("_guard", threading.RLock())
        if not guard.acquire(blocking=False):
            raise RuntimeError(
                f"Sequential.{what} in training mode is running in another thread: training "
                "reuses the layers' buffers, so one model trains in one thread at a time "
                "(use copy.deepcopy(model) per thread, or eval() for inference, which is "
                "thread-safe)"
            )
        return guard

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        guard = self._enter_training("backward")
        try:
            return self._backward(dy, need_dx)
        finally:
            guard.release()

    def _backward(self, dy: ArrayLike, need_dx: bool) -> np.ndarray | None:
        layers = self.layers
        grad: Any = dy
        # needs[i]: does anything before layer i want a gradient?
        needs = [need_dx] * len(layers)
        want = need_dx
        for i, layer in enumerate(layers):
            needs[i] = want
            want = want or layer._has_trainable()
        from .conv import MaxPool2d  # here: conv imports this module

        premasked = None  # the batch norm whose gradient a fused max pool masked
        i = len(layers) - 1
        while i >= 0:
            layer = layers[i]
            if not needs[i] and not layer._has_trainable():
                return None  # nothing at or before layer i needs a gradient
            if layer is premasked:
                grad = layer._backward(grad, needs[i], True)  # type: ignore[attr-defined]
            elif type(layer) is MaxPool2d and i >= 2 and _bn_relu_pool(layers, i):
                bn = layers[i - 2]
                if bn._pool_fusable(layer, bn._saved[1].shape):  # type: ignore[attr-defined]
                    # channels-last 2x2: the pool's masked backward and the batch norm's
                    # backward in one call, the batch norm's sums taken as the pool
                    # writes its gradient; the fused ReLU passes the gradient through
                    # (needs[i - 1] == needs[i]: a ReLU has nothing to train)
                    grad = bn._backward_relu_pool(grad, layer, needs[i - 2])  # type: ignore[attr-defined]
                    i -= 3
                    continue
                # batch norm (+ fused ReLU) -> max pool: the pool's backward applies the
                # ReLU mask (x > 0 of its input, the ReLU's output) as it writes its
                # gradient, and the batch norm then skips it (one pass fewer over the
                # activations, the same bits); the fused ReLU passes the gradient through
                grad = layer._backward_relu(grad, needs[i])
                premasked = bn
            else:
                grad = layer.backward(grad, need_dx=needs[i])
            i -= 1
        return grad

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def append(self, layer: Module) -> Sequential:
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.append: got a {type(layer).__name__}, not a Module")
        self.layers.append(layer)
        return self
