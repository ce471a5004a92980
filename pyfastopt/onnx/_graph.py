"""The model an ONNX graph becomes when it is not a chain: :class:`Graph`, plus the
small :class:`Reshape` layer.

A :class:`Graph` runs a list of steps in topological order. A step is a
:mod:`pyfastopt.nn` layer (one tensor in, one out) or a small NumPy function (``Add`` of
two tensors for a residual connection, ``Reshape`` to a computed shape, and the shape
arithmetic ``Shape``/``Gather``/``Unsqueeze``/``Concat`` that exporters emit to compute
it). Each step keeps its ONNX operator name and attributes, so :func:`pyfastopt.onnx.save`
writes it back unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..nn import Module

if TYPE_CHECKING:
    from .._typing import ArrayLike

__all__ = ["FUNCTIONS", "Clip", "Graph", "Reshape", "Step"]


# --------------------------------------------------------------------------- Reshape
def _onnx_shape(x_shape: tuple[int, ...], shape: Any, allowzero: int = 0) -> tuple[int, ...]:
    """ONNX Reshape's target shape: 0 copies the input's dimension (``allowzero=0``),
    one -1 is inferred. ValueError when it does not fit ``x_shape``."""
    target = [int(d) for d in np.asarray(shape).reshape(-1)]
    if target.count(-1) > 1 or any(d < -1 for d in target):
        raise ValueError(f"Reshape: bad target shape {target}")
    if not allowzero:
        for i, d in enumerate(target):
            if d == 0:
                if i >= len(x_shape):
                    raise ValueError(f"Reshape: 0 at position {i} of {target}, x has {x_shape}")
                target[i] = x_shape[i]
    size = math.prod(x_shape)
    if -1 in target:
        rest = math.prod(d for d in target if d != -1)
        if rest == 0 or size % rest:
            raise ValueError(f"Reshape: x of shape {x_shape} cannot become {target}")
        target[target.index(-1)] = size // rest
    if math.prod(target) != size:
        raise ValueError(f"Reshape: x of shape {x_shape} cannot become {target}")
    return tuple(target)


class Reshape(Module):
    """ONNX ``Reshape`` with a constant target ``shape`` (``0`` keeps the input's
    dimension, one ``-1`` is inferred), e.g. ``Reshape((0, -1))`` flattens to 2-D;
    backward reshapes ``dy`` back. The output is a view when ``x`` is contiguous."""

    def __init__(self, shape: Any) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in np.asarray(shape, dtype=np.int64).reshape(-1))
        _onnx_shape((1,) * len(self.shape), [d if d != 0 else 1 for d in self.shape])
        self._shape: tuple | None = None

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
        self._shape = x.shape
        return x.reshape(_onnx_shape(x.shape, self.shape))

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        if self._shape is None:
            raise RuntimeError("Reshape.backward called before forward")
        if not need_dx:
            return None
        dy = dy if isinstance(dy, np.ndarray) else np.asarray(dy)
        if dy.size != math.prod(self._shape):
            raise ValueError(f"Reshape.backward: dy has shape {dy.shape}, x had {self._shape}")
        return dy.reshape(self._shape)


# --------------------------------------------------------------------------- Clip
class Clip(Module):
    """ONNX ``Clip``: ``y = min(max(x, lo), hi)`` with constant bounds (``Clip(0, 6)`` is
    ReLU6). NaN propagates. Backward passes ``dy`` where ``lo < x < hi``, else 0."""

    def __init__(self, lo: float, hi: float) -> None:
        super().__init__()
        self.lo, self.hi = float(lo), float(hi)
        if not self.lo <= self.hi:
            raise ValueError(f"Clip: min={self.lo} must be <= max={self.hi}")
        self._x: np.ndarray | None = None

    def extra_repr(self) -> str:
        return f"min={self.lo:g}, max={self.hi:g}"

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
        self._x = x
        lo, hi = x.dtype.type(self.lo), x.dtype.type(self.hi)
        return np.minimum(np.maximum(x, lo), hi)

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        x = self._x
        if x is None:
            raise RuntimeError("Clip.backward called before forward")
        if not need_dx:
            return None
        dy = dy if isinstance(dy, np.ndarray) else np.asarray(dy)
        if dy.shape != x.shape:
            raise ValueError(f"Clip.backward: dy has shape {dy.shape}, x had {x.shape}")
        return np.where((x > self.lo) & (x < self.hi), dy, np.zeros((), dy.dtype))


# --------------------------------------------------------------------------- functions
def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.add(a, b)


def _reshape(x: np.ndarray, shape: np.ndarray, allowzero: int = 0) -> np.ndarray:
    return x.reshape(_onnx_shape(x.shape, shape, allowzero))


def _shape(x: np.ndarray, start: int = 0, end: int | None = None) -> np.ndarray:
    return np.array(x.shape[start:end], np.int64)


def _gather(data: np.ndarray, indices: np.ndarray, axis: int = 0) -> np.ndarray:
    idx = np.asarray(indices, np.int64)
    n = data.shape[axis]
    if np.any((idx < -n) | (idx >= n)):
        raise ValueError(f"Gather: indices {idx.tolist()} out of range for {n}")
    return np.take(data, idx, axis=axis)


def _unsqueeze(x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    out = np.asarray(x)
    rank = out.ndim + len(np.asarray(axes).reshape(-1))
    for a in sorted(int(a) % rank for a in np.asarray(axes).reshape(-1)):
        out = np.expand_dims(out, a)
    return out


def _concat(*xs: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.concatenate([np.asarray(x) for x in xs], axis=axis)


#: ONNX operator -> NumPy function of a :class:`Graph` step (inputs, then attributes)
FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "Add": _add,
    "Reshape": _reshape,
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
}


@dataclass
class Step:
    """One step of a :class:`Graph`: ``outputs[0] = layer(inputs[0])`` when ``layer`` is
    set, else ``FUNCTIONS[op](*inputs, **attrs)``."""

    op: str
    inputs: list[str]
    output: str
    layer: Module | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def _reduce_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to ``shape``."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


class Graph(Module):
    """A model that is not a chain: steps run in topological order (see the module
    docstring). ``forward(x)`` takes the graph's one input; ``backward(dy)`` runs the
    layers' backward in reverse, adding the gradients of a tensor used twice (a
    residual connection). The layers are the children ``"0"``, ``"1"``, ... in order,
    so :meth:`state_dict` keys look like a Sequential's.

    Attributes: ``steps`` (list of :class:`Step`), ``input_name``, ``output_name``,
    ``constants`` (``{name: ndarray}``: the graph's constant tensors that steps read),
    ``input_shape`` (one sample's shape, without the batch dimension, when known).
    """

    def __init__(
        self,
        steps: list[Step],
        input_name: str,
        output_name: str,
        constants: dict[str, np.ndarray] | None = None,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.steps = list(steps)
        self.input_name = input_name
        self.output_name = output_name
        self.constants = dict(constants or {})
        known = {input_name, *self.constants}
        for i, step in enumerate(self.steps):
            if (step.layer is None) == (step.op not in FUNCTIONS):
                raise ValueError(f"Graph: step {i} ({step.op}) needs a layer or a function")
            for name in step.inputs:
                if name not in known:
                    raise ValueError(f"Graph: step {i} ({step.op}) reads {name!r} before it is set")
            known.add(step.output)
        if output_name not in known:
            raise ValueError(f"Graph: the output {output_name!r} is never computed")
        self._shapes: dict[str, tuple[int, ...]] | None = None

    def _children(self) -> list[tuple[str, Module]]:
        layers = [s.layer for s in self.steps if s.layer is not None]
        return [(str(i), layer) for i, layer in enumerate(layers)]

    def forward(self, x: ArrayLike) -> np.ndarray:
        env: dict[str, Any] = dict(self.constants)
        env[self.input_name] = x if isinstance(x, np.ndarray) else np.asarray(x)
        for step in self.steps:
            if step.layer is not None:
                env[step.output] = step.layer.forward(env[step.inputs[0]])
            else:
                try:
                    env[step.output] = FUNCTIONS[step.op](
                        *(env[n] for n in step.inputs), **step.attrs
                    )
                except (IndexError, TypeError, ValueError) as exc:  # AxisError is both
                    raise ValueError(
                        f"Graph: step {step.op} -> {step.output!r} failed on inputs of shapes "
                        f"{[np.shape(env[n]) for n in step.inputs]}: {exc}"
                    ) from None
        if self.training:
            self._shapes = {k: np.shape(v) for k, v in env.items()}
        return env[self.output_name]

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        shapes = self._shapes
        if shapes is None:
            raise RuntimeError("Graph.backward called before a training-mode forward")
        grads: dict[str, np.ndarray] = {self.output_name: np.asarray(dy)}

        def add(name: str, g: np.ndarray) -> None:
            if name in self.constants:
                return
            old = grads.get(name)
            grads[name] = g if old is None else old + g

        for step in reversed(self.steps):
            g = grads.pop(step.output, None)
            if g is None:
                continue
            if step.layer is not None:
                first = step.inputs[0] == self.input_name
                dx = step.layer.backward(g, need_dx=need_dx or not first)
                if dx is not None:
                    add(step.inputs[0], dx)
            elif step.op == "Add":
                for name in step.inputs:
                    add(name, _reduce_to(g, shapes[name]))
            elif step.op == "Reshape":
                add(step.inputs[0], g.reshape(shapes[step.inputs[0]]))
            # shape arithmetic (integers) has no gradient
        return grads.get(self.input_name) if need_dx else None

    def __repr__(self) -> str:
        lines = []
        for step in self.steps:
            what = repr(step.layer) if step.layer is not None else step.op
            lines.append(f"  {step.output} = {what}({', '.join(step.inputs)})")
        return "Graph(\n" + "\n".join(lines) + "\n)"
