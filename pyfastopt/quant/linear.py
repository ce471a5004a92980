"""Quantized linear layers over the int8 GEMM, and a stack of them run in one C++ call.

The integer pipeline (all of it in C++, ``cpp/include/pyfastopt/qgemm.h``):

* weights: int8, symmetric, zero point 0, ``scale = max|w_row| / 127`` per output channel
  (one scale for the whole matrix with ``per_channel=False``), computed in float32 (a
  zero row gets scale 1); ``w_q = clip(round_half_even(w / scale), -127, 127)``.
* activations: uint8, asymmetric, ``q = clip(round_half_even(x / scale) + zp, 0, 255)``
  (float32 division), quantized while the GEMM packs them (no separate pass).

  - dynamic (default): ``lo = min(min(x), 0)``, ``hi = max(max(x), 0)`` over the whole
    input (``act_granularity="tensor"``) or per row (``"row"``);
    ``scale = float32((hi - lo) / 255)`` (computed in float64; 1 when 0) and
    ``zp = clip(round_half_even(-lo / scale), 0, 255)``.
  - static (after :meth:`QuantizedLinear.set_input_qparams`): the calibrated
    ``(scale, zero_point)``; a uint8 input is taken as already quantized with them.

* ``acc = sum_k (x_q - zp) * w_q`` exactly (int32), then in float32, one rounding per
  operation, no FMA (identical on every SIMD level):
  ``y = acc * float32(a_scale * w_scale[j]) + bias[j]`` (per tensor / static), or
  ``y = (acc * w_scale[j]) * a_scale[i] + bias[j]`` (per row); relu: ``y < 0 -> 0``.
* static with output qparams (:meth:`QuantizedLinear.set_output_qparams`): uint8 output,
  ``bias_q = round_half_even(bias / (in_scale * w_scale[j]))`` (float64, int32) added to
  ``acc``, ``multiplier = float32(in_scale * w_scale[j] / out_scale)`` (float64), and
  ``q = clip(round_half_even(float32(acc) * multiplier) + out_zp, relu ? out_zp : 0, 255)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core
from .._validate import boolean, choice, integer, positive, type_name

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    import numpy.typing as npt

    from .._typing import ArrayLike

__all__ = ["QuantizedLinear", "QuantizedSequential"]

_ACTIVATIONS = (None, "relu")
_GRANULARITIES = ("tensor", "row")


def _weight_qparams(w: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a float32 (out, in) matrix (see the module doc)."""
    a = np.abs(w)
    absmax = a.max(axis=1, initial=0) if per_channel else a.max(initial=0).reshape(1)
    scale = (absmax.astype(np.float32) / np.float32(127)).astype(np.float32)
    scale[scale == 0] = 1.0
    s = scale[:, None] if per_channel else scale[0]
    q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
    return q, scale


def _uint8_qparams(scale: Any, zero_point: Any) -> tuple[float, int]:
    return positive("scale", scale, finite=True), integer("zero_point", zero_point, lo=0, hi=255)


class QuantizedLinear:
    """``y = act(x @ W.T + bias)`` with int8 weights (prepacked once) and uint8 activations.

    Build it with :meth:`from_float`. Calling it with a float32/float64 ``(B, in)`` (or
    ``(in,)``) input quantizes the input dynamically (default) or with calibrated
    qparams (static mode) and returns float32 ``(B, out)``; in static mode a uint8 input
    is used as is, and with output qparams set the result is uint8. The exact rules are
    in this module's docstring. float64 inputs are converted to float32 first.

    Attributes:
        weight_q: int8 ``(out_features, in_features)``.
        weight_scale: float32 ``(out_features,)`` (per channel) or ``(1,)`` (per tensor).
        bias: float32 ``(out_features,)`` or None.
        in_features, out_features, activation (None or ``"relu"``), act_granularity
        (``"tensor"`` or ``"row"``, dynamic mode), mode (``"dynamic"`` or ``"static"``),
        input_scale, input_zero_point, output_scale, output_zero_point (None unless set).
    """

    def __init__(
        self,
        weight_q: Any,
        weight_scale: Any,
        bias: Any = None,
        activation: str | None = None,
        act_granularity: str = "tensor",
    ) -> None:
        activation = choice("activation", activation, _ACTIVATIONS)
        act_granularity = choice("act_granularity", act_granularity, _GRANULARITIES)
        w = np.asarray(weight_q)
        if w.dtype != np.int8:
            raise TypeError(f"weight_q must have dtype int8, got {w.dtype}")
        if w.ndim != 2:
            raise ValueError(
                f"weight_q must be 2-D (out_features, in_features), got shape {w.shape}"
            )
        self.weight_q = np.ascontiguousarray(w)
        self.out_features, self.in_features = (int(d) for d in w.shape)
        self.weight_scale = np.atleast_1d(np.asarray(weight_scale, dtype=np.float32)).copy()
        if self.weight_scale.shape not in ((1,), (self.out_features,)):
            raise ValueError(
                f"weight_scale must have 1 or out_features={self.out_features} entries, "
                f"got shape {self.weight_scale.shape}"
            )
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32).copy()
        if self.bias is not None and self.bias.shape != (self.out_features,):
            raise ValueError(f"bias must have shape ({self.out_features},), got {self.bias.shape}")
        self.activation = activation
        self.act_granularity = act_granularity
        self.mode = "dynamic"
        self.input_scale: float | None = None
        self.input_zero_point: int | None = None
        self.output_scale: float | None = None
        self.output_zero_point: int | None = None
        self._impl = _core.qgemm.QLinear(
            self.weight_q,
            self.weight_scale,
            self.bias,
            activation == "relu",
            act_granularity == "row",
        )

    @classmethod
    def from_float(
        cls,
        weight: ArrayLike,
        bias: ArrayLike | None = None,
        per_channel: bool = True,
        activation: str | None = None,
        act_granularity: str = "tensor",
    ) -> QuantizedLinear:
        """Quantize a float ``(out_features, in_features)`` weight (symmetric int8, zero point
        0, ``scale = max|w_row| / 127`` per output channel, or per tensor with
        ``per_channel=False``; round half to even)."""
        per_channel = boolean("per_channel", per_channel)
        w = np.asarray(weight)
        if w.dtype.kind != "f":
            raise TypeError(f"weight must be a float array, got {w.dtype}")
        if w.ndim != 2:
            raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {w.shape}")
        w = w.astype(np.float32)
        if not np.isfinite(w).all():
            raise ValueError("weight must be finite")
        q, scale = _weight_qparams(w, per_channel)
        return cls(q, scale, bias, activation=activation, act_granularity=act_granularity)

    def set_input_qparams(self, scale: float, zero_point: int) -> None:
        """Static mode: quantize inputs with calibrated uint8 qparams ``(scale, zero_point)``:
        ``scale`` a positive finite real, ``zero_point`` an integer in [0, 255]."""
        scale, zero_point = _uint8_qparams(scale, zero_point)
        self._impl.set_input_qparams(scale, zero_point)
        self.mode = "static"
        self.input_scale = float(np.float32(scale))
        self.input_zero_point = int(zero_point)

    def set_output_qparams(self, scale: float, zero_point: int) -> None:
        """Static mode only: emit uint8 quantized with ``(scale, zero_point)`` (requantize
        stage) instead of float32."""
        scale, zero_point = _uint8_qparams(scale, zero_point)
        if self.mode != "static":
            raise ValueError("set_output_qparams needs static input qparams (set_input_qparams)")
        self._impl.set_output_qparams(scale, zero_point)
        self.output_scale = float(np.float32(scale))
        self.output_zero_point = int(zero_point)

    def __call__(self, x: ArrayLike) -> npt.NDArray[Any]:
        return self._impl(x)

    def __repr__(self) -> str:
        return (
            f"QuantizedLinear(in_features={self.in_features}, out_features={self.out_features}, "
            f"activation={self.activation!r}, mode={self.mode!r})"
        )


class QuantizedSequential(_core.qgemm.QuantizedSequential):
    """A stack of :class:`QuantizedLinear` layers run in ONE call into C++.

    ``model(x)`` takes float32 (or float64, converted) ``(B, in)`` / ``(in,)`` input and
    returns float32; the hidden activations stay in buffers the object keeps (float32, or
    uint8 between a static layer with output qparams and the next static layer, which
    must then have the same input qparams). Every layer runs exactly as it would alone,
    so the result equals calling the layers one after another. The GIL is released for
    the whole stack. If the last layer emits uint8, the result is dequantized,
    ``(q - zp) * scale`` in float32.

    The layers' weights are copied and packed at construction (later changes to the
    layer objects are not seen). ``layers`` gives those objects back: their plain
    attributes (``weight_q``, ``weight_scale``, ``bias``, ``activation``, ``mode``,
    ``act_granularity``, input/output qparams) are what a model file needs.
    """

    def __init__(self, layers: Any) -> None:
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, QuantizedLinear):
                raise TypeError(f"layers[{i}] must be a QuantizedLinear, got {type_name(layer)}")
        super().__init__(layers)

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"QuantizedSequential([{inner}])"
