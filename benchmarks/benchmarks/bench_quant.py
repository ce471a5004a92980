"""asv benchmarks for ``pyfastopt.quant`` vs NumPy: quantize float32 -> int8 and back.

One call per ``time_*`` method over size x granularity x threads; pyfastopt in
``Quantize``, NumPy in ``QuantizeNumPy`` and PyTorch in ``QuantizeTorch``
(``PeerBenchmark``s: never in a process with pyfastopt). NumPy is ``np.clip(np.rint(x / s) + zp, -128, 127).astype(np.int8)`` (float32
arithmetic: the same rule and bits) and ``(q.astype(float32) - zp) * s``. Per channel is
axis 0 of an ``(n / 1000, 1000)`` matrix. ``track_bandwidth_*`` count 5 bytes per element
(4 read + 1 written, or 1 read + 4 written).

``pyfastopt.quant`` is imported in ``setup``, so commits without it skip these benchmarks.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .common import THREADS, Benchmark, PeerBenchmark, best_seconds, get_vector, optional_import

BYTES_PER_ELEMENT = 5
COLS = 1000


class _QuantizeData:
    params: ClassVar[list] = [[1_000_000, 10_000_000], ["tensor", "channel"], THREADS]
    param_names: ClassVar[list[str]] = ["size", "granularity", "threads"]
    smoke_params: ClassVar[list] = [[2_000], ["tensor", "channel"], THREADS]

    def setup(self, size, granularity, threads):
        self.set_threads(threads)
        x = get_vector(size, "float32")
        if granularity == "channel":
            self.x = x.reshape(-1, COLS)
            self.scale = (np.abs(self.x).max(axis=1) / 127).astype(np.float32)
            self.zp = np.zeros(self.x.shape[0], np.int64)
            self.axis = 0
            self.s = self.scale[:, None]
        else:
            self.x = x
            self.scale = float(np.float32(np.abs(x).max() / 127))
            self.zp = 0
            self.axis = None
            self.s = np.float32(self.scale)
        # the int8 input of dequantize: the same rule as quantize (round half to even)
        self.q = self._numpy_quantize()

    def _numpy_quantize(self):
        return np.clip(np.rint(self.x / self.s), -128, 127).astype(np.int8)


class Quantize(_QuantizeData, Benchmark):
    """``quantize`` / ``dequantize`` per tensor and per channel."""

    def setup(self, size, granularity, threads):
        try:
            from pyfastopt import quant
        except ImportError:
            raise NotImplementedError("this pyfastopt has no quant") from None
        self.quant = quant
        super().setup(size, granularity, threads)

    def time_quantize_pyfastopt(self, size, granularity, threads):
        self.quant.quantize(self.x, self.scale, self.zp, np.int8, self.axis)

    def time_dequantize_pyfastopt(self, size, granularity, threads):
        self.quant.dequantize(self.q, self.scale, self.zp, self.axis)

    def track_bandwidth_quantize_pyfastopt(self, size, granularity, threads):
        q, x, s, z, a = self.quant.quantize, self.x, self.scale, self.zp, self.axis
        seconds = best_seconds(lambda: q(x, s, z, np.int8, a))
        return BYTES_PER_ELEMENT * x.size / seconds / 1e9

    track_bandwidth_quantize_pyfastopt.unit = "GB/s"


class QuantizeNumPy(_QuantizeData, PeerBenchmark):
    """NumPy's quantize / dequantize (float32 arithmetic: the same rule and bits)."""

    def _numpy_dequantize(self):
        return self.q.astype(np.float32) * self.s

    def time_quantize_numpy(self, size, granularity, threads):
        self._numpy_quantize()

    def time_dequantize_numpy(self, size, granularity, threads):
        self._numpy_dequantize()

    def track_bandwidth_quantize_numpy(self, size, granularity, threads):
        seconds = best_seconds(self._numpy_quantize)
        return BYTES_PER_ELEMENT * self.x.size / seconds / 1e9

    track_bandwidth_quantize_numpy.unit = "GB/s"


class QuantizeTorch(_QuantizeData, PeerBenchmark):
    """``torch.quantize_per_tensor`` / ``quantize_per_channel`` to qint8 and
    ``Tensor.dequantize`` (fbgemm: multiplies by the float32 reciprocal of the scale)."""

    def setup(self, size, granularity, threads):
        import warnings

        torch = optional_import("torch")
        super().setup(size, granularity, threads)
        # qint8 deprecation notices; this process runs torch only
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        self.xt = torch.from_numpy(np.array(self.x))  # writable: no read-only notice
        if granularity == "channel":
            st = torch.from_numpy(self.scale.astype(np.float64))
            zt = torch.from_numpy(self.zp)
            self.quantize = lambda: torch.quantize_per_channel(self.xt, st, zt, 0, torch.qint8)
        else:
            scale = self.scale
            self.quantize = lambda: torch.quantize_per_tensor(self.xt, scale, 0, torch.qint8)
        self.qt = self.quantize()

    def time_quantize_torch(self, size, granularity, threads):
        self.quantize()

    def time_dequantize_torch(self, size, granularity, threads):
        self.qt.dequantize()

    def track_bandwidth_quantize_torch(self, size, granularity, threads):
        seconds = best_seconds(self.quantize)
        return BYTES_PER_ELEMENT * self.x.size / seconds / 1e9

    track_bandwidth_quantize_torch.unit = "GB/s"
