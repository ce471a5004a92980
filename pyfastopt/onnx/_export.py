"""pyfastopt model -> ONNX ModelProto (see :func:`pyfastopt.onnx.save`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import nn
from .._conv import _conv_padding, _pool_args
from .._validate import integer
from ._graph import Clip, Graph, Reshape

_ONNX_TYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 11}  # TensorProto FLOAT/DOUBLE


def _layers_dtype(model: nn.Module) -> np.dtype:
    dtypes = set()
    for _, mod in model._walk():
        dt = getattr(mod, "dtype", None)
        if isinstance(dt, (type, np.dtype)):
            dtypes.add(np.dtype(dt))
    if len(dtypes) > 1:
        raise ValueError(f"the model mixes dtypes {sorted(str(d) for d in dtypes)}")
    dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
    if dtype not in _ONNX_TYPES:  # pragma: no cover - layers are float32/float64
        raise ValueError(f"dtype {dtype} cannot be written")
    return dtype


class _Writer:
    def __init__(self, onnx: Any, opset: int, dtype: np.dtype) -> None:
        self.onnx = onnx
        self.opset = opset
        self.dtype = dtype
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.names: set[str] = set()
        self._consts: dict[tuple, str] = {}

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def const(self, value: np.ndarray, base: str) -> str:
        from onnx import numpy_helper

        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def scalar(self, value: float) -> str:
        """A shared float constant of the model's dtype."""
        key = (float(value), self.dtype.str)
        if key not in self._consts:
            self._consts[key] = self.const(np.asarray(value, self.dtype), f"const_{value:g}")
        return self._consts[key]

    def node(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = self.fresh(f"{base}/{op}")
        self.nodes.append(
            self.onnx.helper.make_node(
                op, inputs, [out], name=self.fresh(f"{base}/{op}_node"), **attrs
            )
        )
        return out

    # -- layers -------------------------------------------------------------------------
    def gelu(self, x: str, base: str, approximate: str = "none") -> str:
        if self.opset >= 20:
            return self.node("Gelu", [x], base, approximate=approximate)
        if approximate != "none":
            raise ValueError(
                f"{base}: GELU(approximate='tanh') needs opset >= 20 (the Gelu operator); "
                f"got opset={self.opset}"
            )
        # x * (1 + erf(x / sqrt 2)) * 0.5, as exporters write it before opset 20
        t = self.node("Div", [x, self.scalar(math.sqrt(2.0))], base)
        t = self.node("Erf", [t], base)
        t = self.node("Add", [t, self.scalar(1.0)], base)
        t = self.node("Mul", [x, t], base)
        return self.node("Mul", [t, self.scalar(0.5)], base)

    def layer(
        self, mod: nn.Module, x: str, rank: int | None, prefix: str
    ) -> tuple[str, int | None]:
        """Emit ``mod`` reading ``x`` (of rank ``rank``, None when unknown)."""
        base = prefix.rstrip(".") or "model"
        layout = getattr(mod, "layout", "NCHW")
        if layout != "NCHW":
            raise ValueError(
                f"layer {base!r} ({type(mod).__name__}) has layout={layout!r}; ONNX "
                "models are NCHW: write a model built with layout='NCHW'"
            )
        if isinstance(mod, nn.Residual):  # body(x) + x
            y, _ = self.layer(nn.Sequential(*[c for _, c in mod._children()]), x, rank, prefix)
            return self.node("Add", [y, x], base), rank
        if isinstance(mod, nn.Sequential):
            for name, child in mod._children():
                x, rank = self.layer(child, x, rank, f"{prefix}{name}.")
            return x, rank
        if isinstance(mod, nn.Linear):
            b = None if mod.bias is None else self.const(mod.bias, f"{prefix}bias")
            if rank == 2:  # Gemm(x, W, b, transB=1)
                w = self.const(mod.weight, f"{prefix}weight")
                y = self.node("Gemm", [x, w] + ([b] if b else []), base, transB=1)
            else:  # any rank: MatMul(x, W.T) + b
                wt = self.const(np.ascontiguousarray(mod.weight.T), f"{prefix}weight")
                y = self.node("MatMul", [x, wt], base)
                if b:
                    y = self.node("Add", [y, b], base)
            if mod.activation == "relu":
                y = self.node("Relu", [y], base)
            elif mod.activation == "gelu":
                y = self.gelu(y, base)
            elif mod.activation == "gelu_tanh":
                y = self.gelu(y, base, "tanh")
            return y, rank
        if isinstance(mod, nn.Conv2d):
            return self.conv(mod, x, prefix, base), rank
        if isinstance(mod, nn.MaxPool2d):
            kh, kw, sh, sw, ph, pw, dh, dw = _pool_args(
                mod.kernel_size, mod.stride, mod.padding, mod.dilation
            )
            attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
            attrs["pads"] = [ph, pw, ph, pw]
            if (dh, dw) != (1, 1):
                attrs["dilations"] = [dh, dw]
            if mod.ceil_mode:
                attrs["ceil_mode"] = 1
            return self.node("MaxPool", [x], base, **attrs), rank
        if isinstance(mod, nn.AvgPool2d):
            if mod.divisor_override is not None:
                raise ValueError(
                    f"layer {base!r}: AvgPool2d(divisor_override=...) has no ONNX operator"
                )
            kh, kw, sh, sw, ph, pw, _, _ = _pool_args(mod.kernel_size, mod.stride, mod.padding, 1)
            attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [ph, pw, ph, pw]}
            if mod.ceil_mode:
                attrs["ceil_mode"] = 1
            if mod.count_include_pad and (ph or pw):
                attrs["count_include_pad"] = 1
            return self.node("AveragePool", [x], base, **attrs), rank
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            if mod.output_size not in (1, (1, 1), [1, 1]):
                raise ValueError(
                    f"layer {base!r}: AdaptiveAvgPool2d(output_size={mod.output_size!r}); "
                    "ONNX has global average pooling only (output_size=1)"
                )
            return self.node("GlobalAveragePool", [x], base), rank
        if isinstance(mod, Clip):
            lo = self.const(np.asarray(mod.lo, self.dtype), f"{prefix}min")
            hi = self.const(np.asarray(mod.hi, self.dtype), f"{prefix}max")
            return self.node("Clip", [x, lo, hi], base), rank
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if mod.running_mean is None or mod.running_var is None:
                raise ValueError(
                    f"layer {base!r}: a BatchNorm without running statistics "
                    "(track_running_stats=False) normalizes with batch statistics, which "
                    "ONNX inference does not"
                )
            c = mod.num_features
            dt = mod.dtype
            ins = [
                x,
                self.const(np.ones(c, dt) if mod.weight is None else mod.weight, f"{prefix}weight"),
                self.const(np.zeros(c, dt) if mod.bias is None else mod.bias, f"{prefix}bias"),
                self.const(mod.running_mean, f"{prefix}running_mean"),
                self.const(mod.running_var, f"{prefix}running_var"),
            ]
            return self.node("BatchNormalization", ins, base, epsilon=float(mod.eps)), rank
        if isinstance(mod, nn.ReLU):
            return self.node("Relu", [x], base), rank
        if isinstance(mod, nn.GELU):
            return self.gelu(x, base, mod.approximate), rank
        if isinstance(mod, nn.Sigmoid):
            return self.node("Sigmoid", [x], base), rank
        if isinstance(mod, nn.Tanh):
            return self.node("Tanh", [x], base), rank
        if isinstance(mod, (nn.Identity, nn.Dropout)):
            return x, rank  # inference: nothing to compute
        if isinstance(mod, nn.Flatten):
            return self.node("Flatten", [x], base, axis=1), 2
        if isinstance(mod, Reshape):
            shape = self.const(np.asarray(mod.shape, np.int64), f"{prefix}shape")
            return self.node("Reshape", [x, shape], base), len(mod.shape)
        if isinstance(mod, Graph):
            return self.graph(mod, x, prefix), None
        raise ValueError(
            f"layer {base!r} is a {type(mod).__name__}, which pyfastopt.onnx.save cannot write "
            "(supported: Sequential, Residual, Linear, Conv2d, MaxPool2d, AvgPool2d, "
            "AdaptiveAvgPool2d(1), BatchNorm1d/2d, ReLU, GELU, Sigmoid, Tanh, Clip, Identity, "
            "Dropout, Flatten, Reshape, Graph)"
        )

    def conv(self, mod: nn.Conv2d, x: str, prefix: str, base: str) -> str:
        kh, kw = mod.kernel_size
        t, b, left, r = _conv_padding(
            mod.padding,
            mod.weight,
            (mod.dilation[0], mod.dilation[1]),
            (mod.stride[0], mod.stride[1]),
        )
        ins = [x, self.const(mod.weight, f"{prefix}weight")]
        if mod.bias is not None:
            ins.append(self.const(mod.bias, f"{prefix}bias"))
        y = self.node(
            "Conv",
            ins,
            base,
            kernel_shape=[kh, kw],
            strides=list(mod.stride),
            pads=[t, left, b, r],
            dilations=list(mod.dilation),
            group=mod.groups,
        )
        if mod.activation == "relu":
            y = self.node("Relu", [y], base)
        elif mod.activation == "gelu":
            y = self.gelu(y, base)
        return y

    def graph(self, g: Graph, x: str, prefix: str) -> str:
        env = {g.input_name: x}
        layers = dict(g._children())
        index = {id(m): name for name, m in layers.items()}
        for step in g.steps:
            ins = []
            for name in step.inputs:
                if name not in env:  # a constant of the graph
                    env[name] = self.const(g.constants[name], f"{prefix}{name}")
                ins.append(env[name])
            if step.layer is not None:
                env[step.output], _ = self.layer(
                    step.layer, ins[0], None, f"{prefix}{index[id(step.layer)]}."
                )
            else:
                attrs = dict(step.attrs)
                if step.op == "Shape" and attrs.get("start", 0) == 0 and "end" not in attrs:
                    attrs.pop("start", None)
                if step.op == "Reshape" and not attrs.get("allowzero"):
                    attrs.pop("allowzero", None)
                env[step.output] = self.node(step.op, ins, f"{prefix}{step.op}", **attrs)
        return env[g.output_name]


def _sample_shape(model: nn.Module, input_shape: Any) -> tuple[int, ...]:
    if input_shape is None:
        first: Any = model
        while isinstance(first, nn.Sequential) and len(first) > 0:
            first = first[0]
        if isinstance(first, nn.Linear):
            return (first.in_features,)
        if isinstance(first, Graph) and first.input_shape is not None:
            return first.input_shape
        raise ValueError(
            f"the model starts with a {type(first).__name__}, so the input's shape is unknown: "
            "pass input_shape= (the shape of one sample, without the batch dimension)"
        )
    if isinstance(input_shape, (int, np.integer)):
        input_shape = (input_shape,)
    try:
        dims = tuple(integer("input_shape", d, lo=1) for d in input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    return dims


def to_onnx(model: Any, onnx: Any, opset: Any = 17, input_shape: Any = None) -> Any:
    if type(model).__name__ == "QuantizedModel":
        from ..quant import QuantizedModel

        if isinstance(model, QuantizedModel):
            return quantized_to_onnx(model, onnx, opset)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a pyfastopt.nn.Module, got {type(model).__name__}")
    opset = integer("opset", opset, lo=13)
    sample = _sample_shape(model, input_shape)
    dtype = _layers_dtype(model)
    w = _Writer(onnx, opset, dtype)
    h = onnx.helper
    elem = _ONNX_TYPES[dtype]
    x = w.fresh("input")
    x_info = h.make_tensor_value_info(x, elem, ["batch", *sample])
    y, _ = w.layer(model, x, 1 + len(sample), "")
    out = w.fresh("output")
    w.nodes.append(h.make_node("Identity", [y], [out], name=w.fresh("output_node")))
    y_info = h.make_tensor_value_info(out, elem, None)
    graph = h.make_graph(w.nodes, "pyfastopt", [x_info], [y_info], initializer=w.inits)
    opsets = [h.make_opsetid("", opset)]
    proto = h.make_model(graph, opset_imports=opsets, producer_name="pyfastopt")
    proto.ir_version = h.find_min_ir_version_for(opsets)
    # the output's shape, as ONNX's shape inference finds it (or from a forward pass)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        t = inferred.graph.output[0].type.tensor_type
        dims = (
            [d.dim_value or d.dim_param or None for d in t.shape.dim]
            if t.HasField("shape")
            else None
        )
    except Exception:  # pragma: no cover - inference gives up: use a forward pass
        dims = None
    if dims is None:
        import copy

        probe = copy.deepcopy(model).eval()
        y_shape = np.shape(probe(np.zeros((1, *sample), dtype)))
        dims = ["batch", *y_shape[1:]]
    if dims:
        dims[0] = "batch"
    proto.graph.output[0].CopyFrom(h.make_tensor_value_info(out, elem, dims))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # pragma: no cover - a writer bug
        raise ValueError(f"the written model fails onnx.checker: {exc}") from None
    return proto


# --------------------------------------------------------------------------- int8 (QDQ)
def quantized_to_onnx(qmodel: Any, onnx: Any, opset: Any = 17) -> Any:
    """A :class:`pyfastopt.quant.QuantizedModel` as a QDQ ONNX model.

    Per layer: the input is quantized to uint8 (``QuantizeLinear`` with the calibrated
    qparams in static mode; ``DynamicQuantizeLinear`` in dynamic mode) and dequantized,
    the int8 weight is dequantized (per output channel: ``axis=0``), then ``Gemm``
    (``transB=1``, float32 bias) and ``Relu`` -- the standard QDQ form, which ONNX Runtime
    fuses into its integer kernels.

    How close ONNX Runtime comes (tests/test_onnx_io.py): dynamic mode within 1e-6 of the
    output's scale at every optimization level. Static mode: within 1e-6 with
    ``ORT_ENABLE_BASIC``; with optimizations off (ONNX's float QDQ semantics) a hidden
    activation can land one level away where pyfastopt's integer requantization and the
    float division round a near-tie differently (about 1e-3 of the output's scale); at
    ORT's default level ORT fuses the layers into ``QGemm``, whose uint8 x int8 kernel on
    x86 CPUs without VNNI (AVX2: ``vpmaddubsw``) saturates int16 pair sums for 8-bit
    weights (the reason for ORT's ``reduce_range``), which cost up to 9% of the output's
    scale on the AVX2 test machine (with ``|w_q| <= 64`` it matched to 3e-7) --
    pyfastopt's own int8 GEMM is exact.
    """
    float32 = np.float32
    opset = integer("opset", opset, lo=13)
    h = onnx.helper
    w = _Writer(onnx, opset, np.dtype(float32))
    x = w.fresh("input")
    x_info = h.make_tensor_value_info(x, 1, ["batch", qmodel.in_features])
    cur = x
    for i, ql in enumerate(qmodel.layers):
        base = str(i)
        if qmodel.mode == "static":
            scale = w.const(np.asarray(ql.input_scale, float32), f"{i}.input_scale")
            zp = w.const(np.asarray(ql.input_zero_point, np.uint8), f"{i}.input_zero_point")
            q = w.node("QuantizeLinear", [cur, scale, zp], base)
        else:
            if ql.act_granularity != "tensor":
                raise ValueError(
                    f"layer {i}: dynamic activation quantization per row has no ONNX "
                    "operator (DynamicQuantizeLinear is per tensor)"
                )
            q = w.fresh(f"{base}/DynamicQuantizeLinear")
            scale, zp = w.fresh(f"{base}/x_scale"), w.fresh(f"{base}/x_zero_point")
            w.nodes.append(
                h.make_node(
                    "DynamicQuantizeLinear",
                    [cur],
                    [q, scale, zp],
                    name=w.fresh(f"{base}/DynamicQuantizeLinear_node"),
                )
            )
        xf = w.node("DequantizeLinear", [q, scale, zp], base)
        wq = w.const(ql.weight_q, f"{i}.weight_quantized")
        ws = ql.weight_scale.astype(float32)
        if ws.shape == (1,):
            wsn = w.const(ws.reshape(()), f"{i}.weight_scale")
            wzn = w.const(np.zeros((), np.int8), f"{i}.weight_zero_point")
            wf = w.node("DequantizeLinear", [wq, wsn, wzn], base)
        else:
            wsn = w.const(ws, f"{i}.weight_scale")
            wzn = w.const(np.zeros(ws.shape, np.int8), f"{i}.weight_zero_point")
            wf = w.node("DequantizeLinear", [wq, wsn, wzn], base, axis=0)
        ins = [xf, wf]
        if ql.bias is not None:
            ins.append(w.const(ql.bias.astype(float32), f"{i}.bias"))
        cur = w.node("Gemm", ins, base, transB=1)
        if ql.activation == "relu":
            cur = w.node("Relu", [cur], base)
    out = w.fresh("output")
    w.nodes.append(h.make_node("Identity", [cur], [out], name=w.fresh("output_node")))
    y_info = h.make_tensor_value_info(out, 1, ["batch", qmodel.out_features])
    graph = h.make_graph(w.nodes, "pyfastopt_int8", [x_info], [y_info], initializer=w.inits)
    opsets = [h.make_opsetid("", opset)]
    proto = h.make_model(graph, opset_imports=opsets, producer_name="pyfastopt")
    proto.ir_version = h.find_min_ir_version_for(opsets)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # pragma: no cover - a writer bug
        raise ValueError(f"the written model fails onnx.checker: {exc}") from None
    return proto
