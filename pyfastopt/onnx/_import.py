"""ONNX graph -> pyfastopt model: the operator table and the pattern fusions.

Adding an operator: write ``handler(ctx, node) -> list[Step]`` and register it with
``@register("OpType")``. ``ctx`` gives the constants (:meth:`_Context.const`), the
attributes checked against what the handler supports (:meth:`_Context.attrs`), the
single consumer of a tensor (:meth:`_Context.only_consumer`, for fusions) and
:meth:`_Context.absorb` to mark a consumer fused into the current step. A handler
returns the steps it produces: a :mod:`pyfastopt.nn` layer ``Step(op, [x], y, layer)``
or a NumPy function of :data:`pyfastopt.onnx._graph.FUNCTIONS`. Conv/pool handlers go in
the same table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import nn
from ._graph import FUNCTIONS, Clip, Graph, Reshape, Step

Handler = Callable[["_Context", Any], "list[Step]"]
HANDLERS: dict[str, Handler] = {}

#: operators read as constants (folded into the steps that use them)
_CONSTANT_OPS = ("Constant",)


def register(*ops: str) -> Callable[[Handler], Handler]:
    """Decorator: ``@register("Conv")`` adds a handler to the operator table."""

    def deco(fn: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = fn
        return fn

    return deco


def supported_ops() -> list[str]:
    """The ONNX operators :func:`pyfastopt.onnx.load` reads (plus the fused patterns)."""
    ops = sorted({*HANDLERS, *_CONSTANT_OPS} - {"Mul", "Div", "Pow", "Sub"})
    return [*ops, "Mul/Div/Pow/Sub/Add/Erf/Tanh forming GELU's decomposition"]


class _Context:
    def __init__(
        self, model: Any, onnx: Any, dtype: np.dtype, arrays: dict[str, np.ndarray] | None = None
    ) -> None:
        from onnx import numpy_helper

        graph = model.graph
        self.model = model
        self._ranks: dict[str, int] | None = None
        self.onnx = onnx
        self.dtype = dtype
        self.consts: dict[str, np.ndarray] = {}
        arrays = arrays or {}
        for init in graph.initializer:
            # arrays: the initializers read as views of the file (pyfastopt.onnx._fastread)
            pre = arrays.get(init.name)
            self.consts[init.name] = pre if pre is not None else self._tensor(init, numpy_helper)
        self.nodes = list(graph.node)
        for node in self.nodes:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = self._constant(node, numpy_helper)
        self.absorbed: set[int] = set()
        for node in self.nodes:  # exporters alias shared initializers with Identity nodes
            if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
                self.absorbed.add(id(node))
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}

    # -- reading ------------------------------------------------------------------------
    def _tensor(self, t: Any, numpy_helper: Any) -> np.ndarray:
        if t.data_location == self.onnx.TensorProto.EXTERNAL or t.external_data:
            raise ValueError(
                f"tensor {t.name!r} keeps its data in an external file; pyfastopt.onnx.load "
                "reads self-contained models only (save with all tensors inside the file)"
            )
        try:
            return np.asarray(numpy_helper.to_array(t))
        except Exception as exc:
            raise ValueError(f"tensor {t.name!r} cannot be read ({exc})") from None

    def _constant(self, node: Any, numpy_helper: Any) -> np.ndarray:
        attrs = {a.name: a for a in node.attribute}
        if set(attrs) == {"value"}:
            return self._tensor(attrs["value"].t, numpy_helper)
        h = self.onnx.helper
        kinds: dict[str, Any] = {
            "value_float": np.float32,
            "value_int": np.int64,
            "value_floats": np.float32,
            "value_ints": np.int64,
        }
        for key, kind in kinds.items():
            if set(attrs) == {key}:
                return np.asarray(h.get_attribute_value(attrs[key]), kind)
        raise self.error(
            node, f"attributes {sorted(attrs)}; supported: value, value_float(s), value_int(s)"
        )

    def rank(self, name: str) -> int | None:
        """The rank of tensor ``name`` as ONNX's shape inference finds it, or None."""
        if self._ranks is None:
            self._ranks = {}
            try:
                g = self.onnx.shape_inference.infer_shapes(self.model).graph
            except Exception:  # inference is a help here, not a requirement
                g = self.model.graph
            for vi in [*g.input, *g.value_info, *g.output]:
                t = vi.type.tensor_type
                if t.HasField("shape"):
                    self._ranks[vi.name] = len(t.shape.dim)
        return self._ranks.get(name)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def error(self, node: Any, why: str) -> ValueError:
        return ValueError(f"ONNX node {node.name or node.output[0]!r} ({node.op_type}): {why}")

    def attrs(self, node: Any, **defaults: Any) -> dict[str, Any]:
        """The node's attributes; any attribute not in ``defaults`` is a ValueError."""
        out = dict(defaults)
        for a in node.attribute:
            if a.name not in defaults:
                supported = ", ".join(sorted(defaults)) or "none"
                raise self.error(
                    node,
                    f"attribute {a.name!r} is not supported (supported attributes: {supported})",
                )
            value = self.onnx.helper.get_attribute_value(a)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            want = type(defaults[a.name]) if defaults[a.name] is not None else int
            if want is float and type(value) is int:
                value = float(value)
            if type(value) is not want:
                raise self.error(
                    node,
                    f"attribute {a.name!r} is a {type(value).__name__}, expected {want.__name__}",
                )
            out[a.name] = value
        return out

    def weight(self, node: Any, index: int, what: str) -> np.ndarray:
        if index >= len(node.input) or not node.input[index]:
            raise self.error(node, f"missing {what}")
        value = self.const(node.input[index])
        if value is None:
            raise self.error(
                node, f"{what} ({node.input[index]!r}) must be a constant (an initializer)"
            )
        if value.dtype.kind != "f":
            raise self.error(node, f"{what} has dtype {value.dtype}, expected floats")
        return value.astype(self.dtype, copy=False)

    def only_consumer(self, name: str, op: str | tuple[str, ...] | None = None) -> Any:
        """The one node reading ``name`` (of type ``op``), or None (also when ``name`` is a
        graph output, which must stay visible)."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.graph_outputs:
            return None
        node = users[0]
        ops = (op,) if isinstance(op, str) else op
        return node if ops is None or node.op_type in ops else None

    def absorb(self, *nodes: Any) -> None:
        for n in nodes:
            self.absorbed.add(id(n))

    def scalar(self, name: str) -> float | None:
        v = self.const(name)
        if v is None or v.size != 1 or v.dtype.kind not in "fiu":
            return None
        return float(v.reshape(-1)[0])


# --------------------------------------------------------------------------- fusions
# GELU as exporters decompose it before opset 20 (erf form: Div, Erf, Add, Mul, Mul; tanh
# form: Mul/Pow, Mul, Add, Mul, Tanh, Add, Mul, Mul): recognized by evaluating the
# elementwise nodes that follow a tensor on sample points, whatever their order.
_PROBE = np.linspace(-6.0, 6.0, 240)  # no exact 0 (x / x-like divisions stay defined)


def _erf(v: Any) -> np.ndarray:
    return np.array([math.erf(t) for t in np.asarray(v, float).reshape(-1)]).reshape(np.shape(v))


_GELU_REFS = {
    "none": _PROBE * 0.5 * (1.0 + _erf(_PROBE / math.sqrt(2.0))),
    "tanh": 0.5
    * _PROBE
    * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (_PROBE + 0.044715 * _PROBE**3))),
}
_ELEMENTWISE: dict[str, Callable[..., Any]] = {
    "Mul": np.multiply,
    "Add": np.add,
    "Sub": np.subtract,
    "Div": np.divide,
    "Pow": np.power,
    "Tanh": np.tanh,
    "Erf": _erf,
}
_MAX_REGION = 24


def _gelu_region(ctx: _Context, x: str) -> tuple[list[Any], str, str] | None:
    """(nodes, output, approximate) of a decomposed GELU reading ``x``, or None."""
    vals: dict[str, np.ndarray] = {x: _PROBE}
    region: list[Any] = []
    queue = list(ctx.consumers.get(x, []))
    seen: set[int] = set()
    while queue and len(region) < _MAX_REGION:
        progress = False
        for node in list(queue):
            if id(node) in seen or id(node) in ctx.absorbed or node.op_type not in _ELEMENTWISE:
                queue.remove(node)
                continue
            if len(node.output) != 1 or any(
                i not in vals and ctx.scalar(i) is None for i in node.input
            ):
                continue  # an input still to compute (or not a scalar constant)
            args = [vals[i] if i in vals else ctx.scalar(i) for i in node.input]
            if len(args) != (1 if node.op_type in ("Tanh", "Erf") else 2):
                queue.remove(node)
                continue
            with np.errstate(all="ignore"):
                vals[node.output[0]] = np.asarray(_ELEMENTWISE[node.op_type](*args), float)
            region.append(node)
            seen.add(id(node))
            queue.remove(node)
            queue.extend(ctx.consumers.get(node.output[0], []))
            progress = True
        if not progress:
            break
    produced = {n.output[0]: n for n in region}
    for sink in region:
        v = vals[sink.output[0]]
        if np.shape(v) != _PROBE.shape:
            continue
        for approx, ref in _GELU_REFS.items():
            if not np.all(np.abs(v - ref) <= 1e-5 * (1.0 + np.abs(ref))):
                continue
            # the nodes computing sink; each may feed only the others (or sink itself)
            members, stack = {id(sink): sink}, [sink]
            while stack:
                for i in stack.pop().input:
                    n = produced.get(i)
                    if n is not None and id(n) not in members:
                        members[id(n)] = n
                        stack.append(n)
            inner = [n for n in region if id(n) in members]
            if all(
                n is sink
                or (
                    n.output[0] not in ctx.graph_outputs
                    and all(id(u) in members for u in ctx.consumers.get(n.output[0], []))
                )
                for n in inner
            ):
                return inner, sink.output[0], approx
    return None


def _activation(ctx: _Context, y: str, tanh: bool = False) -> tuple[str | None, str]:
    """A Relu or (exact) GELU that alone reads the linear output ``y``: fused into the
    Linear (its epilogue); with ``tanh`` (Linear only) also GELU's tanh form, as
    ``"gelu_tanh"``. Returns (activation, the output name)."""
    relu = ctx.only_consumer(y, "Relu")
    if relu is not None:
        ctx.absorb(relu)
        return "relu", relu.output[0]
    fused = {"none": "gelu", "tanh": "gelu_tanh"} if tanh else {"none": "gelu"}
    gelu = ctx.only_consumer(y, "Gelu")
    if gelu is not None and ctx.attrs(gelu, approximate="none")["approximate"] in fused:
        ctx.absorb(gelu)
        return fused[ctx.attrs(gelu, approximate="none")["approximate"]], gelu.output[0]
    found = _gelu_region(ctx, y)
    if found is not None and found[2] in fused:
        nodes, out, approx = found
        ctx.absorb(*nodes)
        return fused[approx], out
    return None, y


def _linear(
    ctx: _Context, node: Any, x: str, w: np.ndarray, b: np.ndarray | None, y: str
) -> list[Step]:
    act, y = _activation(ctx, y, tanh=True)
    try:
        layer = nn.Linear.from_weights(w, b, activation=act)
    except ValueError as exc:
        raise ctx.error(node, str(exc)) from None
    return [Step("Linear", [x], y, layer)]


def _bias_vector(ctx: _Context, node: Any, b: np.ndarray, n: int, what: str) -> np.ndarray:
    if b.size == 1:
        return np.full(n, b.reshape(-1)[0], ctx.dtype)
    if b.shape not in ((n,), (1, n)):
        raise ctx.error(
            node, f"{what} has shape {b.shape}; supported: ({n},), (1, {n}) or a scalar"
        )
    return b.reshape(n).astype(ctx.dtype)


# --------------------------------------------------------------------------- handlers
@register("Gemm")
def _gemm(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, alpha=1.0, beta=1.0, transA=0, transB=0)
    if a["transA"]:
        raise ctx.error(node, "transA=1 is not supported (the input must be (batch, features))")
    w = ctx.weight(node, 1, "B (the weight)")
    if w.ndim != 2:
        raise ctx.error(node, f"B has shape {w.shape}, expected 2-D")
    w = w if a["transB"] else np.ascontiguousarray(w.T)
    if a["alpha"] != 1.0:
        w = w * np.asarray(a["alpha"], ctx.dtype)
    b = None
    if len(node.input) > 2 and node.input[2]:
        b = _bias_vector(ctx, node, ctx.weight(node, 2, "C (the bias)"), w.shape[0], "C")
        if a["beta"] != 1.0:
            b = b * np.asarray(a["beta"], ctx.dtype)
    return _linear(ctx, node, node.input[0], w, b, node.output[0])


@register("MatMul")
def _matmul(ctx: _Context, node: Any) -> list[Step]:
    ctx.attrs(node)
    if ctx.const(node.input[0]) is not None:
        raise ctx.error(node, "a constant first operand is not supported (x @ W with W constant)")
    w = ctx.weight(node, 1, "the second operand (the weight)")
    if w.ndim != 2:
        raise ctx.error(node, f"the weight has shape {w.shape}, expected 2-D (x @ W)")
    y = node.output[0]
    b = None
    add = ctx.only_consumer(y, "Add")
    if add is not None and len(add.input) == 2:
        other = add.input[1] if add.input[0] == y else add.input[0]
        c = ctx.const(other)
        if c is not None and c.dtype.kind == "f" and c.shape in ((w.shape[1],), (1, w.shape[1])):
            b = c.reshape(-1).astype(ctx.dtype)
            ctx.absorb(add)
            y = add.output[0]
    return _linear(ctx, node, node.input[0], np.ascontiguousarray(w.T), b, y)


def _unary(layer: Callable[[], nn.Module]) -> Handler:
    def handler(ctx: _Context, node: Any) -> list[Step]:
        ctx.attrs(node)
        return [Step(node.op_type, [node.input[0]], node.output[0], layer())]

    return handler


register("Relu")(_unary(nn.ReLU))
register("Sigmoid")(_unary(nn.Sigmoid))
register("Tanh")(_unary(nn.Tanh))
register("Identity")(_unary(nn.Identity))


@register("Gelu")
def _gelu(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, approximate="none")
    if a["approximate"] not in ("none", "tanh"):
        raise ctx.error(node, f"approximate={a['approximate']!r}; supported: 'none', 'tanh'")
    return [Step("Gelu", [node.input[0]], node.output[0], nn.GELU(a["approximate"]))]


@register("Mul", "Div", "Pow", "Sub")
def _decomposed_gelu(ctx: _Context, node: Any) -> list[Step]:
    # elementwise arithmetic only as the first node of a decomposed GELU
    for x in node.input:
        if ctx.const(x) is not None:
            continue
        found = _gelu_region(ctx, x)
        if found is not None and node in found[0]:
            nodes, out, approx = found
            ctx.absorb(*nodes)
            return [Step("Gelu", [x], out, nn.GELU(approx))]
    raise ctx.error(
        node,
        f"{node.op_type} is supported only inside GELU's decomposition "
        "(x * 0.5 * (1 + erf(x / sqrt 2)) or its tanh approximation)",
    )


@register("Dropout")
def _dropout(ctx: _Context, node: Any) -> list[Step]:
    ctx.attrs(node, seed=0)
    if len(node.output) > 1 and node.output[1] and ctx.consumers.get(node.output[1]):
        raise ctx.error(node, "the mask output is used; supported: inference (no mask)")
    if len(node.input) > 2 and node.input[2]:
        mode = ctx.const(node.input[2])
        if mode is None or bool(mode.reshape(-1)[0]):
            raise ctx.error(node, "training_mode must be a constant false (inference)")
    return [Step("Identity", [node.input[0]], node.output[0], nn.Identity())]


@register("BatchNormalization")
def _batchnorm(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, epsilon=1e-5, momentum=0.9, training_mode=0)
    if a["training_mode"]:
        raise ctx.error(node, "training_mode=1 is not supported (inference: running statistics)")
    if any(o and ctx.consumers.get(o) for o in node.output[1:]):
        raise ctx.error(node, "the running-statistics outputs are used; supported: inference")
    scale, bias, mean, var = (
        ctx.weight(node, i, what) for i, what in enumerate(("scale", "B", "mean", "var"), 1)
    )
    c = scale.shape[0] if scale.ndim == 1 else -1
    if any(t.shape != (c,) for t in (scale, bias, mean, var)):
        raise ctx.error(node, "scale, B, mean and var must be 1-D of the channel count")
    rank = ctx.rank(node.input[0])
    if rank not in (None, 2, 3, 4):
        raise ctx.error(node, f"input of rank {rank}; supported: 2, 3 (BatchNorm1d), 4 (2d)")
    cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
    layer = cls(c, eps=float(a["epsilon"]), dtype=ctx.dtype)
    for name, value in (
        ("weight", scale),
        ("bias", bias),
        ("running_mean", mean),
        ("running_var", var),
    ):
        getattr(layer, name)[...] = value
    return [Step("BatchNormalization", [node.input[0]], node.output[0], layer)]


@register("Flatten")
def _flatten(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, axis=1)
    if a["axis"] != 1:
        raise ctx.error(node, f"axis={a['axis']}; supported: axis=1 (to (batch, features))")
    return [Step("Flatten", [node.input[0]], node.output[0], nn.Flatten())]


@register("Reshape")
def _reshape(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, allowzero=0)
    shape = ctx.const(node.input[1])
    if shape is not None:
        if a["allowzero"] and 0 in shape:
            raise ctx.error(node, "allowzero=1 with a 0 in the shape is not supported")
        try:
            layer = Reshape(shape)
        except ValueError as exc:
            raise ctx.error(node, str(exc)) from None
        return [Step("Reshape", [node.input[0]], node.output[0], layer)]
    return [
        Step("Reshape", list(node.input[:2]), node.output[0], attrs={"allowzero": a["allowzero"]})
    ]


@register("Add")
def _add(ctx: _Context, node: Any) -> list[Step]:
    ctx.attrs(node)
    return [Step("Add", list(node.input), node.output[0])]


@register("Shape")
def _shape(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, start=0, end=None)
    attrs = {"start": a["start"]} if a["end"] is None else {"start": a["start"], "end": a["end"]}
    return [Step("Shape", [node.input[0]], node.output[0], attrs=attrs)]


@register("Gather")
def _gather(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, axis=0)
    return [Step("Gather", list(node.input[:2]), node.output[0], attrs={"axis": a["axis"]})]


@register("Unsqueeze")
def _unsqueeze(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, axes=[0])  # an attribute before opset 13, an input from 13 on
    if len(node.input) >= 2:
        return [Step("Unsqueeze", list(node.input[:2]), node.output[0])]
    if not any(at.name == "axes" for at in node.attribute):
        raise ctx.error(node, "no axes (neither the attribute nor an input)")
    axes = node.output[0] + "::axes"
    ctx.consts[axes] = np.asarray(a["axes"], np.int64)
    return [Step("Unsqueeze", [node.input[0], axes], node.output[0])]


@register("Concat")
def _concat(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(node, axis=0)
    return [Step("Concat", list(node.input), node.output[0], attrs={"axis": a["axis"]})]


# --------------------------------------------------------------------------- CNN
def _pair_attr(ctx: _Context, node: Any, a: dict[str, Any], key: str) -> tuple[int, int]:
    v = a[key]
    if len(v) != 2:
        raise ctx.error(node, f"{key}={list(v)}; supported: 2 values (2-D, NCHW)")
    return (int(v[0]), int(v[1]))


def _pads(ctx: _Context, node: Any, a: dict[str, Any]) -> tuple[int, int, int, int]:
    """ONNX pads ``[top, left, bottom, right]`` as pyfastopt's (top, bottom, left, right)."""
    p = a["pads"]
    if len(p) != 4 or min(p) < 0:
        raise ctx.error(node, f"pads={list(p)}; supported: 4 values >= 0 (2-D)")
    return (int(p[0]), int(p[2]), int(p[1]), int(p[3]))


def _auto_pad(
    ctx: _Context,
    node: Any,
    a: dict[str, Any],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
) -> tuple[int, int, int, int]:
    """The explicit (top, bottom, left, right) of ``auto_pad`` and ``pads``."""
    mode = a["auto_pad"]
    if mode == "NOTSET":
        return _pads(ctx, node, a)
    if any(a["pads"]):
        raise ctx.error(node, f"auto_pad={mode!r} together with pads")
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        if strides != (1, 1):
            raise ctx.error(
                node,
                f"auto_pad={mode!r} with strides={list(strides)}; supported: SAME_UPPER and "
                "SAME_LOWER with strides 1 (else explicit pads), NOTSET, VALID",
            )
        out = []
        for k, d in zip(kernel, dilations):
            total = d * (k - 1)
            small, big = total // 2, total - total // 2
            out.append((small, big) if mode == "SAME_UPPER" else (big, small))
        return (out[0][0], out[0][1], out[1][0], out[1][1])
    raise ctx.error(
        node, f"auto_pad={mode!r}; supported: NOTSET, VALID, SAME_UPPER, SAME_LOWER (stride 1)"
    )


def _rank4(ctx: _Context, node: Any) -> None:
    rank = ctx.rank(node.input[0])
    if rank not in (None, 4):
        raise ctx.error(node, f"input of rank {rank}; supported: 4 (N, C, H, W)")


@register("Conv")
def _conv(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(
        node,
        auto_pad="NOTSET",
        dilations=[1, 1],
        group=1,
        kernel_shape=[],
        pads=[0, 0, 0, 0],
        strides=[1, 1],
    )
    _rank4(ctx, node)
    w = ctx.weight(node, 1, "W (the weight)")
    if w.ndim != 4:
        raise ctx.error(node, f"W has shape {w.shape}; supported: 4-D (2-D convolution)")
    kernel = (w.shape[2], w.shape[3])
    if a["kernel_shape"] and tuple(a["kernel_shape"]) != kernel:
        raise ctx.error(node, f"kernel_shape={list(a['kernel_shape'])} but W has shape {w.shape}")
    strides = _pair_attr(ctx, node, a, "strides")
    dilations = _pair_attr(ctx, node, a, "dilations")
    pads = _auto_pad(ctx, node, a, kernel, strides, dilations)
    group = int(a["group"])
    b = None
    if len(node.input) > 2 and node.input[2]:
        b = ctx.weight(node, 2, "B (the bias)")
        if b.shape != (w.shape[0],):
            raise ctx.error(node, f"B has shape {b.shape}, expected ({w.shape[0]},)")
    act, y = _activation(ctx, node.output[0])
    try:
        layer = nn.Conv2d(
            w.shape[1] * group,
            w.shape[0],
            kernel,
            stride=strides,
            padding=pads,
            dilation=dilations,
            groups=group,
            bias=b is not None,
            activation=act,
            dtype=ctx.dtype,
        )
    except (ValueError, TypeError) as exc:
        raise ctx.error(node, str(exc)) from None
    layer.weight[...] = w
    if b is not None and layer.bias is not None:
        layer.bias[...] = b
    return [Step("Conv", [node.input[0]], y, layer)]


def _pool_pads(
    ctx: _Context,
    node: Any,
    a: dict[str, Any],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
) -> tuple[int, int]:
    if a["auto_pad"] not in ("NOTSET", "VALID"):
        raise ctx.error(node, f"auto_pad={a['auto_pad']!r}; supported: NOTSET, VALID")
    t, bt, lf, r = _auto_pad(ctx, node, a, kernel, strides, dilations)
    if t != bt or lf != r:
        raise ctx.error(
            node,
            f"asymmetric pads {list(a['pads'])}; supported: the same padding at both ends "
            "(pads=[h, w, h, w])",
        )
    return (t, lf)


def _kernel(ctx: _Context, node: Any, a: dict[str, Any]) -> tuple[int, int]:
    if not a["kernel_shape"]:
        raise ctx.error(node, "no kernel_shape")
    return _pair_attr(ctx, node, a, "kernel_shape")


@register("MaxPool")
def _maxpool(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(
        node,
        auto_pad="NOTSET",
        ceil_mode=0,
        dilations=[1, 1],
        kernel_shape=[],
        pads=[0, 0, 0, 0],
        storage_order=0,
        strides=[1, 1],
    )
    _rank4(ctx, node)
    if a["storage_order"] != 0:
        raise ctx.error(node, f"storage_order={a['storage_order']}; supported: 0 (row major)")
    if len(node.output) > 1 and node.output[1]:
        raise ctx.error(node, "the Indices output is not supported (supported: the values only)")
    kernel = _kernel(ctx, node, a)
    strides = _pair_attr(ctx, node, a, "strides")
    dilations = _pair_attr(ctx, node, a, "dilations")
    pads = _pool_pads(ctx, node, a, kernel, strides, dilations)
    try:
        layer = nn.MaxPool2d(kernel, strides, pads, dilations, ceil_mode=bool(a["ceil_mode"]))
    except (ValueError, TypeError) as exc:
        raise ctx.error(node, str(exc)) from None
    return [Step("MaxPool", [node.input[0]], node.output[0], layer)]


@register("AveragePool")
def _avgpool(ctx: _Context, node: Any) -> list[Step]:
    a = ctx.attrs(
        node,
        auto_pad="NOTSET",
        ceil_mode=0,
        count_include_pad=0,
        dilations=[1, 1],
        kernel_shape=[],
        pads=[0, 0, 0, 0],
        strides=[1, 1],
    )
    _rank4(ctx, node)
    kernel = _kernel(ctx, node, a)
    strides = _pair_attr(ctx, node, a, "strides")
    if _pair_attr(ctx, node, a, "dilations") != (1, 1):
        raise ctx.error(node, f"dilations={list(a['dilations'])}; supported: 1")
    pads = _pool_pads(ctx, node, a, kernel, strides, (1, 1))
    try:
        layer = nn.AvgPool2d(
            kernel,
            strides,
            pads,
            ceil_mode=bool(a["ceil_mode"]),
            count_include_pad=bool(a["count_include_pad"]),
        )
    except (ValueError, TypeError) as exc:
        raise ctx.error(node, str(exc)) from None
    return [Step("AveragePool", [node.input[0]], node.output[0], layer)]


@register("GlobalAveragePool")
def _global_avgpool(ctx: _Context, node: Any) -> list[Step]:
    ctx.attrs(node)
    _rank4(ctx, node)
    return [Step("GlobalAveragePool", [node.input[0]], node.output[0], nn.AdaptiveAvgPool2d(1))]


@register("Clip")
def _clip(ctx: _Context, node: Any) -> list[Step]:
    # opset 6-10: min/max attributes; from 11: optional constant inputs
    a = ctx.attrs(node, min=-3.4028234663852886e38, max=3.4028234663852886e38)
    lo, hi = a["min"], a["max"]
    for i, what in ((1, "min"), (2, "max")):
        if len(node.input) > i and node.input[i]:
            v = ctx.scalar(node.input[i])
            if v is None:
                raise ctx.error(node, f"{what} must be a constant scalar")
            if what == "min":
                lo = v
            else:
                hi = v
    try:
        layer = Clip(lo, hi)
    except ValueError as exc:
        raise ctx.error(node, str(exc)) from None
    return [Step("Clip", [node.input[0]], node.output[0], layer)]


# --------------------------------------------------------------------------- driver
_FLOAT_TYPES = {1: np.float32, 11: np.float64}  # TensorProto.FLOAT, DOUBLE


def _toposort(ctx: _Context, graph: Any, known: set[str]) -> list[Any]:
    """The nodes in an order where every input is computed first (ONNX requires the file
    to be sorted already; a file that is not is sorted, a cycle is refused)."""
    pending = [n for n in ctx.nodes if n.op_type not in _CONSTANT_OPS]
    order: list[Any] = []
    have = set(known)
    while pending:
        ready = [n for n in pending if all(not i or i in have for i in n.input)]
        if not ready:
            n = pending[0]
            missing = [i for i in n.input if i and i not in have]
            raise ctx.error(n, f"inputs {missing} are never computed (or the graph has a cycle)")
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
        for n in ready:
            order.append(n)
            have.update(o for o in n.output if o)
    return order


def build(model: Any, onnx: Any, arrays: dict[str, np.ndarray] | None = None) -> Any:
    """The pyfastopt model of a parsed ``onnx.ModelProto`` (see :func:`pyfastopt.onnx.load`);
    ``arrays`` holds initializers already read (their protobuf entries have no data)."""
    try:
        return _build(model, onnx, arrays)
    except ValueError:
        raise
    except (IndexError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        # nodes without their inputs/outputs and the like, outside any one handler
        raise ValueError(f"malformed ONNX graph ({type(exc).__name__}: {exc})") from None


def _build(model: Any, onnx: Any, arrays: dict[str, np.ndarray] | None) -> Any:
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(
            f"the graph has {len(inputs)} inputs and {len(graph.output)} outputs; "
            "pyfastopt.onnx.load reads graphs with one input and one output"
        )
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in _FLOAT_TYPES:
        raise ValueError(
            f"the graph's input {inputs[0].name!r} has ONNX element type {elem}; supported: "
            "float32 (1) and float64 (11)"
        )
    dtype = np.dtype(_FLOAT_TYPES[elem])
    from ._qimport import build_quantized, is_quantized

    if is_quantized(model):
        if dtype != np.float32:
            raise ValueError(
                f"the int8 graph's input {inputs[0].name!r} is float64; supported: float32"
            )
        return build_quantized(model, onnx, inputs[0].name, graph.output[0].name, arrays)
    ctx = _Context(model, onnx, dtype, arrays)
    order = _toposort(ctx, graph, {inputs[0].name, *ctx.consts})
    steps: list[Step] = []
    for node in order:
        if id(node) in ctx.absorbed:
            continue
        handler = HANDLERS.get(node.op_type)
        if handler is None or (node.domain not in ("", "ai.onnx")):
            raise ctx.error(
                node,
                f"operator {node.domain + '.' if node.domain else ''}{node.op_type} is not "
                f"supported; supported operators: {', '.join(supported_ops())}",
            )
        try:
            steps.extend(handler(ctx, node))
        except ValueError:
            raise
        except (IndexError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            # a node missing inputs/outputs, an attribute of the wrong type, ...
            raise ctx.error(node, f"malformed node ({type(exc).__name__}: {exc})") from None
        ctx.absorb(node)
    # Dropout/Identity are dropped: their readers read their input instead
    alias: dict[str, str] = {}
    kept: list[Step] = []
    for step in steps:
        step.inputs = [alias.get(n, n) for n in step.inputs]
        if step.op == "Identity":
            alias[step.output] = step.inputs[0]
        else:
            kept.append(step)
    steps = kept
    # constants the remaining steps read
    used = {n for s in steps if s.layer is None for n in s.inputs}
    constants = {n: v for n, v in ctx.consts.items() if n in used}
    for step in steps:
        if step.layer is not None and step.inputs[0] in ctx.consts:
            raise ValueError(f"step {step.op} reads the constant {step.inputs[0]!r}: unsupported")
    x, y = inputs[0].name, graph.output[0].name
    y = alias.get(y, y)
    chain = all(s.layer is not None for s in steps) and _is_chain(steps, x, y)
    out: nn.Module
    if chain:
        out = nn.Sequential(*[s.layer for s in steps if s.layer is not None])
    else:
        for s in steps:
            if s.layer is None and s.op not in FUNCTIONS:  # pragma: no cover - table bug
                raise ValueError(f"no function for {s.op}")
        dims = inputs[0].type.tensor_type.shape.dim
        known = [d.dim_value for d in dims[1:]]
        shape = tuple(known) if dims and all(known) else None
        out = nn.Sequential() if y == x else Graph(steps, x, y, constants, shape)
    return out.eval()


def _is_chain(steps: list[Step], x: str, y: str) -> bool:
    cur = x
    for s in steps:
        if s.inputs != [cur]:
            return False
        cur = s.output
    return cur == y
