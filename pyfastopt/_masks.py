"""Registry of pruning masks, consulted by every optimizer's ``step``.

A pruned layer (see :mod:`pyfastopt.prune`) registers its weight array here with a bool
array that is True where the weight is pruned. ``Optimizer.step`` looks its parameters up
(one dict lookup each, only while any mask exists) and, for the registered ones, zeroes
the pruned gradient entries before the fused update and the pruned parameter and state
entries after it, so pruned weights stay exactly zero under any optimizer.

Entries are keyed by ``id(array)`` and hold a weak reference, so a freed array never
matches a new one that reuses its id.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

_REGISTRY: dict[int, tuple[weakref.ReferenceType, np.ndarray]] = {}


def register(param: np.ndarray, pruned: np.ndarray) -> None:
    """Keep the entries of ``param`` where ``pruned`` is True at zero in optimizer steps."""
    key = id(param)

    def _gone(ref: weakref.ReferenceType, key: int = key) -> None:
        entry = _REGISTRY.get(key)
        if entry is not None and entry[0] is ref:
            del _REGISTRY[key]

    _REGISTRY[key] = (weakref.ref(param, _gone), pruned)


def unregister(param: np.ndarray) -> None:
    entry = _REGISTRY.get(id(param))
    if entry is not None and entry[0]() is param:
        del _REGISTRY[id(param)]


def lookup(param: Any) -> np.ndarray | None:
    """The pruned-entries array of ``param``, or None."""
    entry = _REGISTRY.get(id(param))
    if entry is None or entry[0]() is not param:
        return None
    return entry[1]


def active() -> bool:
    return bool(_REGISTRY)


def find(params: list[Any]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(position, param, pruned) for every registered param of ``params``."""
    out = []
    for i, p in enumerate(params):
        pruned = lookup(p)
        if pruned is not None and pruned.shape == getattr(p, "shape", None):
            out.append((i, p, pruned))
    return out


def mask_grads(grads: Any, found: list[tuple[int, np.ndarray, np.ndarray]]) -> list[Any]:
    """``grads`` with the pruned entries zeroed (in place where writable, else a copy)."""
    grads = list(grads)
    for i, _, pruned in found:
        if i >= len(grads):
            continue
        g = grads[i]
        if not isinstance(g, np.ndarray) or not g.flags.writeable:
            g = np.array(g)
            if g.dtype.kind != "f":
                continue  # a wrong grad: the optimizer's own validation reports it
            grads[i] = g
        if g.shape == pruned.shape:
            np.copyto(g, 0, where=pruned)
    return grads


def mask_after_step(
    found: list[tuple[int, np.ndarray, np.ndarray]], state: dict[int, dict[str, Any]]
) -> None:
    """Zero the pruned entries of each param and of its state arrays (momentum, moments)."""
    for i, p, pruned in found:
        np.copyto(p, 0, where=pruned)
        for value in state.get(i, {}).values():
            if isinstance(value, np.ndarray) and value.shape == pruned.shape:
                np.copyto(value, 0, where=pruned)
