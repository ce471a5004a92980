"""int8 ONNX graph -> :class:`pyfastopt.onnx.QuantizedGraph`.

Two forms come in, as ``onnxruntime.quantization`` writes them:

* QOperator: ``QuantizeLinear`` at the input, ``QLinearMatMul``/``QLinearConv``/
  ``com.microsoft.QGemm``/``QLinearAdd``/``QLinearGlobalAveragePool``, 8-bit
  ``MaxPool``/``Reshape``/``Flatten``, ``DequantizeLinear`` at the output; and the
  dynamic form ``DynamicQuantizeLinear`` -> ``MatMulInteger``/``ConvInteger`` ->
  ``Cast`` -> ``Mul`` (scales) -> ``Add`` (bias) -> ``Relu``.
* QDQ: float operators between ``DequantizeLinear`` and ``QuantizeLinear``. The patterns
  ONNX Runtime fuses into integer operators are fused the same way here (so the
  arithmetic is ONNX Runtime's default session's):
  ``DQ(x), DQ(w)[, DQ(int32 bias)] -> MatMul|Gemm|Conv -> Q`` becomes
  ``QLinearMatMul``/``QGemm``/``QLinearConv``; ``DQ, DQ -> Add -> Q`` ``QLinearAdd``;
  ``DQ -> GlobalAveragePool -> Q`` ``QLinearGlobalAveragePool``;
  ``DQ -> MaxPool|Reshape|Flatten -> Q`` with the same scale and zero point the
  operator on the 8-bit tensor. Everything else runs as written: a ``DequantizeLinear``
  of a constant is folded into a float constant, and float operators between
  ``DequantizeLinear`` and ``QuantizeLinear`` run as :mod:`pyfastopt.nn` layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _qgraph
from ._import import (
    _CONSTANT_OPS,
    HANDLERS,
    _auto_pad,
    _Context,
    _kernel,
    _pair_attr,
    _pool_pads,
    _toposort,
)
from ._qgraph import QStep, QuantizedGraph

#: operators that make a graph an int8 one
QUANT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearMatMul",
    "QLinearConv",
    "ConvInteger",
    "QGemm",
    "QLinearAdd",
    "QLinearGlobalAveragePool",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
}
_MS = "com.microsoft"
_MS_OPS = {
    "QGemm",
    "QLinearAdd",
    "QLinearGlobalAveragePool",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
}


def is_quantized(model: Any) -> bool:
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


def supported_ops() -> list[str]:
    ops = {*QUANT_OPS, "MaxPool (8-bit)", "Reshape", "Flatten", "Cast", "Mul", "Add", "Relu"}
    return sorted(ops | {f"float {op}" for op in ("Gemm", "MatMul", "Conv", "GlobalAveragePool")})


class _Q:
    """The import state: the float context plus what the int8 steps need."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.producer: dict[str, Any] = {}
        for node in ctx.nodes:
            for o in node.output:
                if o:
                    self.producer[o] = node
        self.ints: set[str] = set()  # tensors holding 8-bit values
        self.steps: list[QStep] = []

    def error(self, node: Any, why: str) -> ValueError:
        return self.ctx.error(node, why)

    def dq(self, name: str) -> Any:
        """The DequantizeLinear producing ``name`` from a per-tensor quantized activation
        or a constant, or None."""
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            return None
        return node

    def const(self, name: str) -> np.ndarray | None:
        return self.ctx.const(name) if name else None

    def per_tensor(self, dq: Any) -> bool:
        s = self.const(dq.input[1])
        z = self.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        return s is not None and s.size == 1 and (z is None or z.size == 1)

    def axis(self, node: Any) -> int:
        for a in node.attribute:
            if a.name == "axis":
                return int(a.i)
        return 1

    def emit(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.steps.append(QStep(op, list(inputs), list(outputs), attrs))


def _dq_inputs(q: _Q, dq: Any) -> list[str]:
    """(q, scale, zero point) names of a DequantizeLinear (zero point may be '')."""
    ins = list(dq.input) + [""] * (3 - len(dq.input))
    return ins[:3]


def _same_qparams(q: _Q, a: Any, b: Any) -> bool:
    sa, sb = q.const(a.input[1]), q.const(b.input[1])
    za = q.const(a.input[2]) if len(a.input) > 2 and a.input[2] else None
    zb = q.const(b.input[2]) if len(b.input) > 2 and b.input[2] else None
    if sa is None or sb is None or sa.shape != sb.shape or not np.array_equal(sa, sb):
        return False
    if za is None or zb is None:
        return za is None and zb is None
    return za.dtype == zb.dtype and np.array_equal(za, zb)


def _conv_geometry(q: _Q, node: Any, wshape: tuple[int, ...]) -> dict[str, Any]:
    ctx = q.ctx
    a = ctx.attrs(
        node,
        auto_pad="NOTSET",
        dilations=[1, 1],
        group=1,
        kernel_shape=[],
        pads=[0, 0, 0, 0],
        strides=[1, 1],
    )
    if len(wshape) != 4:
        raise q.error(node, f"W has shape {wshape}; supported: 4-D (2-D convolution)")
    kernel = (int(wshape[2]), int(wshape[3]))
    if a["kernel_shape"] and tuple(a["kernel_shape"]) != kernel:
        raise q.error(node, f"kernel_shape={list(a['kernel_shape'])} but W has shape {wshape}")
    strides = _pair_attr(ctx, node, a, "strides")
    dilations = _pair_attr(ctx, node, a, "dilations")
    pads = _auto_pad(ctx, node, a, kernel, strides, dilations)
    return {"strides": strides, "pads": pads, "dilations": dilations, "group": int(a["group"])}


def _pretransposed(q: _Q, ins: list[str], index: int, trans_b: int) -> tuple[list[str], int]:
    """QGemm's constant B stored (K, N) contiguous once (``transB=0``): the int8 product
    then reads it in order on every call."""
    b = q.const(ins[index])
    if not trans_b or b is None:
        return ins, trans_b
    name = f"{ins[index]}::T"
    q.ctx.consts[name] = np.ascontiguousarray(b.T)
    out = list(ins)
    out[index] = name
    return out, 0


# --------------------------------------------------------------------------- QDQ fusion
def _fuse(q: _Q, node: Any) -> bool:
    """Fuse ``DQ -> node -> Q`` as ONNX Runtime does; True when done."""
    ctx = q.ctx
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return False
    quant = ctx.only_consumer(node.output[0], "QuantizeLinear")
    if quant is None or len(quant.input) < 2:
        return False
    qscale = q.const(quant.input[1])
    qzp = q.const(quant.input[2]) if len(quant.input) > 2 and quant.input[2] else None
    if qscale is None or qscale.size != 1 or (qzp is not None and qzp.size != 1):
        return False
    if qzp is not None and qzp.dtype not in (np.uint8, np.int8):
        return False
    if any(a.name not in ("axis", "saturate") for a in quant.attribute):
        return False
    y_scale, y_zp = quant.input[1], quant.input[2] if len(quant.input) > 2 else ""
    y = quant.output[0]
    ins = [q.dq(i) for i in node.input if i]
    if op in ("MatMul", "Gemm", "Conv"):
        if len(node.input) < 2 or ins[0] is None or ins[1] is None:
            return False
        x_dq, w_dq = ins[0], ins[1]
        if not q.per_tensor(x_dq):
            return False
        wq = q.const(w_dq.input[0])
        if wq is None and op != "MatMul":
            return False
        bias = ""
        if len(node.input) > 2 and node.input[2]:
            b_dq = q.dq(node.input[2])
            if b_dq is None:
                return False
            bq = q.const(b_dq.input[0])
            bz = q.const(b_dq.input[2]) if len(b_dq.input) > 2 and b_dq.input[2] else None
            if bq is None or bq.dtype != np.int32 or (bz is not None and np.any(bz != 0)):
                return False
            bias = b_dq.input[0]
        xi = _dq_inputs(q, x_dq)
        wi = _dq_inputs(q, w_dq)
        ws = q.const(wi[1])
        if ws is None:
            return False
        if op == "MatMul":
            if ws.size > 1 and q.axis(w_dq) not in (1, -1):
                return False
            q.emit("QLinearMatMul", [*xi, *wi, y_scale, y_zp], [y])
        elif op == "Gemm":
            a = ctx.attrs(node, alpha=1.0, beta=1.0, transA=0, transB=0)
            if bias and a["beta"] != 1.0:
                return False
            if wq is None or wq.ndim != 2:
                return False
            out_axis = 0 if a["transB"] else 1
            if ws.size > 1 and q.axis(w_dq) % 2 != out_axis:
                return False
            gins, trans_b = _pretransposed(q, [*xi, *wi, bias, y_scale, y_zp], 3, int(a["transB"]))
            q.emit(
                "QGemm",
                gins,
                [y],
                alpha=float(a["alpha"]),
                transA=int(a["transA"]),
                transB=trans_b,
            )
        else:  # Conv
            if wq is None or (ws.size > 1 and q.axis(w_dq) != 0):
                return False
            geo = _conv_geometry(q, node, wq.shape)
            q.emit("QLinearConv", [*xi, *wi, y_scale, y_zp, bias], [y], **geo)
    elif op == "Add":
        if len(ins) != 2 or ins[0] is None or ins[1] is None:
            return False
        if not (q.per_tensor(ins[0]) and q.per_tensor(ins[1])):
            return False
        q.emit("QLinearAdd", [*_dq_inputs(q, ins[0]), *_dq_inputs(q, ins[1]), y_scale, y_zp], [y])
    elif op == "GlobalAveragePool":
        if not ins or ins[0] is None or not q.per_tensor(ins[0]):
            return False
        q.emit("QLinearGlobalAveragePool", [*_dq_inputs(q, ins[0]), y_scale, y_zp], [y])
    elif op in ("MaxPool", "Reshape", "Flatten"):
        if not ins or ins[0] is None or not q.per_tensor(ins[0]):
            return False
        if not _same_qparams(q, ins[0], quant):
            return False
        xq = ins[0].input[0]
        if op == "MaxPool":
            q.emit("MaxPoolInt", [xq], [y], **_maxpool_attrs(q, node))
        elif op == "Reshape":
            a = ctx.attrs(node, allowzero=0)
            q.emit("Reshape", [xq, node.input[1]], [y], allowzero=int(a["allowzero"]))
        else:
            a = ctx.attrs(node, axis=1)
            q.emit("Flatten", [xq], [y], axis=int(a["axis"]))
    else:
        return False
    q.ints.add(y)
    ctx.absorb(quant)
    return True


def _maxpool_attrs(q: _Q, node: Any) -> dict[str, Any]:
    ctx = q.ctx
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
    if a["storage_order"] != 0:
        raise q.error(node, f"storage_order={a['storage_order']}; supported: 0 (row major)")
    if len(node.output) > 1 and node.output[1]:
        raise q.error(node, "the Indices output is not supported (supported: the values only)")
    kernel = _kernel(ctx, node, a)
    strides = _pair_attr(ctx, node, a, "strides")
    dilations = _pair_attr(ctx, node, a, "dilations")
    pads = _pool_pads(ctx, node, a, kernel, strides, dilations)
    return {
        "kernel": kernel,
        "stride": strides,
        "padding": pads,
        "dilation": dilations,
        "ceil_mode": bool(a["ceil_mode"]),
    }


# --------------------------------------------------------------------------- operators
def _inputs(node: Any, n: int) -> list[str]:
    ins = list(node.input)
    return ins + [""] * (n - len(ins))


def _check_const(q: _Q, node: Any, index: int, what: str, required: bool = True) -> Any:
    name = node.input[index] if index < len(node.input) else ""
    if not name:
        if required:
            raise q.error(node, f"missing {what}")
        return None
    v = q.const(name)
    if v is None:
        raise q.error(node, f"{what} ({name!r}) must be a constant (an initializer)")
    return v


def _quant_op(q: _Q, node: Any) -> None:
    ctx = q.ctx
    op = node.op_type
    out = list(node.output)
    if op == "QuantizeLinear":
        a = ctx.attrs(node, axis=1, saturate=1)
        s = _check_const(q, node, 1, "y_scale")
        z = _check_const(q, node, 2, "y_zero_point", required=False)
        if z is not None and z.dtype not in (np.uint8, np.int8):
            raise q.error(node, f"y_zero_point of dtype {z.dtype}; supported: uint8, int8")
        if s.size != 1:
            raise q.error(node, "per-axis scales for an activation; supported: per tensor")
        q.emit(op, _inputs(node, 3)[:3], out[:1], axis=int(a["axis"]))
        q.ints.add(out[0])
    elif op == "DequantizeLinear":
        a = ctx.attrs(node, axis=1)
        x = q.const(node.input[0])
        s = q.const(node.input[1])
        z = q.const(node.input[2]) if len(node.input) > 2 else None
        if x is not None:  # a weight or bias: folded into a float constant
            s = _check_const(q, node, 1, "x_scale")
            z = _check_const(q, node, 2, "x_zero_point", required=False)
            ctx.consts[out[0]] = _qgraph.dequantize_linear(x, s, z, int(a["axis"]) % max(x.ndim, 1))
            return
        # an activation's: per tensor (the scale may be computed, e.g. dynamic)
        if s is not None and s.size != 1:
            raise q.error(node, "per-axis scales for an activation; supported: per tensor")
        q.emit(op, _inputs(node, 3)[:3], out[:1])
    elif op == "DynamicQuantizeLinear":
        ctx.attrs(node)
        q.emit(op, [node.input[0]], [*out, "", "", ""][:3])
        q.ints.add(out[0])
    elif op == "MatMulInteger":
        ctx.attrs(node)
        b = _check_const(q, node, 1, "B")
        if b.ndim != 2:
            raise q.error(node, f"B has shape {b.shape}; supported: 2-D")
        q.emit(op, _inputs(node, 4)[:4], out[:1])
    elif op == "QLinearMatMul":
        ctx.attrs(node)
        b = _check_const(q, node, 3, "b")
        if b.ndim != 2:
            raise q.error(node, f"b has shape {b.shape}; supported: 2-D")
        q.emit(op, _inputs(node, 8)[:8], out[:1])
        q.ints.add(out[0])
    elif op == "QGemm":
        a = ctx.attrs(node, alpha=1.0, transA=0, transB=0)
        b = _check_const(q, node, 3, "B")
        if b.ndim != 2:
            raise q.error(node, f"B has shape {b.shape}; supported: 2-D")
        ins, trans_b = _pretransposed(q, _inputs(node, 9)[:9], 3, int(a["transB"]))
        q.emit(
            op,
            ins,
            out[:1],
            alpha=float(a["alpha"]),
            transA=int(a["transA"]),
            transB=trans_b,
        )
        if ins[7]:
            q.ints.add(out[0])
    elif op in ("QLinearConv", "ConvInteger"):
        w = _check_const(q, node, 3 if op == "QLinearConv" else 1, "w")
        geo = _conv_geometry(q, node, w.shape)
        n = 9 if op == "QLinearConv" else 4
        q.emit(op, _inputs(node, n)[:n], out[:1], **geo)
        if op == "QLinearConv":
            q.ints.add(out[0])
    elif op == "QLinearAdd":
        ctx.attrs(node)
        q.emit(op, _inputs(node, 8)[:8], out[:1])
        q.ints.add(out[0])
    elif op == "QLinearGlobalAveragePool":
        a = ctx.attrs(node, channels_last=0)
        q.emit(op, _inputs(node, 5)[:5], out[:1], channels_last=int(a["channels_last"]))
        q.ints.add(out[0])
    elif op in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
        _integer_to_float(q, node)
    else:  # pragma: no cover - QUANT_OPS and this table agree
        raise q.error(node, "no int8 handler")


def _integer_to_float(q: _Q, node: Any) -> None:
    """``com.microsoft`` DynamicQuantizeMatMul(A, B, b_scale[, b_zero_point][, bias]) and
    MatMulIntegerToFloat(A, B, a_scale, b_scale[, a_zero_point][, b_zero_point][, bias])
    (what ONNX Runtime's optimizer writes for ``quantize_dynamic``'s layers) as the
    standard steps they fuse: [DynamicQuantizeLinear(A) ->] MatMulInteger -> Cast(float)
    -> Mul(Mul(a_scale, b_scale)) [-> Add(bias)]. ONNX Runtime computes the last two as
    one ``acc * scale + bias`` (a fused multiply-add in its AVX2 output stage): the
    results differ from it by at most one rounding of that sum (documented bound)."""
    ctx = q.ctx
    op = node.op_type
    ctx.attrs(node)
    y = node.output[0]
    b = _check_const(q, node, 1, "B")
    if b.ndim != 2:
        raise q.error(node, f"B has shape {b.shape}; supported: 2-D")
    if b.dtype not in (np.uint8, np.int8):
        raise q.error(node, f"B of dtype {b.dtype}; supported: uint8, int8")
    ins = _inputs(node, 7)
    if op == "DynamicQuantizeMatMul":
        a, bs, bz, bias = ins[0], ins[2], ins[3], ins[4]
        _check_const(q, node, 2, "b_scale")
        aq, as_, az = f"{y}::a_q", f"{y}::a_scale", f"{y}::a_zero_point"
        q.emit("DynamicQuantizeLinear", [a], [aq, as_, az])
    else:
        aq, as_, bs, az, bz, bias = ins[0], ins[2], ins[3], ins[4], ins[5], ins[6]
        _check_const(q, node, 3, "b_scale")
        if not as_:
            raise q.error(node, "missing a_scale")
    if bz:
        _check_const(q, node, 3 if op == "DynamicQuantizeMatMul" else 5, "b_zero_point")
    acc, f, scale = f"{y}::acc", f"{y}::acc_f32", f"{y}::scale"
    q.emit("Mul", [as_, bs], [scale])
    q.emit("MatMulInteger", [aq, ins[1], az, bz], [acc])
    q.emit("Cast", [acc], [f], to=1)
    if bias:
        scaled = f"{y}::scaled"
        q.emit("Mul", [f, scale], [scaled])
        q.emit("Add", [scaled, bias], [y])
    else:
        q.emit("Mul", [f, scale], [y])


def _other_op(q: _Q, node: Any) -> None:
    """Operators around the int8 ones: on 8-bit tensors (MaxPool, Reshape, Flatten) or
    float ones (Cast, Mul, Add, Relu and the float layers of pyfastopt.onnx.load)."""
    ctx = q.ctx
    op = node.op_type
    out = list(node.output)
    on_ints = bool(node.input) and node.input[0] in q.ints
    if op == "MaxPool" and on_ints:
        q.emit("MaxPoolInt", [node.input[0]], out[:1], **_maxpool_attrs(q, node))
        q.ints.add(out[0])
        return
    if op == "Reshape":
        a = ctx.attrs(node, allowzero=0)
        q.emit("Reshape", list(node.input[:2]), out[:1], allowzero=int(a["allowzero"]))
    elif op == "Flatten":
        a = ctx.attrs(node, axis=1)
        q.emit("Flatten", [node.input[0]], out[:1], axis=int(a["axis"]))
    elif op == "Cast":
        a = ctx.attrs(node, to=1, saturate=1)
        if a["to"] not in _qgraph._ONNX_TYPES:
            raise q.error(node, f"to={a['to']}; supported: float, double, (u)int8, int32, int64")
        q.emit("Cast", [node.input[0]], out[:1], to=int(a["to"]))
    elif op in ("Mul", "Add") and not on_ints and not any(i in q.ints for i in node.input):
        ctx.attrs(node)
        q.emit(op, list(node.input[:2]), out[:1])
    elif op == "Relu" and not on_ints:
        ctx.attrs(node)
        q.emit("Relu", [node.input[0]], out[:1])
    elif op in HANDLERS and op not in ("Mul", "Add", "Div", "Pow", "Sub") and not on_ints:
        for step in HANDLERS[op](ctx, node):
            if step.layer is not None:
                q.steps.append(QStep(step.op, list(step.inputs), [step.output], layer=step.layer))
            else:
                q.steps.append(QStep(step.op, list(step.inputs), [step.output], dict(step.attrs)))
        return
    else:
        what = " on an 8-bit tensor" if on_ints else ""
        raise q.error(
            node,
            f"operator {op}{what} is not supported in an int8 graph; supported: "
            + ", ".join(supported_ops()),
        )
    if on_ints and op in ("Reshape", "Flatten"):
        q.ints.add(out[0])


def build_quantized(
    model: Any,
    onnx: Any,
    input_name: str,
    output_name: str,
    arrays: dict[str, np.ndarray] | None = None,
) -> QuantizedGraph:
    ctx = _Context(model, onnx, np.dtype(np.float32), arrays)
    q = _Q(ctx)
    graph = model.graph
    order = _toposort(ctx, graph, {input_name, *ctx.consts})
    for node in order:
        if id(node) in ctx.absorbed or node.op_type in _CONSTANT_OPS:
            continue
        domain_ok = node.domain in ("", "ai.onnx") or (
            node.domain == _MS and node.op_type in _MS_OPS
        )
        if not domain_ok:
            raise ctx.error(
                node,
                f"operator {node.domain}.{node.op_type} is not supported; supported: "
                + ", ".join(supported_ops()),
            )
        try:
            if _fuse(q, node):
                pass
            elif node.op_type in QUANT_OPS:
                _quant_op(q, node)
            else:
                _other_op(q, node)
        except ValueError:
            raise
        except (IndexError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise ctx.error(node, f"malformed node ({type(exc).__name__}: {exc})") from None
        ctx.absorb(node)
    steps = _live(q.steps, output_name)
    used = {n for s in steps for n in s.inputs}
    constants = {n: v for n, v in ctx.consts.items() if n in used}
    inputs = [i for i in model.graph.input if i.name == input_name]
    dims = inputs[0].type.tensor_type.shape.dim
    known = [d.dim_value for d in dims[1:]]
    shape = tuple(known) if dims and all(known) else None
    return QuantizedGraph(steps, input_name, output_name, constants, shape)


def _live(steps: list[QStep], output: str) -> list[QStep]:
    """The steps the output depends on (dead DequantizeLinear nodes of fused patterns
    and the like are dropped)."""
    need = {output}
    kept: list[QStep] = []
    for step in reversed(steps):
        if any(o in need for o in step.outputs):
            kept.append(step)
            need.update(i for i in step.inputs if i)
    return kept[::-1]
