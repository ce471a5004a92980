"""pyfastopt.onnx.load of int8 models written by onnxruntime.quantization (quantize_dynamic,
quantize_static in QDQ and QOperator formats), compared with ONNX Runtime running the
same file: bit for bit where ONNX Runtime's arithmetic is exact, within the documented
bound elsewhere."""

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

from onnx_helpers import ort_run, torch_export  # noqa: E402
from torch_blocks import BasicBlock, InvertedResidual, randomize_bn  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing"
ort.set_default_logger_severity(3)  # "Removing initializer ..." warnings


class Reader(oq.CalibrationDataReader):
    """Fixed random calibration batches."""

    def __init__(self, shape, batches=4, seed=0):
        rng = np.random.default_rng(seed)
        self.data = iter(
            [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(batches)]
        )

    def get_next(self):
        return next(self.data, None)


def quantize(
    tmp_path, data, how, shape, per_channel=False, weight=None, reduce_range=False, act=None
):
    src, dst = tmp_path / "f.onnx", tmp_path / f"{how}.onnx"
    src.write_bytes(data)
    qt = oq.QuantType
    wt = weight or qt.QInt8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "dynamic":
            oq.quantize_dynamic(
                str(src),
                str(dst),
                weight_type=wt,
                per_channel=per_channel,
                reduce_range=reduce_range,
            )
        else:
            fmt = oq.QuantFormat.QDQ if how == "qdq" else oq.QuantFormat.QOperator
            oq.quantize_static(
                str(src),
                str(dst),
                Reader(shape),
                quant_format=fmt,
                weight_type=wt,
                activation_type=act or qt.QUInt8,
                per_channel=per_channel,
                reduce_range=reduce_range,
            )
    return dst.read_bytes()


def as_uint8_weights(data):
    """The model with every int8 initializer (weights and their zero points) stored as
    uint8 + 128: the same dequantized values, but ONNX Runtime's uint8 x uint8 kernels,
    which are exact on every CPU."""
    proto = onnx.load_from_string(data)
    for init in proto.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8:
            v = onnx.numpy_helper.to_array(init)
            init.CopyFrom(
                onnx.numpy_helper.from_array((v.astype(np.int16) + 128).astype(np.uint8), init.name)
            )
    return proto.SerializeToString()


def ops_of(data):
    return {n.op_type for n in onnx.load_from_string(data).graph.node}


def mlp():
    torch.manual_seed(0)
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Linear(48, 64), tnn.ReLU(), tnn.Linear(64, 32), tnn.ReLU(), tnn.Linear(32, 10)
    )


def levels_apart(got, want, scale):
    return float(np.max(np.abs(got.astype(np.float64) - want))) / scale


# (how, weight type, reduce_range, per_channel, exact)
# uint8 x int8 with 8-bit weights is the inexact case: ONNX Runtime's AVX2 kernels
# (vpmaddubsw) saturate the int16 sums of pairs of products there, so its int32
# accumulators are not the exact ones (on CPUs with VNNI they are); with 7-bit weights
# (reduce_range) or uint8 weights ONNX Runtime is exact, and pyfastopt must match it bit
# for bit.
MLP_CASES = [
    ("dynamic", "QUInt8", False, False, True),
    ("dynamic", "QInt8", True, False, True),
    ("dynamic", "QInt8", True, True, True),
    ("dynamic", "QInt8", False, False, False),
    ("qdq", "QUInt8", False, False, True),
    ("qdq", "QUInt8", False, True, True),
    ("qdq", "QInt8", True, False, True),
    ("qdq", "QInt8", True, True, True),
    ("qdq", "QInt8", False, False, False),
    ("qoperator", "QUInt8", False, False, True),
    ("qoperator", "QInt8", True, False, True),
    ("qoperator", "QInt8", True, True, True),
    ("qoperator", "QInt8", False, False, False),
]

#: the documented bound where ONNX Runtime's uint8 x int8 kernel saturates: a fraction
#: of the output's largest magnitude (measured up to 21% on the AVX2 test machine)
SATURATION_BOUND = 0.3


@pytest.mark.parametrize(("how", "wt", "reduce", "per_channel", "exact"), MLP_CASES)
def test_mlp_vs_onnxruntime(tmp_path, how, wt, reduce, per_channel, exact):
    data = quantize(
        tmp_path,
        torch_export(mlp(), torch.randn(1, 48)),
        how,
        (16, 48),
        per_channel=per_channel,
        weight=getattr(oq.QuantType, wt),
        reduce_range=reduce,
    )
    model = pfo.load(data)
    assert isinstance(model, pfo.QuantizedGraph)
    rng = np.random.default_rng(1)
    for batch in (1, 32):
        x = rng.standard_normal((batch, 48)).astype(np.float32)
        got, want = model(x), ort_run(data, x)
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
        if exact or np.array_equal(got, want):
            np.testing.assert_array_equal(got, want)
        else:
            # the exact arithmetic: ONNX Runtime on the same model with its int8 weights
            # as uint8 (+128, zero points +128: the same values), where its kernel is exact
            np.testing.assert_array_equal(got, ort_run(as_uint8_weights(data), x))
            rel = levels_apart(got, want, float(np.max(np.abs(want))))
            assert rel <= SATURATION_BOUND, rel


def test_dynamic_form(tmp_path):
    """quantize_dynamic's graph: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul."""
    data = quantize(
        tmp_path, torch_export(mlp(), torch.randn(1, 48)), "dynamic", (16, 48), reduce_range=True
    )
    assert {"DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul"} <= ops_of(data)
    model = pfo.load(data)
    ops = [s.op for s in model.steps]
    assert ops.count("MatMulInteger") == 3 and ops.count("DynamicQuantizeLinear") == 3


def test_qdq_fused_as_onnxruntime(tmp_path):
    """QDQ Gemm patterns become QGemm steps (ONNX Runtime's fusion), no float Gemm left."""
    data = quantize(tmp_path, torch_export(mlp(), torch.randn(1, 48)), "qdq", (16, 48))
    assert "QuantizeLinear" in ops_of(data) and "Gemm" in ops_of(data)
    ops = [s.op for s in pfo.load(data).steps]
    assert ops.count("QGemm") == 3 and "Gemm" not in ops
    assert ops[0] == "QuantizeLinear" and ops[-1] == "DequantizeLinear"


def test_nan_input_like_onnxruntime(tmp_path):
    data = quantize(
        tmp_path,
        torch_export(mlp(), torch.randn(1, 48)),
        "qoperator",
        (16, 48),
        weight=oq.QuantType.QUInt8,
    )
    x = np.random.default_rng(2).standard_normal((4, 48)).astype(np.float32)
    x[1, 3] = np.nan
    np.testing.assert_array_equal(pfo.load(data)(x), ort_run(data, x))


def _graph(nodes, inits, in_type=onnx.TensorProto.FLOAT, opset=17):
    h = onnx.helper
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", in_type, ["b", 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", 4])],
        initializer=[onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def test_unsupported_operator_named():
    h = onnx.helper
    inits = {"s": np.array(0.1, np.float32), "z": np.array(128, np.uint8)}
    nodes = [
        h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
        h.make_node(
            "QLinearSigmoid", ["q", "s", "z", "s", "z"], ["qs"], name="sig", domain="com.microsoft"
        ),
        h.make_node("DequantizeLinear", ["qs", "s", "z"], ["y"], name="deq"),
    ]
    with pytest.raises(ValueError, match=r"'sig'.*QLinearSigmoid.*supported"):
        pfo.load(_graph(nodes, inits))
    nodes[1] = h.make_node("Softmax", ["q"], ["qs"], name="soft")
    with pytest.raises(ValueError, match=r"'soft'.*Softmax.*supported"):
        pfo.load(_graph(nodes, inits))


def test_unsupported_attribute_named():
    h = onnx.helper
    inits = {"s": np.array(0.1, np.float32), "z": np.array(128, np.uint8)}
    nodes = [
        h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant", block_size=2),
        h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="deq"),
    ]
    with pytest.raises(ValueError, match=r"'quant'.*block_size.*supported attributes"):
        pfo.load(_graph(nodes, inits, opset=21))


def test_quantize_dequantize_roundtrip_graph():
    """A hand-made Q -> DQ graph: ONNX's definition (and ONNX Runtime's bits)."""
    h = onnx.helper
    inits = {"s": np.array(0.05, np.float32), "z": np.array(100, np.uint8)}
    nodes = [
        h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    model = _graph(nodes, inits)
    data = model.SerializeToString()
    x = (np.random.default_rng(3).standard_normal((64, 4)) * 8).astype(np.float32)
    np.testing.assert_array_equal(pfo.load(data)(x), ort_run(data, x))


# ------------------------------------------------------------------ CNNs
tnn = torch.nn


class Pooled(tnn.Module):
    """conv -> relu -> global average pool -> linear (QLinearGlobalAveragePool)."""

    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(3, 8, 3, padding=1)
        self.head = tnn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.head(torch.flatten(tnn.functional.adaptive_avg_pool2d(y, 1), 1))


def cnns():
    torch.manual_seed(0)
    return {
        "lenet": (
            tnn.Sequential(
                tnn.Conv2d(1, 6, 5, padding=2),
                tnn.ReLU(),
                tnn.MaxPool2d(2),
                tnn.Conv2d(6, 16, 5),
                tnn.ReLU(),
                tnn.MaxPool2d(2, 2),
                tnn.Flatten(),
                tnn.Linear(16 * 5 * 5, 32),
                tnn.ReLU(),
                tnn.Linear(32, 10),
            ),
            (1, 28, 28),
        ),
        "resnet_block": (randomize_bn(BasicBlock(8)), (8, 10, 10)),
        "mobilenetv2_block": (randomize_bn(InvertedResidual(8)), (8, 9, 9)),
        "pooled": (Pooled(), (3, 8, 8)),
    }


# the ops whose ONNX Runtime arithmetic is not reproduced exactly (fixed-point shortcuts)
_INEXACT_OPS = {"QLinearAdd", "QLinearGlobalAveragePool"}


@pytest.mark.parametrize("how", ["qdq", "qoperator", "dynamic"])
@pytest.mark.parametrize("name", ["lenet", "resnet_block", "mobilenetv2_block", "pooled"])
def test_cnn_vs_onnxruntime(tmp_path, name, how):
    module, shape = cnns()[name]
    data = quantize(
        tmp_path,
        torch_export(module, torch.randn(1, *shape)),
        how,
        (4, *shape),
        weight=oq.QuantType.QUInt8 if how != "dynamic" else oq.QuantType.QInt8,
    )
    model = pfo.load(data)
    ops = {s.op for s in model.steps}
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        got, want = model(x), ort_run(data, x)
        assert got.shape == want.shape and got.dtype == want.dtype
        # ONNX Runtime's exact arithmetic (uint8 weights: no int16 saturation)
        exact = ort_run(as_uint8_weights(data), x)
        if ops & _INEXACT_OPS:
            # bound: 2 steps of the output's quantization per inexact op on the path
            step = float(np.max(np.abs(exact))) / 127
            assert levels_apart(got, exact, step) <= 2 * len(ops & _INEXACT_OPS) + 2
        else:
            np.testing.assert_array_equal(got, exact)
        if not np.array_equal(exact, want):  # ONNX Runtime's int8-weight kernel saturated
            assert levels_apart(want, exact, float(np.max(np.abs(exact)))) <= SATURATION_BOUND


# ------------------------------------------------------------------ round trip
ROUND_TRIP = [
    ("mlp", "dynamic", "QInt8"),
    ("mlp", "qdq", "QInt8"),
    ("mlp", "qoperator", "QUInt8"),
    ("lenet", "qoperator", "QUInt8"),
    ("lenet", "dynamic", "QInt8"),
    ("resnet_block", "qdq", "QInt8"),
    ("mobilenetv2_block", "qoperator", "QInt8"),
    ("pooled", "qdq", "QUInt8"),
]


@pytest.mark.parametrize(("name", "how", "wt"), ROUND_TRIP)
def test_save_load_round_trip(tmp_path, name, how, wt):
    """QuantizedGraph -> save (QDQ, default domain only) -> load: the same steps and the
    same outputs bit for bit; ONNX Runtime runs the saved file with pyfastopt's outputs
    (its exact arithmetic: the uint8-weight form where its int8 kernel saturates)."""
    if name == "mlp":
        module, shape = mlp(), (48,)
    else:
        module, shape = cnns()[name]
    data = quantize(
        tmp_path,
        torch_export(module, torch.randn(1, *shape)),
        how,
        (4, *shape),
        weight=getattr(oq.QuantType, wt),
    )
    model = pfo.load(data)
    path = tmp_path / "saved.onnx"
    assert pfo.save(model, path) == path.stat().st_size
    saved = path.read_bytes()
    proto = onnx.load_from_string(saved)
    assert {n.domain for n in proto.graph.node} <= {""}
    again = pfo.load(path)
    assert [s.op for s in again.steps] == [s.op for s in model.steps]
    for k, v in model.constants.items():
        if k in again.constants:
            np.testing.assert_array_equal(again.constants[k], v)
    rng = np.random.default_rng(5)
    for batch in (1, 4):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        got = model(x)
        np.testing.assert_array_equal(again(x), got)
        ops = {s.op for s in model.steps}
        want = ort_run(as_uint8_weights(saved), x)
        if ops & _INEXACT_OPS:
            step = float(np.max(np.abs(want))) / 127
            assert levels_apart(got, want, step) <= 2 * len(ops & _INEXACT_OPS) + 2
        else:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_model_qdq_loads_back(tmp_path, mode):
    """pyfastopt.quant's QuantizedModel -> save (QDQ) -> load: a QuantizedGraph whose
    float Gemm on the dequantized values (the unfused QDQ form the writer uses) is
    within float32 rounding of the int8 engine's output."""
    from pyfastopt import nn, quant

    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Linear(32, 64, activation="relu", seed=0), nn.Linear(64, 10, seed=1)
    ).eval()
    cal = rng.standard_normal((256, 32)).astype(np.float32)
    qm = quant.quantize_model(model, calibration_data=cal, mode=mode)
    pfo.save(qm, tmp_path / "q.onnx")
    g = pfo.load(tmp_path / "q.onnx")
    assert isinstance(g, pfo.QuantizedGraph)
    x = rng.standard_normal((16, 32)).astype(np.float32)
    want = qm(x)
    assert float(np.max(np.abs(g(x) - want))) <= 1e-6 * float(np.max(np.abs(want)))


@pytest.mark.parametrize("wt", ["QInt8", "QUInt8"])
@pytest.mark.parametrize("how", ["qdq", "qoperator"])
def test_cnn_per_channel(tmp_path, how, wt):
    """Per-channel conv weights: int8 (zero points 0: the int8 conv kernel) and uint8
    (zero points that differ per channel: the exact float64 path)."""
    module, shape = cnns()["lenet"]
    data = quantize(
        tmp_path,
        torch_export(module, torch.randn(1, *shape)),
        how,
        (4, *shape),
        per_channel=True,
        weight=getattr(oq.QuantType, wt),
    )
    model = pfo.load(data)
    assert "QLinearConv" in {s.op for s in model.steps}
    x = np.random.default_rng(7).standard_normal((3, *shape)).astype(np.float32)
    np.testing.assert_array_equal(model(x), ort_run(as_uint8_weights(data), x))


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_int_matches_float(ceil_mode):
    """The 8-bit MaxPool step (quant.max_pool2d_int8) equals float max pooling of the
    same values, padding included (it never wins)."""
    from pyfastopt import nn
    from pyfastopt.onnx._qgraph import max_pool_int

    x = np.random.default_rng(0).integers(0, 256, (2, 3, 9, 8)).astype(np.uint8)
    got = max_pool_int(x, (3, 3), (2, 2), (1, 1), (1, 1), ceil_mode)
    want = nn.MaxPool2d((3, 3), (2, 2), (1, 1), (1, 1), ceil_mode=ceil_mode).forward(
        x.astype(np.float64)
    )
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want.astype(np.uint8))


def test_corrupt_int8_models_fuzz(tmp_path):
    """Mutated int8 files (bytes flipped; nodes stripped of inputs, attributes of the
    wrong type): a ValueError or a working model, never another exception."""
    import contextlib

    data = quantize(tmp_path, torch_export(mlp(), torch.randn(1, 48)), "qdq", (16, 48))
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 48)).astype(np.float32)
    for _ in range(200):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), int(rng.integers(1, 4))):
            mutated[pos] ^= int(rng.integers(1, 256))
        try:
            model = pfo.load(bytes(mutated))
        except ValueError:
            continue
        with contextlib.suppress(ValueError):
            model(x)
    proto = onnx.load_from_string(data)
    for i in range(len(proto.graph.node)):
        for damage in ("inputs", "attr"):
            p = onnx.ModelProto()
            p.CopyFrom(proto)
            node = p.graph.node[i]
            if damage == "inputs":
                del node.input[1:]
            else:
                node.attribute.append(onnx.helper.make_attribute("axis", "text"))
            try:
                model = pfo.load(p)
            except ValueError:
                continue
            with contextlib.suppress(ValueError):
                model(x)


@pytest.mark.parametrize("how", ["qdq", "qoperator"])
def test_prepacked_path_same_bits(tmp_path, how):
    """QGemm steps with their weights packed once (QuantizedLinear, float32 of the exact
    int32 accumulators) give the same bits as the per-call matmul_int8 path."""
    data = quantize(tmp_path, torch_export(mlp(), torch.randn(1, 48)), how, (16, 48))
    model = pfo.load(data)
    assert len(model._fast) == 3
    x = np.random.default_rng(9).standard_normal((17, 48)).astype(np.float32) * 3
    fast = model(x)
    model._compile(fast=False)  # every step through its generic QFUNCTIONS function
    assert model._fast_steps == []
    np.testing.assert_array_equal(fast, model(x))


FAST_CASES = [
    (name, how, act)
    for name in ("mlp", "lenet", "resnet_block", "mobilenetv2_block")
    for how, act in (("qdq", "QUInt8"), ("qdq", "QInt8"), ("qoperator", "QInt8"), ("dynamic", ""))
]


@pytest.mark.parametrize(("name", "how", "act"), FAST_CASES)
def test_fast_plan_same_bits_as_generic_steps(tmp_path, name, how, act):
    """The plan compiled at load (prepacked QGemm/QLinearMatMul/MatMulInteger, QLinearConv
    as im2col x prepacked weights, requantization in the kernels' output stage, the
    scalar DynamicQuantizeLinear) gives the generic step functions' bits: uint8 and int8
    activations, padded and unpadded convolutions, batch 1 and 5, a NaN input."""
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
    model = pfo.load(data)
    fast_ops = {model.steps[i].op for i in model._fast_steps}
    ops = {s.op for s in model.steps}
    for op in ("QGemm", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeLinear"):
        if op in ops:
            assert op in fast_ops, (op, fast_ops)
    if name == "lenet" and how != "dynamic":
        assert "QLinearConv" in fast_ops
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((b, *shape)).astype(np.float32) * 2 for b in (1, 5)]
    if how != "dynamic":
        xs[1].reshape(-1)[7] = np.nan
    fast = [model(x) for x in xs]
    model._compile(fast=False)
    for x, f in zip(xs, fast):
        want = model(x)
        assert f.dtype == want.dtype
        np.testing.assert_array_equal(f, want)


def test_prepacked_refused_beyond_float32_exactness():
    """Weights whose accumulators could pass 2**24 keep the int32 path."""
    from pyfastopt.onnx._qgraph import QStep, _prepacked

    k = 600
    consts = {
        "b": np.full((k, 4), 127, np.int8),  # 255 * 127 * 600 > 2**24
        "sa": np.array(0.1, np.float32),
        "za": np.array(3, np.uint8),
        "sb": np.array(0.01, np.float32),
        "zb": np.array(0, np.int8),
        "sy": np.array(0.5, np.float32),
        "zy": np.array(128, np.uint8),
    }
    step = QStep("QLinearMatMul", ["x", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])
    assert _prepacked(step, consts) is None
    consts["b"] = np.full((100, 4), 127, np.int8)
    assert _prepacked(step, consts) is not None
