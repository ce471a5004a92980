"""int8 quantization and quantized inference (``pyfastopt.quant``).

* :func:`quantize` / :func:`dequantize`: affine int8/uint8, per tensor or per channel,
  round half to even then saturate.
* Calibration observers: :class:`MinMaxObserver`, :class:`MovingAverageMinMaxObserver`,
  :class:`HistogramObserver` (percentile, entropy, mse), each with ``qparams``.
* :func:`dynamic_quantize_linear`: ONNX's DynamicQuantizeLinear (uint8 with qparams from
  the input's own range), bit for bit as ONNX Runtime.
* :func:`matmul_int8`: exact int8 x int8 / uint8 x int8 products (int32).
* :func:`conv2d_int8` and int8 pooling (:func:`max_pool2d_int8`, :func:`avg_pool2d_int8`,
  :func:`adaptive_avg_pool2d_int8`, :func:`global_avg_pool2d_int8`).
* :class:`QuantizedLinear` and :class:`QuantizedSequential` (a layer stack run in one
  call into C++).
* :func:`quantize_model` for :mod:`pyfastopt.nn` models, :class:`QuantizedModel`
  (``save``) and :func:`load`.
"""

from ._dynamic import dynamic_quantize_linear
from ._qconv import (
    adaptive_avg_pool2d_int8,
    avg_pool2d_int8,
    conv2d_int8,
    global_avg_pool2d_int8,
    max_pool2d_int8,
)
from ._qgemm import matmul_int8
from ._quantize import dequantize, quantize
from ._requantize import qlinear_matmul, requantize
from .cnn import QuantizedCNN
from .linear import QuantizedLinear, QuantizedSequential
from .model import QuantizedModel, load, quantize_model
from .observers import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

__all__ = [
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "QuantizedCNN",
    "QuantizedLinear",
    "QuantizedModel",
    "QuantizedSequential",
    "adaptive_avg_pool2d_int8",
    "avg_pool2d_int8",
    "conv2d_int8",
    "dequantize",
    "dynamic_quantize_linear",
    "global_avg_pool2d_int8",
    "load",
    "matmul_int8",
    "max_pool2d_int8",
    "qlinear_matmul",
    "quantize",
    "quantize_model",
    "requantize",
]
