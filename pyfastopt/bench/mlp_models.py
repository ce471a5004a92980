"""The 784-512-256-10 relu MLP that the int8 benchmarks run, built for every runtime.

One set of float32 weights (:func:`mlp_weights`) becomes: a pyfastopt
``QuantizedSequential`` (int8 per-channel weights, dynamic per-tensor activations), a
``torch.nn.Sequential`` and its ``torch.ao.quantization.quantize_dynamic`` version, and
an ONNX graph (MatMul + Add + Relu) quantized by ONNX Runtime's ``quantize_dynamic``.
Used by ``cases_qgemm.py`` and ``startup.py`` (``pyfastopt bench``) and by the asv suite.
torch, onnx and onnxruntime are imported only by the functions that need them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from typing import Any

import numpy as np

DIMS = (784, 512, 256, 10)

Weights = tuple[list[np.ndarray], list[np.ndarray]]


def mlp_weights(rng: np.random.Generator, dims: tuple[int, ...] = DIMS) -> Weights:
    """float32 weights ``(out, in)`` scaled by ``1/sqrt(in)`` and biases ``N(0, 0.1^2)``."""
    ws, bs = [], []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        ws.append((rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)).astype(np.float32))
        bs.append((rng.standard_normal(fan_out) * 0.1).astype(np.float32))
    return ws, bs


def mlp_ops(batch: int, dims: tuple[int, ...] = DIMS) -> int:
    """int8 (or float) operations of one forward: 2 per multiply-add."""
    return 2 * batch * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def quantized_sequential(ws: list[np.ndarray], bs: list[np.ndarray]) -> Any:
    """pyfastopt's int8 stack: relu between layers, per-channel weights, dynamic inputs."""
    from ..quant import QuantizedLinear, QuantizedSequential

    last = len(ws) - 1
    return QuantizedSequential(
        [
            QuantizedLinear.from_float(w, b, activation=None if i == last else "relu")
            for i, (w, b) in enumerate(zip(ws, bs))
        ]
    )


def torch_mlp(torch: Any, ws: list[np.ndarray], bs: list[np.ndarray]) -> Any:
    """The float MLP as a ``torch.nn.Sequential`` (eval mode)."""
    layers = []
    for i, (w, b) in enumerate(zip(ws, bs)):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i + 1 < len(ws):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval()


def torch_dynamic_mlp(torch: Any, ws: list[np.ndarray], bs: list[np.ndarray]) -> Any:
    """``torch.ao.quantization.quantize_dynamic`` of :func:`torch_mlp` (int8 Linear).

    Raises RuntimeError/AttributeError where the build lacks dynamic quantization.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates its quantized tensor types
        return torch.ao.quantization.quantize_dynamic(
            torch_mlp(torch, ws, bs), {torch.nn.Linear}, dtype=torch.qint8
        )


def save_onnx_mlp(ws: list[np.ndarray], bs: list[np.ndarray], path: str) -> None:
    """Write the float MLP as an ONNX graph: input "x" (N, in), MatMul + Add (+ Relu)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(zip(ws, bs)):
        inits += [
            numpy_helper.from_array(np.ascontiguousarray(w.T), f"W{i}"),
            numpy_helper.from_array(b, f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
        ]
        prev = f"a{i}"
        if i + 1 < len(ws):
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", ws[0].shape[1]])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", ws[-1].shape[0]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def save_onnx_int8_mlp(ws: list[np.ndarray], bs: list[np.ndarray], path: str) -> None:
    """The ONNX MLP after ``onnxruntime.quantization.quantize_dynamic`` (int8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        float_path = os.path.join(d, "mlp.onnx")
        save_onnx_mlp(ws, bs, float_path)
        logging.getLogger().setLevel(logging.ERROR)  # its "run pre-processing" advice
        quantize_dynamic(float_path, path, weight_type=QuantType.QInt8)


def onnx_int8_session(ws: list[np.ndarray], bs: list[np.ndarray], threads: int) -> Any:
    """An ONNX Runtime session of :func:`save_onnx_int8_mlp` on ``threads`` intra-op
    threads, or None when onnx/onnxruntime are not installed. Run: ``s.run(None, {"x": x})``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mlp_int8.onnx")
        try:
            save_onnx_int8_mlp(ws, bs, path)
        except ImportError:
            return None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
