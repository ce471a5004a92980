"""ONNX models in and out: :func:`load` and :func:`save` (needs the ``onnx`` package:
``pip install pyfastopt[onnx]``).

``import pyfastopt`` never imports this module, and this module imports ``onnx`` only
when :func:`load` or :func:`save` is called.

In: the float graphs ``torch.onnx.export`` writes for MLPs
    ``Gemm`` (``transB``, ``alpha``, ``beta``; ``transA=0``), ``MatMul`` with a constant
    weight (followed by ``Add`` of a constant bias: fused), ``Relu``, ``Gelu`` (and its
    decompositions of opsets before 20, the erf form ``x * 0.5 * (1 + Erf(x / sqrt 2))``
    and the tanh approximation, in any order of the elementwise nodes: recognized by
    evaluating them on sample points),
    ``Sigmoid``, ``Tanh``, ``BatchNormalization`` (inference; ``BatchNorm2d`` for 4-D
    inputs, else ``BatchNorm1d``), ``Flatten`` (``axis=1``), ``Reshape`` (to a constant shape,
    or to one computed by ``Shape``/``Gather``/``Unsqueeze``/``Concat``), ``Dropout``
    and ``Identity`` (inference: removed), ``Add`` of two tensors (residual
    connections), ``Constant``; and for CNNs (2-D, NCHW) ``Conv`` (strides, pads incl.
    asymmetric, dilations, group, bias, ``auto_pad`` NOTSET/VALID and SAME_* with stride
    1), ``MaxPool`` (symmetric pads, dilations, ceil_mode; no Indices output),
    ``AveragePool`` (symmetric pads, ceil_mode, count_include_pad), ``GlobalAveragePool``,
    ``Clip`` with constant bounds (:class:`Clip`: ReLU6). A ``Relu`` or exact GELU that
    alone reads a ``Gemm``/``MatMul``/``Conv`` output is fused into the
    :class:`pyfastopt.nn.Linear` or :class:`pyfastopt.nn.Conv2d` (its epilogue). A graph that is a chain becomes an :class:`pyfastopt.nn.Sequential`;
    anything else a :class:`Graph` (steps in topological order). Any other operator or
    attribute is a ``ValueError`` naming the node, the operator and what is supported.

Out: float models
    :func:`save` writes an :class:`~pyfastopt.nn.Sequential` (nested ones included) of
    ``Linear``, ``BatchNorm1d``/``2d`` (running statistics; ONNX keeps epsilon as
    float32), ``ReLU``, ``GELU``, ``Sigmoid``, ``Tanh``, ``Identity``, ``Flatten``,
    ``Dropout`` (omitted: inference), :class:`Reshape`, :class:`Clip`, the NCHW CNN layers
    ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d(1)``, ``Residual``,
    or a :class:`Graph`, as an ONNX
    model (opset 17 by default) with a dynamic batch dimension. Round trip:
    ``load(save(model))`` has the same layers, weights and outputs.

Out: int8 models
    :func:`save` of a :class:`pyfastopt.quant.QuantizedModel` writes the QDQ form
    (``QuantizeLinear``/``DynamicQuantizeLinear`` -> ``DequantizeLinear`` for the uint8
    activations, ``DequantizeLinear`` of the int8 weights per output channel, ``Gemm``,
    ``Relu``) that ONNX Runtime runs; see :func:`pyfastopt.onnx._export.quantized_to_onnx`
    for how close its outputs come to pyfastopt's; :func:`load` reads the file back as a
    :class:`QuantizedGraph`. :func:`save` of a :class:`QuantizedGraph` writes QDQ (see
    :mod:`pyfastopt.onnx._qexport`); ``load(save(g))`` gives the same steps and outputs,
    bit for bit.

In: int8 models
    Graphs written by ``onnxruntime.quantization`` (``quantize_dynamic``;
    ``quantize_static`` in the QDQ and QOperator formats) become a
    :class:`QuantizedGraph` computing what ONNX Runtime computes: see
    :mod:`pyfastopt.onnx._qimport` for the operators and the QDQ fusions and
    :mod:`pyfastopt.onnx._qgraph` for the arithmetic and where it is bit-exact.
"""

from __future__ import annotations

import os
from typing import Any

from ._graph import Clip, Graph, Reshape, Step
from ._qgraph import QStep, QuantizedGraph

__all__ = [
    "Clip",
    "Graph",
    "QStep",
    "QuantizedGraph",
    "Reshape",
    "Step",
    "load",
    "save",
    "supported_ops",
]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "pyfastopt.onnx needs the onnx package: pip install 'pyfastopt[onnx]' "
            "(or pip install onnx)"
        ) from None
    return onnx


def supported_ops() -> list[str]:
    """The ONNX operators :func:`load` reads."""
    from ._import import supported_ops as ops

    return ops()


def load(source: Any, *, max_bytes: int | None = None) -> Any:
    """An ONNX model (a file name, path, ``bytes`` or ``onnx.ModelProto``) as a
    :mod:`pyfastopt.nn` model in eval mode (see the module docstring for what is read).

    Args:
        source: the model.
        max_bytes: the largest file read (default: any size up to 2 GiB, the protobuf
            limit; a file larger than ``max_bytes`` is a ValueError before it is read).

    Raises:
        ValueError: not an ONNX model, an unsupported operator/attribute (naming the node),
            tensors kept in external files, more than one graph input or output, or an
            input that is not float32/float64.
        ImportError: the ``onnx`` package is missing.
    """
    onnx = _onnx()
    from .. import _fileio
    from ._fastread import split
    from ._import import build

    arrays = None
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data: Any = source
            what = "the bytes"
        else:
            what = os.fspath(source)
            limit = _fileio.check_max_bytes(max_bytes)
            with _fileio.open_regular(source, "ONNX model") as fh:
                size = os.fstat(fh.fileno()).st_size
                if limit is not None and size > limit:
                    raise _fileio.FileTooLargeError(
                        f"{what} is {size} bytes, more than max_bytes={limit}"
                    )
                data = _map(fh, size)
                if len(data) != size:
                    raise ValueError(f"{what} is truncated: {len(data)} of {size} bytes")
        # the weights as views of the file's bytes, protobuf parses the rest (small)
        found = split(data)
        if found is not None:
            data, arrays = found
        elif not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as exc:  # google.protobuf.message.DecodeError, RuntimeWarning...
            raise ValueError(f"{what} is not an ONNX model ({type(exc).__name__}: {exc})") from None
        if not model.HasField("graph"):
            raise ValueError(f"{what} is not an ONNX model (it has no graph)")
    return build(model, onnx, arrays)


def _map(fh: Any, size: int) -> Any:
    """The file's bytes: a copy-on-write memory map (weights become views of it, read
    from the page cache once, when a layer copies them), or a read for small or
    unmappable files."""
    import mmap

    if size >= 1 << 20:
        try:
            return mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):
            pass
    return fh.read(size)


def save(model: Any, path: str | os.PathLike, *, opset: int = 17, input_shape: Any = None) -> int:
    """Write a float :mod:`pyfastopt.nn` model, or an int8
    :class:`pyfastopt.quant.QuantizedModel` (as QDQ), as ONNX, crash-safely
    (:func:`pyfastopt._fileio.atomic_write`). Returns the number of bytes written.

    Args:
        model: a ``Sequential`` (or single layer) of ``Linear``, ``BatchNorm1d``/``2d``,
            ``ReLU``, ``GELU``,
            ``Sigmoid``, ``Tanh``, ``Identity``, ``Flatten``, ``Dropout``,
            :class:`Reshape`, :class:`Clip`, ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``,
            ``AdaptiveAvgPool2d(1)``, ``Residual`` (NCHW); or a :class:`Graph` (float32 or float64); or a
            ``QuantizedModel`` (input ``(batch, in_features)``, float32; per-row dynamic
            activation quantization has no ONNX operator and is refused).
        path: the file to write.
        opset: the ONNX opset (13 or later). ``GELU`` is written as its erf
            decomposition below opset 20 and as ``Gelu`` from 20 on;
            ``GELU(approximate="tanh")`` needs opset 20.
        input_shape: the shape of one sample, without the batch dimension. Needed when
            the model does not start with a ``Linear`` (which gives ``(in_features,)``)
            or a :class:`Graph` loaded from ONNX (which remembers it).

    The graph's input is ``"input"`` of shape ``(batch, *input_shape)``, its output
    ``"output"``; the batch dimension is dynamic. The model is checked with
    ``onnx.checker`` before writing.

    Raises:
        ValueError: a layer that cannot be written (naming it), mixed dtypes.
        TypeError: ``model`` is not a pyfastopt.nn model.
    """
    onnx = _onnx()
    from .. import _fileio
    from ._export import to_onnx

    for _, mod in getattr(model, "_walk", lambda: ())():  # pruned weights: exactly zero
        mod._apply_masks()
    if isinstance(model, QuantizedGraph):
        from ._qexport import qgraph_to_onnx

        proto = qgraph_to_onnx(model, onnx, opset)
    else:
        proto = to_onnx(model, onnx, opset, input_shape)
    return _fileio.atomic_write_bytes(path, proto.SerializeToString())
