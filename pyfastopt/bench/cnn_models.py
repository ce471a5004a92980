"""The small MobileNet-like CNN that the int8 convolution benchmarks run (issue 17 point 9),
built for every runtime from one set of float weights.

Network (3x64x64 input): a 3x3 stride-2 stem 3->16, then three depthwise-separable
blocks (3x3 depthwise + BatchNorm + ReLU, 1x1 pointwise + BatchNorm + ReLU) 16->32,
32->64 (stride 2), 64->128 (stride 2), global average pool, Linear 128->10. BatchNorm
has non-trivial running statistics (seeded), so folding matters.

* :func:`float_model`: the ``pyfastopt.nn`` model (eval mode) in either layout; both
  layouts share the same weights.
* :func:`int8_model`: ``quantize_model(..., mode="static")`` of the NHWC model, calibrated
  on seeded random images (:class:`pyfastopt.quant.QuantizedCNN`).
* :func:`numpy_forward`: the folded float network in NumPy (the rows' reference).

* :func:`onnx_float_model` / :func:`ort_int8_session`: the same network (same weights)
  as an NCHW float ONNX graph, and ONNX Runtime's int8 of it
  (``onnxruntime.quantization.quantize_static``, QDQ, per-channel int8 weights, uint8
  activations, calibrated on the same images as :func:`int8_model`).

Used by ``cases_conv.py`` (``pyfastopt bench``: the int8 rows time ONNX Runtime in its
own child process, reported in the row's detail) and by the asv suite
(benchmarks/benchmarks/bench_qconv.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

INPUT = (3, 64, 64)  # C, H, W
# (in, out, stride) of the depthwise-separable blocks after the stem
BLOCKS = ((16, 32, 1), (32, 64, 2), (64, 128, 2))


def float_model(layout: str = "NHWC", seed: int = 0) -> Any:
    """The float32 network in ``layout`` (eval mode), same weights for any layout."""
    from .. import nn

    L = layout
    ss = [int(s) for s in np.random.SeedSequence(seed).generate_state(16, np.uint32)]
    layers: list[Any] = [
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False, layout=L, seed=ss[0]),
        nn.BatchNorm2d(16, layout=L),
        nn.ReLU(),
    ]
    for i, (a, b, s) in enumerate(BLOCKS):
        layers += [
            nn.Conv2d(
                a, a, 3, stride=s, padding=1, groups=a, bias=False, layout=L, seed=ss[1 + 2 * i]
            ),
            nn.BatchNorm2d(a, layout=L),
            nn.ReLU(),
            nn.Conv2d(a, b, 1, bias=False, layout=L, seed=ss[2 + 2 * i]),
            nn.BatchNorm2d(b, layout=L),
            nn.ReLU(),
        ]
    layers += [
        nn.AdaptiveAvgPool2d(1, layout=L),
        nn.Flatten(layout=L),
        nn.Linear(128, 10, seed=ss[15]),
    ]
    model = nn.Sequential(*layers)
    rng = np.random.default_rng(seed + 1)
    bns: list[Any] = [m for _, m in model._walk() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        n = bn.num_features
        bn.weight[...] = rng.uniform(0.5, 1.5, n)
        bn.bias[...] = rng.uniform(-0.2, 0.2, n)
        bn.running_mean[...] = rng.uniform(-0.1, 0.1, n)
        bn.running_var[...] = rng.uniform(0.2, 0.6, n)
    return model.eval()


def images(n: int, layout: str = "NHWC", seed: int = 1) -> np.ndarray:
    """Seeded smooth-ish random images in [0, 1], float32, (n, 3, 64, 64) or NHWC."""
    rng = np.random.default_rng(seed)
    c, h, w = INPUT
    coarse = rng.uniform(0, 1, (n, c, h // 8, w // 8)).astype(np.float32)
    x = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
    x = (0.7 * x + 0.3 * rng.uniform(0, 1, x.shape)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x


def int8_model(seed: int = 0, calib: int = 32) -> Any:
    """Static int8 QuantizedCNN of the NHWC model, calibrated on ``calib`` images."""
    from ..quant import quantize_model

    return quantize_model(float_model("NHWC", seed), images(calib, "NHWC"), mode="static")


def macs(batch: int) -> int:
    """Multiply-adds of one forward at ``batch``."""
    total, h = 0, INPUT[1] // 2
    total += h * h * 16 * 3 * 9  # stem, stride 2
    for a, b, s in BLOCKS:
        h //= s
        total += h * h * a * 9 + h * h * a * b
    return batch * (total + 128 * 10)


def numpy_forward(model: Any) -> Any:
    """``f(x)``: the folded float network (NHWC) in NumPy, float32."""
    from ..quant import cnn
    from .cases_conv import _numpy_conv_nhwc

    nodes = cnn.fold(model)

    def f(x: np.ndarray) -> np.ndarray:
        h = x
        for n in nodes:
            if n.kind == "conv":
                w = n.weight.astype(np.float32)
                h = _numpy_conv_nhwc(h, w, n.stride[0], n.padding[0], n.groups)
                h = h + n.bias.astype(np.float32)
                if n.relu:
                    h = np.maximum(h, 0)
            elif n.kind == "adaptive_avgpool":
                h = h.mean(axis=(1, 2), keepdims=True)
            elif n.kind == "flatten":
                h = h.reshape(h.shape[0], -1)
            elif n.kind == "linear":
                h = h @ n.weight.T.astype(np.float32) + n.bias.astype(np.float32)
        return h

    return f


def onnx_float_model(seed: int = 0) -> Any:
    """:func:`float_model`'s network and weights as an in-memory NCHW float ONNX graph
    (Conv, BatchNormalization, Relu, GlobalAveragePool, Flatten, Gemm; opset 17): input
    ``"input"`` (N, 3, 64, 64), output ``"output"`` (N, 10)."""
    from onnx import TensorProto, helper, numpy_helper

    model = float_model("NCHW", seed)
    sd = {k: np.ascontiguousarray(v, np.float32) for k, v in model.state_dict().items()}
    convs = [(0, 3, 2, 1)]  # (state_dict index, kernel, stride, groups)
    for i, (a, _b, s) in enumerate(BLOCKS):
        convs += [(3 + 6 * i, 3, s, a), (6 + 6 * i, 1, 1, 1)]
    nodes, inits, prev = [], [], "input"
    for idx, k, s, g in convs:
        names = [f"{idx}.weight"] + [
            f"{idx + 1}.{p}" for p in ("weight", "bias", "running_mean", "running_var")
        ]
        inits += [numpy_helper.from_array(sd[n], n) for n in names]
        p = k // 2
        nodes += [
            helper.make_node("Conv", [prev, names[0]], [f"c{idx}"], kernel_shape=[k, k],
                             strides=[s, s], pads=[p, p, p, p], group=g),
            helper.make_node("BatchNormalization", [f"c{idx}", *names[1:]], [f"b{idx}"],
                             epsilon=1e-5),
            helper.make_node("Relu", [f"b{idx}"], [f"r{idx}"]),
        ]  # fmt: skip
        prev = f"r{idx}"
    inits += [numpy_helper.from_array(sd[n], n) for n in ("23.weight", "23.bias")]
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
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    return onnx_model


def onnx_int8_model(path: str, seed: int = 0, calib: int = 32) -> str:
    """Write ONNX Runtime's static int8 (QDQ, per-channel int8 weights, uint8 activations)
    of :func:`onnx_float_model` to ``path``, calibrated on ``calib`` images; ``path``."""
    import logging
    import os
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    data = images(calib, "NCHW")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": data[i : i + 1]} for i in range(calib)])

        def get_next(self) -> Any:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as d:
        fp = os.path.join(d, "float.onnx")
        onnx.save(onnx_float_model(seed), fp)
        logging.getLogger().setLevel(logging.ERROR)
        quantize_static(
            fp, path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    return path


def ort_int8_session(threads: int, seed: int = 0, calib: int = 32) -> Any:
    """An ONNX Runtime session (CPU, ``threads`` intra-op threads, sequential) of
    :func:`onnx_int8_model`. Run: ``s.run(None, {"input": x_nchw})``."""
    import os
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        path = onnx_int8_model(os.path.join(d, "int8.onnx"), seed, calib)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
