"""2-D convolution and pooling with PyTorch's semantics and argument names, for NCHW and
NHWC (channels-last) arrays, with explicit backward functions (no autograd).

Kernels: ``cpp/kernels/conv/`` (implicit GEMM on the packed GEMM micro-kernels, a direct
loop for depthwise convolutions; pooling as plain loops). The algorithm, rounding order
and extra memory are described in ``cpp/include/pyfastopt/conv.h``. Every result is
bitwise identical for any thread count and SIMD level, and for both layouts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._validate import boolean, choice, int_tuple, integer, optional, positive_int

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from ._typing import ArrayLike, FloatArray

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "conv2d",
    "conv2d_backward",
    "global_avg_pool2d",
    "max_pool2d",
    "max_pool2d_backward",
]

_ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2}
_ALGORITHMS = ("auto", "direct", "winograd")
_LAYOUTS = ("NCHW", "NHWC")


def _layout(layout: Any) -> bool:
    """True for channels-last."""
    return choice("layout", layout, _LAYOUTS) == "NHWC"


def _pair(name: str, value: Any, lo: int) -> tuple[int, int]:
    h, w = int_tuple(name, value, (2,), lo=lo, spread=2)
    return h, w


def _conv_padding(
    padding: Any, weight: Any, dilation: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a pair (h, w), a 4-tuple (top, bottom,
    left, right), or 'same' / 'valid' (PyTorch: 'same' pads d (k - 1) in total, the odd
    one at the bottom/right, and is refused for strided convolutions)."""
    if isinstance(padding, str):
        mode = choice("padding", padding, ("same", "valid"))
        if mode == "valid":
            return (0, 0, 0, 0)
        if stride != (1, 1):
            raise ValueError(
                f"padding='same' is not supported for strided convolutions (stride={stride})"
            )
        shape = np.shape(weight)
        if len(shape) != 4:  # the binding names weight and its shape
            return (0, 0, 0, 0)
        th, tw = dilation[0] * (shape[2] - 1), dilation[1] * (shape[3] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    p = int_tuple("padding", padding, (2, 4), lo=0, spread=2)
    if len(p) == 2:
        return (p[0], p[0], p[1], p[1])
    return (p[0], p[1], p[2], p[3])


_ConvArgs = tuple[int, int, int, int, int, int, int, int, int]


_WINOGRAD_MIN_CHANNELS = 16  # kWinoMinChannels in cpp/kernels/conv/winograd_driver.cpp


def _winograd_selected(
    dtype: Any,
    channels: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    padding: tuple[int, int, int, int],
    algorithm: str = "auto",
) -> bool:
    """Whether a convolution's forward (and dx) takes the Winograd path for finite data
    (conv.h's rule; reported by the benchmarks next to their figures)."""
    if algorithm == "direct" or np.dtype(dtype) != np.float32 or groups != 1:
        return False
    if kernel != (3, 3) or stride != (1, 1) or dilation != (1, 1) or max(padding) > 2:
        return False
    return algorithm == "winograd" or min(channels) >= _WINOGRAD_MIN_CHANNELS


def _conv_args(weight: Any, stride: Any, padding: Any, dilation: Any, groups: Any) -> _ConvArgs:
    """(stride_h, stride_w, top, bottom, left, right, dilation_h, dilation_w, groups)"""
    s = _pair("stride", stride, 1)
    d = _pair("dilation", dilation, 1)
    p = _conv_padding(padding, weight, d, s)
    g = positive_int("groups", groups)
    return (s[0], s[1], p[0], p[1], p[2], p[3], d[0], d[1], g)


def conv2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
    layout: str = "NCHW",
    out: FloatArray | None = None,
    algorithm: str = "auto",
) -> FloatArray:
    r"""2-D convolution (cross-correlation), PyTorch's ``F.conv2d`` with a fused activation.

    .. math:: y[n, o, i, j] = \mathrm{act}\Big(b_o + \sum_{c, r, s}
              w[o, c, r, s]\, x[n, g(o) C_g + c,\; i s_h + r d_h - p_t,\; j s_w + s d_w - p_l]\Big)

    (zero outside the input), with :math:`C_g` = C / groups input channels per group.

    Args:
        x: float32/float64 array-like, (N, C, H, W) for ``layout="NCHW"`` or
            (N, H, W, C) for ``layout="NHWC"`` (channels-last); any strides.
        weight: (out_channels, C / groups, kh, kw) in both layouts (PyTorch's), x's dtype.
        bias: None or (out_channels,).
        stride, dilation: an int or a pair (h, w), each >= 1.
        padding: an int, a pair (h, w) (both sides), a 4-tuple (top, bottom, left, right),
            ``"valid"`` (no padding) or ``"same"`` (output size = input size, stride 1
            only; total padding d (k - 1), the odd one at the bottom/right, as PyTorch).
        groups: >= 1, dividing C and out_channels (``groups=C``: depthwise).
        activation: None, ``"relu"`` or ``"gelu"`` (exact erf form), applied after the bias.
        layout: ``"NCHW"`` or ``"NHWC"``; y has the same layout.
        out: optional writable C-contiguous array of y's shape and dtype (it may share
            memory with the inputs: they are copied first).
        algorithm: ``"auto"`` (default), ``"direct"`` or ``"winograd"``. float32 3x3
            stride-1 undilated convolutions with ``groups=1`` and at most 2 padding per
            side may run Winograd F(2x2, 3x3) (fewer multiply-adds, a different rounding:
            see the error bound in docs/API.md); ``"auto"`` picks it where it is faster
            (both channel counts >= 16), ``"direct"`` never (the implicit GEMM's bits),
            ``"winograd"`` wherever the shape allows. Every other case (float64, other
            kernels) is direct whatever the choice. Winograd is skipped for a call whose
            x or weight has a non-finite value or values large enough to overflow.

    Output size: ``(H + top + bottom - d_h (kh - 1) - 1) // s_h + 1`` (the same for W).

    Raises:
        ValueError: x or weight not 4-D, channels not divisible by ``groups``, weight's
            in_channels * groups != C, a bad bias shape, a kernel larger than the padded
            input (naming the argument and the shapes); negative padding, strides or
            dilations < 1; ``"same"`` with a stride.
        TypeError: non-float dtypes; x, weight and bias of different dtypes
            (``DTypeError``); arguments of the wrong type.

    Returns:
        y, (N, out_channels, OH, OW) or (N, OH, OW, out_channels).
    """
    args = _conv_args(weight, stride, padding, dilation, groups)
    act = _ACTIVATIONS[choice("activation", activation, tuple(_ACTIVATIONS))]
    algo = _ALGORITHMS.index(choice("algorithm", algorithm, _ALGORITHMS))
    return _core.conv.forward(x, weight, bias, *args, act, _layout(layout), out, algo)


def conv2d_backward(
    dy: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    layout: str = "NCHW",
    need_dx: bool = True,
    need_dweight: bool = True,
    need_dbias: bool = True,
    out: tuple[FloatArray | None, FloatArray | None, FloatArray | None] | None = None,
    algorithm: str = "auto",
) -> tuple[FloatArray | None, FloatArray | None, FloatArray | None]:
    """Gradients of :func:`conv2d` (without activation: apply the activation's derivative
    to ``dy`` first) with respect to x, weight and bias.

    Args:
        dy: the gradient of the loss with respect to conv2d's output, in its shape.
        x, weight, stride, padding, dilation, groups, layout: as given to :func:`conv2d`.
        need_dx, need_dweight, need_dbias: which gradients to compute (the others are None).
        out: optional ``(dx, dweight, dbias)`` arrays to write into (each may be None, a
            new array then): writable, C-contiguous, the gradient's shape and dtype,
            disjoint; inputs that share memory with them are copied first.
        algorithm: as for :func:`conv2d`, for dx (a stride-1 3x3 backward-data is a
            forward convolution of dy with the flipped, transposed weight); dweight and
            dbias are always direct.

    Determinism: dx elements are each computed by one task (a gather over the output
    pixels whose window covers them, no scatter); dweight is a sum over fixed batch
    blocks (min(N, 8) of them) added in order; dbias a per-channel double sum. Bitwise
    identical for any thread count, SIMD level and layout.

    Returns:
        (dx, dweight, dbias): dx like x, dweight like weight, dbias (out_channels,).
    """
    args = _conv_args(weight, stride, padding, dilation, groups)
    flags = (
        boolean("need_dx", need_dx),
        boolean("need_dweight", need_dweight),
        boolean("need_dbias", need_dbias),
    )
    outs = _out_triple(out)
    algo = _ALGORITHMS.index(choice("algorithm", algorithm, _ALGORITHMS))
    dx, dw, db = _core.conv.backward(
        dy, x, weight, *args, _layout(layout), *flags, *outs, algorithm=algo
    )
    return dx, dw, db


def _out_triple(out: Any) -> tuple[Any, Any, Any]:
    if out is None:
        return (None, None, None)
    if not isinstance(out, (tuple, list)):
        raise TypeError(
            f"out must be None or a tuple (dx, dweight, dbias), got {type(out).__name__}"
        )
    if len(out) != 3:
        raise ValueError(f"out must have 3 items (dx, dweight, dbias), got {len(out)}")
    return (out[0], out[1], out[2])


# ---- pooling -------------------------------------------------------------------------


def _pool_args(
    kernel_size: Any, stride: Any, padding: Any, dilation: Any
) -> tuple[int, int, int, int, int, int, int, int]:
    kh, kw = _pair("kernel_size", kernel_size, 1)
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        sh, sw = kh, kw  # PyTorch: stride defaults to kernel_size
    else:
        sh, sw = _pair("stride", stride, 1)
    ph, pw = _pair("padding", padding, 0)
    dh, dw = _pair("dilation", dilation, 1)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"padding should be at most half of kernel_size (as PyTorch), got padding="
            f"{(ph, pw)} and kernel_size={(kh, kw)}"
        )
    return kh, kw, sh, sw, ph, pw, dh, dw


def max_pool2d(
    x: ArrayLike,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    layout: str = "NCHW",
    out: FloatArray | None = None,
) -> FloatArray:
    """Max pooling, PyTorch's ``F.max_pool2d``: padding counts as -inf, NaN propagates,
    ``stride`` defaults to ``kernel_size``, padding at most half the kernel, output size
    ``floor`` (or ``ceil`` with ``ceil_mode``, a last window that starts in the right
    padding dropped) of ``(H + 2p - d (k - 1) - 1) / s + 1``. Every pooling function and
    backward takes ``out=``: a writable C-contiguous array of the result's shape and
    dtype (inputs sharing memory with it are copied first).

    Returns:
        y, (N, C, OH, OW) or (N, OH, OW, C).
    """
    a = _pool_args(kernel_size, stride, padding, dilation)
    cm = boolean("ceil_mode", ceil_mode)
    return _core.conv.pool_forward(0, x, *a, cm, False, 0, 0, 0, _layout(layout), out)


def max_pool2d_backward(
    dy: ArrayLike,
    x: ArrayLike,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    layout: str = "NCHW",
    out: FloatArray | None = None,
) -> FloatArray:
    """Gradient of :func:`max_pool2d` with respect to x: each ``dy`` goes to the position
    of its window's maximum (recomputed from x: PyTorch's choice, the first maximum in
    row-major window order, the last NaN when there are NaNs), added where windows overlap.
    """
    return _max_backward(0, dy, x, kernel_size, stride, padding, dilation, ceil_mode, layout, out)


def _max_pool2d_backward_relu(dy: ArrayLike, x: ArrayLike, *args: Any, **pool: Any) -> FloatArray:
    """Private (nn.Sequential's fused batch norm -> ReLU -> max pool): the gradient of
    ``max_pool2d(relu(z))`` with respect to ``z``, given ``x = relu(z)``:
    ``max_pool2d_backward(dy, x, *args, **pool) * (x > 0)`` (NumPy's product, bit for
    bit) in one pass; ``args``, ``pool``: max_pool2d_backward's other arguments."""
    return _max_backward(3, dy, x, *args, **pool)


def _max_backward(
    kind: int,
    dy: ArrayLike,
    x: ArrayLike,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    layout: str = "NCHW",
    out: FloatArray | None = None,
) -> FloatArray:
    """The pool_backward binding for max pooling (kind 0: plain, 3: times the ReLU mask)."""
    a = _pool_args(kernel_size, stride, padding, dilation)
    cm = boolean("ceil_mode", ceil_mode)
    return _core.conv.pool_backward(kind, dy, x, *a, cm, False, 0, 0, 0, _layout(layout), out)


def _avg_args(
    kernel_size: Any,
    stride: Any,
    padding: Any,
    ceil_mode: Any,
    count_include_pad: Any,
    divisor_override: Any,
) -> tuple[tuple[int, int, int, int, int, int, int, int], bool, bool, int]:
    a = _pool_args(kernel_size, stride, padding, 1)
    cm = boolean("ceil_mode", ceil_mode)
    cip = boolean("count_include_pad", count_include_pad)
    div = optional(positive_int, "divisor_override", divisor_override) or 0
    return a, cm, cip, div


def avg_pool2d(
    x: ArrayLike,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    layout: str = "NCHW",
    out: FloatArray | None = None,
) -> FloatArray:
    """Average pooling, PyTorch's ``F.avg_pool2d``: the divisor is ``divisor_override``
    if given, else the window clipped to the padded input (``count_include_pad=True``) or
    to the input (``False``); sums in double, one rounding.

    Returns:
        y, (N, C, OH, OW) or (N, OH, OW, C).
    """
    a, cm, cip, div = _avg_args(
        kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    return _core.conv.pool_forward(1, x, *a, cm, cip, div, 0, 0, _layout(layout), out)


def avg_pool2d_backward(
    dy: ArrayLike,
    x: ArrayLike,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    layout: str = "NCHW",
    out: FloatArray | None = None,
) -> FloatArray:
    """Gradient of :func:`avg_pool2d` with respect to x (x gives the input shape)."""
    a, cm, cip, div = _avg_args(
        kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    return _core.conv.pool_backward(1, dy, x, *a, cm, cip, div, 0, 0, _layout(layout), out)


def _adaptive_size(output_size: Any, x: Any, nhwc: bool) -> tuple[int, int]:
    """(oh, ow) from an int or a pair whose None entries keep the input's size."""
    if output_size is None or isinstance(output_size, (list, tuple)):
        sizes = (output_size, output_size) if output_size is None else tuple(output_size)
        if len(sizes) != 2:
            raise ValueError(f"output_size must have 2 items, got {len(sizes)}")
        names = ("output_size[0]", "output_size[1]")
    else:
        sizes = (output_size, output_size)
        names = ("output_size", "output_size")
    out = []
    for i, s in enumerate(sizes):
        if s is None:  # PyTorch: None keeps the input's size
            shape = np.shape(x)
            out.append(int(shape[(1, 2)[i] if nhwc else (2, 3)[i]]) if len(shape) == 4 else 1)
        else:
            out.append(integer(names[i], s, lo=1))
    return out[0], out[1]


def adaptive_avg_pool2d(
    x: ArrayLike,
    output_size: int | tuple[int | None, int | None],
    layout: str = "NCHW",
    out: FloatArray | None = None,
) -> FloatArray:
    """Adaptive average pooling, PyTorch's ``F.adaptive_avg_pool2d``: output row ``o`` of
    an axis of size I averages the window ``[floor(o I / O), ceil((o + 1) I / O))``.
    ``output_size``: an int, or a pair whose None entries keep the input's size."""
    nhwc = _layout(layout)
    oh, ow = _adaptive_size(output_size, x, nhwc)
    return _core.conv.pool_forward(2, x, 1, 1, 1, 1, 0, 0, 1, 1, False, False, 0, oh, ow, nhwc, out)


def adaptive_avg_pool2d_backward(
    dy: ArrayLike, x: ArrayLike, layout: str = "NCHW", out: FloatArray | None = None
) -> FloatArray:
    """Gradient of :func:`adaptive_avg_pool2d` with respect to x (the output size is
    dy's)."""
    nhwc = _layout(layout)
    shape = np.shape(dy)
    oh, ow = (shape[1:3] if nhwc else shape[2:4]) if len(shape) == 4 else (1, 1)
    return _core.conv.pool_backward(
        2, dy, x, 1, 1, 1, 1, 0, 0, 1, 1, False, False, 0, max(oh, 1), max(ow, 1), nhwc, out
    )


def global_avg_pool2d(
    x: ArrayLike, layout: str = "NCHW", out: FloatArray | None = None
) -> FloatArray:
    """The mean over H and W: :func:`adaptive_avg_pool2d` with output size 1, shape
    (N, C, 1, 1) or (N, 1, 1, C)."""
    return adaptive_avg_pool2d(x, 1, layout, out)
