"""asv benchmarks for the int8 GEMM family: ``pyfastopt.quant.matmul_int8`` and the one-call
quantized MLP ``pyfastopt.quant.QuantizedSequential``.

* ``MatmulInt8``: ``matmul_int8(a, 128, b, 0)`` uint8 x int8 ``(n, n)`` vs our float32
  ``pyfastopt.matmul`` of the same size and ``torch._int_mm`` (int8 x int8) when
  installed; ``track_gops`` counts 2 n^3 ops.
* ``QuantizedMLP``: a 784-512-256-10 relu MLP at batch 1/32/256: ``QuantizedSequential``
  (dynamic per-tensor activations) vs the float32 ``pyfastopt.linear`` chain, torch
  ``quantize_dynamic`` and ONNX Runtime ``quantize_dynamic`` (model built in memory with
  ``onnx.helper``, quantized to a temporary file), each when installed.

The torch and ONNX Runtime classes are ``PeerBenchmark``s: they never run in a process
with pyfastopt. Functions are looked up in ``setup``: commits without them skip instead
of failing.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .common import (
    MLP_DIMS,
    THREADS,
    Benchmark,
    PeerBenchmark,
    best_seconds,
    mlp_weights,
    onnx_int8_session,
    optional_import,
    pyfastopt_quantized_mlp,
    torch_dynamic_mlp,
)


def _quant():
    try:
        from pyfastopt import quant
    except ImportError as e:
        raise NotImplementedError("this pyfastopt has no pyfastopt.quant") from e
    return quant


class MatmulInt8(Benchmark):
    """``matmul_int8`` (n, n) vs float32 ``pyfastopt.matmul`` and ``torch._int_mm``."""

    params: ClassVar[list] = [[256, 1024], THREADS]
    param_names: ClassVar[list[str]] = ["size", "threads"]
    smoke_params: ClassVar[list] = [[64], THREADS]

    def setup(self, size, threads):
        quant = _quant()
        import pyfastopt

        self.matmul_int8 = quant.matmul_int8
        self.matmul = pyfastopt.matmul
        self.set_threads(threads)
        rng = np.random.default_rng(5)
        self.a = rng.integers(0, 256, (size, size)).astype(np.uint8)
        self.b = rng.integers(-128, 128, (size, size)).astype(np.int8)
        self.af = rng.standard_normal((size, size), dtype=np.float32)
        self.bf = rng.standard_normal((size, size), dtype=np.float32)
        self.ops = 2.0 * size**3

    def time_matmul_int8(self, size, threads):
        self.matmul_int8(self.a, 128, self.b, 0)

    def time_matmul_float32_pyfastopt(self, size, threads):
        self.matmul(self.af, self.bf)

    def track_gops_matmul_int8(self, size, threads):
        f, a, b = self.matmul_int8, self.a, self.b
        return self.ops / best_seconds(lambda: f(a, 128, b, 0)) / 1e9

    track_gops_matmul_int8.unit = "GOP/s"


class TorchIntMM(PeerBenchmark):
    """``torch._int_mm`` on the same product (the uint8 operand shifted to int8)."""

    params: ClassVar[list] = [[256, 1024], THREADS]
    param_names: ClassVar[list[str]] = ["size", "threads"]
    smoke_params: ClassVar[list] = [[64], THREADS]

    def setup(self, size, threads):
        torch = optional_import("torch")
        if not hasattr(torch, "_int_mm"):
            raise NotImplementedError("torch._int_mm unavailable")
        self.set_threads(threads)
        rng = np.random.default_rng(5)
        a = rng.integers(0, 256, (size, size)).astype(np.uint8)
        self.at = torch.from_numpy((a.astype(np.int16) - 128).astype(np.int8))
        self.bt = torch.from_numpy(rng.integers(-128, 128, (size, size)).astype(np.int8))
        self.int_mm = torch._int_mm
        try:
            self.int_mm(self.at, self.bt)
        except RuntimeError as e:
            raise NotImplementedError(f"torch._int_mm refused the shape: {e}") from e

    def time_torch_int_mm(self, size, threads):
        self.int_mm(self.at, self.bt)


class _MLPData:
    """The MLP's weights and input (no benchmarks of its own)."""

    params: ClassVar[list] = [[1, 32, 256], THREADS]
    param_names: ClassVar[list[str]] = ["batch", "threads"]
    smoke_params: ClassVar[list] = [[2], THREADS]

    def setup(self, batch, threads):
        self.set_threads(threads)
        self.ws, self.bs = mlp_weights(11)
        self.x = np.random.default_rng(12).standard_normal((batch, MLP_DIMS[0])).astype(np.float32)


class QuantizedMLP(_MLPData, Benchmark):
    """784-512-256-10 MLP inference: int8 QuantizedSequential vs the float32 linear chain."""

    def setup(self, batch, threads):
        _quant()
        import pyfastopt

        super().setup(batch, threads)
        self.model = pyfastopt_quantized_mlp(self.ws, self.bs)
        self.linear = pyfastopt.linear

    def time_quantized_sequential(self, batch, threads):
        self.model(self.x)

    def time_float32_linear_chain(self, batch, threads):
        lin, ws, bs = self.linear, self.ws, self.bs
        h = lin(self.x, ws[0], bs[0], activation="relu")
        h = lin(h, ws[1], bs[1], activation="relu")
        lin(h, ws[2], bs[2])


class TorchDynamicMLP(_MLPData, PeerBenchmark):
    """The same MLP through ``torch.ao.quantization.quantize_dynamic``."""

    def setup(self, batch, threads):
        torch = optional_import("torch")
        super().setup(batch, threads)
        try:
            self.torch_model = torch_dynamic_mlp(torch, self.ws, self.bs)
        except (RuntimeError, AttributeError) as e:
            raise NotImplementedError(f"torch dynamic quantization unavailable: {e}") from e
        self.xt = torch.from_numpy(self.x)
        self.torch = torch

    def time_torch_quantize_dynamic(self, batch, threads):
        with self.torch.inference_mode():
            self.torch_model(self.xt)


class OnnxRuntimeMLP(_MLPData, PeerBenchmark):
    """The same MLP as an ONNX model through ONNX Runtime's ``quantize_dynamic``."""

    def setup(self, batch, threads):
        optional_import("onnx")
        optional_import("onnxruntime")
        super().setup(batch, threads)
        self.ort = onnx_int8_session(self.ws, self.bs, threads)

    def time_onnxruntime_quantize_dynamic(self, batch, threads):
        self.ort.run(None, {"x": self.x})
