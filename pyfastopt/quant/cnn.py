"""int8 conversion of convolutional models: the CNN path of :func:`quantize_model`.

A :mod:`pyfastopt.nn` model with ``Conv2d`` / pooling / ``Residual`` layers becomes a
:class:`QuantizedCNN`: a flat list of int8 nodes, each running one C++ kernel
(:func:`conv2d_int8`, the int8 pools, :class:`QuantizedLinear`).

Folding (float64, exact up to the final float32 rounding of the folded weights):

* ``BatchNorm2d`` directly after a ``Conv2d`` (no activation between):
  ``W' = W * g[:, None, None, None]``, ``b' = (b - mean) * g + beta`` with
  ``g = gamma / sqrt(running_var + eps)``; ``BatchNorm1d`` after ``Linear`` likewise.
* ``ReLU`` after a ``Conv2d`` / ``Linear`` (or its folded BatchNorm), and a Conv2d's own
  ``activation="relu"``, are fused into its output stage; a ``ReLU`` right after a
  ``Residual`` is fused into the add. ``Dropout`` is removed.
* ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` (``AdaptiveAvgPool2d(1)`` is the
  global average pool) and ``Flatten`` (both layouts) are kept as nodes.
* ``Residual(body)``: ``residual_begin`` (remembers x), the body's nodes, then
  ``residual_add``.

Modes:

* ``"static"``: calibration fixes uint8 qparams (:class:`MinMaxObserver`) of the model
  input and of every conv / linear / add output; activations stay uint8 from node to
  node: convs requantize in their output stage (:func:`conv2d_int8` with ``out_scale``),
  pools keep their input's qparams (max pool exact; average pools round half to even),
  and the last node emits float32. A residual add requantizes both branches to the
  add's calibrated output scale ``s`` and adds exactly in integers:
  ``y = sat(rint(f32(qa - za) * f32(sa / s)) + rint(f32(qb - zb) * f32(sb / s)) + z)``
  (``rint`` half to even; with a fused relu the lower bound is ``z``).
* ``"dynamic"``: each conv / linear quantizes its float input at run time from the
  input's own range (:func:`dynamic_quantize_linear`, uint8) and produces float32;
  pools, flatten and adds run in float32.

Weights: int8, symmetric, ``scale = max|w| / 127`` per output channel (or per tensor).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _conv, nn
from . import _format
from ._dynamic import dynamic_quantize_linear
from ._qconv import (
    _prepared,
    _stage,
    adaptive_avg_pool2d_int8,
    avg_pool2d_int8,
    max_pool2d_int8,
)
from ._quantize import quantize
from .linear import QuantizedLinear
from .observers import MinMaxObserver

QP = tuple[float, int] | None  # uint8 (scale, zero point), None: float32 tensor

CNN_LAYERS = (
    nn.Conv2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.BatchNorm2d,
    nn.Residual,
)


def is_cnn(model: Any) -> bool:
    """True when the model has a layer only the CNN path handles."""
    return any(isinstance(m, CNN_LAYERS) for _, m in model._walk())


def _qp(obs: MinMaxObserver) -> tuple[float, int]:
    s, z = obs.qparams(np.uint8, symmetric=False)
    return float(np.float32(s)), int(z)


def _dequant(x: np.ndarray, qp: QP) -> np.ndarray:
    if qp is None:
        return x.astype(np.float32, copy=False)
    return ((x.astype(np.float32) - np.float32(qp[1])) * np.float32(qp[0])).astype(np.float32)


def _flatten(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NHWC":
        if x.ndim != 4:
            raise ValueError(f"Flatten(layout='NHWC'): x must be (N, H, W, C), got {x.shape}")
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x).reshape(x.shape[0], math.prod(x.shape[1:]))


# ---- float (folded) nodes --------------------------------------------------------------


class _FConv:
    kind = "conv"

    def __init__(self, layer: Any, source: str) -> None:
        self.weight = np.asarray(layer.weight, np.float64).copy()
        co = self.weight.shape[0]
        self.bias = (
            np.zeros(co) if layer.bias is None else np.asarray(layer.bias, np.float64).copy()
        )
        a = layer._args()
        s = _conv._pair("stride", a["stride"], 1)
        d = _conv._pair("dilation", a["dilation"], 1)
        self.stride, self.dilation = s, d
        self.padding = _conv._conv_padding(a["padding"], self.weight, d, s)
        self.groups = int(a["groups"])
        self.layout = a["layout"]
        self.relu = layer.activation == "relu"
        self.source = [source]

    def args(self) -> dict[str, Any]:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "layout": self.layout,
        }

    def __call__(self, h: np.ndarray) -> np.ndarray:
        act = "relu" if self.relu else None
        return _conv.conv2d(h, self.weight, self.bias, activation=act, **self.args())


class _FLinear:
    kind = "linear"

    def __init__(self, layer: Any, source: str) -> None:
        self.weight = np.asarray(layer.weight, np.float64).copy()
        n = self.weight.shape[0]
        self.bias = np.zeros(n) if layer.bias is None else np.asarray(layer.bias, np.float64).copy()
        self.relu = getattr(layer, "activation", None) == "relu"
        self.source = [source]

    def __call__(self, h: np.ndarray) -> np.ndarray:
        if h.ndim != 2 or h.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"Linear with in_features {self.weight.shape[1]} got input of shape {h.shape}"
            )
        y = h @ self.weight.T + self.bias
        return np.maximum(y, 0.0) if self.relu else y


class _FSimple:
    """Pools, flatten and the residual markers: described by a JSON-able dict."""

    def __init__(self, spec: dict[str, Any], source: str = "") -> None:
        self.spec = spec
        self.kind = spec["type"]
        self.relu = bool(spec.get("relu", False))
        self.source = [source] if source else []

    def __call__(self, h: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        return _float_simple(self.spec, h, skip, self.relu)


def _float_simple(spec: dict[str, Any], h: np.ndarray, skip: Any, relu: bool) -> np.ndarray:
    t = spec["type"]
    if t == "maxpool":
        return _conv.max_pool2d(
            h, spec["kernel_size"], spec["stride"], spec["padding"], spec["dilation"],
            spec["ceil_mode"], spec["layout"],
        )  # fmt: skip
    if t == "avgpool":
        return _conv.avg_pool2d(
            h, spec["kernel_size"], spec["stride"], spec["padding"], spec["ceil_mode"],
            spec["count_include_pad"], spec["divisor_override"], spec["layout"],
        )  # fmt: skip
    if t == "adaptive_avgpool":
        return _conv.adaptive_avg_pool2d(h, tuple(spec["output_size"]), spec["layout"])
    if t == "flatten":
        return _flatten(h, spec["layout"])
    if t == "residual_begin":
        return h
    if t == "residual_add":
        if skip is None or skip.shape != h.shape:
            raise ValueError(
                f"Residual: the body's output has shape {h.shape}, x has "
                f"{None if skip is None else skip.shape}"
            )
        y = h + skip
        return np.maximum(y, 0) if relu else y
    raise AssertionError(t)


def _pool_spec(layer: Any) -> dict[str, Any]:
    if isinstance(layer, nn.MaxPool2d):
        a = _conv._pool_args(layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        return {
            "type": "maxpool",
            "kernel_size": [a[0], a[1]],
            "stride": [a[2], a[3]],
            "padding": [a[4], a[5]],
            "dilation": [a[6], a[7]],
            "ceil_mode": bool(layer.ceil_mode),
            "layout": layer.layout,
        }
    if isinstance(layer, nn.AvgPool2d):
        a = _conv._pool_args(layer.kernel_size, layer.stride, layer.padding, 1)
        div = layer.divisor_override
        return {
            "type": "avgpool",
            "kernel_size": [a[0], a[1]],
            "stride": [a[2], a[3]],
            "padding": [a[4], a[5]],
            "ceil_mode": bool(layer.ceil_mode),
            "count_include_pad": bool(layer.count_include_pad),
            "divisor_override": None if div is None else int(div),
            "layout": layer.layout,
        }
    os_ = layer.output_size
    pair = list(os_) if isinstance(os_, (list, tuple)) else [os_, os_]
    if any(p is None for p in pair):
        raise ValueError("AdaptiveAvgPool2d with a None output size has no int8 conversion")
    return {
        "type": "adaptive_avgpool",
        "output_size": [int(p) for p in pair],
        "layout": layer.layout,
    }


def fold(model: Any) -> list[Any]:
    """The float nodes of ``model``: BatchNorm folded, ReLU fused (module docstring)."""
    for _, mod in model._walk():  # pruned weights: exactly zero (pyfastopt.prune)
        mod._apply_masks()
    nodes: list[Any] = []
    _fold_into(model, nodes, [0], "")
    if not any(n.kind in ("conv", "linear") for n in nodes):
        raise ValueError("model has no Conv2d or Linear layer to quantize")
    return nodes


def _fold_into(layer: Any, nodes: list[Any], counter: list[int], prefix: str) -> None:
    if isinstance(layer, nn.Residual):
        i = counter[0]
        counter[0] += 1
        nodes.append(_FSimple({"type": "residual_begin"}, f"{i}:Residual"))
        depth = len(nodes)
        for sub in layer:
            _fold_into(sub, nodes, counter, prefix)
        if len(nodes) == depth:
            raise ValueError(f"layer {i} (Residual) has an empty body")
        nodes.append(_FSimple({"type": "residual_add", "relu": False}, f"{i}:Residual"))
        return
    if isinstance(layer, nn.Sequential):
        for sub in layer:
            _fold_into(sub, nodes, counter, prefix)
        return
    i = counter[0]
    counter[0] += 1
    kind = type(layer).__name__
    where = f"layer {i} ({kind})"
    last = nodes[-1] if nodes else None
    # "open": the last node is a conv/linear with nothing applied after it yet
    open_ = last is not None and last.kind in ("conv", "linear") and not last.relu
    if isinstance(layer, nn.Conv2d):
        if layer.activation not in (None, "relu"):
            raise ValueError(f"{where}: activation {layer.activation!r} has no int8 kernel")
        nodes.append(_FConv(layer, f"{i}:{kind}"))
    elif isinstance(layer, nn.Linear):
        act = getattr(layer, "activation", None)
        if act not in (None, "relu"):
            raise ValueError(
                f"{where}: activation {act!r} has no int8 kernel (only None and 'relu')"
            )
        nodes.append(_FLinear(layer, f"{i}:{kind}"))
    elif isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm1d)):
        want = "conv" if isinstance(layer, nn.BatchNorm2d) else "linear"
        if not (open_ and last is not None and last.kind == want):
            raise ValueError(
                f"{where}: only a {kind} directly after a "
                f"{'Conv2d' if want == 'conv' else 'Linear'} (no activation between) can be "
                "folded for int8"
            )
        if layer.num_features != last.weight.shape[0]:
            raise ValueError(
                f"{where}: num_features {layer.num_features} does not match the "
                f"{want}'s {last.weight.shape[0]} output channels"
            )
        var = np.asarray(layer.running_var, np.float64)
        mean = np.asarray(layer.running_mean, np.float64)
        gamma = np.ones_like(var) if layer.weight is None else np.asarray(layer.weight, np.float64)
        beta = np.zeros_like(var) if layer.bias is None else np.asarray(layer.bias, np.float64)
        g = gamma / np.sqrt(var + float(layer.eps))
        last.weight *= g.reshape((-1,) + (1,) * (last.weight.ndim - 1))
        last.bias = (last.bias - mean) * g + beta
        last.source.append(f"{i}:{kind}")
    elif isinstance(layer, nn.ReLU):
        if last is None or last.kind not in ("conv", "linear", "residual_add"):
            raise ValueError(
                f"{where}: a ReLU is supported only after a Conv2d, Linear or Residual for int8"
            )
        if last.kind == "residual_add":
            last.relu = True
            last.spec["relu"] = True
        else:
            last.relu = True
        last.source.append(f"{i}:{kind}")
    elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        nodes.append(_FSimple(_pool_spec(layer), f"{i}:{kind}"))
    elif isinstance(layer, nn.Flatten):
        nodes.append(_FSimple({"type": "flatten", "layout": layer.layout}, f"{i}:{kind}"))
    elif isinstance(layer, (nn.Dropout, nn.Identity)):
        pass
    else:
        raise ValueError(
            f"{where} cannot be quantized (supported: Conv2d, Linear, BatchNorm2d/1d after "
            "them, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Residual, Dropout)"
        )


def run_float(nodes: list[Any], x: np.ndarray, record: Any = None) -> np.ndarray:
    """The folded float model (float64); record(i, inputs, output) per node."""
    h = x.astype(np.float64)
    stack: list[np.ndarray] = []
    for i, node in enumerate(nodes):
        if node.kind == "residual_begin":
            stack.append(h)
            inputs: tuple = (h,)
        elif node.kind == "residual_add":
            skip = stack.pop()
            inputs = (h, skip)
            h = node(h, skip)
            if record:
                record(i, inputs, h)
            continue
        else:
            inputs = (h,)
            h = node(h)
        if record:
            record(i, inputs, h)
    return h


# ---- int8 nodes ------------------------------------------------------------------------


class QConvNode:
    """An int8 convolution (weights int8 per output channel, bias float32)."""

    kind = "conv"

    def __init__(
        self,
        weight_q: np.ndarray,
        weight_scale: np.ndarray,
        bias: np.ndarray | None,
        stride: tuple[int, int],
        padding: tuple[int, int, int, int],
        dilation: tuple[int, int],
        groups: int,
        layout: str,
        relu: bool,
        output_qparams: QP = None,
        source: list[str] | None = None,
    ) -> None:
        self.weight_q = np.ascontiguousarray(weight_q, np.int8)
        self.weight_scale = np.ascontiguousarray(weight_scale, np.float32)
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.groups, self.layout, self.relu = int(groups), layout, bool(relu)
        self.output_qparams = output_qparams
        self.source = source or []
        self._conv = _prepared(self.weight_q, self.groups)
        self._geom = (*self.stride, *self.padding, *self.dilation)
        self._stages: dict[Any, tuple[Any, ...]] = {}

    @classmethod
    def from_float(cls, f: _FConv, per_channel: bool, out_qp: QP) -> QConvNode:
        w = f.weight.astype(np.float32)
        if not np.isfinite(w).all():
            raise ValueError(f"{f.source[0]}: folded weight is not finite")
        co = w.shape[0]
        a = np.abs(w).reshape(co, -1)
        absmax = a.max(axis=1, initial=0) if per_channel else np.full(co, a.max(initial=0))
        scale = (absmax.astype(np.float32) / np.float32(127)).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
        return cls(
            q, scale, f.bias.astype(np.float32), f.stride, f.padding, f.dilation, f.groups,
            f.layout, f.relu, out_qp, list(f.source),
        )  # fmt: skip

    def run(self, x: np.ndarray, qp: QP) -> tuple[np.ndarray, QP]:
        if qp is None:
            xq, s, z = dynamic_quantize_linear(np.ascontiguousarray(x, np.float32))
            qp_in: tuple[float, int] = (float(s), int(z))
        else:
            xq, qp_in = x, qp
        oq = self.output_qparams
        stage = self._stages.get(qp_in)
        if stage is None:  # the output stage's constants, once per input qparams
            stage = _stage(
                self.weight_q.shape[0], self.bias, qp_in[0], self.weight_scale,
                None if oq is None else oq[0], None if oq is None else oq[1],
                None if oq is None else np.uint8, self.relu,
            )  # fmt: skip
            if len(self._stages) < 4:  # static mode: one entry; dynamic: do not grow
                self._stages[qp_in] = stage
        y = self._conv(xq, qp_in[1], 0, *self._geom, self.layout == "NHWC", *stage)
        return y, oq


class QLinearNode:
    kind = "linear"

    def __init__(self, ql: QuantizedLinear, source: list[str] | None = None) -> None:
        self.ql = ql
        self.source = source or []

    @property
    def output_qparams(self) -> QP:
        if self.ql.output_scale is None or self.ql.output_zero_point is None:
            return None
        return (self.ql.output_scale, self.ql.output_zero_point)

    def run(self, x: np.ndarray, qp: QP) -> tuple[np.ndarray, QP]:
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)
        if qp is not None and self.ql.mode != "static":
            x, qp = _dequant(x, qp), None
        return self.ql(x), self.output_qparams


class QSimpleNode:
    """Pools, flatten and the residual markers (spec: the JSON description)."""

    def __init__(self, spec: dict[str, Any], source: list[str] | None = None) -> None:
        self.spec = dict(spec)
        self.kind = spec["type"]
        self.source = source or []
        oq = spec.get("output_qparams")
        self.output_qparams: QP = None if oq is None else (float(oq[0]), int(oq[1]))

    def run(
        self, x: np.ndarray, qp: QP, skip: tuple[np.ndarray, QP] | None = None
    ) -> tuple[np.ndarray, QP]:
        s, t = self.spec, self.kind
        if t in ("residual_begin",):
            return x, qp
        if t == "residual_add":
            assert skip is not None
            return self._add(x, qp, skip[0], skip[1])
        if t == "flatten":
            return _flatten(x, s["layout"]), qp
        if qp is None:  # float32 (dynamic mode)
            return _float_simple(s, x.astype(np.float32, copy=False), None, False).astype(
                np.float32
            ), None
        if t == "maxpool":
            y = max_pool2d_int8(
                x,
                s["kernel_size"],
                s["stride"],
                s["padding"],
                s["dilation"],
                s["ceil_mode"],
                s["layout"],
            )
        elif t == "avgpool":
            y = avg_pool2d_int8(
                x, qp[1], s["kernel_size"], s["stride"], s["padding"], s["ceil_mode"],
                s["count_include_pad"], s["divisor_override"], s["layout"],
            )  # fmt: skip
        else:
            y = adaptive_avg_pool2d_int8(x, qp[1], tuple(s["output_size"]), s["layout"])
        return y, qp

    def _add(self, a: np.ndarray, qa: QP, b: np.ndarray, qb: QP) -> tuple[np.ndarray, QP]:
        if a.shape != b.shape:
            raise ValueError(f"Residual: the body's output has shape {a.shape}, x has {b.shape}")
        relu = bool(self.spec.get("relu"))
        oq = self.output_qparams
        if qa is None or qb is None or oq is None:  # float add
            y = _dequant(a, qa) + _dequant(b, qb)
            if relu:
                y = np.maximum(y, np.float32(0))
            if oq is None:
                return y.astype(np.float32), None
            return quantize(y, oq[0], oq[1], dtype=np.uint8), oq
        s = np.float32(oq[0])
        ra = np.rint((a.astype(np.float32) - np.float32(qa[1])) * (np.float32(qa[0]) / s))
        rb = np.rint((b.astype(np.float32) - np.float32(qb[1])) * (np.float32(qb[0]) / s))
        y = ra.astype(np.int32) + rb.astype(np.int32) + oq[1]
        return np.clip(y, oq[1] if relu else 0, 255).astype(np.uint8), oq


def build(
    folded: list[Any], mode: str, per_channel: bool, qps: dict[int, tuple[float, int]] | None
) -> tuple[list[Any], QP]:
    """int8 nodes from float ones; ``qps`` (static mode): node index -> calibrated output
    qparams, and -1 -> the model input's."""
    static = mode == "static"
    nodes: list[Any] = []
    last_value = max(i for i, f in enumerate(folded) if f.kind not in ("flatten",))
    cur: QP = qps[-1] if static and qps else None
    stack: list[QP] = []
    for i, f in enumerate(folded):
        out_qp = qps[i] if (static and qps and i != last_value and i in qps) else None
        if f.kind == "conv":
            nodes.append(QConvNode.from_float(f, per_channel, out_qp))
            cur = out_qp
        elif f.kind == "linear":
            ql = QuantizedLinear.from_float(
                f.weight.astype(np.float32), f.bias.astype(np.float32),
                per_channel=per_channel, activation="relu" if f.relu else None,
            )  # fmt: skip
            if static and cur is not None:
                ql.set_input_qparams(*cur)
                if out_qp is not None:
                    ql.set_output_qparams(*out_qp)
            nodes.append(QLinearNode(ql, list(f.source)))
            cur = out_qp if static and cur is not None else None
        else:
            spec = dict(f.spec)
            if f.kind == "residual_begin":
                stack.append(cur)
            elif f.kind == "residual_add":
                skip_qp = stack.pop()
                spec["output_qparams"] = None if out_qp is None or skip_qp is None else list(out_qp)
                cur = out_qp if spec["output_qparams"] is not None else None
            nodes.append(QSimpleNode(spec, list(f.source)))
    return nodes, (qps[-1] if static and qps else None)


def _make_plan(nodes: list[Any], t: tuple[np.ndarray, QP]) -> tuple[Any, int, QP] | None:
    """The run plan of the static uint8 channels-last prefix of ``nodes`` for inputs of
    ``t``'s sample shape: ``(plan, number of nodes it covers, its output qparams)``, or
    None when the first node cannot be planned.

    The nodes run once on ``t`` through the per-node path (:meth:`QConvNode.run`, ...),
    and every shape and output-stage constant of the plan is taken from that run: the
    plan computes the same operations on the same values, so the same bits
    (``tests/test_quant_cnn.py`` compares the two paths). Convolutions with a uint8
    output, pools and residual adds (uint8, all qparams known) are planned; the plan
    stops before the first other node (flatten, linear, float steps) and never inside a
    residual block it cannot finish."""
    from .. import _core

    x, qp = t
    if qp is None or x.dtype != np.uint8 or x.ndim != 4 or not x.flags.c_contiguous:
        return None
    ops: list[tuple[str, tuple[Any, ...]]] = []
    stack: list[tuple[np.ndarray, QP]] = []
    best: tuple[int, int, QP] = (0, 0, qp)  # (nodes covered, ops, output qparams)
    for i, node in enumerate(nodes):
        kind = node.kind
        _, h, w, c = x.shape
        if kind == "conv":
            oq = node.output_qparams
            if node.layout != "NHWC" or oq is None or qp is None:
                break
            y, oq = node.run(x, qp)
            stage = node._stages.get(qp)
            if stage is None or stage[0] != "u8" or y.dtype != np.uint8:
                break
            sh, sw, pt, _pb, pl, _pr, dh, dw = node._geom
            ops.append((
                "add_conv",
                (node.weight_q, node.groups, h, w, c, y.shape[1], y.shape[2], sh, sw, pt, pl,
                 dh, dw, int(qp[1]), 0, stage[1], stage[3], bool(stage[4]), int(stage[5])),
            ))  # fmt: skip
        elif kind in ("maxpool", "avgpool", "adaptive_avgpool"):
            sp = node.spec
            if sp["layout"] != "NHWC" or qp is None:
                break
            y, oq = node.run(x, qp)
            if kind == "maxpool":
                a = _conv._pool_args(sp["kernel_size"], sp["stride"], sp["padding"], sp["dilation"])
                pargs: tuple[Any, ...] = (0, *a, False, 0, 0)
            elif kind == "avgpool":
                a, _cm, cip, div = _conv._avg_args(
                    sp["kernel_size"], sp["stride"], sp["padding"], sp["ceil_mode"],
                    sp["count_include_pad"], sp["divisor_override"],
                )  # fmt: skip
                pargs = (1, *a, cip, div, int(qp[1]))
            else:
                pargs = (2, 1, 1, 1, 1, 0, 0, 1, 1, False, 0, int(qp[1]))
            k, *rest = pargs
            ops.append(("add_pool", (k, h, w, c, y.shape[1], y.shape[2], *rest)))
        elif kind == "residual_begin":
            stack.append((x, qp))
            ops.append(("add_push", ()))
            y, oq = x, qp
        elif kind == "residual_add":
            if not stack:
                break
            b, qb = stack.pop()
            oq = node.output_qparams
            if oq is None or qb is None or b.shape != x.shape or b.dtype != np.uint8:
                break
            y, oq = node.run(x, qp, (b, qb))
            so = np.float32(oq[0])
            ma, mb = np.float32(qp[0]) / so, np.float32(qb[0]) / so
            ops.append((
                "add_residual",
                (int(qp[1]), float(ma), int(qb[1]), float(mb), int(oq[1]),
                 bool(node.spec.get("relu"))),
            ))  # fmt: skip
        else:
            break
        if y.dtype != np.uint8 or y.ndim != 4 or not y.flags.c_contiguous:
            break
        x, qp = y, oq
        if not stack:
            best = (i + 1, len(ops), qp)
    n_nodes, n_ops, out_qp = best
    if n_nodes == 0:
        return None
    plan = _core.conv.QCNNPlan(*t[0].shape[1:])
    for name, args in ops[:n_ops]:
        getattr(plan, name)(*args)
    return plan, n_nodes, out_qp


def run_int8(
    nodes: list[Any], x: np.ndarray, input_qparams: QP, plans: dict[Any, Any] | None = None
) -> np.ndarray:
    """The int8 model on float input x; float32 output. ``plans`` (a dict kept by the
    model): run plans by input sample shape (:func:`_make_plan`), made on first use."""
    if input_qparams is not None:
        t: tuple[np.ndarray, QP] = (
            quantize(x, input_qparams[0], input_qparams[1], dtype=np.uint8),
            input_qparams,
        )
    else:
        t = (np.ascontiguousarray(x, np.float32), None)
    start = 0
    if plans is not None and t[1] is not None and t[0].ndim == 4:
        key = t[0].shape[1:]
        if key not in plans:
            plans[key] = _make_plan(nodes, t)
        entry = plans[key]
        if entry is not None:
            plan, start, qp = entry
            t = (plan.run(t[0]), qp)
    return _run_nodes(nodes[start:], t)


def _run_nodes(nodes: list[Any], t: tuple[np.ndarray, QP]) -> np.ndarray:
    """The per-node path: each node's ``run`` in order (residual blocks on a stack)."""
    stack: list[tuple[np.ndarray, QP]] = []
    for node in nodes:
        if node.kind == "residual_begin":
            stack.append(t)
            continue
        t = node.run(t[0], t[1], stack.pop()) if node.kind == "residual_add" else node.run(*t)
    return _dequant(*t)


def calibrate(folded: list[Any], batches: list[np.ndarray]) -> dict[int, tuple[float, int]]:
    obs = {
        i: MinMaxObserver()
        for i, f in enumerate(folded)
        if f.kind in ("conv", "linear", "residual_add")
    }
    obs[-1] = MinMaxObserver()

    def record(i: int, inputs: tuple, y: np.ndarray) -> None:
        if i in obs:
            obs[i].observe(y)

    for x in batches:
        obs[-1].observe(x.astype(np.float64))
        run_float(folded, x, record)
    return {i: _qp(o) for i, o in obs.items()}


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(got, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def report(
    folded: list[Any], nodes: list[Any], input_qparams: QP, batches: list[np.ndarray]
) -> list[dict[str, Any]]:
    """Per conv / linear / add node: SNR of the int8 node against the float node on the
    same float input(s) (quantized with the node's input qparams in static mode); then
    end to end."""
    qp_in = _input_qparams(nodes, input_qparams)
    refs: dict[int, list] = {}
    gots: dict[int, list] = {}
    ends_ref, ends_got = [], []

    def record(i: int, inputs: tuple, y: np.ndarray) -> None:
        node = nodes[i]
        if node.kind not in ("conv", "linear", "residual_add"):
            return
        qin = qp_in[i]
        ts = [_from_float(h, q) for h, q in zip(inputs, qin)]
        if node.kind == "residual_add":
            out = node.run(ts[0][0], ts[0][1], ts[1])
        else:
            out = node.run(*ts[0])
        refs.setdefault(i, []).append(y)
        gots.setdefault(i, []).append(_dequant(*out))

    for x in batches:
        ends_ref.append(run_float(folded, x, record))
        ends_got.append(run_int8(nodes, x, input_qparams))
    rows = []
    for i in sorted(refs):
        f = folded[i]
        shape = tuple(f.weight.shape) if f.kind in ("conv", "linear") else None
        rows.append(
            {
                "layer": i,
                "source": "+".join(s.split(":", 1)[1] for s in f.source),
                "shape": shape,
                "snr_db": snr_db(np.concatenate(refs[i]), np.concatenate(gots[i])),
            }
        )
    rows.append(
        {
            "layer": "end to end",
            "source": "model",
            "shape": None,
            "snr_db": snr_db(np.concatenate(ends_ref), np.concatenate(ends_got)),
        }
    )
    return rows


def _from_float(h: np.ndarray, qp: QP) -> tuple[np.ndarray, QP]:
    if qp is None:
        return h.astype(np.float32), None
    return quantize(h, qp[0], qp[1], dtype=np.uint8), qp


def _input_qparams(nodes: list[Any], input_qparams: QP) -> list[list[QP]]:
    """Per node, the qparams of its input(s) (body, then skip for an add)."""
    cur = input_qparams
    stack: list[QP] = []
    out: list[list[QP]] = []
    for node in nodes:
        if node.kind == "residual_begin":
            stack.append(cur)
            out.append([cur])
        elif node.kind == "residual_add":
            out.append([cur, stack.pop()])
            cur = node.output_qparams
        elif node.kind in ("conv", "linear"):
            out.append([cur if (node.kind == "conv" or node.ql.mode == "static") else None])
            cur = node.output_qparams
        else:
            out.append([cur])
    return out


# ---- the model -------------------------------------------------------------------------


class QuantizedCNN:
    """An int8 convolutional model from :func:`quantize_model` or :func:`load`.

    ``model(x)``: float32/float64 ``(batch, *sample_shape)`` (4-D for a model that starts
    with a convolution, in its layout) -> float32 output. ``predict(x)``: argmax class.
    ``report``: the per-node SNR rows when calibration data was given. ``save(path)``:
    the versioned model file (format version 2) read back by :func:`load`.
    """

    def __init__(
        self, nodes: list[Any], mode: str, per_channel: bool, input_qparams: QP = None
    ) -> None:
        self.nodes = list(nodes)
        self.mode = mode
        self.per_channel = bool(per_channel)
        self.input_qparams = input_qparams
        self.report: list[dict[str, Any]] | None = None
        self._plans: dict[Any, Any] = {}  # run plans by input sample shape (run_int8)

    @property
    def layers(self) -> list[Any]:
        return self.nodes

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"x must be float32 or float64, got {x.dtype}")
        first = next(n for n in self.nodes if n.kind in ("conv", "linear"))
        if first.kind == "conv" and x.ndim != 4:
            raise ValueError(
                f"x must be 4-D ({first.layout}) for this convolutional model, got shape {x.shape}"
            )
        return run_int8(self.nodes, x, self.input_qparams, self._plans)

    def predict(self, x: Any) -> np.ndarray:
        """Class indices ``argmax(model(x), axis=1)``."""
        return np.argmax(self(x), axis=1)

    @property
    def num_parameters(self) -> int:
        total = 0
        for n in self.nodes:
            if n.kind == "conv":
                total += n.weight_q.size + (0 if n.bias is None else n.bias.size)
            elif n.kind == "linear":
                total += n.ql.weight_q.size + n.ql.out_features
        return total

    def format_report(self) -> str:
        if not self.report:
            return "(no report: quantize_model was given no calibration data)"
        lines = [f"{'layer':>10}  {'source':<28} {'shape':<14} {'SNR dB':>8}"]
        for r in self.report:
            shape = "" if r["shape"] is None else "x".join(map(str, r["shape"]))
            lines.append(f"{r['layer']!s:>10}  {r['source']:<28} {shape:<14} {r['snr_db']:8.1f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        kinds = "-".join(n.kind for n in self.nodes)
        return f"QuantizedCNN({kinds}, mode={self.mode!r}, per_channel={self.per_channel})"

    def save(self, path: Any) -> int:
        """Write the model to ``path`` (format version 2, kind ``"graph"``; atomic, no
        pickle); :func:`pyfastopt.quant.load` gives back a model with bitwise identical
        outputs. Returns the bytes written."""
        model, arrays = self.describe()
        return _format.write(path, model, arrays)

    def describe(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The model description and arrays of the model file (format version 2)."""
        arrays: dict[str, np.ndarray] = {}
        out = []
        for i, n in enumerate(self.nodes):
            if n.kind == "conv":
                arrays[f"node{i}_weight_q"] = n.weight_q
                arrays[f"node{i}_weight_scale"] = n.weight_scale
                if n.bias is not None:
                    arrays[f"node{i}_bias"] = n.bias
                out.append(
                    {
                        "type": "conv",
                        "weight_q": f"node{i}_weight_q",
                        "weight_scale": f"node{i}_weight_scale",
                        "bias": f"node{i}_bias" if n.bias is not None else None,
                        "stride": list(n.stride),
                        "padding": list(n.padding),
                        "dilation": list(n.dilation),
                        "groups": n.groups,
                        "layout": n.layout,
                        "relu": n.relu,
                        "output_qparams": _qp_list(n.output_qparams),
                        "source": n.source,
                    }
                )
            elif n.kind == "linear":
                ql = n.ql
                arrays[f"node{i}_weight_q"] = ql.weight_q
                arrays[f"node{i}_weight_scale"] = np.atleast_1d(ql.weight_scale).astype(np.float32)
                if ql.bias is not None:
                    arrays[f"node{i}_bias"] = ql.bias
                out.append(
                    {
                        "type": "linear",
                        "in_features": int(ql.in_features),
                        "out_features": int(ql.out_features),
                        "activation": ql.activation,
                        "weight_q": f"node{i}_weight_q",
                        "weight_scale": f"node{i}_weight_scale",
                        "bias": f"node{i}_bias" if ql.bias is not None else None,
                        "act_granularity": ql.act_granularity,
                        "input_qparams": _qp_list(
                            None
                            if ql.input_scale is None
                            else (ql.input_scale, ql.input_zero_point)
                        ),
                        "output_qparams": _qp_list(n.output_qparams),
                        "source": n.source,
                    }
                )
            else:
                spec = dict(n.spec)
                spec["source"] = n.source
                out.append(spec)
        model = {
            "kind": "graph",
            "mode": self.mode,
            "per_channel": self.per_channel,
            "input_qparams": _qp_list(self.input_qparams),
            "nodes": out,
        }
        return model, arrays


def _qp_list(qp: Any) -> list | None:
    return None if qp is None else [float(qp[0]), int(qp[1])]


# ---- model file (format version 2, kind "graph") ----------------------------------------

_LAYOUTS = ("NCHW", "NHWC")
_NODE_KEYS = {
    "conv": {"type", "weight_q", "weight_scale", "bias", "stride", "padding", "dilation",
             "groups", "layout", "relu", "output_qparams", "source"},
    "linear": {"type", "in_features", "out_features", "activation", "weight_q", "weight_scale",
               "bias", "act_granularity", "input_qparams", "output_qparams", "source"},
    "maxpool": {"type", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "layout",
                "source"},
    "avgpool": {"type", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                "divisor_override", "layout", "source"},
    "adaptive_avgpool": {"type", "output_size", "layout", "source"},
    "flatten": {"type", "layout", "source"},
    "residual_begin": {"type", "source"},
    "residual_add": {"type", "relu", "output_qparams", "source"},
}  # fmt: skip


def _is_int(v: Any, lo: int, hi: int = 2**31 - 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _ints(v: Any, n: int, lo: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(_is_int(e, lo) for e in v)


def _check_qp(v: Any) -> bool:
    return v is None or (
        isinstance(v, list)
        and len(v) == 2
        and isinstance(v[0], (int, float))
        and not isinstance(v[0], bool)
        and math.isfinite(v[0])
        and v[0] > 0
        and float(np.float32(v[0])) > 0
        and _is_int(v[1], 0, 255)
    )


def _qp_of(v: Any) -> QP:
    return None if v is None else (float(np.float32(v[0])), int(v[1]))


def load_graph(model: Any, arrays: dict[str, np.ndarray], bad: Any) -> QuantizedCNN:
    """A :class:`QuantizedCNN` from a version-2 ``graph`` description; ``bad(why)`` makes
    the ValueError for anything inconsistent."""
    if not isinstance(model, dict) or set(model) != {
        "kind",
        "mode",
        "per_channel",
        "input_qparams",
        "nodes",
    }:
        raise bad("graph model: wrong keys")
    mode = model["mode"]
    if mode not in ("dynamic", "static") or not isinstance(model["per_channel"], bool):
        raise bad("graph model: bad mode or per_channel")
    if not _check_qp(model["input_qparams"]):
        raise bad("graph model: bad input_qparams")
    input_qp = _qp_of(model["input_qparams"])
    if (mode == "static") != (input_qp is not None):
        raise bad("graph model: static models (only) have input_qparams")
    specs = model["nodes"]
    if not isinstance(specs, list) or not 1 <= len(specs) <= 4096:
        raise bad("graph model: nodes must be a list of 1 to 4096 entries")
    used: set[str] = set()
    nodes: list[Any] = []
    depth = 0
    for i, spec in enumerate(specs):
        where = f"node {i}"
        if not isinstance(spec, dict) or spec.get("type") not in _NODE_KEYS:
            raise bad(f"{where}: unknown node type")
        t = spec["type"]
        if set(spec) != _NODE_KEYS[t]:
            raise bad(f"{where} ({t}): keys {sorted(spec)} != {sorted(_NODE_KEYS[t])}")
        src = spec["source"]
        if not (
            isinstance(src, list)
            and len(src) <= 256
            and all(isinstance(x, str) and len(x) <= 256 for x in src)
        ):
            raise bad(f"{where}: bad source")

        def get(
            key: str, dtype: str, shapes: Any, where: str = where, spec: dict = spec
        ) -> np.ndarray:
            name = spec[key]
            if not isinstance(name, str) or name not in arrays:
                raise bad(f"{where}: array {key} ({name!r}) missing")
            arr = arrays[name]
            if arr.dtype != np.dtype(dtype) or not shapes(arr.shape):
                raise bad(f"{where}: {key} is {arr.dtype}{arr.shape}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise bad(f"{where}: {key} is not finite")
            used.add(name)
            return arr

        if "layout" in spec and spec["layout"] not in _LAYOUTS:
            raise bad(f"{where}: bad layout {spec['layout']!r}")
        if "output_qparams" in spec and not _check_qp(spec["output_qparams"]):
            raise bad(f"{where}: bad output_qparams")
        if t == "conv":
            wq = get("weight_q", "int8", lambda s: len(s) == 4 and min(s) > 0)
            co = wq.shape[0]
            ws = get("weight_scale", "float32", lambda s, co=co: s == (co,))
            if not np.all(ws > 0):
                raise bad(f"{where}: weight scales must be > 0")
            bias = (
                None
                if spec["bias"] is None
                else get("bias", "float32", lambda s, co=co: s == (co,))
            )
            if not (
                _ints(spec["stride"], 2, 1) and _ints(spec["padding"], 4, 0)
                and _ints(spec["dilation"], 2, 1) and _is_int(spec["groups"], 1)
                and isinstance(spec["relu"], bool)
            ):  # fmt: skip
                raise bad(f"{where}: bad conv geometry")
            if co % spec["groups"]:
                raise bad(f"{where}: out_channels {co} not divisible by groups {spec['groups']}")
            nodes.append(
                QConvNode(
                    wq,
                    ws,
                    bias,
                    tuple(spec["stride"]),
                    tuple(spec["padding"]),
                    tuple(spec["dilation"]),
                    spec["groups"],
                    spec["layout"],
                    spec["relu"],
                    _qp_of(spec["output_qparams"]),
                    list(src),
                )
            )
        elif t == "linear":
            k, n = spec["in_features"], spec["out_features"]
            if not (_is_int(k, 1) and _is_int(n, 1)):
                raise bad(f"{where}: bad in/out features")
            if spec["activation"] not in (None, "relu") or spec["act_granularity"] not in (
                "tensor",
                "row",
            ):
                raise bad(f"{where}: bad activation or act_granularity")
            if not _check_qp(spec["input_qparams"]):
                raise bad(f"{where}: bad input_qparams")
            wq = get("weight_q", "int8", lambda s, n=n, k=k: s == (n, k))
            ws = get("weight_scale", "float32", lambda s, n=n: s in ((n,), (1,)))
            if not np.all(ws > 0):
                raise bad(f"{where}: weight scales must be > 0")
            bias = (
                None if spec["bias"] is None else get("bias", "float32", lambda s, n=n: s == (n,))
            )
            ql = QuantizedLinear(
                wq, ws, bias, activation=spec["activation"], act_granularity=spec["act_granularity"]
            )
            qin, qout = _qp_of(spec["input_qparams"]), _qp_of(spec["output_qparams"])
            if qin is not None:
                ql.set_input_qparams(*qin)
            if qout is not None:
                if qin is None:
                    raise bad(f"{where}: output_qparams without input_qparams")
                ql.set_output_qparams(*qout)
            nodes.append(QLinearNode(ql, list(src)))
        else:
            if t in ("maxpool", "avgpool"):
                ok = (
                    _ints(spec["kernel_size"], 2, 1) and _ints(spec["stride"], 2, 1)
                    and _ints(spec["padding"], 2, 0) and isinstance(spec["ceil_mode"], bool)
                )  # fmt: skip
                if t == "maxpool":
                    ok = ok and _ints(spec["dilation"], 2, 1)
                else:
                    div = spec["divisor_override"]
                    ok = (
                        ok
                        and isinstance(spec["count_include_pad"], bool)
                        and (div is None or _is_int(div, 1))
                    )
                if not ok:
                    raise bad(f"{where}: bad {t} arguments")
            elif t == "adaptive_avgpool" and not _ints(spec["output_size"], 2, 1):
                raise bad(f"{where}: bad output_size")
            elif t == "residual_begin":
                depth += 1
            elif t == "residual_add":
                if not isinstance(spec["relu"], bool):
                    raise bad(f"{where}: bad relu")
                depth -= 1
                if depth < 0:
                    raise bad(f"{where}: residual_add without residual_begin")
            body = {key: v for key, v in spec.items() if key != "source"}
            nodes.append(QSimpleNode(body, list(src)))
    if depth != 0:
        raise bad("graph model: unbalanced residual_begin / residual_add")
    if not any(n.kind in ("conv", "linear") for n in nodes):
        raise bad("graph model: no conv or linear node")
    if used != set(arrays):
        raise bad(f"arrays not used by any node: {sorted(set(arrays) - used)}")
    return QuantizedCNN(nodes, mode, model["per_channel"], input_qp)
