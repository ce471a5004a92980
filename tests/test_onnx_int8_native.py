"""The one-call native plan of imported int8 graphs (pyfastopt/onnx/_qlower.py) gives the
step paths' bits on every model kind, and the com.microsoft operators ONNX Runtime's
optimizer writes (DynamicQuantizeMatMul, MatMulIntegerToFloat) load and match ONNX
Runtime."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
oq = pytest.importorskip("onnxruntime.quantization")
pfo = pytest.importorskip("pyfastopt.onnx")

from onnx_helpers import torch_export  # noqa: E402
from test_onnx_int8 import cnns, mlp, quantize  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)
ort.set_default_logger_severity(3)

CASES = [
    (name, how, act)
    for name in ("mlp", "lenet", "resnet_block", "mobilenetv2_block")
    for how, act in (("qdq", "QUInt8"), ("qdq", "QInt8"), ("qoperator", "QUInt8"), ("dynamic", ""))
]

#: (model, how, act) the native plan must cover (the others may fall back)
LOWERED = {
    ("mlp", "qdq", "QUInt8"),
    ("mlp", "qdq", "QInt8"),
    ("mlp", "qoperator", "QUInt8"),
    ("mlp", "dynamic", ""),
    ("lenet", "qdq", "QUInt8"),
    ("lenet", "qoperator", "QUInt8"),
}


def _model(tmp_path, name, how, act):
    if name == "mlp":
        module, shape = mlp(), (48,)
    else:
        module, shape = cnns()[name]
    data = quantize(
        tmp_path,
        torch_export(module, torch.randn(1, *shape)),
        how,
        (4, *shape),
        act=getattr(oq.QuantType, act) if act else None,
    )
    return pfo.load(data), shape


@pytest.mark.parametrize(("name", "how", "act"), CASES)
def test_native_plan_same_bits_as_step_paths(tmp_path, name, how, act):
    """model(x) through the native plan == the fast step plan == the generic step
    functions, bit for bit: batch 1 and 5, large inputs, a NaN in a static model's input
    (ONNX Runtime's qmin); dynamic models with a NaN fall back and raise as before."""
    model, shape = _model(tmp_path, name, how, act)
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((b, *shape)).astype(np.float32) * s for b, s in ((1, 2), (5, 2))]
    xs.append(rng.standard_normal((3, *shape)).astype(np.float32) * 40)
    if how != "dynamic":
        xs[1].reshape(-1)[7] = np.nan
        # infinities (saturate) and an all-finite batch whose quantization the first
        # gemm fuses into its packing (QGraphExec::fuse), edge values included
        inf = rng.standard_normal((2, *shape)).astype(np.float32)
        inf.reshape(-1)[[0, 3]] = [np.inf, -np.inf]
        xs.append(inf)
        edge = rng.standard_normal((7, *shape)).astype(np.float32) * 1e4
        edge.reshape(-1)[:4] = [0.0, -0.0, 3e38, -3e38]
        xs.append(edge)
    native = [model(x) for x in xs]
    plans = model._native
    assert plans is not None
    lowered = plans.get(tuple(shape)) is not None
    if (name, how, act) in LOWERED:
        assert lowered, "the native plan should cover this graph"
    model._compile(native=False)
    steps = [model(x) for x in xs]
    model._compile(fast=False)
    generic = [model(x) for x in xs]
    for n, s, g in zip(native, steps, generic):
        assert n.dtype == g.dtype and n.shape == g.shape
        np.testing.assert_array_equal(n, s)
        np.testing.assert_array_equal(n, g)
    if how == "dynamic":
        model._compile()
        bad = xs[0].copy()
        bad.reshape(-1)[0] = np.inf
        with pytest.raises(ValueError):
            model(bad)


def test_native_plan_threads_and_batch_change(tmp_path):
    """Same bits for 1 and 2 threads and when the batch size changes between calls (the
    plan's buffers are resized)."""
    import pyfastopt

    model, shape = _model(tmp_path, "lenet", "qdq", "QUInt8")
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((b, *shape)).astype(np.float32) for b in (32, 1, 7, 32)]
    with pyfastopt.threads(1):
        one = [model(x) for x in xs]
    with pyfastopt.threads(2):
        two = [model(x) for x in xs]
    model._compile(native=False)
    ref = [model(x) for x in xs]
    for a, b, r in zip(one, two, ref):
        np.testing.assert_array_equal(a, r)
        np.testing.assert_array_equal(b, r)


def _ort_optimized(tmp_path, data):
    """The file ONNX Runtime's extended optimizer writes for ``data`` (its com.microsoft
    fused operators)."""
    src, dst = tmp_path / "in.onnx", tmp_path / "opt.onnx"
    src.write_bytes(data)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return dst.read_bytes()


def _ort(data, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


class _TwoHeads(torch.nn.Module):
    """x feeds two linear layers (one DynamicQuantizeLinear shared by two MatMulIntegers:
    ONNX Runtime fuses them into MatMulIntegerToFloat)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = torch.nn.Linear(40, 24)
        self.b = torch.nn.Linear(40, 24)
        self.c = torch.nn.Linear(24, 6)

    def forward(self, x):
        return self.c(torch.relu(self.a(x)) + self.b(x))


@pytest.mark.parametrize(
    ("which", "wt", "per_channel"),
    [
        ("mlp", "QUInt8", False),
        ("mlp", "QInt8", False),
        ("mlp", "QInt8", True),
        ("two_heads", "QUInt8", False),
        ("two_heads", "QInt8", True),
    ],
)
def test_ort_optimized_dynamic_models(tmp_path, which, wt, per_channel):
    """quantize_dynamic files saved by ONNX Runtime's ORT_ENABLE_EXTENDED optimizer
    (DynamicQuantizeMatMul, MatMulIntegerToFloat) load; their outputs equal the
    unfused file's in pyfastopt bit for bit (native plan and generic steps), and ONNX
    Runtime's within the documented bound. int8 weights are quantized with
    reduce_range (7 bits), where ONNX Runtime's AVX2 integer product is exact (8-bit
    int8 weights: see test_onnx_int8's saturation cases); both sides then have the same
    int32 accumulators, and ONNX Runtime rounds ``acc * scale + bias`` once (a fused
    multiply-add) where pyfastopt rounds the product and then the sum (documented bound:
    1e-5 of the output's largest magnitude, after three layers)."""
    if which == "mlp":
        module, shape = mlp(), (48,)
    else:
        module, shape = _TwoHeads(), (40,)
    src, dst = tmp_path / "f.onnx", tmp_path / "d.onnx"
    src.write_bytes(torch_export(module, torch.randn(1, *shape)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oq.quantize_dynamic(
            str(src),
            str(dst),
            weight_type=getattr(oq.QuantType, wt),
            per_channel=per_channel,
            reduce_range=wt == "QInt8",
        )
    plain = dst.read_bytes()
    fused = _ort_optimized(tmp_path, plain)
    ms_ops = {n.op_type for n in onnx.load_from_string(fused).graph.node if n.domain}
    assert ms_ops & {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"}, ms_ops
    got_model = pfo.load(fused)
    ref_model = pfo.load(plain)
    rng = np.random.default_rng(5)
    for b in (1, 9):
        x = rng.standard_normal((b, *shape)).astype(np.float32) * 2
        got = got_model(x)
        np.testing.assert_array_equal(got, ref_model(x))
        got_model._compile(fast=False)
        np.testing.assert_array_equal(got, got_model(x))
        got_model._compile()
        want = _ort(fused, x)
        assert got.shape == want.shape and got.dtype == want.dtype
        scale = float(np.max(np.abs(want))) or 1.0
        err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale
        assert err <= 1e-5, err


def test_ort_optimized_operators_named_in_errors():
    """A com.microsoft operator outside the table is still refused by name."""
    from onnx import TensorProto, helper

    node = helper.make_node("QAttention", ["x"], ["y"], domain="com.microsoft")
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[
            onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            onnx.numpy_helper.from_array(np.array(0, np.uint8), "z"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    with pytest.raises(ValueError, match="QAttention"):
        pfo.load(model.SerializeToString())
