"""Quantization: affine int8/uint8 quantize/dequantize and calibration observers."""

from ._quantize import dequantize, quantize
from .observers import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

__all__ = [
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "dequantize",
    "quantize",
]
