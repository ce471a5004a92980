"""asv benchmarks for the int8 GEMM family: ``pyfastopt.quant.matmul_int8`` and the one-call
quantized MLP ``pyfastopt.quant.QuantizedSequential``.

* ``MatmulInt8``: ``matmul_int8(a, 128, b, 0)`` uint8 x int8 ``(n, n)`` vs our float32
  ``pyfastopt.matmul`` of the same size and ``torch._int_mm`` (int8 x int8) when
  installed; ``track_gops`` counts 2 n^3 ops.
* ``QuantizedMLP``: a 784-512-256-10 relu MLP at batch 1/32/256: ``QuantizedSequential``
  (dynamic per-tensor activations) vs the float32 ``pyfastopt.linear`` chain, torch
  ``quantize_dynamic`` and ONNX Runtime ``quantize_dynamic`` (model built in memory with
  ``onnx.helper``, quantized to a temporary file), each when installed.

Functions are looked up in ``setup``: commits without them skip instead of failing.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import ClassVar

import numpy as np

from .common import THREADS, Benchmark, best_seconds

SIZES = (784, 512, 256, 10)


def _quant():
    try:
        from pyfastopt import quant
    except ImportError as e:
        raise NotImplementedError("this pyfastopt has no pyfastopt.quant") from e
    return quant


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


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


class TorchIntMM(Benchmark):
    """``torch._int_mm`` on the same product (the uint8 operand shifted to int8)."""

    params: ClassVar[list] = [[256, 1024], THREADS]
    param_names: ClassVar[list[str]] = ["size", "threads"]
    smoke_params: ClassVar[list] = [[64], THREADS]

    def setup(self, size, threads):
        torch = _torch()
        if torch is None or not hasattr(torch, "_int_mm"):
            raise NotImplementedError("torch._int_mm unavailable")
        self.set_threads(threads)
        torch.set_num_threads(threads)
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


def _weights():
    rng = np.random.default_rng(11)
    ws, bs = [], []
    for i in range(len(SIZES) - 1):
        ws.append(
            (rng.standard_normal((SIZES[i + 1], SIZES[i])) / np.sqrt(SIZES[i])).astype(np.float32)
        )
        bs.append((rng.standard_normal(SIZES[i + 1]) * 0.1).astype(np.float32))
    return ws, bs


def _ort_session(ws, bs, threads):
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None
    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(zip(ws, bs)):
        inits += [numpy_helper.from_array(w.T.copy(), f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]))
        prev = f"a{i}"
        if i + 1 < len(ws):
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", SIZES[0]])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["B", SIZES[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as d:
        fp, qp = os.path.join(d, "mlp.onnx"), os.path.join(d, "mlp_int8.onnx")
        onnx.save(model, fp)
        import logging

        logging.getLogger().setLevel(logging.ERROR)  # its "run pre-processing" advice
        quantize_dynamic(fp, qp, weight_type=QuantType.QInt8)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(qp, so, providers=["CPUExecutionProvider"])


class _MLPData(Benchmark):
    """The MLP's weights and input (no benchmarks of its own)."""

    params: ClassVar[list] = [[1, 32, 256], THREADS]
    param_names: ClassVar[list[str]] = ["batch", "threads"]
    smoke_params: ClassVar[list] = [[2], THREADS]

    def setup(self, batch, threads):
        quant = _quant()
        import pyfastopt

        self.set_threads(threads)
        ws, bs = _weights()
        self.ws, self.bs = ws, bs
        last = len(ws) - 1
        self.model = quant.QuantizedSequential(
            [
                quant.QuantizedLinear.from_float(w, b, activation=None if i == last else "relu")
                for i, (w, b) in enumerate(zip(ws, bs))
            ]
        )
        self.linear = pyfastopt.linear
        self.x = np.random.default_rng(12).standard_normal((batch, SIZES[0])).astype(np.float32)


class QuantizedMLP(_MLPData):
    """784-512-256-10 MLP inference: int8 QuantizedSequential vs the float32 linear chain."""

    def time_quantized_sequential(self, batch, threads):
        self.model(self.x)

    def time_float32_linear_chain(self, batch, threads):
        lin, ws, bs = self.linear, self.ws, self.bs
        h = lin(self.x, ws[0], bs[0], activation="relu")
        h = lin(h, ws[1], bs[1], activation="relu")
        lin(h, ws[2], bs[2])


class TorchDynamicMLP(_MLPData):
    """The same MLP through ``torch.ao.quantization.quantize_dynamic``."""

    def setup(self, batch, threads):
        torch = _torch()
        if torch is None:
            raise NotImplementedError("torch not installed")
        super().setup(batch, threads)
        torch.set_num_threads(threads)
        layers = []
        last = len(self.ws) - 1
        for i, (w, b) in enumerate(zip(self.ws, self.bs)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i != last:
                layers.append(torch.nn.ReLU())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch deprecates its quantized types
                self.torch_model = torch.ao.quantization.quantize_dynamic(
                    torch.nn.Sequential(*layers), {torch.nn.Linear}, dtype=torch.qint8
                )
        except (RuntimeError, AttributeError) as e:
            raise NotImplementedError(f"torch dynamic quantization unavailable: {e}") from e
        self.xt = torch.from_numpy(self.x)
        self.torch = torch

    def time_torch_quantize_dynamic(self, batch, threads):
        with self.torch.inference_mode():
            self.torch_model(self.xt)


class OnnxRuntimeMLP(_MLPData):
    """The same MLP as an ONNX model through ONNX Runtime's ``quantize_dynamic``."""

    def setup(self, batch, threads):
        super().setup(batch, threads)
        self.ort = _ort_session(self.ws, self.bs, threads)
        if self.ort is None:
            raise NotImplementedError("onnxruntime/onnx not installed")

    def time_onnxruntime_quantize_dynamic(self, batch, threads):
        self.ort.run(None, {"x": self.x})
