"""The optimizer base class: parameter groups, per-parameter state, checkpoints.

Subclasses declare their hyper-parameters, their state arrays and how one step's
coefficients are computed; the update itself is one fused C++ call over every tensor of
every group (``pyfastopt._core.optim.<name>_step``), which validates everything before it
touches any array.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, ClassVar, SupportsIndex

import numpy as np

from .. import _core, _fileio, _masks, _schema
from .._validate import type_name

__all__ = ["Optimizer", "load_state_dict_file", "save_state_dict"]

_NO_NEW: dict[str, np.ndarray] = {}
_FORMAT = "pyfastopt.optim.state_dict"
# keys that learning-rate schedulers store in param groups (PyTorch's names)
_SCHEDULER_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"})
_FORMAT_VERSION = 1


class _ParamList(list[Any]):
    """A param group's ``"params"`` list that counts its own changes (``_version``), so
    :meth:`Optimizer.step` notices ``group["params"][i] = new_array`` (or an append, a
    deletion...) with one integer comparison per group instead of rescanning every
    parameter on every step."""

    _version = 0

    def _changed(self) -> None:
        self._version += 1

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._changed()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._changed()

    def __iadd__(self, other: Iterable[Any]) -> _ParamList:  # type: ignore[misc]
        result = super().__iadd__(other)
        self._changed()
        return result

    def __imul__(self, n: SupportsIndex) -> _ParamList:
        result = super().__imul__(n)
        self._changed()
        return result

    def append(self, value: Any) -> None:
        super().append(value)
        self._changed()

    def extend(self, values: Iterable[Any]) -> None:
        super().extend(values)
        self._changed()

    def insert(self, index: SupportsIndex, value: Any) -> None:
        super().insert(index, value)
        self._changed()

    def pop(self, index: SupportsIndex = -1) -> Any:
        value = super().pop(index)
        self._changed()
        return value

    def remove(self, value: Any) -> None:
        super().remove(value)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)
        self._changed()

    def reverse(self) -> None:
        super().reverse()
        self._changed()


class Optimizer:
    """Base class. Subclasses set the class attributes below and ``_coef``.

    Attributes
    ----------
    param_groups : list of dict
        Each group has ``"params"`` (list of arrays, updated in place) and its own
        hyper-parameters; change them (e.g. ``"lr"``) between steps freely. The params
        may change too (``group["params"][i] = new``, append, delete, a new list): the
        next step checks the new arrays like new parameters and updates them; a
        parameter keeps its state wherever it moves, and an array new to the optimizer
        starts with fresh state (as a new tensor does in PyTorch).
    state : dict
        ``state[i]`` for the i-th parameter in flattened order (group order, then order
        within the group): ``{"step": int, <state arrays>}``, created at its first step.
    """

    #: hyper-parameter name -> validator(name, value) -> normalised value
    _hyper: ClassVar[dict[str, Callable[[str, Any], Any]]] = {}
    #: names of the (up to 3) state arrays, in the kernel's order; "" = unused slot
    _state_names: ClassVar[tuple[str, str, str]] = ("", "", "")
    #: the C++ step function's name in pyfastopt._core.optim
    _kernel: ClassVar[str] = ""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = self._validate_group(dict(defaults), "", strict=True)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        # what step() last saw: each group's params list object and its change count, and
        # the flattened (group index, array) list built from them
        self._layout: tuple[tuple[Any, int], ...] = ()
        self._flat_cache: list[tuple[int, np.ndarray]] = []
        self._plan: tuple | None = None
        self._checked_hyper: tuple | None = None
        if isinstance(params, np.ndarray) or _is_device(params):
            raise TypeError(
                "params must be a list of arrays or of dicts (param groups), "
                "got a single ndarray; wrap it in a list"
            )
        params = list(params)
        if not params:
            raise ValueError("params is an empty list: the optimizer has nothing to update")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups
    def _validate_group(
        self, group: dict[str, Any], where: str, strict: bool = False
    ) -> dict[str, Any]:
        """Check (and normalise) the group's hyper-parameters, naming any bad one: as
        ``lr`` for the constructor's defaults (``where=""``), as ``param_groups[1]['lr']``
        for a group (``where="param_groups[1]"``).

        ``strict`` (when a group is added): unknown keys are rejected, except the ones
        learning-rate schedulers keep in groups. Later (step, load) extra keys are allowed.
        """
        if strict:
            for key in group:
                if key != "params" and key not in self._hyper and key not in _SCHEDULER_KEYS:
                    raise TypeError(
                        f"{type(self).__name__} got an unexpected hyper-parameter {key!r}"
                        + (f" in {where}" if where else "")
                    )
        for key, check in self._hyper.items():
            if key in group:
                group[key] = check(f"{where}[{key!r}]" if where else key, group[key])
        self._check_combination(group)
        return group

    def _check_combination(self, group: dict[str, Any]) -> None:
        """Cross-argument rules (e.g. nesterov needs momentum). Override."""

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group: ``{"params": [...], <hyper-parameters overriding the defaults>}``."""
        if not isinstance(group, dict):
            raise TypeError(f"a param group must be a dict, got {type_name(group)}")
        group = dict(group)
        if "params" not in group:
            raise ValueError("a param group needs a 'params' entry")
        gi = len(self.param_groups)
        group["params"] = _param_list(group["params"], gi)
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._validate_group(group, f"param_groups[{gi}]", strict=True)
        self._check_group_params(group, gi)
        self._sync_params([*self.param_groups, group])
        self.param_groups.append(group)

    def _check_group_params(self, group: dict[str, Any], gi: int) -> None:
        """Per-parameter rules that depend on hyper-parameters. Override."""

    def _flat(self) -> list[tuple[int, np.ndarray]]:
        """(group index, parameter) in flattened order, for the current param groups."""
        groups = self.param_groups
        layout = self._layout
        if len(groups) != len(layout) or not all(
            g["params"] is lst and lst._version == version
            for g, (lst, version) in zip(groups, layout)
        ):
            self._sync_params(groups)
        return self._flat_cache

    def _sync_params(self, groups: list[dict[str, Any]]) -> None:
        """Adopt the parameters of ``groups`` after a change: a group added, a params list
        replaced, or an array replaced, added or removed inside one.

        Changed groups are checked like new ones (in-place arrays, no shared memory, the
        optimizer's per-parameter rules), then the state follows the arrays: a parameter
        keeps its state wherever it moved, and an array new to the optimizer starts
        fresh, as a new tensor does in PyTorch. Nothing changes if a check fails.
        """
        old = {id(lst): version for lst, version in self._layout}
        lists = []
        for gi, g in enumerate(groups):
            if not isinstance(g, dict) or "params" not in g:
                raise TypeError(f"param_groups[{gi}] must be a dict with a 'params' entry")
            lst = g["params"]
            if isinstance(lst, _ParamList) and old.get(id(lst)) == lst._version:
                lists.append(lst)  # unchanged since the last sync
                continue
            lst = _param_list(lst, gi)
            for k, p in enumerate(lst):  # host arrays, or all on one CUDA device
                self._check_same_device(p, f"param_groups[{gi}]['params'][{k}]")
            for key, value in self.defaults.items():
                g.setdefault(key, value)
            self._check_group_params({**g, "params": lst}, gi)
            lists.append(lst)
        flat = [(gi, p) for gi, lst in enumerate(lists) for p in lst]
        _check_distinct(
            [p for _, p in flat],
            [
                f"param_groups[{gi}]['params'][{j}]"
                for gi, lst in enumerate(lists)
                for j in range(len(lst))
            ],
        )
        # commit: state follows the arrays (the old flat list keeps them alive, so ids
        # cannot have been reused)
        where = {id(p): i for i, (_, p) in enumerate(self._flat_cache)}
        state = {}
        for i, (_, p) in enumerate(flat):
            j = where.get(id(p))
            if j is not None and j in self.state:
                state[i] = self.state[j]
        for g, lst in zip(groups, lists):
            g["params"] = lst
        self.state = state
        self._flat_cache = flat
        self._layout = tuple((lst, lst._version) for lst in lists)
        self._plan = None

    # ------------------------------------------------------------------ stepping
    def _missing_state(
        self, p: np.ndarray, group: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """State arrays this step needs that ``state`` lacks (fresh, initialised). Override."""
        raise NotImplementedError

    def _coef_key(
        self, gi: int, state: dict[str, Any], new: dict[str, np.ndarray], step: int
    ) -> tuple:
        """What, besides the group, makes one tensor's coefficients differ from another's."""
        return (gi, step)

    def _coef(
        self, group: dict[str, Any], state: dict[str, Any], new: dict[str, np.ndarray], step: int
    ) -> tuple:
        """The kernel's coefficient tuple (Python floats and bools, i.e. double). Override."""
        raise NotImplementedError

    def _kernel_name(self) -> str:
        return self._kernel

    def _state_dtype(self, p: np.ndarray) -> np.dtype:
        """dtype of this parameter's state arrays (the parameter's own by default)."""
        return p.dtype

    def _structure(self, group: dict[str, Any]) -> tuple:
        """Hyper-parameters that decide which state arrays exist (e.g. amsgrad). Override."""
        return ()

    def _signature(self) -> tuple:
        """What the steady-state plan depends on besides the parameters themselves (whose
        changes :meth:`_flat` notices): which state arrays each group needs."""
        return tuple(self._structure(g) for g in self.param_groups)

    def _check_hyper(self) -> None:
        """Validate every group's hyper-parameters (skipped when unchanged since last time:
        same types and values, so a scheduler's new float lr is checked, and a 0-d array
        put in a group is normalised to a float)."""
        try:
            unchanged = self._hyper_snapshot() == self._checked_hyper
        except (TypeError, ValueError):  # an array in a group: comparing fails, check it
            unchanged = False
        if not unchanged:
            for gi, group in enumerate(self.param_groups):
                self._validate_group(group, f"param_groups[{gi}]")
            self._checked_hyper = self._hyper_snapshot()

    def _hyper_snapshot(self) -> tuple:
        out = []
        for g in self.param_groups:
            for key in self._hyper:
                value = g.get(key)
                out.append((type(value), value))
        return tuple(out)

    def step(self, grads: Sequence[Any], *, stream: Any = None) -> None:
        """One update of every parameter, given ``grads`` aligned with the flattened params.

        Every argument and hyper-parameter is validated before any array is touched: on
        error the parameters and the state are left exactly as they were.

        Pruned parameters (layers pruned by :mod:`pyfastopt.prune`, which keep a
        ``weight_mask``): the pruned entries of their gradients are zeroed (in the arrays
        passed where writable, else in a copy) before the update, and those of the
        parameter and of its state arrays after it, so they stay exactly zero.

        Device parameters (CuPy arrays, PyTorch CUDA tensors, any DLPack /
        ``__cuda_array_interface__`` producer; see :mod:`pyfastopt.cuda`): the same fused
        multi-tensor update runs on the GPU (one launch per dtype, the CPU's bits), on
        ``stream`` or else the first parameter's producer's current stream; the state is
        created on the device, of the parameters' kind.
        """
        flat = self._flat()
        if not isinstance(grads, (list, tuple)):
            if isinstance(grads, np.ndarray) or not isinstance(grads, Sequence):
                raise TypeError("grads must be a list of arrays aligned with the parameters")
            grads = list(grads)
        if len(grads) != len(flat):
            raise ValueError(
                f"grads has {len(grads)} arrays but the optimizer has {len(flat)} parameters"
            )
        self._check_hyper()
        # pruned parameters (pyfastopt.prune): zero their pruned gradient entries now and
        # their parameter and state entries after the update, so they stay exactly zero
        found = _masks.find([p for _, p in flat]) if _masks.active() else None
        if found:
            grads = _masks.mask_grads(grads, found)
        if getattr(self, "_device", None) is None:
            if stream is not None:
                raise ValueError("stream= is for device parameters; these are host arrays")
            kernel = getattr(_core.optim, self._kernel_name())
        else:
            kernel = self._device_kernel(stream)
        plan = self._plan
        if plan is not None and plan[0] == self._signature():
            # Steady state: every state array exists and the tensor -> coefficient mapping
            # is unchanged; only the coefficients themselves move with the step count.
            _, params, slots, index, reps, states = plan
            coefs = [
                self._coef(self.param_groups[gi], st, _NO_NEW, st["step"] + 1) for gi, st in reps
            ]
            kernel(params, grads, slots, index, coefs)
            for st in states:
                st["step"] += 1
        else:
            self._step_slow(kernel, flat, grads)
        if found:
            _masks.mask_after_step(found, self.state)

    def _step_slow(
        self, kernel: Callable[..., None], flat: list[tuple[int, np.ndarray]], grads: Sequence[Any]
    ) -> None:
        """First steps, or after a structural change: create missing state, then step."""
        views: list[dict[str, Any]] = []
        pending: list[tuple[dict[str, Any], dict[str, np.ndarray]]] = []
        coef_of: dict[tuple, int] = {}
        coefs: list[tuple] = []
        reps: list[tuple[int, dict[str, Any]]] = []
        index: list[int] = []
        for i, (gi, p) in enumerate(flat):
            group = self.param_groups[gi]
            st = self.state.get(i) or {"step": 0}
            new = self._missing_state(p, group, st)
            views.append({**st, **new} if new else st)
            pending.append((st, new))
            step = st["step"] + 1
            key = self._coef_key(gi, st, new, step)
            k = coef_of.get(key)
            if k is None:
                k = coef_of[key] = len(coefs)
                coefs.append(self._coef(group, st, new, step))
                reps.append((gi, st))
            index.append(k)
        slots = []
        for name in self._state_names:
            column = [v.get(name) for v in views] if name else []
            slots.append(column if any(a is not None for a in column) else None)
        params = [p for _, p in flat]
        kernel(params, list(grads), tuple(slots), index, coefs)
        # the kernel accepted everything and ran: commit the state
        for i, (st, new) in enumerate(pending):
            if i not in self.state:
                self.state[i] = st
            st.update(new)
            st["step"] += 1
        created = any(new for _, new in pending)
        self._plan = (
            None
            if created
            else (self._signature(), params, tuple(slots), index, reps, [st for st, _ in pending])
        )

    # ------------------------------------------------------------------ device parameters
    def _check_same_device(self, p: Any, name: str) -> None:
        """All parameters on the host, or all on one CUDA device."""
        dev = _device_of(p)
        if not hasattr(self, "_device"):
            self._device = dev
            self._first_param_name = name
        elif dev != self._device:

            def where(d: int | None) -> str:
                return "a host array" if d is None else f"on cuda:{d}"

            raise ValueError(
                f"{name} is {where(dev)} but {self._first_param_name} is "
                f"{where(self._device)}: one optimizer updates parameters on one device"
            )

    def _device_kernel(self, stream: Any) -> Callable[..., None]:
        from .. import cuda

        mod = cuda.require()
        s = cuda.resolve_stream(stream, self._flat()[0][1])
        fn = getattr(mod, self._kernel_name())

        def kernel(params: Any, grads: Any, slots: Any, index: Any, coefs: Any) -> None:
            fn(params, grads, slots, index, coefs, s)

        self._stream = s
        return kernel

    def _zeros(self, p: Any, dtype: Any = None) -> Any:
        """A zero state array for parameter ``p`` (on ``p``'s device, of its kind)."""
        dtype = p.dtype if dtype is None else dtype
        if getattr(self, "_device", None) is None:
            return np.zeros(p.shape, dtype)
        from .. import cuda

        mod = cuda.require()
        z = mod.zeros(
            _device_shape(p), _np_dtype(dtype).name, self._device, getattr(self, "_stream", 0)
        )
        return cuda.as_kind(z, p)

    def _full(self, p: Any, value: float) -> Any:
        """A state array filled with ``value`` (on ``p``'s device, of its kind)."""
        if getattr(self, "_device", None) is None:
            return np.full(p.shape, value, p.dtype)
        if value == 0:
            return self._zeros(p)
        from .. import cuda

        host = np.full(_device_shape(p), value, _np_dtype(p.dtype))
        mod = cuda.require()
        return cuda.as_kind(mod.from_host(host, self._device, getattr(self, "_stream", 0)), p)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {i: {"step": int, name: array}}, "param_groups": [...]}``.

        Arrays are copies. Groups list their parameters by flattened index, as in PyTorch.
        """
        groups, start = [], 0
        for g in self.param_groups:
            entry = {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"
            }
            entry["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            groups.append(entry)
        state = {i: {k: _copy_state(v) for k, v in st.items()} for i, st in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by :meth:`state_dict`.

        The optimizer must have the same groups with the same number of parameters; each
        state array must match its parameter's shape and the state's dtype. Continuing
        after a restore reproduces the original trajectory bit for bit.

        Raises:
            ValueError: for anything wrong in ``state_dict`` (its structure, a group, a
                hyper-parameter of the wrong type or value, a state entry); the
                optimizer is left unchanged.
        """
        _check_state_dict_structure(state_dict)
        self._flat()  # adopt any change to the params first: positions refer to them
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param groups, the optimizer "
                f"has {len(self.param_groups)}"
            )
        for gi, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(
                    f"param group {gi}: state_dict has {len(sg['params'])} "
                    f"parameters, the optimizer has {len(g['params'])}"
                )
        new_groups = []
        for gi, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
            hyper = {k: v for k, v in sg.items() if k != "params"}
            if "betas" in hyper:
                hyper["betas"] = tuple(hyper["betas"])
            merged = {**g, **hyper, "params": g["params"]}
            try:
                self._validate_group(merged, f"state_dict['param_groups'][{gi}]")
            except (TypeError, OverflowError) as exc:  # a hyper-parameter of the wrong type
                raise ValueError(str(exc)) from None
            new_groups.append(merged)
        flat = [p for g in new_groups for p in g["params"]]
        # map saved flat indices onto ours by position within the groups
        saved_ids = [i for sg in saved_groups for i in sg["params"]]
        new_state: dict[int, dict[str, Any]] = {}
        for pos, sid in enumerate(saved_ids):
            st = state_dict["state"].get(sid, state_dict["state"].get(str(sid)))
            if st is None:
                continue
            p = flat[pos]
            restored: dict[str, Any] = {}
            for key, val in st.items():
                if key == "step":
                    if isinstance(val, np.ndarray) and val.ndim == 0:
                        val = val.item()
                    if (
                        not isinstance(val, numbers.Integral)
                        or isinstance(val, bool)
                        or not 0 <= int(val) <= _MAX_INDEX
                    ):
                        raise ValueError(
                            f"state[{pos}]['step'] must be an int in [0, 2**62], got {val!r:.40}"
                        )
                    restored["step"] = int(val)
                elif key and key in self._state_names:
                    want = self._state_dtype(p)
                    if getattr(self, "_device", None) is not None:
                        restored[key] = self._restore_device_state(pos, key, val, p, want)
                        continue
                    arr = np.asarray(val)
                    if arr.shape != p.shape or arr.dtype != want:
                        raise ValueError(
                            f"state[{pos}][{key!r}] has shape {arr.shape} and dtype {arr.dtype}, "
                            f"expected {p.shape} and {want}"
                        )
                    restored[key] = np.array(arr, copy=True, order="C")
                else:
                    raise ValueError(
                        f"state[{pos}] has an unknown entry {key!r} for {type(self).__name__}"
                    )
            if "step" not in restored:
                raise ValueError(f"state[{pos}] lacks 'step'")
            new_state[pos] = restored
        self.param_groups = new_groups  # the same params lists: the layout still holds
        self.state = new_state
        self._plan = None
        self._checked_hyper = None

    def _restore_device_state(self, pos: int, key: str, val: Any, p: Any, want: Any) -> Any:
        """A checkpointed state array (host or device) as a fresh device array of ``p``'s
        kind, after the same shape/dtype check as on the host."""
        from .. import cuda

        mod = cuda.require()
        s = getattr(self, "_stream", 0)
        if _is_device(val):
            d = mod.describe(val, f"state[{pos}][{key!r}]", s)
            shape, dt = tuple(d["shape"]), d["dtype"]
        else:
            val = np.asarray(val)
            shape, dt = val.shape, val.dtype.name
        pshape = _device_shape(p)
        want_name = _np_dtype(want).name
        if shape != pshape or dt != want_name:
            raise ValueError(
                f"state[{pos}][{key!r}] has shape {shape} and dtype {dt}, "
                f"expected {pshape} and {want_name}"
            )
        if _is_device(val):
            return cuda.as_kind(mod.copy(val, s), p)
        return cuda.as_kind(mod.from_host(np.ascontiguousarray(val), self._device, s), p)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"  group {gi}: {len(g['params'])} params")
            lines.extend(f"    {k}: {v}" for k, v in g.items() if k != "params")
        return "\n".join([*lines, ")"])


def _is_device(x: Any) -> bool:
    """True for CUDA device arrays (DLPack on a CUDA device or __cuda_array_interface__),
    without importing pyfastopt.cuda."""
    t = type(x)
    if isinstance(x, np.ndarray) or not (
        hasattr(t, "__dlpack_device__") or hasattr(t, "__cuda_array_interface__")
    ):
        return False  # host arrays, numbers, lists: pyfastopt.cuda is not even imported
    from ..cuda._runtime import is_device_array

    return is_device_array(x)


def _device_of(p: Any) -> int | None:
    """None for a host array, else the CUDA device index."""
    if not _is_device(p):
        return None
    from .. import cuda

    return int(cuda.require().describe(p, "param", 0)["device"])


def _device_shape(p: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in p.shape)


def _np_dtype(dtype: Any) -> np.dtype:
    """NumPy dtype of a dtype given as NumPy's, CuPy's or torch's (``torch.float32``)."""
    if isinstance(dtype, np.dtype):
        return dtype
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(str(dtype).replace("torch.", ""))


def _copy_state(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.copy()
    if _is_device(v):
        from .. import cuda

        return cuda.copy(v)
    return int(v)


def _check_state_dict_structure(state_dict: Any) -> None:
    """The containers of an optimizer state dict, before any of it is used (ValueError)."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"state_dict must be a dict with 'state' and 'param_groups', "
            f"got {type(state_dict).__name__}"
        )
    if "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
    groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(groups, (list, tuple)):
        raise ValueError(
            f"state_dict['param_groups'] must be a list of dicts, got {type(groups).__name__}"
        )
    for gi, g in enumerate(groups):
        if not isinstance(g, Mapping):
            raise ValueError(
                f"state_dict['param_groups'][{gi}] must be a dict, got {type(g).__name__}"
            )
        ids = g.get("params")
        if not isinstance(ids, (list, tuple, range)) or not all(
            isinstance(i, numbers.Integral) and not isinstance(i, (bool, np.bool_)) for i in ids
        ):
            raise ValueError(
                f"state_dict['param_groups'][{gi}]['params'] must be a list of ints "
                f"(parameter indices), got {ids!r:.60}"
            )
        if "betas" in g and not isinstance(g["betas"], (list, tuple)):
            raise ValueError(
                f"state_dict['param_groups'][{gi}]['betas'] must be a pair, got {g['betas']!r:.60}"
            )
    if not isinstance(state, Mapping):
        raise ValueError(f"state_dict['state'] must be a dict, got {type(state).__name__}")
    for key, st in state.items():
        if not isinstance(st, Mapping):
            raise ValueError(
                f"state_dict['state'][{key!r}] must be a dict, got {type(st).__name__}"
            )


def _param_list(params: Any, gi: int) -> _ParamList:
    """A group's parameters as a :class:`_ParamList` (the same object if it is one),
    each checked: an ndarray updated in place."""
    if isinstance(params, np.ndarray) or _is_device(params):
        params = [params]
    elif isinstance(params, (str, bytes, dict)) or not isinstance(params, Iterable):
        raise TypeError(
            f"param_groups[{gi}]['params'] must be a list of arrays, got {type_name(params)}"
        )
    lst = params if isinstance(params, _ParamList) else _ParamList(params)
    for j, p in enumerate(lst):
        _check_param(p, f"param_groups[{gi}]['params'][{j}]")
    return lst


def _check_param(p: Any, name: str) -> None:
    """Parameters are updated in place: the shared C++ in-place check (ndarray, float32 or
    float64, writable, C-contiguous, aligned, native byte order). Device arrays get the
    CUDA module's in-place check (writable, C-contiguous device memory)."""
    if _is_device(p):
        from .. import cuda

        cuda.require().check_inplace(p, name, True)
        return
    if not isinstance(p, np.ndarray):  # a list would be read as a sequence of arrays
        raise TypeError(f"{name} must be a numpy.ndarray (updated in place), got {type_name(p)}")
    _core.ops.check_inplace(p, name)


def _span(a: Any) -> tuple[int, int, int]:
    """(device or -1 for host, address, bytes) of an array's memory."""
    if isinstance(a, np.ndarray):
        return -1, a.__array_interface__["data"][0], a.nbytes
    from .. import cuda

    d = cuda.require().describe(a, "param", 0)
    return int(d["device"]), int(d["data"]), int(d["nbytes"])


def _check_distinct(arrays: list[Any], names: list[str]) -> None:
    """No two parameters may share memory (O(n log n) over address intervals)."""
    spans = sorted((*_span(a), k) for k, a in enumerate(arrays))
    spans = [s for s in spans if s[2]]
    for (dev1, lo1, n1, k1), (dev2, lo2, _, k2) in zip(spans, spans[1:]):
        if dev1 == dev2 and lo2 < lo1 + n1:
            first, second = sorted((k1, k2))
            raise ValueError(
                f"{names[second]} shares memory with {names[first]}; each "
                "parameter must be a distinct array (a parameter given twice?)"
            )


# ---------------------------------------------------------------------- npz checkpoints
# The JSON header's schema (checked before any part of it is used).
_HYPER_VALUE = _schema.OneOf(
    _schema.Null(),
    _schema.Bool(),
    _schema.Real(finite=False),
    _schema.Str(64),
    _schema.List(_schema.OneOf(_schema.Real(finite=False), _schema.Bool(), _schema.Null()), 16),
)
_MAX_INDEX = 2**62
_GROUP = _schema.Dict(
    required={"params": _schema.List(_schema.Int(0, _MAX_INDEX), max_len=1 << 24)},
    extra=_HYPER_VALUE,
    keys=_schema.Str(64),
    max_keys=64,
)
_STATE_ENTRY = _schema.Dict(
    required={"step": _schema.Int(0, _MAX_INDEX)},
    extra=_schema.Null(),  # an array, stored as the member state/<i>/<name>.npy
    keys=_schema.Str(64),
    max_keys=16,
)
_HEADER = _schema.Dict(
    required={
        "format": _schema.Choice(_FORMAT),
        "version": _schema.Choice(_FORMAT_VERSION),
        "param_groups": _schema.List(_GROUP, max_len=1 << 20),
        "state": _schema.Dict(extra=_STATE_ENTRY, keys=_schema.IntKey(_MAX_INDEX)),
    }
)
_HEADER_MEMBER = "__header__.npy"
# 8 MiB of JSON is ~140,000 parameter tensors; parsing it needs ~10x that in objects
_MAX_HEADER_BYTES = 8 << 20


def _json_default(obj: Any) -> Any:
    """NumPy scalars and 0-d arrays in param groups become plain JSON numbers/bools."""
    if isinstance(obj, (np.generic, np.ndarray)) and np.ndim(obj) == 0:
        return obj.item()
    raise TypeError(f"a param group holds a {type(obj).__name__}, which a checkpoint cannot store")


def save_state_dict(state_dict: dict[str, Any], path: Any) -> None:
    """Save an optimizer ``state_dict()`` to ``path``: an ``.npz`` (no pickle), written
    atomically.

    Arrays are stored as ``state/<i>/<name>.npy`` members; everything else goes into a
    JSON header (member ``__header__.npy``). The file is written to a temporary file
    beside ``path`` and renamed over it (:func:`pyfastopt._fileio.atomic_write`): a crash
    or ``kill -9`` during the save leaves the previous checkpoint intact, and concurrent
    saves to one path never collide. ``path`` is used as given (unlike
    :func:`numpy.savez`, no ``.npz`` is appended). A writable file object is also
    accepted (written in place, without those guarantees).
    """
    header: dict[str, Any] = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "param_groups": state_dict["param_groups"],
        "state": {},
    }
    arrays: dict[str, np.ndarray] = {}
    for i, st in state_dict["state"].items():
        meta: dict[str, Any] = {}
        for key, val in st.items():
            if _is_device(val):  # a device optimizer's state: saved from a host copy
                from .. import cuda

                val = cuda.to_host(val)
            if isinstance(val, np.ndarray):
                arrays[f"state/{int(i)}/{key}"] = val
                meta[key] = None
            else:
                meta[key] = int(val)
        header["state"][str(int(i))] = meta
    text = json.dumps(header, allow_nan=True, default=_json_default)
    members: dict[str, Any] = {"__header__": np.frombuffer(text.encode(), np.uint8), **arrays}
    if hasattr(path, "write"):
        np.savez(path, **members)
        return
    with _fileio.atomic_write(path) as fh:
        np.savez(fh, **members)


def load_state_dict_file(path: Any, max_bytes: int | None = None) -> dict[str, Any]:
    """Read a file written by :func:`save_state_dict`; returns the ``state_dict``.

    Nothing is unpickled. The JSON header is checked against the format's schema
    (types, ranges, nesting, sizes) before it is used, every array member is checked
    against its ``.npy`` header and the zip directory before it is allocated, and the
    members must be exactly those the header names.

    Args:
        path: the checkpoint file.
        max_bytes (int, optional): the most bytes of arrays the reader may allocate;
            default ``max(256 MiB, 100 x the file's size)``. A file declaring more is
            refused (``ValueError``) before anything large is allocated or decompressed;
            pass a larger value for a trusted, highly compressed file.

    Raises:
        ValueError: a truncated, corrupt, crafted or foreign file, or one over the limit
            (:class:`pyfastopt._fileio.FileTooLargeError`).
        FileNotFoundError, PermissionError, IsADirectoryError: as ``open`` does.
    """
    what = "pyfastopt optimizer checkpoint"
    with _fileio.ZipReader(path, max_bytes, what) as z:
        name = z.path
        if _HEADER_MEMBER not in z:
            raise ValueError(f"{name} is not a pyfastopt optimizer checkpoint (no header)")
        if z.declared_size(_HEADER_MEMBER) > _MAX_HEADER_BYTES + 4096:  # (+ .npy header)
            raise ValueError(f"{name}: corrupt checkpoint header (over 8 MiB of JSON)")
        raw = z.read_npy(_HEADER_MEMBER, dtypes=[np.uint8])
        if raw.ndim != 1 or raw.size > _MAX_HEADER_BYTES:
            raise ValueError(f"{name}: corrupt checkpoint header ({raw.dtype}{raw.shape})")
        try:
            header = _fileio.parse_json(raw.tobytes(), "the checkpoint header")
        except ValueError as exc:
            raise ValueError(f"{name}: corrupt checkpoint header: {exc}") from None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            raise ValueError(f"{name} is not a pyfastopt optimizer checkpoint")
        if header.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{name}: unsupported checkpoint version {header.get('version')!r}")
        try:
            _HEADER.check(header, "header")
        except ValueError as exc:
            raise ValueError(f"{name}: inconsistent checkpoint ({exc})") from None
        groups = header["param_groups"]
        ids = [i for g in groups for i in g["params"]]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name}: inconsistent checkpoint (a parameter index repeats)")
        known = set(ids)
        expected = {_HEADER_MEMBER}
        for i, meta in header["state"].items():
            if int(i) not in known:
                raise ValueError(
                    f"{name}: inconsistent checkpoint (state {i} belongs to no param group)"
                )
            expected.update(f"state/{i}/{key}.npy" for key, val in meta.items() if val is None)
        if set(z.names()) != expected:
            missing = sorted(expected - set(z.names()))
            extra = sorted(set(z.names()) - expected)
            raise ValueError(
                f"{name}: inconsistent checkpoint (members missing: {missing}, unexpected: {extra})"
            )
        state: dict[int, dict[str, Any]] = {}
        for i, meta in header["state"].items():
            st: dict[str, Any] = {}
            for key, val in meta.items():
                if val is None:
                    arr = z.read_npy(f"state/{i}/{key}.npy")
                    if arr.dtype.kind not in "fiu":
                        raise ValueError(f"{name}: state {i} {key!r} has dtype {arr.dtype}")
                    st[key] = arr
                else:
                    st[key] = val
            state[int(i)] = st
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        for k, v in g.items():
            if isinstance(v, float) and math.isnan(v):
                raise ValueError(f"{name}: hyper-parameter {k} is NaN")
    return {"state": state, "param_groups": groups}
