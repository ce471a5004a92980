"""Convolution and pooling layers (NCHW or channels-last NHWC) and the :class:`Residual`
container, on the kernels of :mod:`pyfastopt._conv`.

Same rules as :mod:`pyfastopt.nn.layers` (explicit ``backward``; outputs are reused
workspaces; ``backward`` overwrites the gradient arrays). Weights keep PyTorch's layout
``(out_channels, in_channels / groups, kh, kw)`` in both layouts, and ``state_dict`` keys
are PyTorch's (``weight``, ``bias``), so a torch ``state_dict`` loads unchanged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .._conv import (
    _adaptive_size,
    _avg_args,
    _max_pool2d_backward_relu,
    _pool_args,
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from .._validate import boolean, choice, float_dtype, int_tuple, positive_int
from .layers import _as_input, _check_grad, _gelu_dz, _relu_dz, _rng
from .module import Module, Sequential

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from .._typing import ArrayLike

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "Conv2d", "MaxPool2d", "Residual"]


def _x4(x: Any, layer: str) -> np.ndarray:
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{layer}: x must be float32 or float64, got {x.dtype}")
    return x


class Conv2d(Module):
    r"""2-D convolution ``y = act(conv2d(x, weight) + bias)`` (:func:`pyfastopt.conv2d`).

    Args:
        in_channels, out_channels (int): >= 1, both divisible by ``groups``.
        kernel_size: an int or a pair (kh, kw).
        stride, padding, dilation, groups: as :func:`pyfastopt.conv2d` (padding: int,
            pair, (top, bottom, left, right), ``"same"`` or ``"valid"``).
        bias (bool): learn a bias (default True).
        activation: None, ``"relu"`` or ``"gelu"``, fused into the convolution's output.
        layout: ``"NCHW"`` (default) or ``"NHWC"`` (channels-last) for x and y.
        dtype: float32 (default) or float64; seed: the initialization generator.
        algorithm: ``"auto"`` (default), ``"direct"`` or ``"winograd"``: as
            :func:`pyfastopt.conv2d`'s, for the forward and dx (an attribute: may be set
            later).

    Initialization is PyTorch's: ``weight, bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    with ``fan_in = in_channels / groups * kh * kw``.

    Backward: the activation's derivative is applied to ``dy`` (relu: from the saved
    output; gelu: the pre-activation is recomputed by one more convolution), then
    :func:`pyfastopt.conv2d_backward`.
    """

    _param_names = ("weight", "bias")
    _maskable = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        activation: str | None = None,
        layout: str = "NCHW",
        dtype: Any = np.float32,
        seed: Any = None,
        algorithm: str = "auto",
    ) -> None:
        super().__init__()
        self.algorithm = choice("algorithm", algorithm, ("auto", "direct", "winograd"))
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = int_tuple("kernel_size", kernel_size, (2,), lo=1, spread=2)
        self.groups = positive_int("groups", groups)
        if self.in_channels % self.groups:
            raise ValueError(
                f"in_channels ({self.in_channels}) must be divisible by groups ({self.groups})"
            )
        if self.out_channels % self.groups:
            raise ValueError(
                f"out_channels ({self.out_channels}) must be divisible by groups ({self.groups})"
            )
        self.stride = int_tuple("stride", stride, (2,), lo=1, spread=2)
        self.dilation = int_tuple("dilation", dilation, (2,), lo=1, spread=2)
        if isinstance(padding, str):
            self.padding: Any = choice("padding", padding, ("same", "valid"))
            if self.padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
        else:
            self.padding = int_tuple("padding", padding, (2, 4), lo=0, spread=2)
        self.activation = choice("activation", activation, (None, "relu", "gelu"))
        self.layout = choice("layout", layout, ("NCHW", "NHWC"))
        self.dtype = float_dtype("dtype", dtype)
        bias = boolean("bias", bias)
        rng = _rng(seed)
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self.weight = rng.uniform(-bound, bound, shape).astype(self.dtype)
        self.grad_weight = np.zeros_like(self.weight)
        if bias:
            self.bias: np.ndarray | None = rng.uniform(-bound, bound, self.out_channels).astype(
                self.dtype
            )
            self.grad_bias: np.ndarray | None = np.zeros_like(self.bias)
        else:
            self.bias = self.grad_bias = None
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.activation:
            s += f", activation={self.activation!r}"
        if self.layout != "NCHW":
            s += f", layout={self.layout!r}"
        if self.algorithm != "auto":
            s += f", algorithm={self.algorithm!r}"
        return s

    def _args(self) -> dict[str, Any]:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "layout": self.layout,
        }

    def _out_shape(self, x: np.ndarray) -> tuple[int, ...]:
        # the binding validates; compute the shape for the workspace from a cheap probe
        n = x.shape[0]
        h, w = (x.shape[1], x.shape[2]) if self.layout == "NHWC" else (x.shape[2], x.shape[3])
        kh, kw = self.kernel_size
        dh, dw = self.dilation
        sh, sw = self.stride
        if self.padding == "same":
            oh, ow = h, w
        else:
            p = (0, 0, 0, 0) if self.padding == "valid" else self.padding
            p = (p[0], p[0], p[1], p[1]) if len(p) == 2 else p
            oh = (h + p[0] + p[1] - dh * (kh - 1) - 1) // sh + 1
            ow = (w + p[2] + p[3] - dw * (kw - 1) - 1) // sw + 1
        c = self.out_channels
        return (n, oh, ow, c) if self.layout == "NHWC" else (n, c, oh, ow)

    def forward(self, x: ArrayLike) -> np.ndarray:
        self._apply_masks()  # pruned weights: exactly zero (pyfastopt.prune)
        x = _as_input(x, self.dtype, "Conv2d")
        out = None
        if x.ndim == 4:
            shape = self._out_shape(x)
            if min(shape) >= 0:
                out = self._buffer("y", shape, self.dtype)
        y = conv2d(
            x,
            self.weight,
            self.bias,
            activation=self.activation,
            out=out,
            algorithm=self.algorithm,
            **self._args(),
        )
        self._x, self._y = x, y
        return y

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        x, y = self._x, self._y
        if x is None or y is None:
            raise RuntimeError("Conv2d.backward called before forward")
        dy = _check_grad(dy, y.shape, self.dtype, "Conv2d")
        if self.activation == "relu":
            dz = _relu_dz(self, y, dy)
        elif self.activation == "gelu":
            z = conv2d(
                x,
                self.weight,
                self.bias,
                out=self._buffer("z", y.shape, self.dtype),
                algorithm=self.algorithm,
                **self._args(),
            )
            dz = _gelu_dz(self, z, y, dy)
        else:
            dz = dy
        grads = not self.frozen
        if not need_dx and not grads:
            return None
        dx, _, _ = conv2d_backward(
            dz,
            x,
            self.weight,
            **self._args(),
            algorithm=self.algorithm,
            need_dx=need_dx,
            need_dweight=grads,
            need_dbias=grads and self.bias is not None,
            out=(
                self._buffer("dx", x.shape, self.dtype) if need_dx else None,
                self.grad_weight if grads else None,
                self.grad_bias if grads else None,
            ),
        )
        if grads:
            self._mask_grads()
        return dx


class _Pool(Module):
    """Pooling layers: no parameters; backward from the saved input."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout = choice("layout", layout, ("NCHW", "NHWC"))
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None
        self._out_shapes: dict[tuple, tuple] = {}  # input shape -> output shape

    def _fwd(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _bwd(self, dy: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = _x4(x, type(self).__name__)
        shape = self._out_shapes.get(x.shape)
        if shape is None:  # the first input of this shape: learn the output's
            y = self._fwd(x, None)
            if len(self._out_shapes) > 8:
                self._out_shapes.clear()
            self._out_shapes[x.shape] = y.shape
        else:
            y = self._fwd(x, self._buffer("y", shape, x.dtype))
        self._x, self._y = x, y
        return y

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        return self._backward_by(self._bwd, dy, need_dx)

    def _backward_by(self, bwd: Any, dy: ArrayLike, need_dx: bool) -> np.ndarray | None:
        """The checks of :meth:`backward`, then ``bwd(dy, x, out)`` into the dx buffer."""
        x, y = self._x, self._y
        if x is None or y is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if not need_dx:
            return None
        dy = _check_grad(dy, y.shape, y.dtype, type(self).__name__)
        return bwd(dy, x, self._buffer("dx", x.shape, x.dtype))


class MaxPool2d(_Pool):
    """Max pooling (:func:`pyfastopt.max_pool2d`, PyTorch's semantics)."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        ceil_mode: bool = False,
        layout: str = "NCHW",
    ) -> None:
        super().__init__(layout)
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = boolean("ceil_mode", ceil_mode)
        _pool_args(kernel_size, stride, padding, dilation)  # validate now

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )

    def _a(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "ceil_mode": self.ceil_mode,
            "layout": self.layout,
        }

    def _fwd(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return max_pool2d(x, **self._a(), out=out)

    def _bwd(self, dy: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return max_pool2d_backward(dy, x, **self._a(), out=out)

    def _backward_relu(self, dy: ArrayLike, need_dx: bool) -> np.ndarray | None:
        """:meth:`backward` times the ReLU mask ``x > 0`` of this layer's input ``x`` (a
        ReLU's output), in one pass: the gradient with respect to the ReLU's input (used
        by :class:`Sequential` for batch norm -> ReLU -> max pool)."""
        return self._backward_by(self._bwd_relu, dy, need_dx)

    def _bwd_relu(self, dy: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return _max_pool2d_backward_relu(dy, x, **self._a(), out=out)


class AvgPool2d(_Pool):
    """Average pooling (:func:`pyfastopt.avg_pool2d`, PyTorch's semantics)."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        layout: str = "NCHW",
    ) -> None:
        super().__init__(layout)
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.ceil_mode = boolean("ceil_mode", ceil_mode)
        self.count_include_pad = boolean("count_include_pad", count_include_pad)
        self.divisor_override = divisor_override
        _avg_args(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _a(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "ceil_mode": self.ceil_mode,
            "count_include_pad": self.count_include_pad,
            "divisor_override": self.divisor_override,
            "layout": self.layout,
        }

    def _fwd(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return avg_pool2d(x, **self._a(), out=out)

    def _bwd(self, dy: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return avg_pool2d_backward(dy, x, **self._a(), out=out)


class AdaptiveAvgPool2d(_Pool):
    """Adaptive average pooling (:func:`pyfastopt.adaptive_avg_pool2d`);
    ``AdaptiveAvgPool2d(1)`` is global average pooling."""

    def __init__(self, output_size: int | tuple[int | None, int | None], layout: str = "NCHW"):
        super().__init__(layout)
        self.output_size = output_size
        _adaptive_size(output_size, None, False)  # validate now

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def _fwd(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        return adaptive_avg_pool2d(x, self.output_size, layout=self.layout, out=out)

    def _bwd(self, dy: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return adaptive_avg_pool2d_backward(dy, x, layout=self.layout, out=out)


class Residual(Sequential):
    """``y = body(x) + x``, with ``body`` the layers given (run as a :class:`Sequential`):
    a ResNet-style block. ``state_dict`` keys are the layers' indices, as for
    ``Sequential`` (a torch mirror: ``class Residual(nn.Sequential)`` whose forward adds
    its input). The body's output must have x's shape. Backward: ``dx = body'(dy) + dy``.
    """

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = _x4(x, "Residual") if np.ndim(x) == 4 else np.asarray(x)
        fx = super().forward(x)
        if fx.shape != x.shape:
            raise ValueError(
                f"Residual: the body's output has shape {fx.shape}, but x has shape {x.shape} "
                "(y = body(x) + x needs equal shapes)"
            )
        return np.add(fx, x, out=self._buffer("y", x.shape, fx.dtype))

    def _backward(self, dy: ArrayLike, need_dx: bool) -> np.ndarray | None:
        dy = np.asarray(dy)
        g = super()._backward(dy, need_dx)
        if not need_dx:
            return None
        assert g is not None
        return np.add(g, dy, out=self._buffer("dx", dy.shape, dy.dtype))
