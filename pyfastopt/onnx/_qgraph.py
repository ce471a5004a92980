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

Speed: :class:`QuantizedGraph` compiles its steps into a plan at load
(``QuantizedGraph._compile``): constant inputs bound once, and fast paths that give the
generic functions' bits (``tests/test_onnx_int8.py`` compares them with
``_compile(fast=False)``): prepacked QGemm/QLinearMatMul requantized in the int8 GEMM's
uint8 output stage (:func:`_u8_output_layer`; int8 activations and outputs through
``^ 0x80``), MatMulInteger + Cast on prepacked weights (:func:`_bind_matmul_integer_f32`),
QLinearConv as im2col times prepacked weights (:func:`_bind_qlinear_conv_gemm`),
QuantizeLinear and DynamicQuantizeLinear calling the kernel with precomputed parameters.
A fast path meeting inputs it does not cover (another dtype or shape) runs the generic
function.
"""

from __future__ import annotations

import math
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
    (``|acc| <= 255 * sum_k |w_kn|``). Used for uint8 or int8 activations (an int8 one is
    given to the layer as the uint8 ``a ^ 0x80 = a + 128``, with ``z_a + 128`` as its zero
    point: the same ``a - z_a``), constant int8 weights with zero point 0 and a constant
    activation zero point (static quantization)."""

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
    if w.dtype != np.int8 or w.ndim != 2 or zav.size != 1 or zav.dtype not in _RANGE:
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
    # int8 activations run as uint8 ones: a ^ 0x80 = a + 128 and z_a + 128 (the same a - z_a)
    shift = 128 if zav.dtype == np.int8 else 0
    return _LazyLinear(
        np.ascontiguousarray(w.T),
        None if bias is None else bias.astype(np.float32),
        int(zav.reshape(-1)[0]) + shift,
    )


class _LazyLinear:
    """:func:`_prepacked`'s layer, its weights packed on the first call (a step whose
    uint8 output stage runs in :func:`_u8_output_layer`'s layer never packs these)."""

    def __init__(self, weight_q: np.ndarray, bias: np.ndarray | None, zero_point: int) -> None:
        self.weight_q = weight_q
        self.bias = bias
        self.input_zero_point = zero_point
        self.out_features = int(weight_q.shape[0])
        self._layer: Any = None

    def __call__(self, a: np.ndarray) -> np.ndarray:
        layer = self._layer
        if layer is None:
            from ..quant import QuantizedLinear

            layer = QuantizedLinear(self.weight_q, np.ones(1, np.float32), self.bias)
            layer.set_input_qparams(1.0, self.input_zero_point)
            self._layer = layer
        return layer(a)


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
    a = _as_u8(env[step.inputs[0]])
    lead = a.shape[:-1]
    acc = ql(a.reshape(-1, a.shape[-1])).reshape(*lead, ql.out_features)
    m, zy = params if params is not None else _requant_params(step, env)
    v = np.multiply(acc, m, out=acc) if acc.dtype == np.float32 and m.ndim <= 1 else acc * m
    return v if zy is None else _saturate_owned(v, zy)


def _as_u8(a: np.ndarray) -> np.ndarray:
    """An int8 activation as the uint8 ``a + 128`` (:func:`_prepacked`'s layers)."""
    return np.bitwise_xor(a.view(np.uint8), np.uint8(0x80)) if a.dtype == np.int8 else a


def _saturate_owned(v: np.ndarray, zp: Any) -> np.ndarray:
    """:func:`_saturate` computed in place in ``v`` (a float32 array the caller owns):
    the same float32 operations, without the temporaries."""
    dt = _zp_dtype(zp)
    lo, hi = _RANGE[dt]
    np.rint(v, out=v)
    v += np.float32(_scalar_zp(zp))
    np.clip(v, lo, hi, out=v)
    return v.astype(dt)


def _u8_output_layer(
    step: QStep, ql: Any, params: tuple[np.ndarray, Any] | None, consts: dict[str, np.ndarray]
) -> Any:
    """A :class:`pyfastopt.quant.QuantizedLinear` whose C++ output stage computes the whole
    requantized uint8 output of a prepacked QGemm/QLinearMatMul step, or None.

    The layer's static output stage is ``sat(rint(float32(acc + bias_q) * mult) + z_y)``
    with ``mult = float32(in_scale * w_scale / out_scale)`` and ``bias_q =
    nearbyint(bias / (in_scale * w_scale))`` (float64). With ``in_scale = out_scale = 1``
    and ``w_scale = m`` (the step's float32 multiplier, :func:`_multiplier`) ``mult`` is
    ``m`` exactly; the float32 bias is chosen so that ``bias_q`` is the int32 bias, which is
    checked here with the same float64 operations. ``acc + bias`` stays below ``2**24``
    (:func:`_prepacked`'s bound), so ``float32(acc + bias_q)`` is what :func:`qgemm`
    converts, and the kernel's ``rint``/zero point/saturation (its clamp to +-1024 before
    rounding changes nothing after saturation) give :func:`_saturate`'s bits. An int8
    output zero point ``z_y`` runs as the uint8 ``z_y + 128`` and the result ``^ 0x80``
    (``sat_u8(r + z_y + 128) - 128 = sat_i8(r + z_y)``)."""

    if params is None:
        return None
    m, zy = params
    if zy is None or np.asarray(zy).dtype not in _RANGE or np.asarray(zy).size != 1:
        return None
    m = np.asarray(m, np.float32).reshape(-1)
    if m.size not in (1, ql.out_features) or not (np.all(np.isfinite(m)) and np.all(m > 0)):
        return None
    cname = step.inputs[6] if step.op == "QGemm" and len(step.inputs) > 6 else ""
    return _u8_stage_layer(
        ql.weight_q, m, consts[cname] if cname else None, int(ql.input_zero_point), zy
    )


def _u8_stage_layer(w_out_in: np.ndarray, m: np.ndarray, c: Any, za_u8: int, zy: Any) -> Any:
    """The :class:`pyfastopt.quant.QuantizedLinear` of :func:`_u8_output_layer`: int8
    weights ``(out, in)``, float32 multipliers ``m`` (1 or ``out``), int32 bias ``c`` or
    None, the uint8 input zero point, the output zero point (uint8 or int8); None when
    the bias cannot be carried exactly or an accumulator may reach ``2**24``."""
    from ..quant import QuantizedLinear

    bound = 255 * np.abs(w_out_in.astype(np.int64)).sum(axis=1)
    if c is not None:
        c = np.asarray(c)
        if c.dtype != np.int32 or c.shape != (w_out_in.shape[0],):
            return None
        bound = bound + np.abs(c.astype(np.int64))
    if bound.size and int(bound.max()) >= _F32_EXACT:
        return None
    bias = None
    if c is not None:
        c = c.astype(np.int64)
        mb = np.broadcast_to(m.astype(np.float64), c.shape)
        b = (c * mb).astype(np.float32)
        for _ in range(4):  # the float32 neighbours where the first guess rounds off
            q = np.rint(b.astype(np.float64) / mb)
            bad = q != c
            if not bad.any():
                break
            b = np.where(bad, np.nextafter(b, np.where(q > c, -np.inf, np.inf)), b)
            b = b.astype(np.float32)
        if np.any(np.rint(b.astype(np.float64) / mb) != c):
            return None
        bias = b
    # an int8 output as the uint8 one with z_y + 128, then ^ 0x80: sat_u8(r + z_y + 128) -
    # 128 = sat_i8(r + z_y)
    shift = 128 if np.asarray(zy).dtype == np.int8 else 0
    out = QuantizedLinear(np.ascontiguousarray(w_out_in), m, bias)
    out.set_input_qparams(1.0, za_u8)
    out.set_output_qparams(1.0, int(np.asarray(zy).reshape(-1)[0]) + shift)
    return out


_TAPS_FROM = 1 << 16  # im2col elements from which the per-tap copy is used


def _bind_qlinear_conv_gemm(
    step: QStep, consts: dict[str, Any]
) -> Callable[[dict[str, Any]], Any] | None:
    """QLinearConv (one group, dilation 1, constant int8 weights with zero point 0,
    constant per-tensor activation qparams) as an im2col matrix times the weights packed
    once, requantized in the kernel's output stage (:func:`_u8_stage_layer`): the exact
    int32 ``bias + sum (x - z_x) w`` (padding is ``z_x``) and the multiplier
    ``float32(float32(s_x * s_w) / s_y)``, as :func:`qlinear_conv`; or None."""
    ins = step.inputs
    if len(ins) < 8 or any(n not in consts or consts[n] is None for n in ins[1:8]):
        return None
    if len(ins) > 8 and ins[8] and ins[8] not in consts:
        return None
    geo = _conv_attrs(step.attrs)
    if geo.get("group", 1) != 1 or tuple(geo.get("dilations", (1, 1))) != (1, 1):
        return None
    w, zx, zy = consts[ins[3]], np.asarray(consts[ins[2]]), np.asarray(consts[ins[7]])
    if not isinstance(w, np.ndarray) or w.dtype != np.int8 or w.ndim != 4:
        return None
    if _uniform_zp(consts[ins[5]]) != 0 or zx.size != 1 or zx.dtype not in _RANGE:
        return None
    if zy.size != 1 or zy.dtype not in _RANGE:
        return None
    m = _multiplier(1.0, consts[ins[1]], consts[ins[4]], consts[ins[6]]).reshape(-1)
    co, ci, kh, kw = (int(d) for d in w.shape)
    if m.size not in (1, co) or not (np.all(np.isfinite(m)) and np.all(m > 0)):
        return None
    shift = 128 if zx.dtype == np.int8 else 0
    zx_u8 = int(zx.reshape(-1)[0]) + shift
    bias = consts[ins[8]] if len(ins) > 8 and ins[8] else None
    layer = _u8_stage_layer(w.reshape(co, ci * kh * kw), m, bias, zx_u8, zy)
    if layer is None:
        return None
    impl = layer._impl
    out_i8 = zy.dtype == np.int8
    sh, sw = (int(v) for v in geo["strides"])
    pt, pb, pl, pr = (int(v) for v in geo["pads"])
    x_name, x_dtype = ins[0], zx.dtype
    window = np.lib.stride_tricks.sliding_window_view

    def run(env: dict[str, Any]) -> np.ndarray:
        x = env[x_name]
        if not isinstance(x, np.ndarray) or x.dtype != x_dtype or x.ndim != 4:
            raise _Fallback
        n, c, h, wd = x.shape
        if c != ci or h + pt + pb < kh or wd + pl + pr < kw:
            raise _Fallback
        xu = _as_u8(x)
        if pt or pb or pl or pr:
            xp = np.full((n, c, h + pt + pb, wd + pl + pr), zx_u8, np.uint8)
            xp[:, :, pt : pt + h, pl : pl + wd] = xu
        else:
            xp = xu
        hp, wp = xp.shape[2], xp.shape[3]
        oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
        if n * oh * ow * c * kh * kw < _TAPS_FROM:  # small: one copy of the window view
            win = window(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
            cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5))
        else:  # im2col, one strided copy per kernel tap: cols[b, i, j, c, di, dj] =
            # xp[b, c, i * sh + di, j * sw + dj] (faster than the 6-D copy on large inputs)
            cols = np.empty((n, oh, ow, c, kh, kw), np.uint8)
            xt = xp.transpose(0, 2, 3, 1)
            for di in range(kh):
                for dj in range(kw):
                    cols[:, :, :, :, di, dj] = xt[
                        :, di : di + sh * (oh - 1) + 1 : sh, dj : dj + sw * (ow - 1) + 1 : sw, :
                    ]
        y = impl(cols.reshape(-1, c * kh * kw))
        if out_i8:
            np.bitwise_xor(y, np.uint8(0x80), out=y)
            y = y.view(np.int8)
        return np.ascontiguousarray(y.reshape(n, oh, ow, co).transpose(0, 3, 1, 2))

    return run


def _qlinear_conv_spec(step: QStep, consts: dict[str, Any]) -> dict[str, Any] | None:
    """The constants of a QLinearConv that a channels-last conv chain (:func:`_bind_conv_chain`)
    runs: uint8 activations with constant per-tensor qparams, constant int8 weights with
    zero point 0, an optional constant int32 bias; or None."""
    ins = step.inputs
    if step.layer is not None or step.op != "QLinearConv" or len(step.outputs) != 1:
        return None
    if len(ins) < 8 or any(n not in consts or consts[n] is None for n in ins[1:8]):
        return None
    if len(ins) > 8 and ins[8] and ins[8] not in consts:
        return None
    w, zx, zy = consts[ins[3]], np.asarray(consts[ins[2]]), np.asarray(consts[ins[7]])
    if not isinstance(w, np.ndarray) or w.dtype != np.int8 or w.ndim != 4:
        return None
    if _uniform_zp(consts[ins[5]]) != 0 or zx.size != 1 or zx.dtype != np.uint8:
        return None
    if zy.size != 1 or zy.dtype != np.uint8:
        return None
    co = int(w.shape[0])
    m = _multiplier(1.0, consts[ins[1]], consts[ins[4]], consts[ins[6]]).reshape(-1)
    if m.size not in (1, co) or not (np.all(np.isfinite(m)) and np.all(m > 0)):
        return None
    bias = consts[ins[8]] if len(ins) > 8 and ins[8] else None
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.int32 or bias.shape != (co,):
            return None
    geo = _conv_attrs(step.attrs)
    g = int(geo.get("group", 1))
    if g < 1 or co % g:
        return None
    return {
        "w": np.ascontiguousarray(w),
        "group": g,
        "strides": tuple(int(v) for v in geo.get("strides", (1, 1))),
        "pads": tuple(int(v) for v in geo.get("pads", (0, 0, 0, 0))),
        "dilations": tuple(int(v) for v in geo.get("dilations", (1, 1))),
        "zx": int(zx.reshape(-1)[0]),
        "zy": int(zy.reshape(-1)[0]),
        "m": np.ascontiguousarray(np.broadcast_to(m, (co,)), np.float32),
        "bias": None if bias is None else np.ascontiguousarray(bias),
    }


@dataclass(frozen=True)
class _ConvGeometry:
    """A QLinearConv's output geometry on one input (:func:`_qconv_geometry`)."""

    co: int
    oh: int
    ow: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # (top, bottom, left, right), as the step's attrs
    dilations: tuple[int, int]


def _qconv_geometry(spec: dict[str, Any], h: int, w: int, c: int) -> _ConvGeometry | None:
    """The output geometry of the conv of a :func:`_qlinear_conv_spec` on a ``(c, h, w)``
    input (with the spec's strides, pads and dilations), or None when ``c`` does not match
    the weights and groups or the output would be empty. The one place both the conv
    chain plan and the lowered graph plan (``_qlower``) compute it."""
    co, cg, kh, kw = (int(d) for d in spec["w"].shape)
    if c != cg * spec["group"]:
        return None
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = spec["strides"], spec["dilations"], spec["pads"]
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        return None
    return _ConvGeometry(co, oh, ow, (sh, sw), (pt, pb, pl, pr), (dh, dw))


def _channel_lut(
    steps: list[QStep], generics: list[Callable[[dict[str, Any]], Any]], c: int
) -> np.ndarray | None:
    """The (c, 256) uint8 table of a uint8 -> uint8 per-channel elementwise segment
    (DequantizeLinear, float BatchNormalization / Relu, QuantizeLinear): the segment's
    own generic functions run once on every byte value of every channel, so the table
    holds exactly their results; None when the probe does not come back as uint8."""
    probe = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16), (1, c, 16, 16))
    env: dict[str, Any] = {steps[0].inputs[0]: np.ascontiguousarray(probe)}
    out: Any = None
    for st, fn in zip(steps, generics):
        out = fn(env)
        env[st.outputs[0]] = out
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != (1, c, 16, 16):
        return None
    return np.ascontiguousarray(out.reshape(c, 256))


def _bind_conv_chain(
    steps: list[QStep],
    items: list[tuple[str, Any, list[QStep]]],
    generics: list[Callable[[dict[str, Any]], Any]],
) -> Callable[[dict[str, Any]], Any]:
    """A chain of uint8 steps (each output read only by the next) in ONE call of a
    channels-last run plan (``_core.conv.QCNNPlan``, made once per input shape): the
    input transposed to NHWC once; every QLinearConv's exact int32 accumulation and
    uint8 requantization (multiplier ``float32(float32(s_x * s_w) / s_y)``, as
    :func:`qlinear_conv`) and every per-channel elementwise segment (DequantizeLinear ->
    float BatchNormalization/Relu -> QuantizeLinear, as a table of the segment's own
    results for each byte value, :func:`_channel_lut`) on NHWC buffers; the last output
    transposed back to NCHW. No im2col, no per-layer transposes. Inputs the plan does not
    cover (another dtype, a channel count that does not fit) run the steps' generic
    functions. ``items``: ("conv", spec, [step]) or ("lut", None, [segment steps])."""
    from .. import _core

    x_name = steps[0].inputs[0]
    plans: dict[tuple[int, ...], Any] = {}
    gen_of = dict(zip((id(st) for st in steps), generics))

    def build(h: int, w: int, c: int) -> Any:
        plan = _core.conv.QCNNPlan(h, w, c)
        for kind, sp, members in items:
            if kind == "lut":
                lut = _channel_lut(members, [gen_of[id(st)] for st in members], c)
                if lut is None:
                    return None
                plan.add_lut(lut)
                continue
            g = _qconv_geometry(sp, h, w, c)
            if g is None:
                return None
            (sh, sw), (dh, dw), (pt, _, pl, _) = g.strides, g.dilations, g.pads
            plan.add_conv(
                sp["w"], sp["group"], h, w, c, g.oh, g.ow, sh, sw, pt, pl, dh, dw, sp["zx"], 0,
                sp["m"], sp["bias"], False, sp["zy"],
            )  # fmt: skip
            h, w, c = g.oh, g.ow, g.co
        return plan

    def generic(env: dict[str, Any]) -> Any:
        out = None
        for st, fn in zip(steps, generics):
            out = fn(env)
            env[st.outputs[0]] = out
        return out

    def run(env: dict[str, Any]) -> Any:
        x = env[x_name]
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
            return generic(env)
        key = x.shape[1:]
        if key not in plans:
            plans[key] = build(x.shape[2], x.shape[3], x.shape[1])
        plan = plans[key]
        if plan is None:
            return generic(env)
        y = plan.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2))

    return run


def _elementwise_per_channel(st: QStep) -> bool:
    """A float step whose every output element depends only on the input element at the
    same position and its channel (NCHW): BatchNorm2d in eval mode, ReLU."""
    from .. import nn

    if st.layer is not None:
        if isinstance(st.layer, nn.BatchNorm2d):
            return getattr(st.layer, "layout", "NCHW") == "NCHW" and not st.layer.training
        return isinstance(st.layer, nn.ReLU)
    return st.op == "Relu" and len(st.outputs) == 1


def _bind_matmul_integer_f32(
    step: QStep, consts: dict[str, Any]
) -> Callable[[dict[str, Any]], Any] | None:
    """``float32(MatMulInteger)`` (the step followed by its only consumer, a Cast to
    float) with the constant int8 weights packed once, or None.

    A :class:`pyfastopt.quant.QuantizedLinear` with input qparams ``(1, 0)``, weight
    scale 1 and no bias gives ``float32(sum_k a * w)`` exactly while ``255 * sum_k |w|``
    stays below ``2**24`` (checked here); the activation zero point (known only when
    the step runs: DynamicQuantizeLinear's) is then removed as ``za * sum_k w``, an exact
    float32 subtraction of integers below ``2**24``: the result is the exact int32
    accumulator in float32, which is what the Cast gives."""
    from ..quant import QuantizedLinear

    ins = step.inputs
    if len(ins) < 2 or ins[0] in consts or ins[1] not in consts:
        return None
    w = consts[ins[1]]
    zb = consts.get(ins[3]) if len(ins) > 3 and ins[3] else np.zeros((), np.int8)
    if len(ins) > 3 and ins[3] and ins[3] not in consts:
        return None
    if not isinstance(w, np.ndarray) or w.dtype != np.int8 or w.ndim != 2:
        return None
    if zb is None or np.asarray(zb).size != 1 or np.any(np.asarray(zb) != 0):
        return None
    za_name = ins[2] if len(ins) > 2 else ""
    za_const = consts.get(za_name) if za_name in consts else _DYN
    w64 = w.astype(np.int64)
    if w.size and int((255 * np.abs(w64).sum(axis=0)).max()) >= _F32_EXACT:
        return None
    colsum = w64.sum(axis=0).astype(np.float32)  # exact: |sum| < 2**24 / 255
    ql = QuantizedLinear(np.ascontiguousarray(w.T), np.ones(1, np.float32), None)
    ql.set_input_qparams(1.0, 0)
    impl = ql._impl
    a_name, n_out = ins[0], int(w.shape[1])

    def run(env: dict[str, Any]) -> np.ndarray:
        a = env[a_name]
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim < 1:
            raise _Fallback
        za = za_const if za_const is not _DYN else env[za_name]
        if za is None:
            zav = 0
        else:
            za = np.asarray(za)
            if za.size != 1:
                raise _Fallback
            zav = int(za.reshape(-1)[0])
        y = impl(a if a.ndim == 2 else a.reshape(-1, a.shape[-1]))
        if zav:
            y -= np.float32(zav) * colsum
        return y if a.ndim == 2 else y.reshape(*a.shape[:-1], n_out)

    return run


class _Fallback(Exception):
    """A fast path met inputs it does not cover: the step's generic function runs."""


def _with_fallback(
    fast: Callable[[dict[str, Any]], Any], generic: Callable[[dict[str, Any]], Any]
) -> Callable[[dict[str, Any]], Any]:
    def run(env: dict[str, Any]) -> Any:
        try:
            return fast(env)
        except _Fallback:
            return generic(env)

    return run


_DYN = object()  # a step input computed while the graph runs (not a constant)


def _bind(step: QStep, consts: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """``env -> the step's output``: its constant inputs fetched once, here."""
    fn = step.layer.forward if step.layer is not None else QFUNCTIONS[step.op]
    names = step.inputs[:1] if step.layer is not None else step.inputs
    attrs = step.attrs
    pairs = [(n, consts.get(n, _DYN)) for n in names]
    if all(c is _DYN for _, c in pairs):
        if len(names) == 1:
            n0 = names[0]
            if attrs:
                return lambda env: fn(env[n0], **attrs)
            return lambda env: fn(env[n0])
        return lambda env: fn(*[env[n] for n in names], **attrs)
    return lambda env: fn(*[env[n] if c is _DYN else c for n, c in pairs], **attrs)


def _pass_float32(
    src: str, generic: Callable[[dict[str, Any]], Any]
) -> Callable[[dict[str, Any]], Any]:
    """A Cast to float32 of an input that is already float32 (the fused MatMulInteger's):
    the same values, no copy (the only reader of that input is this step)."""

    def run(env: dict[str, Any]) -> Any:
        v = env[src]
        return v if isinstance(v, np.ndarray) and v.dtype == np.float32 else generic(env)

    return run


def _bind_dynamic_quantize(step: QStep) -> Callable[[dict[str, Any]], Any]:
    """DynamicQuantizeLinear of a finite, non-empty float32 input with
    :func:`pyfastopt.quant.dynamic_quantize_linear`'s float32 operations on Python floats:
    each ``-``/``/`` of two float32 values done in float64 and rounded to float32 is the
    float32 operation's result (float64 has more than ``2 * 24 + 2`` bits), ``round`` is
    half to even as ``numpy.rint``. Anything else (NaN, infinity, an empty or non-float32
    input, a range that overflows) takes the generic function, which raises as it did."""
    from .. import _core

    generic = _bind(step, {})
    x_name = step.inputs[0]
    kernel = _core.quant.quantize
    f32 = np.float32
    f32_max = float(np.finfo(np.float32).max)

    def run(env: dict[str, Any]) -> Any:
        x = env[x_name]
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.size):
            return generic(env)
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return generic(env)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi == lo:
            scale = 1.0
        else:
            if hi - lo > f32_max:
                return generic(env)
            scale = float(f32(float(f32(hi - lo)) / 255.0))
            if scale == 0.0:
                return generic(env)
        zpf = -float(f32(lo / scale))
        zp = round(min(max(zpf, 0.0), 255.0))
        y = kernel(x, [scale], [zp], True, -1, None)
        return y, np.array(scale, np.float32), np.array(zp, np.uint8)

    return run


def _bind_quantize(step: QStep, consts: dict[str, Any]) -> Callable[[dict[str, Any]], Any] | None:
    """QuantizeLinear with a constant per-tensor scale and zero point: the kernel called
    with the checked parameters (as :func:`quantize_linear`: NaN -> the type's minimum)."""
    from .. import _core

    ins = step.inputs
    if len(ins) < 2 or ins[1] not in consts or (len(ins) > 2 and ins[2] and ins[2] not in consts):
        return None
    s = np.asarray(consts[ins[1]], np.float32)
    z = np.asarray(consts[ins[2]]) if len(ins) > 2 and ins[2] else np.zeros((), np.uint8)
    if s.size != 1 or z.size != 1 or z.dtype not in _RANGE:
        return None
    sf = float(s.reshape(-1)[0])
    if not (np.isfinite(sf) and 1.2e-38 < sf < 3.4e38):
        return None
    sl, zl, unsigned = [sf], [int(z.reshape(-1)[0])], z.dtype == np.uint8
    qmin = _RANGE[z.dtype][0]
    x_name = ins[0]
    kernel = _core.quant.quantize

    def run(env: dict[str, Any]) -> np.ndarray:
        x = env[x_name]
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32):
            x = np.asarray(x, np.float32)
        q = kernel(x, sl, zl, unsigned, -1, None)
        if x.size and np.isnan(x.min()):  # ONNX Runtime's clamp sends NaN to the minimum
            q[np.isnan(x)] = qmin
        return q

    return run


def _bind_prepacked(
    step: QStep, ql: Any, params: tuple[np.ndarray, Any] | None, consts: dict[str, Any]
) -> Callable[[dict[str, Any]], Any]:
    """A prepacked QGemm/QLinearMatMul step (uint8 activations; any other dtype takes the
    generic function)."""
    generic = _bind(step, consts)
    a_name = step.inputs[0]
    if a_name in consts:
        return generic
    za = step.inputs[2]
    a_dtype = np.asarray(consts[za]).dtype if za else np.dtype(np.uint8)
    u8 = _u8_output_layer(step, ql, params, consts)
    if u8 is not None:
        impl = u8._impl
        n_out = u8.out_features
        out_i8 = params is not None and np.asarray(params[1]).dtype == np.int8

        def run_u8(env: dict[str, Any]) -> np.ndarray:
            a = env[a_name]
            if not isinstance(a, np.ndarray) or a.dtype != a_dtype or a.ndim < 1:
                return generic(env)
            a = _as_u8(a)
            if a.ndim == 2:
                y = impl(a)
            else:
                y = impl(a.reshape(-1, a.shape[-1])).reshape(*a.shape[:-1], n_out)
            if out_i8:
                np.bitwise_xor(y, np.uint8(0x80), out=y)
                return y.view(np.int8)
            return y

        return run_u8

    def run(env: dict[str, Any]) -> np.ndarray:
        a = env[a_name]
        if not isinstance(a, np.ndarray) or a.dtype != a_dtype or a.ndim < 1:
            return generic(env)
        return _run_prepacked(step, ql, params, env)

    return run


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
        for step in self.steps:  # an inference graph: float layers (BatchNorm2d) in eval mode
            if step.layer is not None and hasattr(step.layer, "eval"):
                step.layer.eval()
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
        self._compile()

    def _compile(self, fast: bool = True, native: bool | None = None) -> None:
        """The run plan: one ``env -> output`` function per step, with the constant
        inputs, multipliers and prepacked weights resolved here, once. ``fast=False``:
        every step runs its generic function (:data:`QFUNCTIONS`, the reference the fast
        paths are tested against); ``_fast_steps`` lists the steps given a fast path.
        ``native`` (default: ``fast``): lower the whole graph to one native call
        (:func:`pyfastopt.onnx._qlower.lower`, made per input sample shape on first use)
        where it fits; the step plan runs otherwise."""
        self._native: dict[tuple[int, ...], Any] | None = (
            {} if (fast if native is None else native) else None
        )
        consts: dict[str, Any] = {**self.constants, "": None}
        readers: dict[str, list[int]] = {}
        for i, step in enumerate(self.steps):
            for n in step.inputs if step.layer is None else step.inputs[:1]:
                readers.setdefault(n, []).append(i)
        plan: list[tuple[Callable[[dict[str, Any]], Any], QStep]] = []
        passthrough: set[int] = set()  # Casts whose MatMulInteger already gives float32
        fast_steps: list[int] = []
        chains = self._conv_chains(consts, readers) if fast else {}
        in_chain: set[int] = {j for c in chains.values() for j in c[1:]}
        for i, step in enumerate(self.steps):
            fn: Callable[[dict[str, Any]], Any] | None = None
            pre = self._fast.get(i)
            if i in in_chain:  # run by the chain's first step
                fast_steps.append(i)
                continue
            if i in chains:
                idx = chains[i]
                members = [self.steps[j] for j in idx]
                generics = [_bind(st, consts) for st in members]
                items: list[tuple[str, Any, list[QStep]]] = []
                k = 0
                while k < len(members):
                    spec = _qlinear_conv_spec(members[k], consts)
                    if spec is not None:
                        items.append(("conv", spec, [members[k]]))
                        k += 1
                        continue
                    seg = [members[k]]  # DequantizeLinear ... QuantizeLinear
                    while seg[-1].op != "QuantizeLinear" or seg[-1].layer is not None:
                        k += 1
                        seg.append(members[k])
                    items.append(("lut", None, seg))
                    k += 1
                chain_fn = _bind_conv_chain(members, items, generics)
                last = members[-1]
                chain_step = QStep(
                    "QLinearConv", list(step.inputs), list(last.outputs), dict(step.attrs)
                )
                plan.append((chain_fn, chain_step))
                fast_steps.append(i)
                continue
            if not fast:
                pass
            elif i in passthrough:
                src = step.inputs[0]
                fn = _bind(step, consts)
                fn = _pass_float32(src, fn)
            elif step.layer is None and step.op == "MatMulInteger" and len(step.outputs) == 1:
                out = step.outputs[0]
                r = readers.get(out, [])
                c = self.steps[r[0]] if len(r) == 1 else None
                if (
                    c is not None
                    and out != self.output_name
                    and c.layer is None
                    and c.op == "Cast"
                    and int(c.attrs.get("to", 1)) == 1
                ):
                    f = _bind_matmul_integer_f32(step, consts)
                    if f is not None:
                        fn = _with_fallback(f, _bind(step, consts))
                        passthrough.add(r[0])
            elif pre is not None:
                fn = _bind_prepacked(step, pre[0], pre[1], consts)
            elif step.layer is None and step.op == "QLinearConv":
                f = _bind_qlinear_conv_gemm(step, consts)
                if f is not None:
                    fn = _with_fallback(f, _bind(step, consts))
            elif step.layer is None and step.op == "QuantizeLinear":
                fn = _bind_quantize(step, consts)
            elif step.layer is None and step.op == "DynamicQuantizeLinear":
                fn = _bind_dynamic_quantize(step)
            if fn is None:
                fn = _bind(step, consts)
            else:
                fast_steps.append(i)
            plan.append((fn, step))
        self._plan = plan
        self._fast_steps = fast_steps

    def _conv_chains(
        self, consts: dict[str, Any], readers: dict[str, list[int]]
    ) -> dict[int, list[int]]:
        """First step -> the step indices of each maximal chain of QLinearConv steps that
        :func:`_bind_conv_chain` runs: every member covered by :func:`_qlinear_conv_spec`,
        each member's output read only by the next member (and not the graph output)."""
        ok = {i for i, st in enumerate(self.steps) if _qlinear_conv_spec(st, consts)}
        chains: dict[int, list[int]] = {}
        taken: set[int] = set()

        def next_of(j: int) -> int | None:
            """The only reader of step j's output, reading it as its first input."""
            out = self.steps[j].outputs[0]
            r = readers.get(out, [])
            if out == self.output_name or len(r) != 1 or r[0] in taken:
                return None
            if r[0] <= j or self.steps[r[0]].inputs[0] != out:
                return None
            return r[0]

        def segment(j: int) -> list[int] | None:
            """Steps of a per-channel uint8 elementwise segment starting at j."""
            if not self._dq_u8(self.steps[j], consts):
                return None
            seg = [j]
            while True:
                nxt = next_of(seg[-1])
                if nxt is None:
                    return None
                st = self.steps[nxt]
                seg.append(nxt)
                if st.layer is None and st.op == "QuantizeLinear":
                    return seg if self._q_u8(st, consts) else None
                if not _elementwise_per_channel(st):
                    return None

        for i in sorted(ok):
            if i in taken:
                continue
            idx = [i]
            end = [i]  # chain ends after a conv or a whole segment
            while True:
                nxt = next_of(idx[-1])
                if nxt is None:
                    break
                if nxt in ok:
                    idx.append(nxt)
                    end = list(idx)
                    continue
                seg = segment(nxt)
                if seg is None:
                    break
                idx += seg
                end = list(idx)
            taken.update(end)
            chains[i] = end
        return chains

    @staticmethod
    def _dq_u8(st: QStep, consts: dict[str, Any]) -> bool:
        """A DequantizeLinear of uint8 with constant per-tensor scale and zero point."""
        if st.layer is not None or st.op != "DequantizeLinear" or len(st.inputs) < 3:
            return False
        s_, z = consts.get(st.inputs[1]), consts.get(st.inputs[2])
        return (
            s_ is not None and z is not None and np.asarray(s_).size == 1
            and np.asarray(z).size == 1 and np.asarray(z).dtype == np.uint8
        )  # fmt: skip

    @staticmethod
    def _q_u8(st: QStep, consts: dict[str, Any]) -> bool:
        """A QuantizeLinear to uint8 with constant per-tensor scale and zero point."""
        if len(st.inputs) < 3:
            return False
        s_, z = consts.get(st.inputs[1]), consts.get(st.inputs[2])
        return (
            s_ is not None and z is not None and np.asarray(s_).size == 1
            and np.asarray(z).size == 1 and np.asarray(z).dtype == np.uint8
        )  # fmt: skip

    training = False

    def eval(self) -> QuantizedGraph:
        return self

    def forward(self, x: Any) -> np.ndarray:
        xa = np.asarray(x, np.float32)
        native = self._native
        if native is not None and xa.ndim >= 1 and xa.shape[0] > 0:
            key = xa.shape[1:]
            if key in native:
                plan = native[key]
            else:
                from ._qlower import lower

                plan = native[key] = lower(self, key)
            if plan is not None:
                y = plan.run(xa if xa.flags.c_contiguous else np.ascontiguousarray(xa))
                if y is not None:
                    return y
        env: dict[str, Any] = {self.input_name: xa}
        for fn, step in self._plan:
            try:
                out = fn(env)
            except (IndexError, TypeError, ValueError, KeyError, ArithmeticError) as exc:
                known: dict[str, Any] = {**self.constants, **env}
                shapes = [np.shape(known[n]) if n in known else () for n in step.inputs]
                raise ValueError(
                    f"QuantizedGraph: step {step.op} -> {step.outputs} failed on inputs of "
                    f"shapes {shapes}: {exc}"
                ) from None
            if len(step.outputs) == 1:
                env[step.outputs[0]] = out
            else:
                for name, value in zip(step.outputs, out):
                    if name:
                        env[name] = value
        name = self.output_name
        return np.asarray(env[name] if name in env else self.constants[name])

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
