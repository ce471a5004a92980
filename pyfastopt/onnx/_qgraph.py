"""The int8 model an ONNX quantized graph becomes: :class:`QuantizedGraph`, a list of
steps over NumPy arrays whose integer work runs in :mod:`pyfastopt.quant`'s kernels.

Every operator computes what ONNX Runtime's CPU kernels compute (its default, fully
optimized session, where the QDQ patterns are fused into integer operators), step by
step:

* ``QuantizeLinear``: :func:`pyfastopt.quant.quantize` (a float32 division, round half to
  even, saturation); NaN gives the type's minimum, as ONNX Runtime's clamp does.
* ``DequantizeLinear``: :func:`pyfastopt.quant.dequantize` (``float32(q - z) * s``).
* ``DynamicQuantizeLinear``: :func:`pyfastopt.quant.dynamic_quantize_linear`.
* ``MatMulInteger``: :func:`pyfastopt.quant.matmul_int8` (exact int32). ``QGemm`` and
  ``QLinearMatMul`` with constant int8 weights (zero point 0) whose accumulators stay
  below ``2**24`` run on a :class:`pyfastopt.quant.QuantizedLinear` with the weights
  packed once (its float32 output is then the exact accumulator; see ``_prepacked``).
* ``QLinearMatMul`` and ``QGemm`` (``com.microsoft``): the exact int32 product plus the
  int32 bias, then ``rint(float32(acc) * m) + z_y`` saturated, with the multiplier
  ``m = float32(float32(alpha * s_a * s_b) / s_y)`` per tensor or per output channel
  (ONNX Runtime's order of the float32 operations); ``QGemm`` without ``y_scale`` gives
  ``float32(acc) * float32(alpha * s_a * s_b)``.
* ``QLinearConv`` / ``ConvInteger``: the exact int32 convolution
  (:func:`pyfastopt.quant.conv2d_int8`; see :func:`conv_int`), requantized per output
  channel as ``QLinearMatMul``.
* ``QLinearAdd``, ``QLinearGlobalAveragePool`` (``com.microsoft``): ONNX Runtime computes
  these through fixed-point or float shortcuts that differ by architecture; here
  ``rint((s_a (a - z_a) + s_b (b - z_b)) / s_c) + z_c`` and
  ``rint(float32(sum(x - z_x)) * float32(s_x / (s_y * HW))) + z_y`` in float32: within
  one quantization level of ONNX Runtime (documented bound, tested).
* ``MaxPool``, ``Reshape``, ``Flatten`` on 8-bit tensors: exact (no arithmetic).
* Float ``Cast``/``Mul``/``Add``/``Relu``: NumPy float32, one rounding per operation as
  ONNX Runtime; float layers left between the quantized ones (an unfused QDQ pattern)
  run as :mod:`pyfastopt.nn` layers (float32, within 1e-5 relative).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["QFUNCTIONS", "QStep", "QuantizedGraph", "conv_int"]

_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _scalar_zp(z: Any) -> int:
    return int(np.asarray(z).reshape(-1)[0])


def _zp_dtype(z: Any) -> np.dtype:
    return np.asarray(z).dtype if z is not None else np.dtype(np.uint8)


def _saturate(v: np.ndarray, zp: Any) -> np.ndarray:
    """``rint(v) + zp`` saturated to ``zp``'s dtype (float32 ``v``)."""
    dt = _zp_dtype(zp)
    lo, hi = _RANGE[dt]
    return np.clip(np.rint(v) + np.float32(_scalar_zp(zp)), lo, hi).astype(dt)


# --------------------------------------------------------------------------- operators
def quantize_linear(x: np.ndarray, scale: Any, zp: Any = None, axis: int = 1) -> np.ndarray:
    from .. import quant

    zp = np.zeros((), np.uint8) if zp is None else np.asarray(zp)
    s = np.asarray(scale, np.float32)
    x = np.asarray(x, np.float32)
    if s.size == 1:
        q = quant.quantize(x, np.float32(s.reshape(-1)[0]), _scalar_zp(zp), dtype=zp.dtype)
    else:
        q = quant.quantize(x, s.reshape(-1), zp.reshape(-1), dtype=zp.dtype, axis=axis)
    nan = np.isnan(x)
    if nan.any():  # ONNX Runtime's clamp sends NaN to the type's minimum
        q[nan] = _RANGE[zp.dtype][0]
    return q


def dequantize_linear(q: np.ndarray, scale: Any, zp: Any = None, axis: int = 1) -> np.ndarray:
    from .. import quant

    q = np.asarray(q)
    s = np.asarray(scale, np.float32)
    if zp is None:
        zp = np.zeros(s.shape, q.dtype if q.dtype != np.int32 else np.int32)
    z = np.asarray(zp)
    if s.size == 1:
        return quant.dequantize(q, np.float32(s.reshape(-1)[0]), _scalar_zp(z))
    return quant.dequantize(q, s.reshape(-1), z.reshape(-1).astype(np.int64), axis=axis)


def dynamic_quantize_linear(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .. import quant

    y, s, z = quant.dynamic_quantize_linear(x)
    return y, np.asarray(s, np.float32), np.asarray(z, np.uint8)


def _matmul_nd(a: np.ndarray, za: Any, b: np.ndarray, zb: Any) -> np.ndarray:
    """int32 ``(a - za) @ (b - zb)`` for an N-D ``a`` and a 2-D ``b``."""
    from .. import quant

    a = np.asarray(a)
    lead = a.shape[:-1]
    a2 = a.reshape(-1, a.shape[-1])
    zav = np.asarray(za).reshape(-1) if za is not None else np.zeros(1, a.dtype)
    zbv = np.asarray(zb).reshape(-1) if zb is not None else np.zeros(1, b.dtype)
    zbx: Any = zbv.reshape(()) if zbv.size == 1 else zbv
    acc = quant.matmul_int8(a2, zav.reshape(()), b, zbx)
    return acc.reshape(*lead, b.shape[1])


def matmul_integer(a: np.ndarray, b: np.ndarray, za: Any = None, zb: Any = None) -> np.ndarray:
    return _matmul_nd(a, za, b, zb)


def _multiplier(alpha: float, sa: Any, sb: Any, sy: Any) -> np.ndarray:
    m = np.float32(alpha) * np.float32(np.asarray(sa).reshape(-1)[0])
    m = (m * np.asarray(sb, np.float32).reshape(-1)).astype(np.float32)
    if sy is not None:
        m = (m / np.float32(np.asarray(sy).reshape(-1)[0])).astype(np.float32)
    return m


def qlinear_matmul(
    a: np.ndarray,
    sa: Any,
    za: Any,
    b: np.ndarray,
    sb: Any,
    zb: Any,
    sy: Any,
    zy: Any,
) -> np.ndarray:
    acc = _matmul_nd(a, za, b, zb)
    return _saturate(acc.astype(np.float32) * _multiplier(1.0, sa, sb, sy), zy)


def qgemm(
    a: np.ndarray,
    sa: Any,
    za: Any,
    b: np.ndarray,
    sb: Any,
    zb: Any,
    c: Any = None,
    sy: Any = None,
    zy: Any = None,
    alpha: float = 1.0,
    transA: int = 0,
    transB: int = 0,
) -> np.ndarray:
    a = np.asarray(a)
    if transA:
        a = a.T
    b = np.asarray(b)
    if transB:
        b = b.T
    acc = _matmul_nd(a, za, b, zb)
    if c is not None:
        acc = acc + np.asarray(c, np.int32)  # int32 wraps as ONNX Runtime's
    v = acc.astype(np.float32) * _multiplier(alpha, sa, sb, sy)
    return v if sy is None else _saturate(v, zy)


def _uniform_zp(zw: Any) -> int | None:
    """The weight zero point when it is one value for every channel, else None."""
    if zw is None:
        return 0
    z = np.asarray(zw).reshape(-1)
    return int(z[0]) if z.size == 1 or bool(np.all(z == z[0])) else None


def conv_int(
    x: np.ndarray,
    zx: Any,
    w: np.ndarray,
    zw: Any,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    group: int,
) -> np.ndarray:
    """The exact int32 convolution ``sum (x - zx)(w - zw)`` (NCHW, zero points per tensor
    for ``x``, per tensor or per output channel for ``w``; padding is ``zx``, i.e. 0 after
    the subtraction, as ONNX defines it).

    Path: :func:`pyfastopt.quant.conv2d_int8` (exact int32 accumulation) when the weight
    zero point is one value; per-channel weight zero points that differ take
    :func:`pyfastopt.conv2d` in float64 on the integer values, also exact: every product
    and partial sum is an integer below ``2**53`` in magnitude (``|x - zx|, |w - zw| <=
    255``, so up to ``2**37`` terms), the result converted to int32.
    """
    from .. import conv2d, quant

    zxv = _scalar_zp(zx) if zx is not None else 0
    zwu = _uniform_zp(zw)
    if zwu is not None:
        return quant.conv2d_int8(x, zxv, w, zwu, None, strides, pads, dilations, group)
    xf = np.asarray(x).astype(np.float64) - float(zxv)
    zwv = np.asarray(zw, np.float64).reshape(-1)
    wf = np.asarray(w).astype(np.float64) - zwv[:, None, None, None]
    y = conv2d(xf, wf, None, strides, pads, dilations, group)
    return y.astype(np.int64).astype(np.int32)


def _conv_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: attrs[k] for k in ("strides", "pads", "dilations", "group") if k in attrs}


def qlinear_conv(
    x: np.ndarray,
    sx: Any,
    zx: Any,
    w: np.ndarray,
    sw: Any,
    zw: Any,
    sy: Any,
    zy: Any,
    bias: Any = None,
    **attrs: Any,
) -> np.ndarray:
    geo = _conv_attrs(attrs)
    zwu = _uniform_zp(zw)
    zyv = np.asarray(zy) if zy is not None else np.zeros((), np.uint8)
    if zwu is not None:  # one call: exact int32 accumulation, ORT's requantization
        from .. import quant

        ws = np.asarray(sw, np.float32).reshape(-1)
        return quant.conv2d_int8(
            x,
            _scalar_zp(zx) if zx is not None else 0,
            w,
            zwu,
            None if bias is None else np.asarray(bias, np.int32),
            geo["strides"],
            geo["pads"],
            geo["dilations"],
            geo["group"],
            x_scale=float(np.asarray(sx, np.float32).reshape(-1)[0]),
            weight_scale=ws if ws.size > 1 else float(ws[0]),
            out_scale=float(np.asarray(sy, np.float32).reshape(-1)[0]),
            out_zero_point=zyv.reshape(()).astype(zyv.dtype)[()],
        )
    acc = conv_int(x, zx, w, zw, **geo)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int32)[None, :, None, None]
    m = _multiplier(1.0, sx, sw, sy)
    m = m.reshape(1, -1, 1, 1) if m.size > 1 else m.reshape(())
    return _saturate(acc.astype(np.float32) * m, zy)


def conv_integer(
    x: np.ndarray, w: np.ndarray, zx: Any = None, zw: Any = None, **attrs: Any
) -> np.ndarray:
    return conv_int(x, zx, w, zw, **_conv_attrs(attrs))


def qlinear_add(
    a: np.ndarray, sa: Any, za: Any, b: np.ndarray, sb: Any, zb: Any, sc: Any, zc: Any
) -> np.ndarray:
    f32 = np.float32
    va = (np.asarray(a).astype(np.int32) - _scalar_zp(za)).astype(f32) * f32(np.asarray(sa))
    vb = (np.asarray(b).astype(np.int32) - _scalar_zp(zb)).astype(f32) * f32(np.asarray(sb))
    return _saturate(((va + vb) / f32(np.asarray(sc))).astype(f32), zc)


def qlinear_global_average_pool(
    x: np.ndarray, sx: Any, zx: Any, sy: Any, zy: Any, channels_last: int = 0
) -> np.ndarray:
    x = np.asarray(x)
    axes = (1, 2) if channels_last else (2, 3)
    hw = x.shape[axes[0]] * x.shape[axes[1]]
    acc = x.astype(np.int64).sum(axis=axes, keepdims=True) - _scalar_zp(zx) * hw
    f32 = np.float32
    m = f32(f32(np.asarray(sx).reshape(-1)[0]) / f32(f32(np.asarray(sy).reshape(-1)[0]) * hw))
    return _saturate(acc.astype(f32) * m, zy)


def max_pool_int(
    x: np.ndarray,
    kernel: tuple[int, int] = (1, 1),
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    ceil_mode: bool = False,
) -> np.ndarray:
    """MaxPool of an 8-bit tensor: :func:`pyfastopt.quant.max_pool2d_int8` (exact)."""
    from .. import quant

    return quant.max_pool2d_int8(
        np.asarray(x), kernel, stride, padding, dilation, ceil_mode=bool(ceil_mode)
    )


def _cast(x: np.ndarray, to: int = 1) -> np.ndarray:
    return np.asarray(x).astype(_ONNX_TYPES[to])


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.zeros((), np.asarray(x).dtype))


def _reshape(x: np.ndarray, shape: np.ndarray, allowzero: int = 0) -> np.ndarray:
    from ._graph import _onnx_shape

    return np.asarray(x).reshape(_onnx_shape(np.shape(x), shape, allowzero))


def _flatten(x: np.ndarray, axis: int = 1) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


_ONNX_TYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    6: np.int32,
    7: np.int64,
    11: np.float64,
}

#: ONNX operator -> function of a :class:`QStep` (inputs, then attributes); a function
#: with several outputs returns a tuple
QFUNCTIONS: dict[str, Callable[..., Any]] = {
    "QuantizeLinear": quantize_linear,
    "DequantizeLinear": dequantize_linear,
    "DynamicQuantizeLinear": dynamic_quantize_linear,
    "MatMulInteger": matmul_integer,
    "QLinearMatMul": qlinear_matmul,
    "QGemm": qgemm,
    "QLinearConv": qlinear_conv,
    "ConvInteger": conv_integer,
    "QLinearAdd": qlinear_add,
    "QLinearGlobalAveragePool": qlinear_global_average_pool,
    "MaxPoolInt": max_pool_int,
    "Cast": _cast,
    "Mul": np.multiply,
    "Add": np.add,
    "Relu": _relu,
    "Reshape": _reshape,
    "Flatten": _flatten,
}


def _add_float_functions() -> None:
    """The shape arithmetic of :data:`pyfastopt.onnx._graph.FUNCTIONS` (float steps)."""
    from ._graph import FUNCTIONS

    for k, v in FUNCTIONS.items():
        QFUNCTIONS.setdefault(k, v)


_add_float_functions()


_F32_EXACT = 1 << 24  # integers up to this magnitude are exact in float32


def _prepacked(step: QStep, consts: dict[str, np.ndarray]) -> Any:
    """A :class:`pyfastopt.quant.QuantizedLinear` computing ``float32(acc + bias)`` of a
    QGemm/QLinearMatMul step with its weights packed once, or None.

    It runs in static mode with input qparams ``(1.0, a_zero_point)``, weight scale 1 and
    the int32 bias as a float32 bias, so its output is ``float32(acc) * 1 + float32(bias)``
    (one rounding per operation): equal to ``float32(acc + bias)`` whenever every
    ``|acc| + |bias|`` stays below ``2**24``, which is checked here from the weights
    (``|acc| <= 255 * sum_k |w_kn|``). Used for uint8 activations, constant int8 weights
    with zero point 0 and a constant activation zero point (static quantization)."""
    from ..quant import QuantizedLinear

    if step.op == "QGemm":
        b, za, zb, c = (step.inputs[i] for i in (3, 2, 5, 6))
        if step.attrs.get("transA") or step.attrs.get("transB"):
            return None
    elif step.op == "QLinearMatMul":
        b, za, zb, c = step.inputs[3], step.inputs[2], step.inputs[5], ""
    else:
        return None
    w = consts.get(b)
    zav = consts.get(za) if za else np.zeros((), np.uint8)
    zbv = consts.get(zb) if zb else np.zeros((), np.int8)
    bias = consts.get(c) if c else None
    if w is None or zav is None or zbv is None or (c and bias is None):
        return None
    if w.dtype != np.int8 or w.ndim != 2 or zav.size != 1 or zav.dtype != np.uint8:
        return None
    if np.any(zbv != 0):
        return None
    if bias is not None and (bias.dtype != np.int32 or bias.shape != (w.shape[1],)):
        return None
    bound = 255 * np.abs(w.astype(np.int64)).sum(axis=0)
    if bias is not None:
        bound = bound + np.abs(bias.astype(np.int64))
    if bound.size and int(bound.max()) >= _F32_EXACT:
        return None
    ql = QuantizedLinear(
        np.ascontiguousarray(w.T),
        np.ones(1, np.float32),
        None if bias is None else bias.astype(np.float32),
    )
    ql.set_input_qparams(1.0, int(zav.reshape(-1)[0]))
    return ql


def _requant_params(step: QStep, env: dict[str, Any]) -> tuple[np.ndarray, Any]:
    """(the float32 multiplier, the output zero point or None for a float output) of a
    QGemm/QLinearMatMul step, as :func:`qgemm` / :func:`qlinear_matmul` compute them."""
    ins = step.inputs
    if step.op == "QLinearMatMul":
        sy, zy = env[ins[6]], env[ins[7]]
    else:
        sy = env[ins[7]] if ins[7] else None
        zy = env[ins[8]] if sy is not None else None
    alpha = float(step.attrs.get("alpha", 1.0))
    m = _multiplier(alpha, env[ins[1]], env[ins[4]], sy)
    return m, (None if sy is None else (zy if zy is not None else np.zeros((), np.uint8)))


def _run_prepacked(
    step: QStep, ql: Any, params: tuple[np.ndarray, Any] | None, env: dict[str, Any]
) -> np.ndarray:
    """The step's output from :func:`_prepacked`'s layer (the requantization as in
    :func:`qgemm` / :func:`qlinear_matmul`; ``params`` precomputed when constant)."""
    a = env[step.inputs[0]]
    lead = a.shape[:-1]
    acc = ql(a.reshape(-1, a.shape[-1])).reshape(*lead, ql.out_features)
    m, zy = params if params is not None else _requant_params(step, env)
    v = acc * m
    return v if zy is None else _saturate(v, zy)


@dataclass
class QStep:
    """One step of a :class:`QuantizedGraph`: ``outputs = layer(inputs[0])`` when
    ``layer`` is set (a float :mod:`pyfastopt.nn` layer), else
    ``QFUNCTIONS[op](*inputs, **attrs)``. An empty input name is an omitted optional
    input (None)."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    layer: Any = None
    domain: str = ""


class QuantizedGraph:
    """An int8 ONNX model (QDQ or QOperator, from :func:`pyfastopt.onnx.load`): steps
    run in topological order over NumPy arrays, the integer products in
    :mod:`pyfastopt.quant`'s exact int8 kernels. Call it on the graph's float input.

    Attributes: ``steps`` (list of :class:`QStep`), ``input_name``, ``output_name``,
    ``constants`` (``{name: ndarray}``: the int8 weights, scales, zero points, int32
    biases), ``input_shape`` (one sample's shape when known), ``opset``.

    ``pyfastopt.onnx.save`` writes it back as a QDQ model; loading that file gives the
    same steps and the same outputs, bit for bit.
    """

    def __init__(
        self,
        steps: list[QStep],
        input_name: str,
        output_name: str,
        constants: dict[str, np.ndarray],
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.steps = list(steps)
        self.input_name = input_name
        self.output_name = output_name
        self.constants = dict(constants)
        self.input_shape = input_shape
        known = {input_name, "", *self.constants}
        for i, step in enumerate(self.steps):
            if step.layer is None and step.op not in QFUNCTIONS:
                raise ValueError(f"QuantizedGraph: step {i} ({step.op}) has no function")
            for name in step.inputs:
                if name not in known:
                    raise ValueError(
                        f"QuantizedGraph: step {i} ({step.op}) reads {name!r} before it is set"
                    )
            known.update(step.outputs)
        if output_name not in known:
            raise ValueError(f"QuantizedGraph: the output {output_name!r} is never computed")
        # int8 products with the weights packed once (exactly the same values)
        self._fast: dict[int, Any] = {}
        for i, step in enumerate(self.steps):
            if step.layer is None and step.op in ("QGemm", "QLinearMatMul"):
                ql = _prepacked(step, self.constants)
                if ql is not None:
                    scales = [step.inputs[j] for j in (1, 4, 6, 7, 8) if j < len(step.inputs)]
                    consts = {**self.constants, "": None}
                    params = None
                    if all(n in consts for n in scales):
                        params = _requant_params(step, consts)
                    self._fast[i] = (ql, params)

    training = False

    def eval(self) -> QuantizedGraph:
        return self

    def forward(self, x: Any) -> np.ndarray:
        env: dict[str, Any] = dict(self.constants)
        env[""] = None
        env[self.input_name] = np.asarray(x, np.float32)
        for i, step in enumerate(self.steps):
            args = [env[n] for n in step.inputs]
            try:
                fast = self._fast.get(i)
                if fast is not None and args[0].dtype == np.uint8:
                    out: Any = _run_prepacked(step, fast[0], fast[1], env)
                elif step.layer is not None:
                    out = step.layer.forward(args[0])
                else:
                    out = QFUNCTIONS[step.op](*args, **step.attrs)
            except (IndexError, TypeError, ValueError, KeyError, ArithmeticError) as exc:
                raise ValueError(
                    f"QuantizedGraph: step {step.op} -> {step.outputs} failed on inputs of "
                    f"shapes {[np.shape(a) for a in args]}: {exc}"
                ) from None
            if len(step.outputs) == 1:
                env[step.outputs[0]] = out
            else:
                for name, value in zip(step.outputs, out):
                    if name:
                        env[name] = value
        return np.asarray(env[self.output_name])

    __call__ = forward

    def predict(self, x: Any) -> np.ndarray:
        return np.argmax(self(x), axis=1)

    def save(self, path: str | os.PathLike) -> int:
        """:func:`pyfastopt.onnx.save` of this model (QDQ ONNX)."""
        from . import save

        return save(self, path)

    def __repr__(self) -> str:
        lines = []
        for step in self.steps:
            what = repr(step.layer) if step.layer is not None else step.op
            lines.append(f"  {', '.join(step.outputs)} = {what}({', '.join(step.inputs)})")
        return "QuantizedGraph(\n" + "\n".join(lines) + "\n)"
