"""int8 convolution and pooling (C++: ``cpp/kernels/conv/qconv_driver.cpp``, contract in
``cpp/include/pyfastopt/qconv.h``): implicit GEMM on the int8 GEMM's packed
micro-kernels (a direct loop when each output channel reads one input channel:
depthwise), exact int32 accumulation, and :func:`matmul_int8`'s output pipeline (int32;
float32 with scales, bias and relu; requantized uint8/int8)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core
from .._conv import _adaptive_size, _avg_args, _conv_args, _layout, _pool_args
from .._validate import boolean, choice, type_name

if TYPE_CHECKING:
    import numpy.typing as npt

    from .._typing import ArrayLike

__all__ = [
    "adaptive_avg_pool2d_int8",
    "avg_pool2d_int8",
    "conv2d_int8",
    "global_avg_pool2d_int8",
    "max_pool2d_int8",
]

_OUT_KINDS = {np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8"}


def _positive_scale(name: str, s: Any, length: int | None) -> np.ndarray:
    """float32 scale(s): a positive finite scalar, or (length given) a 1-D array of
    ``length`` (or 1) entries."""
    if isinstance(s, (bool, np.bool_, str)):
        raise TypeError(f"{name} must be a real number or array, got {type_name(s)}")
    a = np.asarray(s)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real number or array, got {type_name(s)}")
    a = a.astype(np.float64)
    if a.ndim == 1 and a.size == 1:
        a = a.reshape(())
    if a.ndim > 1 or (a.ndim == 1 and (length is None or a.shape[0] != length)):
        want = "a scalar" if length is None else f"a scalar or shape ({length},)"
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or not np.all(a > 0):
        raise ValueError(f"{name} must be finite and > 0, got {s!r}")
    return a.astype(np.float32)


def _weight_zero_point(z: Any) -> Any:
    """One weight zero point (a per-channel array holding one repeated value counts as
    one), or the 1-D array of differing per-channel zero points."""
    if isinstance(z, (np.ndarray, list, tuple)) and np.ndim(z) >= 1:
        a = np.asarray(z)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"weight_zero_point must be a scalar or 1-D, got shape {a.shape}")
        if a.dtype.kind not in "iu":
            raise TypeError(f"weight_zero_point must be an integer or integer array, got {a.dtype}")
        if np.any(a != a[0]):
            return a  # per-channel zero points (see _per_channel_zw)
        return a[0]
    return z


def _prepared(weight_q: ArrayLike, groups: int) -> Any:
    """The C++ prepacked weights (reused by the layers of quantized models)."""
    return _core.conv.QConv(weight_q, groups)


def _run(
    conv: Any,
    x_q: ArrayLike,
    x_zero_point: Any,
    weight_zero_point: Any,
    co: int,
    geom: tuple[int, ...],
    nhwc: bool,
    bias: Any,
    x_scale: Any,
    weight_scale: Any,
    out_scale: Any,
    out_zero_point: Any,
    out_dtype: Any,
    relu: bool,
    wq_info: tuple[np.dtype, tuple[int, ...], int] | None = None,
) -> np.ndarray:
    zx = (
        x_zero_point.reshape(())
        if isinstance(x_zero_point, np.ndarray) and x_zero_point.size == 1
        else x_zero_point
    )
    zw = _weight_zero_point(weight_zero_point)
    stage = _stage(co, bias, x_scale, weight_scale, out_scale, out_zero_point, out_dtype, relu)
    if isinstance(zw, np.ndarray):
        if wq_info is None:
            raise ValueError("per-channel weight zero points need conv2d_int8")
        return _per_channel_zw(conv, x_q, zx, zw, co, geom, nhwc, stage, *wq_info)
    return conv(x_q, zx, zw, *geom[:10], nhwc, *stage)


def _per_channel_zw(
    conv: Any,
    x_q: Any,
    zx: Any,
    zw: np.ndarray,
    co: int,
    geom: tuple[int, ...],
    nhwc: bool,
    stage: tuple[Any, ...],
    w_dtype: np.dtype,
    w_shape: tuple[int, ...],
    groups: int,
) -> np.ndarray:
    """Differing per-channel weight zero points (ONNX ConvInteger allows them):
    ``acc = acc(zw = 0) - zw[o] * S[g(o)]`` with ``S`` the window sums of ``x - zx`` over
    the group's channels (the same kernel with a weight of ones), int64 wrapped to int32
    as the kernel's arithmetic; then the output stage in NumPy with the kernel's float32
    operations in its order (the same values)."""
    info = np.iinfo(w_dtype)
    if zw.shape != (co,):
        raise ValueError(
            f"weight_zero_point of shape {zw.shape} must hold one value per output channel ({co})"
        )
    if int(zw.min()) < info.min or int(zw.max()) > info.max:
        raise ValueError(
            f"weight_zero_point values must be in [{info.min}, {info.max}] (the {w_dtype} range)"
        )
    kind, scale, fbias, qbias, relu, zy = stage
    acc = conv(x_q, zx, 0, *geom[:10], nhwc, "i32", None, None, qbias, False, None)
    ones = _prepared(np.ones((groups, *w_shape[1:]), np.int8), groups)
    sums = ones(x_q, zx, 0, *geom[:10], nhwc, "i32", None, None, None, False, None)
    axis = 3 if nhwc else 1
    shape = [1, 1, 1, 1]
    shape[axis] = co
    per_group = np.take(sums, np.arange(co) // (co // groups), axis=axis).astype(np.int64)
    acc = (acc.astype(np.int64) - zw.astype(np.int64).reshape(shape) * per_group).astype(np.int32)
    if kind == "i32":
        return acc
    y = acc.astype(np.float32) * np.asarray(scale, np.float32).reshape(shape)
    if kind == "f32":
        if fbias is not None:
            y = y + np.asarray(fbias, np.float32).reshape(shape)
        return np.where(y < 0, np.float32(0), y) if relu else y
    lo, hi = (0, 255) if kind == "u8" else (-128, 127)
    z = int(np.asarray(zy).reshape(()))
    if relu:
        lo = max(lo, z)
    q = np.rint(np.clip(y, -1024, 1024)).astype(np.int32) + z
    return np.clip(q, lo, hi).astype(np.uint8 if kind == "u8" else np.int8)


def _stage(
    co: int,
    bias: Any,
    x_scale: Any,
    weight_scale: Any,
    out_scale: Any,
    out_zero_point: Any,
    out_dtype: Any,
    relu: bool,
) -> tuple[Any, ...]:
    """The output-stage arguments of the binding: (kind, col_scale, float bias, int32
    bias, relu, out zero point), validated and computed once."""
    b = None if bias is None else np.asarray(bias)
    if b is not None and b.dtype.kind not in "iuf":
        raise TypeError(f"bias must be an integer (int32) or float array, got dtype {b.dtype}")
    int_bias = b is not None and b.dtype.kind in "iu"
    if (x_scale is None) != (weight_scale is None):
        raise ValueError("x_scale and weight_scale must be given together (or neither, for int32)")
    if x_scale is None:  # int32 accumulators
        if out_scale is not None or out_zero_point is not None:
            raise ValueError("out_scale/out_zero_point need x_scale and weight_scale")
        if relu:
            raise ValueError(
                "activation='relu' needs x_scale and weight_scale (a float or 8-bit output)"
            )
        if b is not None and not int_bias:
            raise TypeError("bias of an int32 output must be an integer (int32) array")
        return ("i32", None, None, b, False, None)
    xs = _positive_scale("x_scale", x_scale, None)
    ws = _positive_scale("weight_scale", weight_scale, co)
    acc_scale = np.broadcast_to((xs * ws).astype(np.float32), (co,))  # f32(xs * ws)
    if out_scale is None:  # float32
        if out_zero_point is not None:
            raise ValueError("out_zero_point needs out_scale")
        fb = None if (b is None or int_bias) else b
        return ("f32", acc_scale, fb, b if int_bias else None, relu, None)
    ys = _positive_scale("out_scale", out_scale, None)
    if out_dtype is None:
        zdt = np.asarray(out_zero_point).dtype if out_zero_point is not None else None
        out_dtype = zdt if zdt in _OUT_KINDS else np.uint8
    try:
        kind = _OUT_KINDS[np.dtype(out_dtype)]
    except (TypeError, KeyError):
        raise TypeError(f"out_dtype must be numpy.uint8 or numpy.int8, got {out_dtype!r}") from None
    zy = 0 if out_zero_point is None else out_zero_point
    if isinstance(zy, np.ndarray) and zy.size == 1:
        zy = zy.reshape(())
    mult = (acc_scale / ys).astype(np.float32)  # ONNX Runtime's f32(f32(xs * ws) / ys)
    qb = None
    if b is not None:
        if int_bias:
            qb = b
        else:
            if b.shape != (co,):
                raise ValueError(f"bias must have shape ({co},), got {b.shape}")
            fb64 = b.astype(np.float64)
            if not np.all(np.isfinite(fb64)):
                raise ValueError("bias must be finite")
            den = xs.astype(np.float64) * np.broadcast_to(ws.astype(np.float64), (co,))
            qb = np.clip(np.rint(fb64 / den), -(2**31), 2**31 - 1).astype(np.int32)
    return (kind, mult, None, qb, relu, zy)


def conv2d_int8(
    x_q: ArrayLike,
    x_zero_point: Any,
    weight_q: ArrayLike,
    weight_zero_point: Any = 0,
    bias: ArrayLike | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    layout: str = "NCHW",
    *,
    x_scale: float | None = None,
    weight_scale: float | ArrayLike | None = None,
    out_scale: float | None = None,
    out_zero_point: Any = None,
    out_dtype: Any = None,
    activation: str | None = None,
) -> npt.NDArray[Any]:
    r"""Quantized 2-D convolution (cross-correlation) with exact int32 accumulation.

    .. math:: acc[n, o, i, j] = b_o + \sum_{c, r, s} (x[n, g(o) C_g + c, i s_h + r d_h - p_t,
              j s_w + s d_w - p_l] - z_x)\,(w[o, c, r, s] - z_w)

    positions outside the input counting as :math:`x = z_x` (real zero), then the output
    stage of :func:`matmul_int8` / ONNX QLinearConv:

    * no scales: ``acc`` (int32, ONNX ConvInteger when ``bias`` is None);
    * ``x_scale`` and ``weight_scale``: float32 ``y = f32(acc) * f32(x_scale *
      weight_scale[o])`` (+ a float ``bias[o]``), then ``relu``;
    * also ``out_scale``: requantized ``q = sat(round_half_even(f32(acc) * m_o) + z_y)``
      with ``m_o = f32(f32(x_scale * weight_scale[o]) / out_scale)`` (ONNX Runtime's
      float32 multiplier), uint8 or int8; with relu the lower bound is ``z_y``.

    Args:
        x_q: uint8 or int8 array, (N, C, H, W) for ``layout="NCHW"`` or (N, H, W, C) for
            ``"NHWC"`` (channels-last: the fast layout); any strides (copied when not
            C-contiguous).
        x_zero_point: integer in ``x_q``'s dtype range (or a 1-element array).
        weight_q: int8 (or uint8) ``(out_channels, C / groups, kh, kw)`` (PyTorch's layout
            in both layouts).
        weight_zero_point: integer in ``weight_q``'s range, or (as ONNX ConvInteger) a 1-D
            array of one per output channel: when its entries differ, the window sums of
            ``x - x_zero_point`` are subtracted in int64 (wrapped to int32) and the output
            stage runs in NumPy with the same float32 operations (same values, one more
            pass over x).
        bias: None; an integer array ``(out_channels,)`` (int32 range): the quantized
            bias of ONNX QLinearConv, scale ``x_scale * weight_scale``, added to ``acc``;
            or (with scales) a float array: added to the float output, or quantized as
            ``round_half_even(f64 bias / (f64 x_scale * f64 weight_scale))`` for an 8-bit
            output.
        stride, padding, dilation, groups: as :func:`pyfastopt.conv2d` (``padding`` an
            int, pair, (top, bottom, left, right), ``"same"`` or ``"valid"``).
        layout: ``"NCHW"`` or ``"NHWC"``; the output has the same layout.
        x_scale: positive float (the input's scale).
        weight_scale: positive float or ``(out_channels,)`` array (per output channel).
        out_scale, out_zero_point: the 8-bit output's qparams; ``out_dtype`` (uint8 or
            int8) defaults to ``out_zero_point``'s NumPy dtype when it is one, else uint8.
        activation: None or ``"relu"`` (needs scales).

    Returns:
        (N, out_channels, OH, OW) or (N, OH, OW, out_channels) of int32, float32, uint8 or
        int8. Exact whenever the true accumulator fits int32 (always for
        ``C/groups * kh * kw <= 33025``). Identical for any thread count and SIMD level.

    Raises:
        TypeError: byte arrays of another dtype, non-integer zero points, bad scales or
            bias types, naming the argument.
        ValueError: shapes (4-D, channels divisible by groups, weight/bias shapes, kernel
            larger than the padded input: naming the argument and the shapes), zero
            points out of range, scales not finite and positive, out qparams without
            scales, relu on an int32 output.

    Example:
        >>> import numpy as np
        >>> x = np.full((1, 1, 3, 3), 130, np.uint8)
        >>> w = np.ones((1, 1, 3, 3), np.int8)
        >>> conv2d_int8(x, 128, w, 0)[0, 0]
        array([[18]], dtype=int32)
    """
    g = _conv_args(weight_q, stride, padding, dilation, groups)
    nhwc = _layout(layout)
    relu = choice("activation", activation, (None, "relu")) == "relu"
    conv = _prepared(weight_q, g[8])
    w = np.asarray(weight_q)
    co = int(w.shape[0])
    return _run(
        conv, x_q, x_zero_point, weight_zero_point, co, g[:8], nhwc, bias, x_scale,
        weight_scale, out_scale, out_zero_point, out_dtype, relu, (w.dtype, w.shape, g[8]),
    )  # fmt: skip


def max_pool2d_int8(
    x_q: ArrayLike,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    layout: str = "NCHW",
) -> npt.NDArray[Any]:
    """Max pooling of uint8/int8 data (exact: the output keeps x's scale and zero point),
    PyTorch's windows as :func:`pyfastopt.max_pool2d` (padding ignored)."""
    a = _pool_args(kernel_size, stride, padding, dilation)
    cm = boolean("ceil_mode", ceil_mode)
    return _core.conv.qpool_forward(0, x_q, 0, *a, cm, False, 0, 0, 0, _layout(layout))


def avg_pool2d_int8(
    x_q: ArrayLike,
    x_zero_point: Any,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    layout: str = "NCHW",
) -> npt.NDArray[Any]:
    r"""Average pooling of uint8/int8 data with x's scale and zero point kept:
    ``q = sat(z + round_half_even(sum_window(x - z) / d))`` with the exact integer
    quotient, ``d`` PyTorch's divisor (see :func:`pyfastopt.avg_pool2d`; padding counts
    as ``z``, real zero)."""
    a, cm, cip, div = _avg_args(
        kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    return _core.conv.qpool_forward(1, x_q, x_zero_point, *a, cm, cip, div, 0, 0, _layout(layout))


def adaptive_avg_pool2d_int8(
    x_q: ArrayLike,
    x_zero_point: Any,
    output_size: int | tuple[int | None, int | None],
    layout: str = "NCHW",
) -> npt.NDArray[Any]:
    """Adaptive average pooling of uint8/int8 data (windows of
    :func:`pyfastopt.adaptive_avg_pool2d`, rounding of :func:`avg_pool2d_int8`)."""
    nhwc = _layout(layout)
    oh, ow = _adaptive_size(output_size, x_q, nhwc)
    return _core.conv.qpool_forward(
        2, x_q, x_zero_point, 1, 1, 1, 1, 0, 0, 1, 1, False, False, 0, oh, ow, nhwc
    )


def global_avg_pool2d_int8(
    x_q: ArrayLike, x_zero_point: Any, layout: str = "NCHW"
) -> npt.NDArray[Any]:
    """The mean over H and W of uint8/int8 data, (N, C, 1, 1) or (N, 1, 1, C)
    (:func:`adaptive_avg_pool2d_int8` with output size 1)."""
    return adaptive_avg_pool2d_int8(x_q, x_zero_point, 1, layout)
