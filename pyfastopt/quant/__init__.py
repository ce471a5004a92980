"""int8 quantization and quantized inference."""

from .model import QuantizedModel, load, quantize_model

__all__ = ["QuantizedModel", "load", "quantize_model"]
