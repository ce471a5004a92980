"""Whole-model int8 conversion: ``quantize_model``, :class:`QuantizedModel`, ``load``.

A :mod:`pyfastopt.nn` model (``Sequential`` of ``Linear``, ``ReLU``, ``BatchNorm1d``,
``Dropout``, ``Flatten``) becomes a chain of int8 linear layers that runs in one call
into C++ (:class:`pyfastopt.quant.QuantizedSequential`):

1. *Fold.* Evaluation-mode semantics: ``Dropout`` is removed, ``Flatten`` reshapes the
   input to ``(batch, features)``, a ``BatchNorm1d`` that directly follows a ``Linear``
   (with no activation in between) is folded into it,
   ``W' = W * g[:, None]``, ``b' = (b - mean) * g + beta`` with
   ``g = gamma / sqrt(running_var + eps)`` (computed in float64, stored in float32), and a
   ``ReLU`` after a ``Linear`` (or a folded ``Linear+BatchNorm``) is fused into it.
2. *Quantize weights* with :meth:`QuantizedLinear.from_float`: int8, symmetric, per output
   channel (``per_channel=True``) or per tensor.
3. *Activations.* ``mode="dynamic"``: each layer quantizes its input at run time from the
   input's own range (uint8, asymmetric). ``mode="static"``: ``calibration_data`` is run
   through the folded float model and a :class:`MinMaxObserver` per layer input fixes the
   uint8 qparams; hidden activations then stay uint8 between layers (requantized in each
   layer's output stage) and only the last layer produces float32.
4. *Report.* With calibration data, :attr:`QuantizedModel.report` lists, per layer, the
   signal-to-noise ratio of the int8 layer's output against the float layer's output on
   the same (float) input: ``SNR = 10 log10(sum(y^2) / sum((y - y_q)^2))`` dB, and the same
   for the whole model's output ("end to end", the errors accumulated).

Models with ``Conv2d``, pooling, ``BatchNorm2d`` or ``Residual`` layers take the CNN path
(:mod:`pyfastopt.quant.cnn`: BatchNorm2d folded into the convolution, int8 convolutions and
pools, residual adds) and give a :class:`pyfastopt.quant.QuantizedCNN`.

Unsupported layers or orders (a ``BatchNorm`` that does not follow a ``Linear`` directly, ``gelu``, a ``ReLU`` before the first ``Linear``) raise ``ValueError``
naming the layer and its position, rather than converting to something else.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _schema, nn
from .._validate import boolean, choice
from . import _format, cnn
from .linear import QuantizedLinear, QuantizedSequential
from .observers import MinMaxObserver

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    import numpy.typing as npt

    from .._typing import ArrayLike

__all__ = ["QuantizedModel", "load", "quantize_model"]


@dataclass
class _FloatLinear:
    """One folded float layer: ``act(x @ weight.T + bias)``, float64 master copy."""

    weight: np.ndarray  # (out, in) float64
    bias: np.ndarray  # (out,) float64
    relu: bool
    source: list  # names of the original layers folded into this one

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T + self.bias
        return np.maximum(y, 0.0) if self.relu else y


def _flatten_layers(model: Any) -> list:
    if isinstance(model, nn.Sequential):
        out = []
        for layer in model:
            out.extend(_flatten_layers(layer))
        return out
    return [model]


def _fold(model: Any) -> tuple[list[_FloatLinear], int]:
    """The float layers of ``model`` with BatchNorm folded and ReLU fused, and in_features."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a pyfastopt.nn.Module, got {type(model).__name__}")
    for _, mod in model._walk():  # pruned weights: exactly zero (pyfastopt.prune)
        mod._apply_masks()
    layers: list[_FloatLinear] = []
    open_for_bn = False  # the last layer is a Linear with nothing applied after it yet
    for i, layer in enumerate(_flatten_layers(model)):
        kind = type(layer).__name__
        where = f"layer {i} ({kind})"
        if isinstance(layer, nn.Linear):
            act = getattr(layer, "activation", None)
            if act not in (None, "relu"):
                raise ValueError(
                    f"{where}: activation {act!r} has no int8 kernel (only None and 'relu')"
                )
            w = np.asarray(layer.weight, dtype=np.float64).copy()
            b = (
                np.zeros(w.shape[0])
                if layer.bias is None
                else np.asarray(layer.bias, dtype=np.float64).copy()
            )
            if layers and layers[-1].weight.shape[0] != w.shape[1]:
                raise ValueError(
                    f"{where}: in_features {w.shape[1]} does not match the "
                    f"previous Linear's out_features {layers[-1].weight.shape[0]}"
                )
            layers.append(_FloatLinear(w, b, act == "relu", [f"{i}:{kind}"]))
            open_for_bn = act is None
        elif isinstance(layer, nn.BatchNorm1d):
            if not (layers and open_for_bn):
                raise ValueError(
                    f"{where}: only a BatchNorm1d directly after a Linear "
                    "(no activation between) can be folded for int8"
                )
            last = layers[-1]
            if layer.num_features != last.weight.shape[0]:
                raise ValueError(
                    f"{where}: num_features {layer.num_features} does not match "
                    f"the Linear's out_features {last.weight.shape[0]}"
                )
            var = np.asarray(layer.running_var, dtype=np.float64)
            mean = np.asarray(layer.running_mean, dtype=np.float64)
            gamma = (
                np.ones_like(var)
                if layer.weight is None
                else np.asarray(layer.weight, dtype=np.float64)
            )
            beta = (
                np.zeros_like(var)
                if layer.bias is None
                else np.asarray(layer.bias, dtype=np.float64)
            )
            g = gamma / np.sqrt(var + float(layer.eps))
            last.weight *= g[:, None]
            last.bias = (last.bias - mean) * g + beta
            last.source.append(f"{i}:{kind}")
        elif isinstance(layer, nn.ReLU):
            if not layers:
                raise ValueError(
                    f"{where}: a ReLU before the first Linear is not supported for int8"
                )
            layers[-1].relu = True
            layers[-1].source.append(f"{i}:{kind}")
            open_for_bn = False
        elif isinstance(layer, (nn.Dropout, nn.Flatten)):
            # Dropout is the identity at inference; the engine takes (batch, features),
            # so a Flatten (anywhere: activations between Linears are already 2-D) is a
            # reshape of the input.
            continue
        else:
            raise ValueError(
                f"{where} cannot be quantized (supported: Linear, ReLU, "
                "BatchNorm1d after a Linear, Dropout, Flatten)"
            )
    if not layers:
        raise ValueError("model has no Linear layer to quantize")
    return layers, layers[0].weight.shape[1]


def _as_batches(data: Any, in_features: int, name: str) -> list[np.ndarray]:
    """Calibration data: an array (batch, ...) or an iterable of arrays or (x, y) tuples."""
    if isinstance(data, np.ndarray) or not hasattr(data, "__iter__"):
        data = [data]
    batches = []
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
        if x.ndim == 0 or (x.size and x.size // max(x.shape[0], 1) != in_features):
            raise ValueError(
                f"{name}: each batch must have shape (batch, ...) with "
                f"{in_features} features per sample, got {x.shape}"
            )
        if x.shape[0]:
            batches.append(np.ascontiguousarray(x.reshape(x.shape[0], in_features)))
    if not batches:
        raise ValueError(f"{name} is empty")
    return batches


def _snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(got, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def quantize_model(
    model: Any, calibration_data: Any = None, mode: str = "dynamic", per_channel: bool = True
) -> QuantizedModel | cnn.QuantizedCNN:
    """Convert a :mod:`pyfastopt.nn` model to int8 (see the module docstring for the rules).

    Args:
        model: a ``pyfastopt.nn.Module`` (usually ``Sequential``) of Linear, ReLU,
            BatchNorm1d (after a Linear), Dropout and Flatten layers. It is not modified.
        calibration_data: float array ``(batch, ...)`` or an iterable of such arrays (or of
            ``(x, y)`` tuples, e.g. a ``pyfastopt.data.DataLoader``). Required for
            ``mode="static"``; optional for ``"dynamic"``, where it only feeds the report.
        mode: ``"dynamic"`` (activations quantized per call from their own range) or
            ``"static"`` (calibrated activation qparams; uint8 between layers).
        per_channel: int8 weight scale per output channel (True) or one per layer.

    Returns:
        :class:`QuantizedModel`, callable on float input ``(batch, ...)`` -> float32 logits;
        for a model with ``Conv2d``, pooling, ``BatchNorm2d`` or ``Residual`` layers a
        :class:`pyfastopt.quant.QuantizedCNN` (the rules: :mod:`pyfastopt.quant.cnn`;
        calibration batches then keep their sample shape, e.g. ``(batch, C, H, W)``).
    """
    mode = choice("mode", mode, ("dynamic", "static"))
    per_channel = boolean("per_channel", per_channel)
    if isinstance(model, nn.Module) and cnn.is_cnn(model):
        return _quantize_cnn(model, calibration_data, mode, per_channel)
    folded, in_features = _fold(model)
    batches = None
    if calibration_data is not None:
        batches = _as_batches(calibration_data, in_features, "calibration_data")
    elif mode == "static":
        raise ValueError("mode='static' needs calibration_data to fix the activation ranges")

    qlayers = [
        QuantizedLinear.from_float(
            f.weight.astype(np.float32),
            f.bias.astype(np.float32),
            per_channel=bool(per_channel),
            activation="relu" if f.relu else None,
        )
        for f in folded
    ]
    if mode == "static":
        assert batches is not None  # static mode requires calibration data (checked above)
        observers = [MinMaxObserver() for _ in folded]
        for x in batches:
            h = x.astype(np.float64)
            for f, obs in zip(folded, observers):
                obs.observe(h)
                h = f(h)
        qps = [obs.qparams(np.uint8, symmetric=False) for obs in observers]
        for i, ql in enumerate(qlayers):
            ql.set_input_qparams(*qps[i])
            if i + 1 < len(qlayers):
                ql.set_output_qparams(*qps[i + 1])
    qm = QuantizedModel(
        qlayers, in_features, mode, bool(per_channel), [list(f.source) for f in folded]
    )
    if batches is not None:
        qm.report = _report(folded, qlayers, qm, batches)
    return qm


def _cnn_batches(data: Any, name: str) -> list[np.ndarray]:
    """Calibration data of a CNN: arrays (batch, *sample_shape), one sample shape."""
    if isinstance(data, np.ndarray) or not hasattr(data, "__iter__"):
        data = [data]
    batches: list[np.ndarray] = []
    for item in data:
        x = np.asarray(item[0] if isinstance(item, (tuple, list)) else item)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"{name}: each batch must have shape (batch, ...), got {x.shape}")
        if batches and x.shape[1:] != batches[0].shape[1:]:
            raise ValueError(
                f"{name}: batches of different sample shapes {batches[0].shape[1:]} and "
                f"{x.shape[1:]}"
            )
        if x.shape[0]:
            batches.append(np.ascontiguousarray(x))
    if not batches:
        raise ValueError(f"{name} is empty")
    return batches


def _quantize_cnn(
    model: Any, calibration_data: Any, mode: str, per_channel: bool
) -> cnn.QuantizedCNN:
    """The CNN path (:mod:`pyfastopt.quant.cnn`)."""
    folded = cnn.fold(model)
    batches = None
    if calibration_data is not None:
        batches = _cnn_batches(calibration_data, "calibration_data")
    elif mode == "static":
        raise ValueError("mode='static' needs calibration_data to fix the activation ranges")
    qps = cnn.calibrate(folded, batches) if mode == "static" and batches is not None else None
    nodes, input_qp = cnn.build(folded, mode, per_channel, qps)
    qm = cnn.QuantizedCNN(nodes, mode, per_channel, input_qp)
    if batches is not None:
        qm.report = cnn.report(folded, nodes, input_qp, batches)
    return qm


def _report(
    folded: list[_FloatLinear], qlayers: list, qm: QuantizedModel, batches: list[np.ndarray]
) -> list[dict[str, Any]]:
    """Per-layer SNR (int8 layer vs float layer on the same float input) + end to end."""
    refs: list[list[np.ndarray]] = [[] for _ in folded]
    gots: list[list[np.ndarray]] = [[] for _ in folded]
    ends_ref, ends_got = [], []
    for x in batches:
        h = x.astype(np.float64)
        for i, (f, ql) in enumerate(zip(folded, qlayers)):
            y = f(h)
            refs[i].append(y)
            gots[i].append(_layer_float_output(ql, h.astype(np.float32)))
            h = y
        ends_ref.append(h)
        ends_got.append(qm(x))
    rows = []
    for i, f in enumerate(folded):
        rows.append(
            {
                "layer": i,
                "source": "+".join(s.split(":", 1)[1] for s in f.source),
                "shape": tuple(f.weight.shape),
                "snr_db": _snr_db(np.concatenate(refs[i]), np.concatenate(gots[i])),
            }
        )
    rows.append(
        {
            "layer": "end to end",
            "source": "model",
            "shape": None,
            "snr_db": _snr_db(np.concatenate(ends_ref), np.concatenate(ends_got)),
        }
    )
    return rows


def _layer_float_output(ql: Any, x: np.ndarray) -> np.ndarray:
    """The float output of one int8 layer, whatever its output stage."""
    y = ql(x)
    if y.dtype == np.uint8:  # static hidden layer: requantized output
        y = (y.astype(np.float64) - ql.output_zero_point) * ql.output_scale
    return y


class QuantizedModel:
    """An int8 model from :func:`quantize_model` or :func:`load`; call it on float input.

    ``model(x)``: ``x`` float32/float64 ``(batch, ...)`` with ``in_features`` values per
    sample -> float32 ``(batch, out_features)``, in one call into C++. ``predict(x)`` gives
    the argmax class. ``report`` holds the per-layer SNR rows when calibration data was
    given. ``save(path)`` writes the versioned model file read back by :func:`load`.
    """

    def __init__(
        self,
        layers: list,
        in_features: int,
        mode: str,
        per_channel: bool,
        sources: list[list[str]] | None = None,
    ):
        self.layers = list(layers)
        self.in_features = int(in_features)
        self.out_features = int(self.layers[-1].out_features)
        self.mode = mode
        self.per_channel = per_channel
        self.sources = sources or [[] for _ in self.layers]
        self.report: list[dict[str, Any]] | None = None
        self._engine = QuantizedSequential(self.layers)

    def __call__(self, x: ArrayLike) -> npt.NDArray[np.float32]:
        x = np.asarray(x)
        if (
            x.ndim < 1
            or (x.size and x.size // max(x.shape[0], 1) != self.in_features)
            or (x.size == 0 and x.ndim == 1)
        ):
            raise ValueError(
                f"x must have shape (batch, ...) with {self.in_features} "
                f"features per sample, got {x.shape}"
            )
        if x.ndim != 2:
            x = x.reshape(x.shape[0], self.in_features)
        return self._engine(x)

    def predict(self, x: ArrayLike) -> npt.NDArray[np.intp]:
        """Class indices ``argmax(model(x), axis=1)``."""
        return np.argmax(self(x), axis=1)

    @property
    def num_parameters(self) -> int:
        return sum(ql.weight_q.size + ql.out_features for ql in self.layers)

    def format_report(self) -> str:
        if not self.report:
            return "(no report: quantize_model was given no calibration data)"
        lines = [f"{'layer':>10}  {'source':<28} {'shape':<14} {'SNR dB':>8}"]
        for r in self.report:
            shape = "" if r["shape"] is None else "x".join(map(str, r["shape"]))
            lines.append(f"{r['layer']!s:>10}  {r['source']:<28} {shape:<14} {r['snr_db']:8.1f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        dims = [self.in_features] + [ql.out_features for ql in self.layers]
        return (
            f"QuantizedModel({'-'.join(map(str, dims))}, mode={self.mode!r}, "
            f"per_channel={self.per_channel})"
        )

    # -- file ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> int:
        """Write the model to ``path`` (see :mod:`pyfastopt.quant._format`); returns bytes.

        The file holds the int8 weights, their scales, the float32 biases, each layer's
        activation and activation qparams, and the layer graph. Loading it gives a model
        whose outputs are bitwise identical to this one's.
        """
        arrays: dict[str, np.ndarray] = {}
        layers = []
        for i, ql in enumerate(self.layers):
            arrays[f"layer{i}_weight_q"] = np.ascontiguousarray(ql.weight_q, dtype=np.int8)
            arrays[f"layer{i}_weight_scale"] = np.ascontiguousarray(
                np.atleast_1d(ql.weight_scale), dtype=np.float32
            )
            if ql.bias is not None:
                arrays[f"layer{i}_bias"] = np.ascontiguousarray(ql.bias, dtype=np.float32)
            layers.append(
                {
                    "type": "linear",
                    "in_features": int(ql.in_features),
                    "out_features": int(ql.out_features),
                    "activation": ql.activation,
                    "weight_q": f"layer{i}_weight_q",
                    "weight_scale": f"layer{i}_weight_scale",
                    "bias": f"layer{i}_bias" if ql.bias is not None else None,
                    "act_granularity": ql.act_granularity,
                    "input_qparams": _qp_json(ql.input_scale, ql.input_zero_point),
                    "output_qparams": _qp_json(ql.output_scale, ql.output_zero_point),
                    "source": self.sources[i],
                }
            )
        model = {
            "kind": "sequential",
            "in_features": self.in_features,
            "mode": self.mode,
            "per_channel": self.per_channel,
            "layers": layers,
        }
        return _format.write(path, model, arrays)


def _qp_json(scale: float | None, zero_point: int | None) -> list | None:
    if scale is None or zero_point is None:
        return None
    return [float(scale), int(zero_point)]


def _check_qp(value: Any, where: str) -> tuple[float, int] | None:
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], float)
        and math.isfinite(value[0])
        and value[0] > 0
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and 0 <= value[1] <= 255
    ):
        raise ValueError(
            f"{where}: bad activation qparams {value!r} (want [scale > 0, zero point in 0..255])"
        )
    return float(np.float32(value[0])), int(value[1])


# The model description's schema (the file's header["model"]), checked before use.
_FEATURES = _schema.Int(1, 2**31 - 1)
_ARRAY_NAME = _schema.Str(128)
_QPARAMS = _schema.OneOf(
    _schema.Null(),
    _schema.Tuple(_schema.Real(lo=0.0, lo_open=True), _schema.Int(0, 255)),
)
_LAYER = _schema.Dict(
    required={
        "type": _schema.Choice("linear"),
        "in_features": _FEATURES,
        "out_features": _FEATURES,
        "activation": _schema.OneOf(_schema.Null(), _schema.Choice("relu")),
        "weight_q": _ARRAY_NAME,
        "weight_scale": _ARRAY_NAME,
    },
    optional={
        "bias": _schema.OneOf(_schema.Null(), _ARRAY_NAME),
        "act_granularity": _schema.Choice("tensor", "row"),
        "input_qparams": _QPARAMS,
        "output_qparams": _QPARAMS,
        "source": _schema.List(_schema.Str(256), max_len=256),
    },
)
_MODEL = _schema.Dict(
    required={
        "kind": _schema.Choice("sequential"),
        "in_features": _FEATURES,
        "mode": _schema.Choice("dynamic", "static"),
        "layers": _schema.List(_LAYER, max_len=4096, min_len=1),
    },
    optional={"per_channel": _schema.Bool()},
)


def load(
    path: str | os.PathLike, max_bytes: int | None = None
) -> QuantizedModel | cnn.QuantizedCNN:
    """Read a model written by :meth:`QuantizedModel.save`.

    Args:
        path: the model file.
        max_bytes (int, optional): the most bytes of arrays the reader may allocate;
            default ``max(256 MiB, 100 x the file's size)``. A file declaring more is
            refused (``ValueError``) in milliseconds, before anything large is allocated
            or decompressed; pass a larger value for a trusted, highly compressed file.

    Raises ``ValueError`` for anything that is not a valid pyfastopt int8 model file
    (corrupt, truncated, another format or a newer version, a header that does not match
    the format's schema, inconsistent layer shapes, non-finite or non-positive scales,
    over ``max_bytes``); never unpickles. ``FileNotFoundError`` and the other errors of
    opening the file pass through.
    """
    model, arrays = _format.read(path, max_bytes)
    path = os.fspath(path)

    def bad(why: str) -> ValueError:
        return _format._fail(path, why)

    if model.get("kind") == "graph":  # format version 2: convolutional models
        try:
            return cnn.load_graph(model, arrays, bad)
        except _format.ModelFileError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise bad(f"{type(exc).__name__}: {exc}") from None

    try:
        _MODEL.check(model, "header['model']")
    except ValueError as exc:
        raise bad(str(exc)) from None
    try:
        if model.get("kind") != "sequential":
            raise bad(f"unknown model kind {model.get('kind')!r}")
        mode = model.get("mode")
        if mode not in ("dynamic", "static"):
            raise bad(f"unknown mode {mode!r}")
        in_features = model.get("in_features")
        specs = model.get("layers")
        if not (
            isinstance(in_features, int) and in_features > 0 and isinstance(specs, list) and specs
        ):
            raise bad("missing in_features or layers")
        used = set()
        qlayers = []
        prev = in_features
        for i, spec in enumerate(specs):
            where = f"layer {i}"
            if not isinstance(spec, dict) or spec.get("type") != "linear":
                raise bad(f"{where}: unknown layer type")
            k, n = spec.get("in_features"), spec.get("out_features")
            if not (isinstance(k, int) and isinstance(n, int) and k == prev and n > 0):
                raise bad(f"{where}: in/out features {k}/{n} do not chain (expected in={prev})")
            act = spec.get("activation")
            if act not in (None, "relu"):
                raise bad(f"{where}: unknown activation {act!r}")

            def get(
                key: str, dtype: str, shape: tuple, where: str = where, spec: dict = spec
            ) -> np.ndarray:
                name = spec.get(key)
                if name not in arrays:
                    raise bad(f"{where}: array {key} ({name!r}) missing")
                arr = arrays[name]
                if arr.dtype != np.dtype(dtype) or arr.shape not in shape:
                    raise bad(f"{where}: {key} is {arr.dtype}{arr.shape}")
                used.add(name)
                return arr

            wq = get("weight_q", "int8", ((n, k),))
            ws = get("weight_scale", "float32", ((n,), (1,)))
            if not (np.all(np.isfinite(ws)) and np.all(ws > 0)):
                raise bad(f"{where}: weight scales must be finite and > 0")
            bias = None
            if spec.get("bias") is not None:
                bias = get("bias", "float32", ((n,),))
                if not np.all(np.isfinite(bias)):
                    raise bad(f"{where}: bias is not finite")
            qin = _check_qp(spec.get("input_qparams"), where)
            qout = _check_qp(spec.get("output_qparams"), where)
            if mode == "static" and qin is None:
                raise bad(f"{where}: static model without input qparams")
            gran = spec.get("act_granularity", "tensor")
            if gran not in ("tensor", "row"):
                raise bad(f"{where}: unknown act_granularity {gran!r}")
            ql = QuantizedLinear(wq, ws, bias, activation=act, act_granularity=gran)
            if qin is not None:
                ql.set_input_qparams(*qin)
            if qout is not None:
                ql.set_output_qparams(*qout)
            qlayers.append(ql)
            prev = n
        if used != set(arrays):
            raise bad(f"arrays not used by any layer: {sorted(set(arrays) - used)}")
        sources = [s.get("source") if isinstance(s.get("source"), list) else [] for s in specs]
        return QuantizedModel(qlayers, in_features, mode, bool(model.get("per_channel")), sources)
    except _format.ModelFileError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from None
