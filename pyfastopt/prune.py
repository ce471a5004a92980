"""Magnitude pruning: unstructured masks that stay zero, and neuron (row) removal.

* :func:`magnitude_prune` with ``structured=None`` zeroes the smallest-magnitude
  entries of the weights in place and returns :class:`PruningMasks`. On a model, each
  pruned Linear/Conv2d keeps its mask as ``layer.weight_mask`` (PyTorch's
  ``torch.nn.utils.prune`` semantics): every optimizer's ``step`` then keeps the pruned
  entries (and their optimizer state) exactly zero, ``forward`` re-applies the mask, and
  ``state_dict`` carries it; :func:`remove` makes the pruning permanent. Plain arrays
  have no layer: wrap the optimizer with :func:`masked` (or call ``masks.apply_()``).
* :func:`prune_filters` removes whole Conv2d filters (L1 or L2 norm), shrinking the
  model in place.
* ``structured="rows"`` ranks whole output rows (neurons) by their L2 norm. On a
  :class:`pyfastopt.nn.Sequential` it makes the model *smaller*, in place, and returns
  it: each pruned Linear loses those rows and bias entries, a following BatchNorm1d
  loses the same features, and the next Linear loses the matching input columns.
* :func:`sparsity` is the fraction of zero entries in the weight matrices.

"Weights" are the weights of the Linear and Conv2d layers, never biases or BatchNorm
parameters; with a list of arrays, every array is a weight.

How many: ``k = round(amount * n)`` (Python's round, half to even) of the ``n``
candidates (entries, or rows) -- per weight matrix with ``scope="layer"``, over all of
them together with ``scope="global"`` (magnitudes compared as they are, as in
``torch.nn.utils.prune.global_unstructured``). ``amount`` is the target fraction of the
total, not of what is still unpruned: entries that are already zero have the smallest
magnitude, so pruning again with the same amount changes nothing.

Ties are broken by position: among equal magnitudes the entry (row) that comes first --
earlier layer, then row-major index -- is pruned first (a stable sort).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._validate import choice, probability
from .nn import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    Module,
    ReLU,
    Sequential,
)

__all__ = [
    "MaskedOptimizer",
    "PruningMasks",
    "is_pruned",
    "magnitude_prune",
    "masked",
    "prune_filters",
    "remove",
    "sparsity",
]


class PruningMasks(Sequence):
    """The masks of one pruning: ``masks[i]`` is a bool array, True where
    ``masks.weights[i]`` is kept.

    Attributes:
        weights (list of ndarray): the pruned arrays themselves (not copies).
        names (list of str): ``"0.weight"`` for model layers, ``"arrays[i]"`` for arrays.
        grads (list): each weight's gradient array for model layers (``grad_weight``),
            else None.
    """

    def __init__(
        self,
        weights: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        names: Sequence[str],
        grads: Sequence[np.ndarray | None] | None = None,
    ) -> None:
        self.weights = list(weights)
        self._masks = [np.asarray(m, dtype=bool) for m in masks]
        self.names = list(names)
        self.grads = list(grads) if grads is not None else [None] * len(self.weights)
        self._pruned = [~m for m in self._masks]

    def __len__(self) -> int:
        return len(self._masks)

    def __getitem__(self, i: Any) -> Any:
        return self._masks[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._masks)

    @property
    def num_pruned(self) -> int:
        """Entries pruned, over every weight."""
        return int(sum(int(p.sum()) for p in self._pruned))

    @property
    def num_total(self) -> int:
        return int(sum(m.size for m in self._masks))

    def pruned(self, i: int) -> np.ndarray:
        """Bool array, True where ``weights[i]`` is pruned (``~masks[i]``, cached)."""
        return self._pruned[i]

    def apply_(self) -> None:
        """Set the pruned entries of every weight (and, for model layers, of its
        gradient) back to exactly zero. Call after each optimizer step if the optimizer
        is not wrapped with :func:`masked`."""
        for w, g, p in zip(self.weights, self.grads, self._pruned):
            np.copyto(w, 0, where=p)
            if g is not None:
                np.copyto(g, 0, where=p)

    def __repr__(self) -> str:
        total = self.num_total
        frac = self.num_pruned / total if total else 0.0
        return f"PruningMasks({len(self)} weights, {self.num_pruned}/{total} pruned ({frac:.1%}))"


class MaskedOptimizer:
    """An optimizer whose ``step`` keeps pruned weights exactly zero.

    Each ``step(grads)``: (1) zeroes the gradients of pruned entries (in place, in the
    arrays passed), (2) runs the wrapped optimizer's fused step, (3) sets the pruned
    parameter entries *and* their optimizer state (momentum buffers, Adam moments, ...)
    back to zero. With zero gradient and zero state, Adam/AdamW/SGD/RMSprop/Adagrad all
    compute a zero update (weight decay of 0 is 0), so the pruned entries never move,
    not even transiently, and stale momentum cannot revive them.

    Everything else (``param_groups``, ``state``, ``state_dict``, ...) is the wrapped
    optimizer's: learning-rate schedulers may be built on either object.
    """

    def __init__(self, optimizer: Any, masks: PruningMasks) -> None:
        if not isinstance(masks, PruningMasks):
            raise TypeError(f"masks must be PruningMasks, got {type(masks).__name__}")
        if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "step"):
            raise TypeError(
                f"optimizer must be a pyfastopt optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.masks = masks
        flat = [p for g in optimizer.param_groups for p in g["params"]]
        where = {id(p): i for i, p in enumerate(flat)}
        self._slots: list[tuple[int, np.ndarray, np.ndarray]] = []
        for j, w in enumerate(masks.weights):
            i = where.get(id(w))
            if i is None:
                raise ValueError(
                    f"the pruned weight {masks.names[j]} (shape {w.shape}) is not a parameter "
                    "of the optimizer (build the optimizer on the pruned model's parameters)"
                )
            self._slots.append((i, w, masks.pruned(j)))

    def step(self, grads: Sequence[Any]) -> None:
        grads = list(grads)
        for i, _, pruned in self._slots:
            if i < len(grads):  # a wrong length is reported by the optimizer itself
                g = grads[i]
                if not (isinstance(g, np.ndarray) and g.flags.writeable):
                    g = grads[i] = np.array(g)
                if g.shape == pruned.shape:
                    np.copyto(g, 0, where=pruned)
        self.optimizer.step(grads)
        for i, w, pruned in self._slots:
            np.copyto(w, 0, where=pruned)
            for value in self.optimizer.state.get(i, {}).values():
                if isinstance(value, np.ndarray) and value.shape == pruned.shape:
                    np.copyto(value, 0, where=pruned)

    def __getattr__(self, name: str) -> Any:
        if name == "optimizer":  # not set yet (copy/pickle): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"masked({self.optimizer!r}, {self.masks!r})"


def masked(optimizer: Any, masks: PruningMasks) -> MaskedOptimizer:
    """Wrap ``optimizer`` so that the entries pruned in ``masks`` stay exactly zero
    (see :class:`MaskedOptimizer`).

    Example:
        >>> masks = magnitude_prune(model, 0.7)
        >>> opt = masked(optim.AdamW(model.parameters(), lr=1e-3), masks)
        >>> opt.step(model.gradients())   # pruned weights remain 0.0
    """
    return MaskedOptimizer(optimizer, masks)


# --------------------------------------------------------------------------- collection
def _is_module(obj: Any) -> bool:
    return isinstance(obj, Module)


def _linear_layers(model: Any) -> list[tuple[str, Any]]:
    """(prefix, Linear) for every Linear in the model, in order."""
    return [(prefix, mod) for prefix, mod in model._walk() if isinstance(mod, Linear)]


def _prunable_layers(model: Any) -> list[tuple[str, Any]]:
    """(prefix, layer) for every Linear and Conv2d in the model, in order."""
    return [(prefix, mod) for prefix, mod in model._walk() if isinstance(mod, (Linear, Conv2d))]


def _check_weight(a: Any, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (pruned in place), got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if not (a.flags.writeable and a.flags.c_contiguous):
        raise ValueError(f"{name} must be a writable, C-contiguous array (pruned in place)")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or infinite entries; magnitudes cannot rank them")
    return a


def _collect(obj: Any) -> tuple[list[str], list[np.ndarray], list[np.ndarray | None]]:
    if isinstance(obj, np.ndarray):
        return ["arrays[0]"], [_check_weight(obj, "model_or_arrays")], [None]
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise ValueError("model_or_arrays is an empty list: nothing to prune")
        names = [f"arrays[{i}]" for i in range(len(obj))]
        weights = [_check_weight(a, n) for a, n in zip(obj, names)]
        if len({id(w) for w in weights}) != len(weights):
            raise ValueError("model_or_arrays lists the same array twice")
        return names, weights, [None] * len(weights)
    if _is_module(obj):
        layers = _prunable_layers(obj)
        if not layers:
            raise ValueError(
                f"model_or_arrays ({type(obj).__name__}) has no Linear or Conv2d layer"
            )
        names = [prefix + "weight" for prefix, _ in layers]
        weights = [_check_weight(lin.weight, n) for (_, lin), n in zip(layers, names)]
        return names, weights, [lin.grad_weight for _, lin in layers]
    raise TypeError(
        "model_or_arrays must be a pyfastopt.nn Module, an array or a list of arrays, got "
        f"{type(obj).__name__}"
    )


def _smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest scores, ties to the lower index (stable)."""
    return np.argsort(scores, kind="stable")[:k]


# --------------------------------------------------------------------------- pruning
def magnitude_prune(
    model_or_arrays: Any,
    amount: float,
    scope: str = "layer",
    structured: str | None = None,
) -> Any:
    """Prune the smallest-magnitude weights (see the module docstring for the rules).

    Args:
        model_or_arrays: a ``pyfastopt.nn`` model (its Linear weight matrices are
            pruned), or a float array / list of float arrays (writable, C-contiguous).
        amount (float): fraction in [0, 1] to prune (``round(amount * n)`` of the n
            candidates).
        scope: ``"layer"`` (each weight matrix loses ``amount`` of its own entries/rows)
            or ``"global"`` (one ranking over every weight matrix together).
        structured: ``None`` (individual entries, by ``|w|``), ``"rows"`` (whole output
            rows -- neurons -- by their L2 norm) or ``"filters"`` (whole Conv2d filters by
            their L1 norm: :func:`prune_filters` with ``norm=1``, a Sequential only).

    Returns:
        * ``structured=None``, or ``"rows"`` with arrays: :class:`PruningMasks`; the
          weights are zeroed **in place**.
        * ``structured="rows"`` with a Sequential: the same Sequential, made smaller
          **in place**: each affected Linear and BatchNorm1d is replaced (in
          ``model.layers``) by a smaller one, so optimizers built on the old parameters
          must be rebuilt. Every Linear that feeds another Linear (through only ReLU,
          Dropout, BatchNorm1d or Flatten layers) is a candidate; the last Linear is not
          (its rows are the model's outputs), and every Linear keeps at least one row.
          The model then computes exactly what it computed with the pruned neurons'
          outgoing weights set to zero, in fewer operations. Copy the model first
          (``copy.deepcopy``) to keep the original.

    Raises:
        ValueError: amount outside [0, 1], unknown scope/structured, no weights,
            non-finite weights, rows on arrays that are not 2-D, or a Sequential whose
            layers between two Linears are not feature-wise.
        TypeError: wrong argument types or non-float weights.

    Example:
        >>> w = np.array([[0.5, -0.1], [0.2, -0.9]], np.float32)
        >>> masks = magnitude_prune(w, 0.5)
        >>> w
        array([[ 0.5,  0. ],
               [ 0. , -0.9]], dtype=float32)
    """
    amount = probability("amount", amount, one=True)
    scope = choice("scope", scope, ("layer", "global"))
    structured = choice("structured", structured, (None, "rows", "filters"))
    if structured == "filters":
        return prune_filters(model_or_arrays, amount, norm=1, scope=scope)
    if structured == "rows" and _is_module(model_or_arrays):
        return _shrink_rows(model_or_arrays, amount, scope)
    names, weights, grads = _collect(model_or_arrays)
    if structured is None:
        masks = _unstructured_masks(weights, amount, scope)
        if _is_module(model_or_arrays):  # the layers keep their masks (PyTorch's way)
            for (_, layer), keep in zip(_prunable_layers(model_or_arrays), masks):
                old = layer.__dict__.get("_pruned", {}).get("weight")
                if old is not None:  # pruning again never revives an entry
                    keep &= ~old
                layer._set_mask("weight", keep)
    else:
        for n, w in zip(names, weights):
            if w.ndim != 2:
                raise ValueError(f"structured='rows' needs 2-D weights; {n} has shape {w.shape}")
        keep_rows = _row_keep(weights, amount, scope, min_keep=0)
        masks = [np.broadcast_to(k[:, None], w.shape).copy() for k, w in zip(keep_rows, weights)]
    result = PruningMasks(weights, masks, names, grads)
    result.apply_()
    return result


def _unstructured_masks(weights: list[np.ndarray], amount: float, scope: str) -> list[np.ndarray]:
    if scope == "layer":
        masks = []
        for w in weights:
            keep = np.ones(w.size, dtype=bool)
            keep[_smallest(np.abs(w).ravel(), round(amount * w.size))] = False
            masks.append(keep.reshape(w.shape))
        return masks
    scores = np.concatenate([np.abs(w).ravel().astype(np.float64) for w in weights])
    keep = np.ones(scores.size, dtype=bool)
    keep[_smallest(scores, round(amount * scores.size))] = False
    bounds = np.cumsum([0] + [w.size for w in weights])
    return [keep[a:b].reshape(w.shape) for a, b, w in zip(bounds[:-1], bounds[1:], weights)]


def _row_keep(
    weights: list[np.ndarray], amount: float, scope: str, min_keep: int, norm: int = 2
) -> list[np.ndarray]:
    """Per matrix, a bool vector of kept rows; each matrix keeps >= min_keep rows."""
    if norm == 1:
        norms = [np.abs(w).astype(np.float64).sum(axis=1) for w in weights]
    else:
        norms = [np.sqrt(np.square(w, dtype=np.float64).sum(axis=1)) for w in weights]
    if scope == "layer":
        out = []
        for nrm in norms:
            k = min(round(amount * nrm.size), nrm.size - min_keep)
            keep = np.ones(nrm.size, dtype=bool)
            keep[_smallest(nrm, k)] = False
            out.append(keep)
        return out
    scores = np.concatenate(norms)
    owner = np.concatenate([np.full(n.size, i) for i, n in enumerate(norms)])
    keep = np.ones(scores.size, dtype=bool)
    left = [n.size for n in norms]
    k = round(amount * scores.size)
    for idx in np.argsort(scores, kind="stable"):
        if k == 0:
            break
        if left[owner[idx]] > min_keep:
            keep[idx] = False
            left[owner[idx]] -= 1
            k -= 1
    bounds = np.cumsum([0] + [n.size for n in norms])
    return [keep[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _shrink_rows(model: Any, amount: float, scope: str) -> Any:
    if not isinstance(model, Sequential):
        raise ValueError(
            f"structured='rows' on a model needs a Sequential, got {type(model).__name__} "
            "(pass its weight arrays to get row masks instead)"
        )
    layers: list[Any] = list(model.layers)
    lin_idx = [i for i, layer in enumerate(layers) if isinstance(layer, Linear)]
    if len(lin_idx) < 2:
        raise ValueError(
            "structured='rows' needs a Sequential with at least two Linear layers "
            "(the last Linear's rows are the outputs and are never pruned)"
        )
    passthrough = (ReLU, Dropout, BatchNorm1d, Flatten)
    for a, b in zip(lin_idx, lin_idx[1:]):
        for j in range(a + 1, b):
            if not isinstance(layers[j], passthrough):
                raise ValueError(
                    f"structured='rows': layer {j} ({type(layers[j]).__name__}) between Linear "
                    f"layers {a} and {b} is not feature-wise (ReLU, Dropout, BatchNorm1d, "
                    "Flatten), so removing neurons across it is not defined"
                )
    for i in lin_idx:
        _check_weight(layers[i].weight, f"layer {i} weight")
    candidates = lin_idx[:-1]
    keeps = _row_keep([layers[i].weight for i in candidates], amount, scope, min_keep=1)
    rows = {i: np.flatnonzero(k) for i, k in zip(candidates, keeps)}

    cols: np.ndarray | None = None  # kept input features of the next Linear
    for i, layer in enumerate(layers):
        fresh = layer
        if isinstance(layer, Linear) and (i in rows or cols is not None):
            fresh = _sub_linear(layer, rows.get(i, np.arange(layer.out_features)), cols)
        elif isinstance(layer, BatchNorm1d) and cols is not None:
            fresh = _sub_batchnorm(layer, cols)
        if isinstance(layer, Linear):
            cols = rows.get(i)
        if fresh is not layer:  # keep each layer's mode and freezing
            fresh.training, fresh.frozen = layer.training, layer.frozen
            model.layers[i] = fresh
    return model


def _sub_linear(layer: Any, rows: np.ndarray, cols: np.ndarray | None) -> Any:
    w = layer.weight[rows] if cols is None else layer.weight[np.ix_(rows, cols)]
    new = Linear(
        w.shape[1],
        w.shape[0],
        bias=layer.bias is not None,
        activation=layer.activation,
        dtype=layer.weight.dtype,
        seed=0,
    )
    new.weight[...] = w
    if layer.bias is not None:
        assert new.bias is not None
        new.bias[...] = layer.bias[rows]
    pruned = layer.__dict__.get("_pruned", {}).get("weight")
    if pruned is not None:  # a mask kept by the layer is cut the same way
        new._set_mask("weight", ~(pruned[rows] if cols is None else pruned[np.ix_(rows, cols)]))
    return new


def _sub_batchnorm(layer: Any, cols: np.ndarray) -> Any:
    extra = {"layout": layer.layout} if isinstance(layer, BatchNorm2d) else {}
    new = type(layer)(
        cols.size,
        eps=layer.eps,
        momentum=layer.momentum,
        affine=layer.weight is not None,
        track_running_stats=layer.running_mean is not None,
        dtype=layer.dtype,
        **extra,
    )
    for name in ("weight", "bias", "running_mean", "running_var"):
        src = getattr(layer, name)
        if src is not None:
            getattr(new, name)[...] = src[cols]
    if layer.num_batches_tracked is not None:
        assert new.num_batches_tracked is not None
        new.num_batches_tracked[...] = layer.num_batches_tracked
    return new


def sparsity(model_or_arrays: Any) -> float:
    """Fraction of exactly-zero entries in the weight matrices (all together): the
    Linear weights of a ``pyfastopt.nn`` model, or the given array(s)."""
    if isinstance(model_or_arrays, np.ndarray):
        weights = [model_or_arrays]
    elif isinstance(model_or_arrays, (list, tuple)):
        weights = [np.asarray(a) for a in model_or_arrays]
    elif _is_module(model_or_arrays):
        weights = [lin.weight for _, lin in _prunable_layers(model_or_arrays)]
    else:
        raise TypeError(
            "model_or_arrays must be a pyfastopt.nn Module, an array or a list of arrays, "
            f"got {type(model_or_arrays).__name__}"
        )
    total = sum(w.size for w in weights)
    if total == 0:
        raise ValueError("model_or_arrays has no weight entries")
    return sum(int(np.count_nonzero(w == 0)) for w in weights) / total


def is_pruned(module: Any) -> bool:
    """True if ``module`` or any layer inside it carries a pruning mask (as
    ``torch.nn.utils.prune.is_pruned``)."""
    if not _is_module(module):
        raise TypeError(f"module must be a pyfastopt.nn Module, got {type(module).__name__}")
    return any(mod.__dict__.get("_pruned") for _, mod in module._walk())


def remove(module: Any, name: str = "weight") -> Any:
    """Make the pruning of ``module``'s parameter ``name`` permanent (as
    ``torch.nn.utils.prune.remove``): the pruned entries stay zero in the array, but the
    mask (``<name>_mask``) is dropped from the layer and from ``state_dict``, and
    optimizers no longer hold those entries at zero. On a container, every pruned layer
    inside it is made permanent. Returns ``module``.

    Raises:
        ValueError: nothing named ``name`` is pruned in ``module``.
    """
    if not _is_module(module):
        raise TypeError(f"module must be a pyfastopt.nn Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    done = False
    for _, mod in module._walk():
        if name in mod.__dict__.get("_pruned", {}):
            mod._remove_mask(name)
            done = True
    if not done:
        raise ValueError(
            f"parameter {name!r} of {type(module).__name__} has to be pruned before pruning "
            "can be removed"
        )
    return module


# --------------------------------------------------------------------------- filters
#: layers that act on each channel separately: a filter's channel passes through them
_CHANNELWISE = (
    "ReLU",
    "GELU",
    "Sigmoid",
    "Tanh",
    "Identity",
    "Dropout",
    "BatchNorm2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
)
#: feature-wise layers allowed between Flatten and the Linear that consumes it
_FEATUREWISE = ("ReLU", "GELU", "Sigmoid", "Tanh", "Identity", "Dropout", "BatchNorm1d")


def prune_filters(model: Any, amount: float, norm: int = 1, scope: str = "layer") -> Any:
    """Remove whole Conv2d filters (output channels) of smallest L1 or L2 norm, making
    the model smaller in place, as ``magnitude_prune(..., structured="rows")`` does for
    Linear rows.

    In each :class:`~pyfastopt.nn.Sequential` (and, recursively, inside each
    :class:`~pyfastopt.nn.Residual` block), a Conv2d is a candidate when its output reaches
    another Conv2d, or a Flatten followed by a Linear, through channel-wise layers only
    (ReLU, GELU, Sigmoid, Tanh, Identity, Dropout, BatchNorm2d, MaxPool2d, AvgPool2d,
    AdaptiveAvgPool2d; after Flatten: those feature-wise ones and BatchNorm1d). Pruning
    filter ``c`` removes ``weight[c]`` and ``bias[c]``, feature ``c`` of every BatchNorm2d
    on the way, and input channel ``c`` of the next Conv2d -- or, after Flatten, the
    matching block of ``H*W`` input columns of the Linear (Flatten's (c, h, w) order, both
    layouts). A Conv2d whose output reaches a residual add (the last conv of a Residual
    body, or one feeding a Residual block) or the model's output is never a candidate, so
    the shapes the add needs are kept. Every candidate keeps at least one filter.

    ``k = round(amount * n)`` filters per candidate (``scope="layer"``) or over all of them
    (``scope="global"``, norms compared as they are), ties to the earlier filter. The
    model then computes what the original computes with those channels silenced (the
    filters' weights and bias, and the weight and bias of the BatchNorm2d features after
    them, set to zero) -- up to rounding, in fewer operations;
    changed layers are replaced in ``.layers`` (rebuild optimizers). Masks kept by the
    pruned layers (:func:`magnitude_prune`) are cut to the kept channels.

    Args:
        model: a ``pyfastopt.nn.Sequential``.
        amount (float): fraction in [0, 1] of the candidates' filters to remove.
        norm (int): 1 (L1, as ``torch.nn.utils.prune.ln_structured(n=1)``) or 2.
        scope: ``"layer"`` or ``"global"``.

    Returns:
        The same model, smaller.

    Raises:
        ValueError: amount outside [0, 1], bad norm/scope, a model with no candidate, a
            candidate or the conv it feeds with ``groups != 1`` (grouped and depthwise
            convolutions tie channels together; the error names the layer), a Linear whose
            in_features is not a multiple of the channels.
        TypeError: ``model`` is not a Sequential.
    """
    amount = probability("amount", amount, one=True)
    scope = choice("scope", scope, ("layer", "global"))
    if isinstance(norm, bool) or norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a pyfastopt.nn.Sequential, got {type(model).__name__}")
    plans: list[tuple[Any, int, list[int], int, str]] = []
    _plan_filters(model, "", plans)
    if not plans:
        raise ValueError(
            "prune_filters: the model has no Conv2d whose output feeds another Conv2d or a "
            "Flatten + Linear (convs that feed a residual add or the output are not pruned)"
        )
    convs = [seq.layers[i] for seq, i, _, _, _ in plans]
    for (_, _, _, _, where), conv in zip(plans, convs):
        _check_weight(conv.weight, f"{where} weight")
    flat = [c.weight.reshape(c.weight.shape[0], -1) for c in convs]
    keeps = _row_keep(flat, amount, scope, min_keep=1, norm=norm)
    for (seq, i, between, j, where), keep in zip(plans, keeps):
        _cut_filters(seq, i, between, j, np.flatnonzero(keep), where)
    return model


def _plan_filters(seq: Any, prefix: str, plans: list) -> None:
    layers = seq.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, Sequential):  # a Residual (or nested Sequential) body
            _plan_filters(layer, f"{prefix}{i}.", plans)
            continue
        if not isinstance(layer, Conv2d):
            continue
        where = f"layer {prefix}{i} (Conv2d)"
        j = i + 1
        while j < len(layers) and type(layers[j]).__name__ in _CHANNELWISE:
            j += 1
        between = list(range(i + 1, j))
        if j == len(layers):
            continue  # feeds the output (or, in a Residual body, the add): not a candidate
        nxt = layers[j]
        if isinstance(nxt, Conv2d):
            for lay, w in ((layer, where), (nxt, f"layer {prefix}{j} (Conv2d)")):
                if lay.groups != 1:
                    raise ValueError(
                        f"prune_filters: {w} has groups={lay.groups}; filters of grouped or "
                        "depthwise convolutions cannot be removed one by one (use "
                        "magnitude_prune for unstructured pruning)"
                    )
            plans.append((seq, i, between, j, where))
        elif isinstance(nxt, Flatten):
            k = j + 1
            while k < len(layers) and type(layers[k]).__name__ in _FEATUREWISE:
                k += 1
            if k < len(layers) and isinstance(layers[k], Linear):
                if layer.groups != 1:
                    raise ValueError(
                        f"prune_filters: {where} has groups={layer.groups}; filters of grouped "
                        "or depthwise convolutions cannot be removed one by one"
                    )
                if layers[k].in_features % layer.out_channels:
                    raise ValueError(
                        f"prune_filters: layer {prefix}{k} (Linear) has in_features "
                        f"{layers[k].in_features}, not a multiple of the {layer.out_channels} "
                        f"channels of {where}"
                    )
                plans.append((seq, i, [*between, *range(j + 1, k)], k, where))


def _cut_filters(
    seq: Any, i: int, between: list[int], j: int, kept: np.ndarray, where: str
) -> None:
    layers = seq.layers
    conv = layers[i]
    c = conv.out_channels
    _replace(seq, i, _sub_conv(conv, rows=kept, cols=None))
    block = None  # after Flatten: each channel is a block of H*W features
    for b in between:
        layer = layers[b]
        if isinstance(layer, Flatten):
            block = layers[j].in_features // c
        elif isinstance(layer, (BatchNorm1d, BatchNorm2d)):
            cols = kept if block is None else _blocks(kept, block)
            _replace(seq, b, _sub_batchnorm(layer, cols))
    consumer = layers[j]
    if isinstance(consumer, Conv2d):
        _replace(seq, j, _sub_conv(consumer, rows=None, cols=kept))
    else:
        cols = _blocks(kept, consumer.in_features // c)
        _replace(seq, j, _sub_linear(consumer, np.arange(consumer.out_features), cols))


def _blocks(kept: np.ndarray, size: int) -> np.ndarray:
    return (kept[:, None] * size + np.arange(size)[None, :]).ravel()


def _replace(seq: Any, index: int, fresh: Any) -> None:
    old = seq.layers[index]
    fresh.training, fresh.frozen = old.training, old.frozen
    seq.layers[index] = fresh


def _sub_conv(layer: Any, rows: np.ndarray | None, cols: np.ndarray | None) -> Any:
    w = layer.weight
    keep = layer.__dict__.get("_pruned", {}).get("weight")
    keep = None if keep is None else ~keep
    if rows is not None:
        w = w[rows]
        keep = None if keep is None else keep[rows]
    if cols is not None:
        w = w[:, cols]
        keep = None if keep is None else keep[:, cols]
    new = Conv2d(
        w.shape[1],
        w.shape[0],
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=1,
        bias=layer.bias is not None,
        activation=layer.activation,
        layout=layer.layout,
        dtype=layer.dtype,
        seed=0,
    )
    new.weight[...] = w
    if layer.bias is not None:
        assert new.bias is not None
        new.bias[...] = layer.bias if rows is None else layer.bias[rows]
    if keep is not None:
        new._set_mask("weight", keep)
    return new
