"""A :class:`~pyfastopt.onnx.QuantizedGraph` lowered to ONE native call
(``_core.qgemm.QGraphPlan``): the whole run with the GIL released, on buffers kept
between calls, for graphs made only of

* ``QuantizeLinear`` (constant per-tensor qparams) and ``DynamicQuantizeLinear`` of the
  float input;
* ``MatMulInteger -> Cast(float) -> Mul(Mul(x_scale, w_scale)) [-> Add(bias)] [-> Relu]``
  (``quantize_dynamic``'s layers) on a DynamicQuantizeLinear output;
* ``QGemm`` / ``QLinearMatMul`` with constant weights, qparams and int32 bias (uint8 or
  int8 activations and outputs, or QGemm's float output);
* ``QLinearConv`` (uint8, weight zero point 0: :func:`._qgraph._qlinear_conv_spec`),
  ``MaxPoolInt`` (floor mode), per-channel DequantizeLinear -> float BatchNormalization /
  Relu -> QuantizeLinear segments (tables of the segment's own results,
  :func:`._qgraph._channel_lut`), channels last, with the input transposed once and
  transposed back to NCHW at a Flatten/Reshape;
* ``Reshape`` / ``Flatten`` keeping the batch dimension; ``DequantizeLinear`` (per tensor).

Every constant is computed by the functions the step path uses (:func:`._qgraph._multiplier`,
...), and each native stage does the step function's float32 operations in its order, so
the outputs are the step path's bits (``tests/test_onnx_int8.py`` compares them on every
model kind). :func:`lower` returns None for any graph (or input shape) it does not cover;
the graph then runs its step plan, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._qgraph import (
    _RANGE,
    QStep,
    _bind,
    _channel_lut,
    _elementwise_per_channel,
    _multiplier,
    _qconv_geometry,
    _qlinear_conv_spec,
    _uniform_zp,
)

__all__ = ["lower"]


class _No(Exception):
    """The graph does not fit the native plan."""


class _V:
    """A plan value: its id, dtype ("f32", "u8", "i8"), logical per-sample shape (ONNX
    order) and whether it is stored channels last (a (C, H, W) tensor as (H, W, C)).
    An "i8" tensor is stored as the uint8 ``q ^ 0x80 = q + 128`` and every zero point
    that meets it is taken + 128 (the same ``q - z``; saturating ``r + z + 128`` to
    [0, 255] is saturating ``r + z`` to [-128, 127], shifted), so every native stage runs
    on uint8."""

    def __init__(self, vid: int, dtype: str, shape: tuple[int, ...], nhwc: bool = False) -> None:
        self.vid, self.dtype, self.shape, self.nhwc = vid, dtype, shape, nhwc

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


class _Dyn:
    """A DynamicQuantizeLinear scalar (``what`` "scale" or "zp") or ``Mul(scale, c)``."""

    def __init__(self, slot: int, what: str, factor: np.ndarray | None = None) -> None:
        self.slot, self.what, self.factor = slot, what, factor


class _Pending:
    """A MatMulInteger being fused with its Cast, Mul, Add and Relu."""

    def __init__(self, a: _V, b: np.ndarray, zb: int, slot: int, out_shape: tuple[int, ...]):
        self.a, self.b, self.zb, self.slot, self.out_shape = a, b, zb, slot, out_shape
        self.n_out = int(b.shape[1])
        self.stage = 0  # 0 int32, 1 cast, 2 scaled, 3 biased, 4 relu
        self.bias: np.ndarray | None = None
        self.relu = False
        self.scale = np.ones(1, np.float32)


def _zp(z: Any, dtype: str) -> int:
    """A zero point for the uint8 storage of a ``dtype`` tensor (see :class:`_V`)."""
    return int(np.asarray(z).reshape(-1)[0]) + (128 if dtype == "i8" else 0)


def _const_scalar(consts: dict[str, Any], name: str, default: Any = None) -> np.ndarray:
    if not name:
        if default is None:
            raise _No
        return np.asarray(default)
    if name not in consts or consts[name] is None:
        raise _No
    v = np.asarray(consts[name])
    if v.size != 1:
        raise _No
    return v


def lower(graph: Any, sample_shape: tuple[int, ...]) -> Any:
    """The native plan of ``graph`` for inputs of per-sample shape ``sample_shape``, or
    None when some step does not fit."""
    try:
        return _Builder(graph, tuple(int(d) for d in sample_shape)).build()
    except (_No, ValueError):  # ValueError: a native stage refused its constants
        return None


class _Builder:
    def __init__(self, graph: Any, sample_shape: tuple[int, ...]) -> None:
        from .. import _core

        self.g = graph
        self.consts: dict[str, Any] = {**graph.constants, "": None}
        size = int(np.prod(sample_shape, dtype=np.int64)) if sample_shape else 1
        if size < 1:
            raise _No
        self.plan = _core.qgemm.QGraphPlan(size)
        self.vals: dict[str, Any] = {graph.input_name: _V(0, "f32", sample_shape)}
        self.readers: dict[str, list[int]] = {}
        for i, st in enumerate(graph.steps):
            for n in st.inputs if st.layer is None else st.inputs[:1]:
                self.readers.setdefault(n, []).append(i)

    # ------------------------------------------------------------------ helpers
    def new(self, dtype: str, shape: tuple[int, ...], nhwc: bool = False) -> _V:
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        vid = self.plan.add_value(dtype == "f32", size)
        return _V(vid, dtype, shape, nhwc)

    def val(self, name: str) -> _V:
        v = self.vals.get(name)
        if isinstance(v, _Pending):
            v = self.materialize(name, v)
        if not isinstance(v, _V):
            raise _No
        return v

    def single_reader(self, name: str) -> bool:
        return len(self.readers.get(name, [])) == 1 and name != self.g.output_name

    def flat(self, v: _V) -> _V:
        """v in ONNX (NCHW) order."""
        if not v.nhwc:
            return v
        c, h, w = v.shape
        out = self.new(v.dtype, v.shape)
        self.plan.add_transpose(v.vid, out.vid, False, h, w, c)
        return out

    def materialize(self, name: str, p: _Pending) -> _V:
        if p.stage < 2:
            raise _No  # an int32 or unscaled result: not covered
        out = self.new("f32", p.out_shape)
        self.plan.add_gemm(
            p.a.vid, out.vid, p.b, 0, p.slot, False, p.zb, 1, p.scale, None, p.bias, p.relu, 0
        )
        self.vals[name] = out
        return out

    # ------------------------------------------------------------------ build
    def build(self) -> Any:
        steps = self.g.steps
        skip: set[int] = set()
        for i, st in enumerate(steps):
            if i in skip:
                continue
            if st.layer is not None:
                from .. import nn

                if not isinstance(st.layer, (nn.Identity, nn.Dropout)) or st.layer.training:
                    raise _No
                if st.inputs[0] not in self.vals:  # the float input or a constant
                    raise _No
                self.vals[st.outputs[0]] = self.vals[st.inputs[0]]  # inference: no-op
                continue
            if st.op == "DequantizeLinear":
                seg = self.segment(i)
                if seg is not None:
                    skip.update(seg[1:])
                    self.lut(seg)
                    continue
            handler = getattr(self, "op_" + st.op, None)
            if handler is None:
                raise _No
            handler(st)
        out = self.val(self.g.output_name)
        if out.dtype == "i8":
            raise _No  # an int8 result: the step plan gives it
        if out.nhwc:
            out = self.flat(out)
        self.plan.set_output(out.vid, list(out.shape))
        return self.plan

    # ------------------------------------------------------------------ operators
    def op_QuantizeLinear(self, st: QStep) -> None:
        x = self.val(st.inputs[0])
        if x.dtype != "f32" or x.nhwc or len(st.outputs) != 1:
            raise _No
        ins = st.inputs + [""] * 3
        s = _const_scalar(self.consts, ins[1])
        z = _const_scalar(self.consts, ins[2], np.zeros((), np.uint8))
        if z.dtype not in _RANGE:
            raise _No
        sf = np.float32(s.reshape(-1)[0])
        if not (np.isfinite(sf) and sf > 0):
            raise _No
        dt = "u8" if z.dtype == np.uint8 else "i8"
        q = self.new(dt, x.shape)
        self.plan.add_quant(x.vid, q.vid, float(sf), _zp(z, dt), False)
        if len(x.shape) == 3:  # an image (C, H, W): channels last from here
            c, h, w = x.shape
            if c > 1 and h * w > 1:
                t = self.new(dt, x.shape, nhwc=True)
                self.plan.add_transpose(q.vid, t.vid, True, h, w, c)
                q = t
            else:
                q = _V(q.vid, dt, x.shape, nhwc=True)  # the same bytes either way
        self.vals[st.outputs[0]] = q

    def op_DynamicQuantizeLinear(self, st: QStep) -> None:
        x = self.val(st.inputs[0])
        if x.dtype != "f32":
            raise _No
        x = self.flat(x)
        q = self.new("u8", x.shape)
        self.plan.add_dyn_quant(x.vid, q.vid)
        slot = self.plan.last_slot()
        outs = [*st.outputs, "", "", ""]
        self.vals[outs[0]] = q
        if outs[1]:
            self.vals[outs[1]] = _Dyn(slot, "scale")
        if outs[2]:
            self.vals[outs[2]] = _Dyn(slot, "zp")

    def op_Mul(self, st: QStep) -> None:
        a, b = (self.vals.get(n, None) for n in st.inputs[:2])
        ca, cb = (self.consts.get(n) if n in self.consts else None for n in st.inputs[:2])
        # Mul(x_scale, w_scale): a dynamic scale times a constant (float32 per element)
        for d, c in ((a, cb), (b, ca)):
            if isinstance(d, _Dyn) and d.what == "scale" and c is not None:
                c = np.asarray(c)
                if c.dtype != np.float32 or c.ndim > 1 or c.size < 1:
                    raise _No
                self.vals[st.outputs[0]] = _Dyn(d.slot, "mul", c.reshape(-1))
                return
        # Mul(float32(MatMulInteger), that product): the gemm's float32 column scales
        for p, d, pn in ((a, b, st.inputs[0]), (b, a, st.inputs[1])):
            if (
                isinstance(p, _Pending)
                and p.stage == 1
                and isinstance(d, _Dyn)
                and d.what == "mul"
                and d.slot == p.slot
                and self.single_reader(pn)
            ):
                if d.factor is None or d.factor.size not in (1, p.n_out):
                    raise _No
                p.scale = np.ascontiguousarray(d.factor, np.float32)
                p.stage = 2
                del self.vals[pn]
                self.vals[st.outputs[0]] = p
                return
        raise _No

    def op_Add(self, st: QStep) -> None:
        a, b = (self.vals.get(n, None) for n in st.inputs[:2])
        for p, cn, pn in ((a, st.inputs[1], st.inputs[0]), (b, st.inputs[0], st.inputs[1])):
            if isinstance(p, _Pending) and p.stage == 2 and self.single_reader(pn):
                c = self.consts.get(cn) if cn in self.consts else None
                if c is None:
                    continue
                c = np.asarray(c)
                if c.dtype != np.float32 or c.shape not in ((p.n_out,), (1, p.n_out)):
                    raise _No
                p.bias = np.ascontiguousarray(c.reshape(-1))
                p.stage = 3
                del self.vals[pn]
                self.vals[st.outputs[0]] = p
                return
        raise _No

    def op_Relu(self, st: QStep) -> None:
        p = self.vals.get(st.inputs[0])
        if isinstance(p, _Pending) and p.stage in (2, 3) and self.single_reader(st.inputs[0]):
            p.relu = True
            p.stage = 4
            del self.vals[st.inputs[0]]
            self.vals[st.outputs[0]] = p
            return
        raise _No

    def op_Cast(self, st: QStep) -> None:
        p = self.vals.get(st.inputs[0])
        if (
            isinstance(p, _Pending)
            and p.stage == 0
            and int(st.attrs.get("to", 1)) == 1
            and self.single_reader(st.inputs[0])
        ):
            p.stage = 1
            del self.vals[st.inputs[0]]
            self.vals[st.outputs[0]] = p
            return
        raise _No

    def op_MatMulInteger(self, st: QStep) -> None:
        ins = [*st.inputs, "", "", ""]
        a = self.val(ins[0])
        za = self.vals.get(ins[2]) if ins[2] else None
        if a.dtype != "u8" or a.nhwc or not isinstance(za, _Dyn) or za.what != "zp":
            raise _No
        b = self.consts.get(ins[1]) if ins[1] in self.consts else None
        if b is None or np.asarray(b).ndim != 2 or np.asarray(b).dtype not in _RANGE:
            raise _No
        b = np.asarray(b)
        if ins[3] and (ins[3] not in self.consts or self.consts[ins[3]] is None):
            raise _No
        zb = _uniform_zp(self.consts[ins[3]] if ins[3] else None)
        if zb is None:
            raise _No
        k, n = (int(d) for d in b.shape)
        if not a.shape or a.shape[-1] != k or not self.single_reader(st.outputs[0]):
            raise _No
        self.vals[st.outputs[0]] = _Pending(
            a=a,
            b=np.ascontiguousarray(b),
            zb=zb,
            slot=za.slot,
            out_shape=(*a.shape[:-1], n),
        )

    def _linear(
        self, st: QStep, a_name: str, sa: str, za: str, b_name: str, sb: str, zb: str
    ) -> tuple[_V, np.ndarray, int, int, np.ndarray]:
        a = self.flat(self.val(a_name))
        if a.dtype not in ("u8", "i8"):
            raise _No
        b = self.consts.get(b_name) if b_name in self.consts else None
        if b is None or np.asarray(b).ndim != 2 or np.asarray(b).dtype not in _RANGE:
            raise _No
        zav = _const_scalar(self.consts, za, np.zeros((), np.uint8))
        if (zav.dtype == np.int8) != (a.dtype == "i8"):
            raise _No
        zbu = _uniform_zp(self.consts.get(zb) if zb else None)
        if zb and (zb not in self.consts or self.consts[zb] is None):
            raise _No
        if zbu is None:
            raise _No
        _const_scalar(self.consts, sa)
        if sb not in self.consts or self.consts[sb] is None:
            raise _No
        return a, np.asarray(b), _zp(zav, a.dtype), zbu, np.asarray(self.consts[sb])

    def _emit_linear(
        self,
        st: QStep,
        a: _V,
        b: np.ndarray,
        za: int,
        zb: int,
        m: np.ndarray,
        zy: np.ndarray | None,
        bias: Any,
    ) -> None:
        k, n = (int(d) for d in b.shape)
        if not a.shape or a.shape[-1] != k:
            raise _No
        m = np.asarray(m, np.float32).reshape(-1)
        if m.size not in (1, n) or not (np.all(np.isfinite(m)) and np.all(m > 0)):
            raise _No
        if bias is not None:
            bias = np.asarray(bias)
            if bias.dtype != np.int32 or bias.shape != (n,):
                raise _No
        shape = (*a.shape[:-1], n)
        if zy is None:
            out = self.new("f32", shape)
            okind, zyv = 1, 0
        else:
            if zy.dtype not in _RANGE:
                raise _No
            dt = "u8" if zy.dtype == np.uint8 else "i8"
            out = self.new(dt, shape)
            okind, zyv = 2, _zp(zy, dt)
        self.plan.add_gemm(
            a.vid, out.vid, b, za, -1, False, zb, okind,
            np.ascontiguousarray(m), bias, None, False, zyv,
        )  # fmt: skip
        self.vals[st.outputs[0]] = out

    def op_QLinearMatMul(self, st: QStep) -> None:
        ins = st.inputs
        if len(ins) < 8 or len(st.outputs) != 1:
            raise _No
        a, b, za, zb, sb = self._linear(st, ins[0], ins[1], ins[2], ins[3], ins[4], ins[5])
        sy = _const_scalar(self.consts, ins[6])
        zy = _const_scalar(self.consts, ins[7], np.zeros((), np.uint8))
        m = _multiplier(1.0, self.consts[ins[1]], sb, sy)
        self._emit_linear(st, a, b, za, zb, m, zy, None)

    def op_QGemm(self, st: QStep) -> None:
        ins = st.inputs + [""] * 9
        if st.attrs.get("transA") or len(st.outputs) != 1:
            raise _No
        a, b, za, zb, sb = self._linear(st, ins[0], ins[1], ins[2], ins[3], ins[4], ins[5])
        if st.attrs.get("transB"):
            b = b.T
        c = None
        if ins[6]:
            if ins[6] not in self.consts or self.consts[ins[6]] is None:
                raise _No
            c = self.consts[ins[6]]
        sy = _const_scalar(self.consts, ins[7]) if ins[7] else None
        zy = None
        if sy is not None:
            zy = _const_scalar(self.consts, ins[8], np.zeros((), np.uint8))
        m = _multiplier(float(st.attrs.get("alpha", 1.0)), self.consts[ins[1]], sb, sy)
        self._emit_linear(st, a, b, za, zb, m, zy, c)

    def op_QLinearConv(self, st: QStep) -> None:
        x = self.val(st.inputs[0])
        ins = st.inputs
        if x.dtype not in ("u8", "i8") or not x.nhwc or len(ins) < 8:
            raise _No
        zx, zy = (self.consts.get(n) for n in (ins[2], ins[7]))
        if zx is None or zy is None or np.asarray(zx).size != 1 or np.asarray(zy).size != 1:
            raise _No
        zx, zy = np.asarray(zx), np.asarray(zy)
        if (
            zx.dtype not in _RANGE
            or zy.dtype not in _RANGE
            or (zx.dtype == np.int8) != (x.dtype == "i8")
        ):
            raise _No
        y_dt = "u8" if zy.dtype == np.uint8 else "i8"
        # the uint8 storage's zero points (see _V) for _qlinear_conv_spec's uint8 rule
        shifted = {
            **self.consts,
            ins[2]: np.array(_zp(zx, x.dtype), np.uint8),
            ins[7]: np.array(_zp(zy, y_dt), np.uint8),
        }
        spec = _qlinear_conv_spec(st, shifted)
        if spec is None:
            raise _No
        c, h, w = x.shape
        g = _qconv_geometry(spec, h, w, c)
        if g is None:
            raise _No
        (sh, sw), (dh, dw), (pt, _, pl, _) = g.strides, g.dilations, g.pads
        y = self.new(y_dt, (g.co, g.oh, g.ow), nhwc=True)
        self.plan.add_conv(
            x.vid, y.vid, spec["w"], spec["group"], h, w, c, g.oh, g.ow, sh, sw, pt, pl, dh, dw,
            spec["zx"], spec["m"], spec["bias"], spec["zy"],
        )  # fmt: skip
        self.vals[st.outputs[0]] = y

    def op_MaxPoolInt(self, st: QStep) -> None:
        x = self.val(st.inputs[0])
        if not x.nhwc or st.attrs.get("ceil_mode"):
            raise _No
        c, h, w = x.shape
        kh, kw = (int(v) for v in st.attrs.get("kernel", (1, 1)))
        sh, sw = (int(v) for v in st.attrs.get("stride", (1, 1)))
        ph, pw = (int(v) for v in st.attrs.get("padding", (0, 0)))
        dh, dw = (int(v) for v in st.attrs.get("dilation", (1, 1)))
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if oh < 1 or ow < 1 or 2 * ph > kh or 2 * pw > kw:
            raise _No
        y = self.new(x.dtype, (c, oh, ow), nhwc=True)
        self.plan.add_max_pool(x.vid, y.vid, False, h, w, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
        self.vals[st.outputs[0]] = y

    def _reshaped(self, st: QStep, fn: Any) -> None:
        x = self.val(st.inputs[0])
        if x.dtype == "f32" and x.vid == 0:
            raise _No  # a reshape of the float input: not covered
        shapes = set()
        for n in (1, 2, 3):
            s = fn((n, *x.shape))
            if not s or s[0] != n:
                raise _No
            shapes.add(tuple(s[1:]))
        if len(shapes) != 1:
            raise _No
        (shape,) = shapes
        x = self.flat(x)
        self.vals[st.outputs[0]] = _V(x.vid, x.dtype, shape)

    def op_Reshape(self, st: QStep) -> None:
        from ._graph import _onnx_shape

        if (
            len(st.inputs) < 2
            or st.inputs[1] not in self.consts
            or self.consts[st.inputs[1]] is None
        ):
            raise _No
        target = self.consts[st.inputs[1]]
        allowzero = int(st.attrs.get("allowzero", 0))

        def fn(shape: tuple[int, ...]) -> tuple[int, ...]:
            try:
                return _onnx_shape(shape, target, allowzero)
            except ValueError:
                raise _No from None

        self._reshaped(st, fn)

    def op_Flatten(self, st: QStep) -> None:
        axis = int(st.attrs.get("axis", 1))
        if axis != 1:
            raise _No
        self._reshaped(st, lambda s: (s[0], int(np.prod(s[1:], dtype=np.int64))))

    def op_DequantizeLinear(self, st: QStep) -> None:
        x = self.flat(self.val(st.inputs[0]))
        if x.dtype not in ("u8", "i8") or len(st.outputs) != 1:
            raise _No
        ins = [*st.inputs, "", ""]
        s = _const_scalar(self.consts, ins[1])
        z = _const_scalar(
            self.consts, ins[2], np.zeros((), np.uint8 if x.dtype == "u8" else np.int8)
        )
        if (z.dtype == np.int8) != (x.dtype == "i8"):
            raise _No
        sf = np.float32(s.reshape(-1)[0])
        if not (np.isfinite(sf) and sf > 0):
            raise _No
        y = self.new("f32", x.shape)
        self.plan.add_dequant(x.vid, y.vid, float(sf), _zp(z, x.dtype), False)
        self.vals[st.outputs[0]] = y

    # ------------------------------------------------------------------ tables
    def segment(self, i: int) -> list[int] | None:
        """DequantizeLinear -> per-channel float steps -> QuantizeLinear on a channels-last
        uint8 value (each output read only by the next step)."""
        g, steps = self.g, self.g.steps
        x = self.vals.get(steps[i].inputs[0])
        if not isinstance(x, _V) or not x.nhwc or x.dtype != "u8":
            return None
        if not g._dq_u8(steps[i], self.consts):
            return None
        seg = [i]
        while True:
            out = steps[seg[-1]].outputs[0]
            r = self.readers.get(out, [])
            if out == g.output_name or len(r) != 1 or r[0] <= seg[-1]:
                return None
            st = steps[r[0]]
            if st.inputs[0] != out:
                return None
            seg.append(r[0])
            if st.layer is None and st.op == "QuantizeLinear":
                return seg if g._q_u8(st, self.consts) else None
            if not _elementwise_per_channel(st):
                return None

    def lut(self, seg: list[int]) -> None:
        members = [self.g.steps[j] for j in seg]
        x = self.vals[members[0].inputs[0]]
        c = x.shape[0]
        table = _channel_lut(members, [_bind(st, self.consts) for st in members], c)
        if table is None:
            raise _No
        y = self.new("u8", x.shape, nhwc=True)
        self.plan.add_lut(x.vid, y.vid, table)
        self.vals[members[-1].outputs[0]] = y
