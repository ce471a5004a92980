"""asv: int8 inference of a small MobileNet-like CNN (issue 17 point 9), batch 1 and 32 at
3x64x64, 1 and 2 threads: pyfastopt int8 (``quantize_model`` static: ``QuantizedCNN``,
channels-last), pyfastopt's fp32 forward of the same network (``pyfastopt.nn``, NHWC),
and ONNX Runtime int8 (``onnxruntime.quantization.quantize_static``, QDQ, per-channel
int8 weights, uint8 activations) of the same weights as an NCHW ONNX graph.

Network: 3x3 stride-2 stem 3->16, depthwise-separable blocks 16->32, 32->64 (s2),
64->128 (s2) (3x3 depthwise + BatchNorm + ReLU, 1x1 + BatchNorm + ReLU), global
average pool, Linear 128->10; weights and BatchNorm statistics from one seeded NumPy
generator (:func:`mobilenet_weights`, PyTorch state_dict names), so both sides run the
same model. Each side runs in its own asv process (the ONNX Runtime class never imports
pyfastopt).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, ClassVar

import numpy as np

from .common import THREADS, Benchmark, PeerBenchmark, optional_import

INPUT = (3, 64, 64)
BLOCKS = ((16, 32, 1), (32, 64, 2), (64, 128, 2))  # (in, out, stride) after the stem
CALIB = 32


def _convs() -> list[tuple[str, int, int, int, int]]:
    """(state_dict index, in, out, kernel, stride, groups) of every conv, in order."""
    out = [(0, 3, 16, 3, 2, 1)]
    for i, (a, b, s) in enumerate(BLOCKS):
        out.append((3 + 6 * i, a, a, 3, s, a))
        out.append((6 + 6 * i, a, b, 1, 1, 1))
    return out


def mobilenet_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights and BatchNorm statistics, keyed as the nn.Sequential's state_dict."""
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}
    for idx, a, b, k, _s, g in _convs():
        fan_in = a // g * k * k
        sd[f"{idx}.weight"] = (rng.standard_normal((b, a // g, k, k)) / np.sqrt(fan_in)).astype(
            np.float32
        )
        sd[f"{idx + 1}.weight"] = rng.uniform(0.5, 1.5, b).astype(np.float32)
        sd[f"{idx + 1}.bias"] = rng.uniform(-0.2, 0.2, b).astype(np.float32)
        sd[f"{idx + 1}.running_mean"] = rng.uniform(-0.1, 0.1, b).astype(np.float32)
        sd[f"{idx + 1}.running_var"] = rng.uniform(0.2, 0.6, b).astype(np.float32)
    sd["23.weight"] = (rng.standard_normal((10, 128)) / np.sqrt(128)).astype(np.float32)
    sd["23.bias"] = (rng.standard_normal(10) * 0.1).astype(np.float32)
    return sd


def images(n: int, seed: int = 1) -> np.ndarray:
    """Seeded blocky random images in [0, 1], float32 NCHW (n, 3, 64, 64)."""
    rng = np.random.default_rng(seed)
    c, h, w = INPUT
    coarse = rng.uniform(0, 1, (n, c, h // 8, w // 8))
    x = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
    return (0.7 * x + 0.3 * rng.uniform(0, 1, x.shape)).astype(np.float32)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def pyfastopt_mobilenet(weights: dict[str, np.ndarray]) -> Any:
    """The network as a channels-last ``pyfastopt.nn.Sequential`` (eval mode)."""
    from pyfastopt import nn

    layers: list[Any] = []
    for idx, a, b, k, s, g in _convs():
        layers += [
            nn.Conv2d(a, b, k, stride=s, padding=k // 2, groups=g, bias=False, layout="NHWC"),
            nn.BatchNorm2d(b, layout="NHWC"),
            nn.ReLU(),
        ]
        assert len(layers) == idx + 3
    layers += [
        nn.AdaptiveAvgPool2d(1, layout="NHWC"),
        nn.Flatten(layout="NHWC"),
        nn.Linear(128, 10),
    ]
    model = nn.Sequential(*layers)
    state = dict(model.state_dict())
    state.update(weights)
    model.load_state_dict(state)
    return model.eval()


def onnx_mobilenet(weights: dict[str, np.ndarray]) -> Any:
    """The network as an in-memory NCHW ONNX graph (Conv, BatchNormalization, Relu,
    GlobalAveragePool, Flatten, Gemm): input "input", output "output"."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "input"
    for idx, _a, _b, k, s, g in _convs():
        names = [f"{idx}.weight"] + [
            f"{idx + 1}.{p}" for p in ("weight", "bias", "running_mean", "running_var")
        ]
        inits += [numpy_helper.from_array(weights[n], n) for n in names]
        p = k // 2
        nodes += [
            helper.make_node("Conv", [prev, names[0]], [f"c{idx}"], kernel_shape=[k, k],
                             strides=[s, s], pads=[p, p, p, p], group=g),
            helper.make_node("BatchNormalization", [f"c{idx}", *names[1:]], [f"b{idx}"], epsilon=1e-5),
            helper.make_node("Relu", [f"b{idx}"], [f"r{idx}"]),
        ]  # fmt: skip
        prev = f"r{idx}"
    inits += [numpy_helper.from_array(weights[n], n) for n in ("23.weight", "23.bias")]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "23.weight", "23.bias"], ["output"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mobilenet_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *INPUT])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def ort_int8_mobilenet(weights: dict[str, np.ndarray], threads: int) -> Any:
    """ONNX Runtime session of the QDQ static int8 model (calibrated on ``CALIB`` images)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    calib = images(CALIB)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i : i + 1]} for i in range(CALIB)])

        def get_next(self) -> Any:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as d:
        fp, qp = os.path.join(d, "m.onnx"), os.path.join(d, "m_int8.onnx")
        onnx.save(onnx_mobilenet(weights), fp)
        logging.getLogger().setLevel(logging.ERROR)
        quantize_static(
            fp, qp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(qp, so, providers=["CPUExecutionProvider"])


class MobileNetSuite(Benchmark):
    """pyfastopt: int8 (QuantizedCNN, static) and the fp32 forward, NHWC."""

    params: ClassVar[list] = [[1, 32], THREADS]
    param_names: ClassVar[list[str]] = ["batch", "threads"]
    smoke_params: ClassVar[list] = [[1], [1]]
    timeout = 300.0

    def setup(self, batch, threads):
        from pyfastopt import quant

        self.set_threads(threads)
        self.model = pyfastopt_mobilenet(mobilenet_weights())
        self.qmodel = quant.quantize_model(self.model, _nhwc(images(CALIB)), mode="static")
        self.x = _nhwc(images(batch, seed=2))

    def time_int8(self, batch, threads):
        self.qmodel(self.x)

    def time_fp32(self, batch, threads):
        self.model(self.x)


class MobileNetOnnxRuntimeSuite(PeerBenchmark):
    """ONNX Runtime int8 (quantize_static QDQ) of the same network, NCHW input."""

    params: ClassVar[list] = [[1, 32], THREADS]
    param_names: ClassVar[list[str]] = ["batch", "threads"]
    smoke_params: ClassVar[list] = [[1], [1]]
    timeout = 300.0

    def setup(self, batch, threads):
        optional_import("onnx")
        optional_import("onnxruntime")
        self.set_threads(threads)
        self.session = ort_int8_mobilenet(mobilenet_weights(), threads)
        self.feed = {"input": images(batch, seed=2)}

    def time_int8(self, batch, threads):
        self.session.run(None, self.feed)
