"""int8 quantization and quantized inference (``pyfastopt.quant``).

* :func:`quantize` / :func:`dequantize`: affine int8/uint8, per tensor or per channel,
  round half to even then saturate.
* Calibration observers: :class:`MinMaxObserver`, :class:`MovingAverageMinMaxObserver`,
  :class:`HistogramObserver` (percentile, entropy, mse), each with ``qparams``.
* :func:`dynamic_quantize_linear`: ONNX's DynamicQuantizeLinear (uint8 with qparams from
  the input's own range), bit for bit as ONNX Runtime.
* :func:`matmul_int8`: exact int8 x int8 / uint8 x int8 products (int32).
* :class:`QuantizedLinear` and :class:`QuantizedSequential` (a layer stack run in one
  call into C++).
* :func:`quantize_model` for :mod:`pyfastopt.nn` models, :class:`QuantizedModel`
  (``save``) and :func:`load`.
"""

from ._dynamic import dynamic_quantize_linear
from ._qgemm import matmul_int8
from ._quantize import dequantize, quantize
from ._requantize import qlinear_matmul, requantize
from .linear import QuantizedLinear, QuantizedSequential
from .model import QuantizedModel, load, quantize_model
from .observers import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

__all__ = [
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "QuantizedLinear",
    "QuantizedModel",
    "QuantizedSequential",
    "dequantize",
    "dynamic_quantize_linear",
    "load",
    "matmul_int8",
    "qlinear_matmul",
    "quantize",
    "quantize_model",
    "requantize",
]
