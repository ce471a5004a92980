""":class:`~pyfastopt.onnx.QuantizedGraph` -> QDQ ONNX (see :func:`pyfastopt.onnx.save`).

The fused integer steps are written as the QDQ patterns they came from (and that
:func:`pyfastopt.onnx.load` and ONNX Runtime fuse back into the same integer operators):

* ``QLinearMatMul`` -> ``DQ(a), DQ(b) -> MatMul -> Q``;
* ``QGemm`` -> ``DQ(a), DQ(b), DQ(int32 bias, scale s_a s_b) -> Gemm -> Q``;
* ``QLinearConv`` -> ``DQ(x), DQ(w), DQ(int32 bias) -> Conv -> Q``;
* ``QLinearAdd`` -> ``DQ, DQ -> Add -> Q``; ``QLinearGlobalAveragePool`` ->
  ``DQ -> GlobalAveragePool -> Q``.

Standard ONNX operators are written as they are (``QuantizeLinear``,
``DequantizeLinear``, ``DynamicQuantizeLinear``, ``MatMulInteger``, ``ConvInteger``,
``Cast``, ``Mul``, ``Add``, ``Relu``, ``Reshape``, ``Flatten``, 8-bit ``MaxPool``), float
layers as :func:`pyfastopt.onnx.save` writes them. The file uses the default ONNX domain
only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import integer
from ._export import _Writer
from ._qgraph import QuantizedGraph

_PLAIN = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "Cast",
    "Mul",
    "Add",
    "Relu",
    "Reshape",
    "Flatten",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Concat",
}


def _conv_attrs(a: dict[str, Any]) -> dict[str, Any]:
    t, b, lf, r = a["pads"]
    return {
        "strides": list(a["strides"]),
        "pads": [t, lf, b, r],
        "dilations": list(a["dilations"]),
        "group": int(a["group"]),
    }


def qgraph_to_onnx(g: QuantizedGraph, onnx: Any, opset: Any = 17) -> Any:
    opset = integer("opset", opset, lo=13)
    h = onnx.helper
    w = _Writer(onnx, opset, np.dtype(np.float32))
    names = {g.input_name, g.output_name, *g.constants}
    for s in g.steps:
        names.update(s.inputs)
        names.update(s.outputs)
    w.names.update(n for n in names if n)
    for name, value in g.constants.items():
        w.inits.append(onnx.numpy_helper.from_array(np.array(value, order="C"), name))
    env: dict[str, str] = {}

    def ref(n: str) -> str:
        return env.get(n, n)

    def node(op: str, ins: list[str], outs: list[str], **attrs: Any) -> None:
        w.nodes.append(
            h.make_node(op, [ref(i) for i in ins], outs, name=w.fresh(f"{outs[0]}/{op}"), **attrs)
        )

    def dq(qsz: list[str], axis: int | None = None) -> str:
        q, s, z = qsz
        out = w.fresh(f"{q}_DequantizeLinear")
        attrs = {} if axis is None or np.size(g.constants.get(s, 1)) == 1 else {"axis": axis}
        node("DequantizeLinear", [q, s] + ([z] if z else []), [out], **attrs)
        return out

    def bias_dq(c: str, sa: str, sb: str) -> str:
        if sa not in g.constants or sb not in g.constants:
            raise ValueError(f"the int32 bias {c!r} needs constant scales to be written as QDQ")
        scale = (
            np.float32(np.asarray(g.constants[sa]).reshape(-1)[0])
            * np.asarray(g.constants[sb], np.float32).reshape(-1)
        ).astype(np.float32)
        scale = scale.reshape(()) if scale.size == 1 else scale
        s = w.const(scale, f"{c}_scale")
        z = w.const(np.zeros(scale.shape, np.int32), f"{c}_zero_point")
        return dq([c, s, z], 0)

    def quant(y_f: str, sy: str, zy: str, y: str) -> None:
        node("QuantizeLinear", [y_f, sy] + ([zy] if zy else []), [y])

    for i, s in enumerate(g.steps):
        ins, outs, a = s.inputs, s.outputs, s.attrs
        if s.layer is not None:
            y, _ = w.layer(s.layer, ref(ins[0]), None, f"{i}.")
            env[outs[0]] = y
        elif s.op in _PLAIN:
            attrs = dict(a)
            if s.op == "QuantizeLinear":
                attrs = {}
            if s.op == "Reshape" and not attrs.get("allowzero"):
                attrs.pop("allowzero", None)
            if s.op in ("ConvInteger",):
                attrs = _conv_attrs(a)
            while ins and not ins[-1]:
                ins = ins[:-1]
            node(s.op, list(ins), list(outs), **attrs)
        elif s.op == "MaxPoolInt":
            ph, pw = a["padding"]
            node(
                "MaxPool",
                [ins[0]],
                [outs[0]],
                kernel_shape=list(a["kernel"]),
                strides=list(a["stride"]),
                pads=[ph, pw, ph, pw],
                dilations=list(a["dilation"]),
                ceil_mode=int(a["ceil_mode"]),
            )
        elif s.op == "QLinearMatMul":
            xa, wb = dq(ins[0:3]), dq(ins[3:6], 1)
            y_f = w.fresh(f"{outs[0]}_MatMul")
            node("MatMul", [xa, wb], [y_f])
            quant(y_f, ins[6], ins[7], outs[0])
        elif s.op == "QGemm":
            if not ins[7]:
                raise ValueError(
                    f"step {i} (QGemm with a float output) has no QDQ form pyfastopt.onnx.load "
                    "fuses back exactly"
                )
            xa = dq(ins[0:3])
            wb = dq(ins[3:6], 0 if a.get("transB") else 1)
            gin = [xa, wb] + ([bias_dq(ins[6], ins[1], ins[4])] if ins[6] else [])
            y_f = w.fresh(f"{outs[0]}_Gemm")
            node(
                "Gemm",
                gin,
                [y_f],
                alpha=float(a.get("alpha", 1.0)),
                transA=int(a.get("transA", 0)),
                transB=int(a.get("transB", 0)),
            )
            quant(y_f, ins[7], ins[8], outs[0])
        elif s.op == "QLinearConv":
            xa, wb = dq(ins[0:3]), dq(ins[3:6], 0)
            bias = ins[8] if len(ins) > 8 else ""
            gin = [xa, wb] + ([bias_dq(bias, ins[1], ins[4])] if bias else [])
            y_f = w.fresh(f"{outs[0]}_Conv")
            node("Conv", gin, [y_f], **_conv_attrs(a))
            quant(y_f, ins[6], ins[7], outs[0])
        elif s.op == "QLinearAdd":
            y_f = w.fresh(f"{outs[0]}_Add")
            node("Add", [dq(ins[0:3]), dq(ins[3:6])], [y_f])
            quant(y_f, ins[6], ins[7], outs[0])
        elif s.op == "QLinearGlobalAveragePool":
            if a.get("channels_last"):
                raise ValueError(
                    f"step {i}: channels_last QLinearGlobalAveragePool has no QDQ form"
                )
            y_f = w.fresh(f"{outs[0]}_GlobalAveragePool")
            node("GlobalAveragePool", [dq(ins[0:3])], [y_f])
            quant(y_f, ins[3], ins[4], outs[0])
        else:  # pragma: no cover - the step table and this writer agree
            raise ValueError(f"step {i} ({s.op}) cannot be written")
    out = ref(g.output_name)
    if out != g.output_name:
        w.nodes.append(h.make_node("Identity", [out], [g.output_name], name=w.fresh("output")))
    dims = ["batch", *g.input_shape] if g.input_shape is not None else None
    x_info = h.make_tensor_value_info(g.input_name, 1, dims)
    y_dims: list[Any] | None = None
    if g.input_shape is not None:  # the output's shape, from a forward pass
        y_shape = np.shape(g(np.zeros((1, *g.input_shape), np.float32)))
        y_dims = ["batch", *y_shape[1:]]
    y_info = h.make_tensor_value_info(g.output_name, 1, y_dims)
    graph = h.make_graph(w.nodes, "pyfastopt_int8", [x_info], [y_info], initializer=w.inits)
    opsets = [h.make_opsetid("", opset)]
    proto = h.make_model(graph, opset_imports=opsets, producer_name="pyfastopt")
    proto.ir_version = h.find_min_ir_version_for(opsets)
    try:
        onnx.checker.check_model(proto, full_check=y_dims is not None)
    except Exception as exc:  # pragma: no cover - a writer bug
        raise ValueError(f"the written model fails onnx.checker: {exc}") from None
    return proto
