"""Int8 quantization: exact int8 GEMM, quantized linear layers and a one-call layer stack.

(Other branches add ``quantize``/``dequantize``, the observers and ``quantize_model``.)
"""

from __future__ import annotations

from ._qgemm import matmul_int8
from .linear import QuantizedLinear, QuantizedSequential

__all__ = ["QuantizedLinear", "QuantizedSequential", "matmul_int8"]
