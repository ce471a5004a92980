"""asv: int8 ONNX models run by ``pyfastopt.onnx.load`` (a ``QuantizedGraph``) against
ONNX Runtime running the same file, batch 1 and 32, 1 and 2 threads, each library in its
own process (asv runs every benchmark in a process of its own; the ONNX Runtime class
never imports pyfastopt).

Models (float graphs written with ``onnx.helper``, quantized by
``onnxruntime.quantization`` with fixed calibration data, default settings: uint8
activations, int8 weights per tensor):

* ``mlp_dynamic``: 784-512-256-10 ReLU MLP, ``quantize_dynamic``
  (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul -> Add);
* ``mlp_static``: the same MLP, ``quantize_static`` QDQ (QGemm after fusion);
* ``cnn_static``: LeNet-like CNN (1x28x28: conv 5x5 16 + relu, maxpool 2, conv 5x5 32 +
  relu, maxpool 2, gemm 800 -> 10), ``quantize_static`` QDQ (QLinearConv, 8-bit
  MaxPool, QGemm).

``time_load_*`` also times loading the file (pyfastopt.onnx.load vs creating the ORT
session).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from typing import Any, ClassVar

import numpy as np

from .common import SEED, THREADS, Benchmark, PeerBenchmark, optional_import

MODELS = ["mlp_dynamic", "mlp_static", "cnn_static"]
BATCHES = [1, 32]


def _mlp_proto() -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    dims = (784, 512, 256, 10)
    nodes, inits, cur = [], [], "x"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        w = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array((rng.standard_normal(b) * 0.1).astype(np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [f"g{i}"], transB=1))
        cur = f"g{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dims[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _cnn_proto() -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)

    def conv_w(o: int, c: int, k: int) -> np.ndarray:
        return (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)

    inits = [
        numpy_helper.from_array(conv_w(16, 1, 5), "c1w"),
        numpy_helper.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "c1b"),
        numpy_helper.from_array(conv_w(32, 16, 5), "c2w"),
        numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), "c2b"),
        numpy_helper.from_array(
            (rng.standard_normal((10, 800)) / np.sqrt(800)).astype(np.float32), "fw"
        ),
        numpy_helper.from_array(np.zeros(10, np.float32), "fb"),
    ]
    h = helper
    nodes = [
        h.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[2, 2, 2, 2]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"]),
        h.make_node("Relu", ["c2"], ["r2"]),
        h.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Flatten", ["p2"], ["f"]),
        h.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    graph = h.make_graph(
        nodes,
        "cnn",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _input_shape(model: str) -> tuple[int, ...]:
    return (1, 28, 28) if model.startswith("cnn") else (784,)


@functools.lru_cache(maxsize=4)
def int8_file(model: str) -> str:
    """The quantized model's path (written once per process)."""
    import onnx

    oq = optional_import("onnxruntime.quantization")
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice
    d = tempfile.mkdtemp(prefix="pyfastopt-asv-onnx-int8-")
    src, dst = os.path.join(d, "float.onnx"), os.path.join(d, f"{model}.onnx")
    onnx.save(_cnn_proto() if model.startswith("cnn") else _mlp_proto(), src)
    shape = _input_shape(model)
    if model.endswith("dynamic"):
        oq.quantize_dynamic(src, dst)
        return dst

    class Reader(oq.CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(SEED)
            self.data = iter(
                [{"x": rng.standard_normal((8, *shape)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self) -> Any:
            return next(self.data, None)

    oq.quantize_static(src, dst, Reader(), quant_format=oq.QuantFormat.QDQ)
    return dst


def _x(model: str, batch: int) -> np.ndarray:
    return (
        np.random.default_rng(SEED + 1)
        .standard_normal((batch, *_input_shape(model)))
        .astype(np.float32)
    )


class PyfastoptOnnxInt8(Benchmark):
    params: ClassVar[list] = [MODELS, BATCHES, THREADS]
    param_names: ClassVar[list[str]] = ["model", "batch", "threads"]
    timeout = 300.0

    def setup(self, model, batch, threads):
        optional_import("onnx")
        optional_import("onnxruntime")
        self.set_threads(threads)
        import pyfastopt.onnx as pfo

        self.path = int8_file(model)
        self.model = pfo.load(self.path)
        self.x = _x(model, batch)
        self.model(self.x)

    def time_pyfastopt_onnx_int8(self, model, batch, threads):
        self.model(self.x)

    def time_load_pyfastopt(self, model, batch, threads):
        import pyfastopt.onnx as pfo

        pfo.load(self.path)


class OnnxRuntimeInt8(PeerBenchmark):
    params: ClassVar[list] = [MODELS, BATCHES, THREADS]
    param_names: ClassVar[list[str]] = ["model", "batch", "threads"]
    timeout = 300.0

    def setup(self, model, batch, threads):
        optional_import("onnx")
        ort = optional_import("onnxruntime")
        self.set_threads(threads)
        self.path = int8_file(model)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.so = so
        self.ort = ort
        self.sess = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.x = _x(model, batch)
        self.sess.run(None, {"x": self.x})

    def time_onnxruntime_int8(self, model, batch, threads):
        self.sess.run(None, {"x": self.x})

    def time_load_onnxruntime(self, model, batch, threads):
        self.ort.InferenceSession(self.path, self.so, providers=["CPUExecutionProvider"])
