"""Layers on the pyfastopt kernels: Linear, ReLU, BatchNorm1d/2d, Dropout, Flatten, and
the activations GELU, Sigmoid, Tanh and Identity.

See :mod:`pyfastopt.nn.module` for the buffer rule (outputs are reused workspaces) and
the gradient rule (``backward`` overwrites the gradient arrays).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core
from .._batchnorm import (
    _batch_norm_backward_relu_maxpool,
    _batch_norm_train_relu_maxpool,
    batch_norm_backward,
    batch_norm_infer,
    batch_norm_train,
)
from .._conv import _pool_args
from .._gemm import gelu, linear, matmul
from .._validate import (
    boolean,
    choice,
    float_dtype,
    nonnegative,
    nonnegative_int,
    positive_int,
    probability,
    type_name,
    u64,
)
from .module import Module

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from .._typing import ArrayLike

__all__ = [
    "GELU",
    "BatchNorm1d",
    "BatchNorm2d",
    "Dropout",
    "Flatten",
    "Identity",
    "Linear",
    "ReLU",
    "Sigmoid",
    "Tanh",
]

_SQRT_2PI_INV = 1.0 / math.sqrt(2.0 * math.pi)
_DROPOUT = _core.dropout.apply
_CLAMP = _core.ops.clamp_


def _rng(seed: Any) -> np.random.Generator:
    """The initialization generator: a Generator as is, None (fresh entropy), or a seed."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (np.random.SeedSequence, np.random.BitGenerator)):
        return np.random.default_rng(seed)
    try:
        return np.random.default_rng(nonnegative_int("seed", seed))
    except TypeError:
        raise TypeError(
            f"seed must be None, an integer or a numpy.random.Generator, got {type_name(seed)}"
        ) from None


def _as_input(x: Any, dtype: np.dtype, layer: str, name: str = "x") -> np.ndarray:
    """``x`` as an ndarray of the layer's dtype; other dtypes are refused, not cast."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
        if x.dtype.kind in "iub":
            x = x.astype(dtype)
    if x.dtype != dtype:
        raise TypeError(
            f"{layer} has dtype {dtype.name} but {name} has dtype {x.dtype}; "
            f"convert it (x.astype(np.{dtype.name})) or build the layer with "
            f"dtype=np.{x.dtype.name}"
        )
    return x


def _check_grad(dy: Any, shape: tuple, dtype: np.dtype, layer: str) -> np.ndarray:
    dy = _as_input(dy, dtype, layer, "dy")
    if dy.shape != shape:
        raise ValueError(
            f"{layer}.backward: dy has shape {dy.shape}, the forward output had shape {shape}"
        )
    return dy


# --------------------------------------------------------------------------- Linear


_LINEAR_ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")


class Linear(Module):
    r"""``y = act(x @ weight.T + bias)`` on the fused :func:`pyfastopt.linear` kernel.

    Args:
        in_features, out_features (int): sizes, >= 1.
        bias (bool): learn an additive bias (default True).
        activation: None, ``"relu"``, ``"gelu"`` (exact erf form) or ``"gelu_tanh"``
            (``GELU(approximate="tanh")``), applied in the GEMM's epilogue:
            ``Linear(a, b, activation="relu")`` is ``Sequential(Linear(a, b), ReLU())``
            in one pass.
        dtype: float32 (default) or float64 parameters; inputs must have the same dtype.
        seed: int, None or a ``numpy.random.Generator`` for the initialization.

    Initialization is PyTorch's: ``weight ~ U(-1/sqrt(in), 1/sqrt(in))`` (kaiming-uniform
    with ``a = sqrt(5)``), ``bias ~ U(-1/sqrt(in), 1/sqrt(in))``.

    Backward: the activation's derivative is applied to ``dy`` first, then
    ``grad_weight = dz.T @ x`` and ``dx = dz @ weight`` on the GEMM kernels (into
    preallocated arrays) and ``grad_bias = dz.sum(0)``.

    * relu: ``dz = dy * (y > 0)`` from the saved output (nothing recomputed).
    * gelu: ``gelu'(z) = Phi(z) + z phi(z)`` needs the pre-activation ``z``, which is
      recomputed in backward with one extra GEMM (``linear(x, W, b)``) instead of being
      stored by every forward (inference never pays for it); ``Phi(z)`` is then read off
      the saved output as ``y / z`` (``0.5 + z phi(0)`` for ``|z| < 1e-6``), so no erf is
      evaluated in NumPy. The kernel's float32 gelu is accurate to 2e-7 ``|z|``, so
      ``Phi`` is accurate to 2e-7 absolute.
    * gelu_tanh: ``z`` recomputed the same way, then the tanh form's derivative in NumPy.
    """

    _param_names = ("weight", "bias")
    _maskable = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str | None = None,
        dtype: Any = np.float32,
        seed: Any = None,
    ) -> None:
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        bias = boolean("bias", bias)
        self.activation = choice("activation", activation, _LINEAR_ACTIVATIONS)
        self.dtype = float_dtype("dtype", dtype)
        rng = _rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(
            self.dtype
        )
        self.grad_weight = np.zeros_like(self.weight)
        if bias:
            self.bias: np.ndarray | None = rng.uniform(-bound, bound, self.out_features).astype(
                self.dtype
            )
            self.grad_bias: np.ndarray | None = np.zeros_like(self.bias)
        else:
            self.bias = self.grad_bias = None
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None

    @classmethod
    def from_weights(
        cls, weight: ArrayLike, bias: ArrayLike | None = None, activation: str | None = None
    ) -> Linear:
        """A Linear holding ``weight`` ``(out_features, in_features)`` and ``bias``
        ``(out_features,)`` (float32 or float64; the layer's dtype is the weight's), without
        drawing a random initialization first (what importers of trained weights need).

        A C-contiguous, writable weight/bias of the layer's dtype is used as is (not
        copied): the layer's parameter is that array.
        """
        w = np.asarray(weight)
        dtype = float_dtype("weight.dtype", w.dtype)
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"weight must be 2-D (out_features, in_features), got {w.shape}")
        if not (w.flags.c_contiguous and w.flags.writeable):
            w = np.array(w, order="C")
        out_f, in_f = w.shape
        b = None
        if bias is not None:
            b = np.asarray(bias)
            if b.shape != (out_f,):
                raise ValueError(f"bias must have shape ({out_f},), got {b.shape}")
            if b.dtype != dtype or not (b.flags.c_contiguous and b.flags.writeable):
                b = np.array(b, dtype=dtype, order="C")
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.in_features, layer.out_features = int(in_f), int(out_f)
        layer.activation = choice("activation", activation, _LINEAR_ACTIVATIONS)
        layer.dtype = dtype
        layer.weight = w
        layer.grad_weight = np.zeros_like(w)
        layer.bias = b
        layer.grad_bias = None if b is None else np.zeros_like(b)
        layer._x = layer._y = None
        return layer

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}{act}"
        )

    def forward(self, x: ArrayLike) -> np.ndarray:
        self._apply_masks()  # pruned weights: exactly zero (pyfastopt.prune)
        x = _as_input(x, self.dtype, "Linear")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: x has shape {x.shape}, expected (..., "
                f"{self.in_features}) (in_features={self.in_features})"
            )
        shape = (*x.shape[:-1], self.out_features)
        y = linear(x, self.weight, self.bias, self.activation, self._buffer("y", shape, self.dtype))
        self._x, self._y = x, y
        return y

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        x, y = self._x, self._y
        if x is None or y is None:
            raise RuntimeError("Linear.backward called before forward")
        dy = _check_grad(dy, y.shape, self.dtype, "Linear")
        if self.activation == "relu":
            dz = _relu_dz(self, y, dy)
        elif self.activation == "gelu":
            dz = self._gelu_grad(x, y, dy)
        elif self.activation == "gelu_tanh":
            z = linear(x, self.weight, self.bias, None, self._buffer("z", y.shape, self.dtype))
            dz = _gelu_tanh_dz(self, z, dy)
        else:
            dz = dy
        n = self.in_features
        x2 = x.reshape(-1, n)
        dz2 = dz.reshape(-1, self.out_features)
        if not self.frozen:
            matmul(dz2.T, x2, self.grad_weight)
            if self.bias is not None:
                np.add.reduce(dz2, axis=0, out=self.grad_bias)
            self._mask_grads()
        if not need_dx:
            return None
        dx = self._buffer("dx", x.shape, self.dtype)
        matmul(dz2, self.weight, dx.reshape(-1, n))
        return dx

    def _gelu_grad(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
        z = linear(x, self.weight, self.bias, None, self._buffer("z", y.shape, self.dtype))
        return _gelu_dz(self, z, y, dy)


def _relu_dz(layer: Module, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dy * relu'(z)`` from the output ``y = relu(z)`` (``z > 0`` exactly where
    ``y > 0``), in ``layer``'s workspaces."""
    keep = layer._buffer("relu_mask", y.shape, np.bool_)
    np.greater(y, 0, out=keep)
    return np.multiply(dy, keep, out=layer._buffer("dz", y.shape, y.dtype))


def _gelu_dz(layer: Module, z: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dy * gelu'(z)`` from the pre-activation ``z`` and the output ``y = gelu(z)``, in
    ``layer``'s workspaces: ``Phi(z) = y / z`` (``1/2 + z phi(0)`` near 0), so no erf is
    evaluated in NumPy."""
    cdf = layer._buffer("cdf", y.shape, y.dtype)
    dz = layer._buffer("dz", y.shape, y.dtype)
    tiny = layer._buffer("tiny", y.shape, np.bool_)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(y, z, out=cdf)  # Phi(z) = gelu(z) / z
    np.less(np.abs(z, out=dz), 1e-6, out=tiny)
    np.multiply(z, _SQRT_2PI_INV, out=dz)
    np.add(dz, 0.5, out=dz)
    np.copyto(cdf, dz, where=tiny)  # Phi(z) ~ 1/2 + z phi(0) near 0 (and 0/0)
    # dgelu = Phi(z) + z * phi(z), phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
    np.multiply(z, z, out=dz)
    np.multiply(dz, -0.5, out=dz)
    np.exp(dz, out=dz)
    np.multiply(dz, z, out=dz)
    np.multiply(dz, _SQRT_2PI_INV, out=dz)
    np.add(dz, cdf, out=dz)
    np.multiply(dz, dy, out=dz)
    return dz


def _gelu_tanh_dz(layer: Module, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dy * gelu_tanh'(x)`` in ``layer``'s workspaces: with ``u = c0 (x + c1 x^3)``,
    ``t = tanh(u)``: ``(1 + t)/2 + x (1 - t^2) du/dx / 2``."""
    dx = layer._buffer("dz", x.shape, x.dtype)
    tmp = layer._buffer("tmp", x.shape, x.dtype)
    x2 = np.multiply(x, x, out=layer._buffer("x2", x.shape, x.dtype))
    np.multiply(x2, _GELU_TANH_C, out=tmp)
    np.add(tmp, 1.0, out=tmp)
    np.multiply(tmp, x, out=tmp)
    np.multiply(tmp, _SQRT_2_OVER_PI, out=tmp)
    t = np.tanh(tmp, out=tmp)
    np.multiply(x2, 3 * _GELU_TANH_C, out=dx)
    np.add(dx, 1.0, out=dx)
    np.multiply(dx, _SQRT_2_OVER_PI, out=dx)  # du/dx
    np.multiply(dx, x, out=dx)
    np.multiply(t, t, out=x2)
    np.subtract(1.0, x2, out=x2)
    np.multiply(dx, x2, out=dx)
    np.add(dx, t, out=dx)
    np.add(dx, 1.0, out=dx)
    np.multiply(dx, 0.5, out=dx)
    return np.multiply(dx, dy, out=dx)


# --------------------------------------------------------------------------- ReLU


class ReLU(Module):
    """``max(x, 0)``; backward ``dy * (y > 0)`` from the saved output.

    ``inplace=True`` overwrites the input (as PyTorch's): safe after BatchNorm or Linear
    without activation, whose backward does not read their own output, and it saves one
    pass over memory.

    In a training :class:`Sequential`, a ReLU right after a ``BatchNorm1d``/``BatchNorm2d``
    is fused into it (``batch_norm_train(..., activation="relu")``): the batch norm writes
    ``max(y, 0)`` itself and applies the mask ``dy * (y > 0)`` inside its own backward, and
    this layer's backward then passes ``dy`` through unchanged (the same bits as the two
    layers run separately).
    """

    _fused = False  # class default: ReLUs pickled before the fusion existed load fine

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = boolean("inplace", inplace)
        self._y: np.ndarray | None = None
        self._fused = False  # the last forward was done by the preceding batch norm

    def _take_fused(self, y: np.ndarray) -> None:
        """The preceding batch norm computed this layer's output ``y`` (and owns the mask)."""
        self._y = y
        self._fused = True

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"ReLU: x must be float32 or float64, got {x.dtype}")
        if self.inplace:
            if not x.flags.writeable:
                raise ValueError("ReLU(inplace=True): x is read-only")
            if x.flags.c_contiguous and x.flags.aligned:
                # the threaded clamp kernel: 2-4x np.maximum's speed, NaN stays NaN
                _CLAMP(x, 0.0, math.inf)
                y = x
            else:
                y = np.maximum(x, 0, out=x)
        else:
            y = np.maximum(x, 0, out=self._buffer("y", x.shape, x.dtype))
        self._y = y
        self._fused = False
        return y

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        y = self._y
        if y is None:
            raise RuntimeError("ReLU.backward called before forward")
        if not need_dx:
            return None
        dy = _check_grad(dy, y.shape, y.dtype, "ReLU")
        if self._fused:  # the batch norm before applies dy * (y > 0) in its backward
            return dy
        keep = self._buffer("mask", y.shape, np.bool_)
        np.greater(y, 0, out=keep)
        return np.multiply(dy, keep, out=self._buffer("dx", y.shape, y.dtype))


# --------------------------------------------------------------------------- BatchNorm


class _BatchNorm(Module):
    _param_names = ("weight", "bias")
    _buffer_names: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")
    _ndims: tuple[int, ...] = ()
    _shapes = ""
    _axis = 1  # the channel axis (BatchNorm2d(layout="NHWC"): -1)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = c = positive_int("num_features", num_features)
        self.eps = nonnegative("eps", eps, finite=True)
        self.momentum = None if momentum is None else probability("momentum", momentum, one=True)
        affine = boolean("affine", affine)
        track_running_stats = boolean("track_running_stats", track_running_stats)
        self.dtype = float_dtype("dtype", dtype)
        if affine:
            self.weight: np.ndarray | None = np.ones(c, self.dtype)
            self.bias: np.ndarray | None = np.zeros(c, self.dtype)
            self.grad_weight: np.ndarray | None = np.zeros(c, self.dtype)
            self.grad_bias: np.ndarray | None = np.zeros(c, self.dtype)
        else:
            self.weight = self.bias = self.grad_weight = self.grad_bias = None
        self.track_running_stats = track_running_stats
        if self.track_running_stats:
            self.running_mean: np.ndarray | None = np.zeros(c, self.dtype)
            self.running_var: np.ndarray | None = np.ones(c, self.dtype)
            self.num_batches_tracked: np.ndarray | None = np.zeros((), np.int64)
        else:
            self._buffer_names = ()
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._saved: tuple | None = None

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def _check_x(self, x: Any) -> np.ndarray:
        name = type(self).__name__
        x = _as_input(x, self.dtype, name)
        if x.ndim not in self._ndims or x.shape[self._axis] != self.num_features:
            want = self._shapes.format(c=self.num_features)
            raise ValueError(f"{name}: x has shape {x.shape}, expected {want}")
        return x

    def forward(self, x: ArrayLike) -> np.ndarray:
        return self._forward(x, False)

    def _forward(self, x: ArrayLike, relu: bool) -> np.ndarray:
        """The forward pass; ``relu``: a following ReLU fused in (only when
        :meth:`_fuses_relu`)."""
        assert not relu or self._fuses_relu()
        x = self._check_x(x)
        out = self._buffer("y", x.shape, self.dtype)
        if self.training or not self.track_running_stats:
            tracked = self.num_batches_tracked
            factor_n = None if tracked is None else int(tracked)
            y, mean, invstd = batch_norm_train(
                x,
                self.weight,
                self.bias,
                self.running_mean if self.training else None,
                self.running_var if self.training else None,
                self.momentum,
                self.eps,
                self._axis,
                num_batches_tracked=factor_n,
                out=out,
                activation="relu" if relu else None,
            )
            if self.training and tracked is not None:
                tracked += 1
            self._saved = ("train", x, mean, invstd, y if relu else None)
        else:
            assert self.running_mean is not None
            assert self.running_var is not None
            y = batch_norm_infer(
                x,
                self.weight,
                self.bias,
                self.running_mean,
                self.running_var,
                self.eps,
                self._axis,
                out=out,
            )
            self._saved = ("eval", x, None, None, None)
        return y

    def _forward_relu_pool(self, x: ArrayLike, relu: Module, pool: Module) -> np.ndarray | None:
        """Sequential's batch norm -> ReLU -> ``MaxPool2d(2)`` in channels-last training:
        the three forwards in one call (the pool reads each pair of rows as the batch norm
        writes it; the same bits), leaving each layer's state as its own forward would.
        Returns the pooled output, or None (nothing done) when the pattern does not apply."""
        if not self._fuses_relu():
            return None
        x = self._check_x(x)
        if not self._pool_fusable(pool, x.shape):
            return None
        h, w = x.shape[1], x.shape[2]
        tracked = self.num_batches_tracked
        pshape = (x.shape[0], h // 2, w // 2, x.shape[3])
        y, mean, invstd, pooled = _batch_norm_train_relu_maxpool(
            x,
            self.weight,
            self.bias,
            self.running_mean if self.training else None,
            self.running_var if self.training else None,
            self.momentum,
            self.eps,
            num_batches_tracked=None if tracked is None else int(tracked),
            out=self._buffer("y", x.shape, self.dtype),
            pooled_out=pool._buffer("y", pshape, self.dtype),
        )
        if self.training and tracked is not None:
            tracked += 1
        self._saved = ("train", x, mean, invstd, y)
        relu._take_fused(y)  # type: ignore[attr-defined]
        pool._x, pool._y = y, pooled  # type: ignore[attr-defined]
        shapes = pool._out_shapes  # type: ignore[attr-defined]
        if x.shape not in shapes:  # as the pool's own forward: its buffer from now on
            if len(shapes) > 8:
                shapes.clear()
            shapes[x.shape] = pshape
        return pooled

    def _pool_fusable(self, pool: Module, shape: tuple[int, ...]) -> bool:
        """Whether ``pool`` after this batch norm (+ ReLU), on the batch norm's input
        shape ``shape``, is the channels-last 2x2 max pool of the fused private kernels
        (``_batch_norm_*_relu_maxpool``: output ``(N, H // 2, W // 2, C)``)."""
        from .conv import MaxPool2d  # here: conv imports this module

        if type(pool) is not MaxPool2d or self._axis != -1 or pool.layout != "NHWC":
            return False
        if not isinstance(self, BatchNorm2d) or len(shape) != 4:
            return False
        h, w = shape[1], shape[2]
        if h < 2 or w < 2 or (pool.ceil_mode and (h % 2 or w % 2)):
            return False
        args = _pool_args(pool.kernel_size, pool.stride, pool.padding, pool.dilation)
        return args == (2, 2, 2, 2, 0, 0, 1, 1)

    def _backward_relu_pool(self, dy: ArrayLike, pool: Module, need_dx: bool) -> np.ndarray | None:
        """Sequential's backward of batch norm -> ReLU -> ``MaxPool2d(2)`` (after any
        training forward of the three: :meth:`_pool_fusable` and ``_bn_relu_pool``
        hold): ``dy`` is the pool output's gradient; the pool's masked backward and this
        layer's backward in one call (the batch norm's sums taken as ``dz`` is written;
        the same bits). Returns this layer's ``dx`` (None unless ``need_dx``)."""
        px, py_ = pool._x, pool._y  # type: ignore[attr-defined]
        if px is None or py_ is None or self._saved is None:
            raise RuntimeError(f"{type(pool).__name__}.backward called before forward")
        dy = _check_grad(dy, py_.shape, py_.dtype, type(pool).__name__)
        _, x, mean, invstd, relu_y = self._saved
        grads = not self.frozen and self.weight is not None
        if not need_dx and not grads:
            return None
        dx, dw, db = _batch_norm_backward_relu_maxpool(
            dy,
            relu_y,
            x,
            self.weight,
            mean,
            invstd,
            dz_out=pool._buffer("dx", x.shape, self.dtype),
            out=self._buffer("dx", x.shape, self.dtype),
        )
        if grads:
            assert self.grad_weight is not None
            assert self.grad_bias is not None
            np.copyto(self.grad_weight, dw)
            np.copyto(self.grad_bias, db)
        return dx if need_dx else None

    def _fuses_relu(self) -> bool:
        """Whether :meth:`_forward` would use batch statistics (the fused ReLU kernel)."""
        return self.training or not self.track_running_stats

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        return self._backward(dy, need_dx, False)

    def _backward(self, dy: ArrayLike, need_dx: bool, premasked: bool) -> np.ndarray | None:
        """:meth:`backward`; ``premasked``: after a fused ReLU (``_forward(x, True)``),
        ``dy`` already carries the ReLU's mask ``* (y > 0)`` (a fused max pool backward
        applied it, see :class:`Sequential`), so the plain batch-norm backward runs on it:
        the same bits, without reading ``y``."""
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        mode, x, mean, invstd, relu_y = self._saved
        if premasked:
            relu_y = None
        dy = _check_grad(dy, x.shape, self.dtype, type(self).__name__)
        grads = not self.frozen and self.weight is not None
        if mode == "train":
            if not need_dx and not grads:
                return None
            dx, dw, db = batch_norm_backward(
                dy,
                x,
                self.weight,
                mean,
                invstd,
                self._axis,
                out=self._buffer("dx", x.shape, self.dtype),
                activation=None if relu_y is None else "relu",
                y=relu_y,
            )
            if grads:
                assert self.grad_weight is not None
                assert self.grad_bias is not None
                np.copyto(self.grad_weight, dw)
                np.copyto(self.grad_bias, db)
            return dx if need_dx else None
        # eval mode: y = (x - rm) * w / sqrt(rv + eps) + b, a per-channel affine map
        assert self.running_mean is not None
        assert self.running_var is not None
        axis = self._axis % x.ndim
        bshape = tuple(-1 if i == axis else 1 for i in range(x.ndim))
        axes = tuple(i for i in range(x.ndim) if i != axis)
        scale = 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
        if grads:
            assert self.grad_weight is not None
            assert self.grad_bias is not None
            xhat = (x - self.running_mean.reshape(bshape)) * scale.reshape(bshape).astype(
                self.dtype
            )
            np.copyto(self.grad_weight, np.sum(dy * xhat, axis=axes, dtype=np.float64))
            np.copyto(self.grad_bias, np.sum(dy, axis=axes, dtype=np.float64))
        if not need_dx:
            return None
        if self.weight is not None:
            scale = scale * self.weight
        dx = self._buffer("dx", x.shape, self.dtype)
        np.multiply(dy, scale.astype(self.dtype).reshape(bshape), out=dx)
        return dx


class BatchNorm1d(_BatchNorm):
    """Batch normalization over ``(N, C)`` or ``(N, C, L)`` on the pyfastopt kernels,
    PyTorch's semantics: training mode normalizes with the batch statistics (biased
    variance) and updates ``running_mean`` / ``running_var`` in place (``momentum``, the
    unbiased variance; ``momentum=None``: cumulative average) and increments
    ``num_batches_tracked``; eval mode uses the running statistics. ``weight`` starts at
    1, ``bias`` at 0. ``track_running_stats=False`` always uses batch statistics."""

    _ndims = (2, 3)
    _shapes = "(N, {c}) or (N, {c}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization over ``(N, C, H, W)``, or channels-last ``(N, H, W, C)`` with
    ``layout="NHWC"`` (see :class:`BatchNorm1d`; the keyword arguments are the same)."""

    _ndims = (4,)
    _shapes = "(N, {c}, H, W)"

    def __init__(self, num_features: int, *args: Any, layout: str = "NCHW", **kwargs: Any) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.layout = choice("layout", layout, ("NCHW", "NHWC"))
        if self.layout == "NHWC":
            self._axis = -1
            self._shapes = "(N, H, W, {c}) (layout='NHWC')"

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + ", layout='NHWC'" if self.layout == "NHWC" else s


# --------------------------------------------------------------------------- Dropout


class Dropout(Module):
    """Inverted dropout (kept values scaled by ``1/(1-p)``); identity in eval mode.

    The mask of training step ``t`` (the layer's ``t``-th training forward, counted in
    ``.step``) is Philox keyed by the layer's ``seed``, with ``t`` as the counter offset
    (:func:`pyfastopt.dropout` ``offset=``): a fresh mask every step, reproducible from
    ``(seed, step)``, independent of thread count. ``backward`` regenerates the mask of
    the last forward from the same pair (no mask is stored).

    Args:
        p (float): drop probability in [0, 1).
        seed (int or None): 64-bit key; None draws one from the OS entropy pool. Give two
            Dropout layers of one model different seeds (equal seeds with equal shapes
            drop the same positions).

    ``seed`` and ``step`` are plain attributes, not part of :meth:`state_dict` (whose keys
    stay PyTorch's); to resume a run with the exact same masks, save and restore them.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        self._p = probability("p", p)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        self.seed = u64("seed", seed)
        self.step = 0
        self._saved: tuple | None = None

    @property
    def p(self) -> float:
        """The drop probability (validated when set)."""
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = probability("p", value)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"Dropout: x must be float32 or float64, got {x.dtype}")
        if not self.training or self._p == 0.0:
            self._saved = (x.shape, x.dtype, None, 0.0)
            return x
        offset = self.step
        self.step += 1
        y = _DROPOUT(
            x, self._buffer("y", x.shape, x.dtype), self._p, self.seed, offset, False, "x"
        )[0]
        self._saved = (x.shape, x.dtype, offset, self._p)
        return y

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        if self._saved is None:
            raise RuntimeError("Dropout.backward called before forward")
        if not need_dx:
            return None
        shape, dtype, offset, p = self._saved
        dy = _check_grad(dy, shape, dtype, "Dropout")
        if offset is None:
            return dy
        return _DROPOUT(dy, self._buffer("dx", shape, dtype), p, self.seed, offset, False, "dy")[0]


# --------------------------------------------------------------------------- Flatten


class Flatten(Module):
    """Reshape ``(N, d1, d2, ...)`` to ``(N, d1*d2*...)`` (a view when ``x`` is
    contiguous); backward reshapes ``dy`` back.

    ``layout="NHWC"``: a channels-last ``(N, H, W, C)`` input is flattened in PyTorch's
    NCHW order ``(c, h, w)`` (a transposing copy), so the next Linear's weights are the
    same as in the NCHW (and the PyTorch) model.
    """

    def __init__(self, layout: str = "NCHW") -> None:
        super().__init__()
        self.layout = choice("layout", layout, ("NCHW", "NHWC"))
        self._shape: tuple | None = None

    def extra_repr(self) -> str:
        return "layout='NHWC'" if self.layout == "NHWC" else ""

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"Flatten: x must have a batch dimension, got shape {x.shape}")
        self._shape = x.shape
        if self.layout == "NHWC":
            if x.ndim != 4:
                raise ValueError(f"Flatten(layout='NHWC'): x must be (N, H, W, C), got {x.shape}")
            n, h, w, c = x.shape
            out = self._buffer("y", (n, c * h * w), x.dtype)
            np.copyto(out.reshape(n, c, h, w), x.transpose(0, 3, 1, 2))
            return out
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        if self._shape is None:
            raise RuntimeError("Flatten.backward called before forward")
        if not need_dx:
            return None
        dy = dy if isinstance(dy, np.ndarray) else np.asarray(dy)
        n = self._shape[0]
        want = (n, math.prod(self._shape[1:]))
        if dy.shape != want:
            raise ValueError(
                f"Flatten.backward: dy has shape {dy.shape}, the forward output had shape {want}"
            )
        if self.layout == "NHWC":
            _, h, w, c = self._shape
            dx = self._buffer("dx", self._shape, dy.dtype)
            np.copyto(dx, dy.reshape(n, c, h, w).transpose(0, 2, 3, 1))
            return dx
        return dy.reshape(self._shape)


# --------------------------------------------------------------------------- activations


def _float_input(x: Any, layer: str) -> np.ndarray:
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{layer}: x must be float32 or float64, got {x.dtype}")
    return x


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715


class GELU(Module):
    r"""``x * Phi(x)`` (``approximate="none"``, the exact erf form, PyTorch's default) or
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (``approximate="tanh"``).

    Both forms run on :func:`pyfastopt.gelu`, the kernel of ``Linear(...,
    activation="gelu")`` / ``"gelu_tanh"`` (float32: error below 2e-7 / 5e-7 ``|x|``), so
    a ``Linear`` followed by ``GELU`` gives the same numbers as the fused layer; prefer
    the fused layer, which saves a pass over memory. Backward: ``Phi(x) + x phi(x)`` with
    ``Phi`` read off the saved output as ``y / x`` (``1/2 + x phi(0)`` near 0); the tanh
    form differentiates its formula.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = choice("approximate", approximate, ("none", "tanh"))
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def extra_repr(self) -> str:
        return "approximate='tanh'" if self.approximate == "tanh" else ""

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = _float_input(x, "GELU")
        y = self._buffer("y", x.shape, x.dtype)
        gelu(x, self.approximate, out=y)  # the kernel of Linear's epilogue, either form
        self._x, self._y = x, y
        return y

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        x, y = self._x, self._y
        if x is None or y is None:
            raise RuntimeError("GELU.backward called before forward")
        if not need_dx:
            return None
        dy = _check_grad(dy, y.shape, y.dtype, "GELU")
        if self.approximate == "tanh":
            return _gelu_tanh_dz(self, x, dy)
        return _gelu_dz(self, x, y, dy)


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``, computed without overflow; backward ``dy * y * (1 - y)``."""

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = _float_input(x, "Sigmoid")
        y = self._buffer("y", x.shape, x.dtype)
        e = self._buffer("e", x.shape, x.dtype)
        # e = exp(-|x|) <= 1: sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) for x < 0
        np.abs(x, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.add(e, 1.0, out=y)
        np.divide(1.0, y, out=y)
        neg = self._buffer("neg", x.shape, np.bool_)
        np.less(x, 0, out=neg)
        np.multiply(y, e, out=e)
        np.copyto(y, e, where=neg)
        self._y = y
        return y

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        y = self._y
        if y is None:
            raise RuntimeError("Sigmoid.backward called before forward")
        if not need_dx:
            return None
        dy = _check_grad(dy, y.shape, y.dtype, "Sigmoid")
        dx = self._buffer("dx", y.shape, y.dtype)
        np.subtract(1.0, y, out=dx)
        np.multiply(dx, y, out=dx)
        return np.multiply(dx, dy, out=dx)


class Tanh(Module):
    """``tanh(x)``; backward ``dy * (1 - y^2)``."""

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = _float_input(x, "Tanh")
        y = np.tanh(x, out=self._buffer("y", x.shape, x.dtype))
        self._y = y
        return y

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        y = self._y
        if y is None:
            raise RuntimeError("Tanh.backward called before forward")
        if not need_dx:
            return None
        dy = _check_grad(dy, y.shape, y.dtype, "Tanh")
        dx = self._buffer("dx", y.shape, y.dtype)
        np.multiply(y, y, out=dx)
        np.subtract(1.0, dx, out=dx)
        return np.multiply(dx, dy, out=dx)


class Identity(Module):
    """Returns its input (PyTorch's ``nn.Identity``); backward returns ``dy``."""

    def forward(self, x: ArrayLike) -> np.ndarray:
        return x if isinstance(x, np.ndarray) else np.asarray(x)

    def backward(self, dy: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        if not need_dx:
            return None
        return dy if isinstance(dy, np.ndarray) else np.asarray(dy)
