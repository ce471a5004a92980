"""Quantization: affine int8/uint8 quantize/dequantize and calibration observers."""

from ._quantize import dequantize, quantize

__all__ = ["quantize", "dequantize"]
