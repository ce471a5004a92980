"""pyfastopt.onnx for CNNs: models exported by torch.onnx.export (LeNet-like, a ResNet
basic block, a MobileNetV2 inverted residual, average/global pooling) loaded and compared
with ONNX Runtime running the same file; unsupported attributes; pyfastopt -> ONNX ->
ONNX Runtime and -> pyfastopt."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pfo = pytest.importorskip("pyfastopt.onnx")

from onnx_helpers import close, ort_run, torch_export  # noqa: E402
from torch_blocks import BasicBlock, InvertedResidual, randomize_bn  # noqa: E402

tnn = torch.nn


def export(module, shape, opset=17):
    """torch_export of ``module`` on zeros of ``shape``, batch axis dynamic on x and y."""
    return torch_export(module, torch.zeros(shape), opset, dynamic=("x", "y"))


class DownBlock(tnn.Module):
    """A ResNet basic block with stride 2 and a 1x1 convolution on the shortcut."""

    def __init__(self, c, d):
        super().__init__()
        self.conv1 = tnn.Conv2d(c, d, 3, stride=2, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(d)
        self.conv2 = tnn.Conv2d(d, d, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(d)
        self.down = tnn.Sequential(tnn.Conv2d(c, d, 1, stride=2, bias=False), tnn.BatchNorm2d(d))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


def _models():
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
        "resnet_down_block": (randomize_bn(DownBlock(4, 8)), (4, 9, 9)),
        "mobilenetv2_block": (randomize_bn(InvertedResidual(8)), (8, 9, 9)),
        "pools": (
            tnn.Sequential(
                tnn.BatchNorm2d(3),  # not after a conv: not folded by the exporter
                tnn.Conv2d(3, 8, 3, stride=2, padding=(1, 2), dilation=(1, 2)),
                tnn.BatchNorm2d(8),
                tnn.ReLU(),
                tnn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                tnn.Conv2d(8, 8, 3, padding=1, groups=2),
                tnn.AvgPool2d(2, ceil_mode=True),
                tnn.MaxPool2d(3, stride=1, padding=1),
                tnn.AdaptiveAvgPool2d(1),
                tnn.Flatten(),
                tnn.Linear(8, 4),
            ),
            (3, 21, 23),
        ),
    }


MODELS = _models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_cnn_matches_onnxruntime(name, tmp_path):
    module, shape = MODELS[name]
    randomize_bn(module, 1)
    data = export(module, (1, *shape))
    model = pfo.load(data)
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    want = ort_run(data, x)
    close(model(x), want)
    with torch.no_grad():
        close(module(torch.from_numpy(x)).numpy(), want)  # the reference is PyTorch's too
    # export -> ONNX Runtime, and round trip -> pyfastopt
    path = tmp_path / f"{name}.onnx"
    pfo.save(model, path, input_shape=shape)
    saved = path.read_bytes()
    close(ort_run(saved, x), want)
    again = pfo.load(saved)
    np.testing.assert_array_equal(again(x), model(x))


def test_structure():
    lenet = pfo.load(export(MODELS["lenet"][0], (1, 1, 28, 28)))
    assert isinstance(lenet, nn.Sequential)
    convs = [m for m in lenet if isinstance(m, nn.Conv2d)]
    assert [c.activation for c in convs] == ["relu", "relu"]  # Relu fused
    assert convs[0].padding == (2, 2, 2, 2)
    assert not any(isinstance(m, nn.ReLU) for m in lenet[:4])
    block = pfo.load(export(MODELS["resnet_block"][0], (1, 8, 10, 10)))
    assert isinstance(block, pfo.Graph)
    assert [s.op for s in block.steps].count("Add") == 1
    mb = pfo.load(export(MODELS["mobilenetv2_block"][0], (1, 8, 9, 9)))
    clips = [s.layer for s in mb.steps if isinstance(s.layer, pfo.Clip)]
    assert [(c.lo, c.hi) for c in clips] == [(0.0, 6.0)] * 2
    dw = [s.layer for s in mb.steps if isinstance(s.layer, nn.Conv2d) and s.layer.groups > 1]
    assert len(dw) == 1 and dw[0].groups == 32
    pools = pfo.load(export(MODELS["pools"][0], (1, 3, 21, 23)))
    kinds = [type(m).__name__ for m in pools]
    assert kinds[:2] == ["BatchNorm2d", "Conv2d"]
    assert {"AvgPool2d", "MaxPool2d", "AdaptiveAvgPool2d"} <= set(kinds)


# ------------------------------------------------------------------ hand-made graphs
def _graph(node, x_shape, inits=(), opset=17):
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x_shape))
    y = h.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
    g = h.make_graph([node], "g", [x], [y], initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def _w(shape, name="w", seed=0):
    v = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return onnx.numpy_helper.from_array(v, name)


@pytest.mark.parametrize(
    "attrs",
    [
        {"pads": [0, 1, 2, 1]},  # asymmetric
        {"pads": [1, 0, 0, 2], "strides": [2, 1], "dilations": [1, 2]},
        {"auto_pad": "SAME_UPPER"},
        {"auto_pad": "SAME_LOWER"},  # ORT: no dilations with SAME_*
        {"auto_pad": "VALID", "strides": [2, 2]},
        {"group": 2},
    ],
)
def test_conv_attributes_match_onnxruntime(attrs):
    group = attrs.get("group", 1)
    node = onnx.helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 2], **attrs)
    b = _w((6,), "b", 1)
    data = _graph(node, (2, 4, 7, 8), [_w((6, 4 // group, 3, 2)), b])
    x = np.random.default_rng(2).standard_normal((2, 4, 7, 8)).astype(np.float32)
    close(pfo.load(data)(x), ort_run(data, x))


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("MaxPool", {"kernel_shape": [2, 3], "dilations": [2, 1], "ceil_mode": 1}),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
        (
            "AveragePool",
            {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
        ),
        (
            "AveragePool",
            {
                "kernel_shape": [3, 2],
                "strides": [2, 3],
                "pads": [1, 1, 1, 1],
                "ceil_mode": 1,
                "count_include_pad": 1,
            },
        ),
        (
            "MaxPool",
            {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
        ),
        ("GlobalAveragePool", {}),
    ],
)
def test_pool_attributes_match_onnxruntime(op, attrs):
    node = onnx.helper.make_node(op, ["x"], ["y"], **attrs)
    data = _graph(node, (2, 3, 7, 9))
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 9)).astype(np.float32)
    close(pfo.load(data)(x), ort_run(data, x))


@pytest.mark.parametrize(
    ("op", "attrs", "inputs", "match"),
    [
        ("Conv", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, ["x", "w"], "SAME_UPPER"),
        ("Conv", {"auto_pad": "BOGUS"}, ["x", "w"], "auto_pad"),
        ("Conv", {"foo": 1}, ["x", "w"], "'foo' is not supported"),
        ("MaxPool", {"kernel_shape": [3, 3], "storage_order": 1}, ["x"], "storage_order"),
        ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 0, 0, 0]}, ["x"], "asymmetric pads"),
        ("AveragePool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}, ["x"], "auto_pad"),
        ("AveragePool", {"kernel_shape": [3, 3], "dilations": [2, 2]}, ["x"], "dilations"),
        ("MaxPool", {}, ["x"], "kernel_shape"),
    ],
)
def test_unsupported_attributes(op, attrs, inputs, match):
    node = onnx.helper.make_node(op, inputs, ["y"], name="the_node", **attrs)
    data = _graph(node, (1, 4, 8, 8), [_w((4, 4, 3, 3))] if "w" in inputs else [])
    with pytest.raises(ValueError, match=match) as info:
        pfo.load(data)
    assert "the_node" in str(info.value) and f"({op})" in str(info.value)


def test_maxpool_indices_refused():
    node = onnx.helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2])
    with pytest.raises(ValueError, match=r"'mp' \(MaxPool\).*Indices"):
        pfo.load(_graph(node, (1, 2, 4, 4)))


def test_clip_relu6_and_bounds():
    for opset, node, inits in (
        (13, onnx.helper.make_node("Clip", ["x", "lo", "hi"], ["y"]), True),
        (10, onnx.helper.make_node("Clip", ["x"], ["y"], min=-1.0, max=2.5), False),
    ):
        iv = (
            [
                onnx.numpy_helper.from_array(np.float32(0), "lo"),
                onnx.numpy_helper.from_array(np.float32(6), "hi"),
            ]
            if inits
            else []
        )
        data = _graph(node, (2, 5), iv, opset=opset)
        x = np.random.default_rng(4).standard_normal((2, 5)).astype(np.float32) * 8
        np.testing.assert_array_equal(pfo.load(data)(x), ort_run(data, x))
    node = onnx.helper.make_node("Clip", ["x", "x"], ["y"], name="c")  # min not a constant
    with pytest.raises(ValueError, match=r"'c' \(Clip\).*constant"):
        pfo.load(_graph(node, (2, 5)))


# ------------------------------------------------------------------ pyfastopt -> ONNX
def _pf_cnn(seed=0):
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm2d(8)
    bn.running_mean[...] = rng.standard_normal(8) * 0.1
    bn.running_var[...] = rng.random(8) + 0.5
    bn.weight[...] = rng.random(8) + 0.5
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=(1, 0, 2, 1), activation="relu", seed=1),
        nn.Residual(
            nn.Conv2d(8, 8, 3, padding="same", groups=4, seed=2),
            bn,
            nn.ReLU(),
            nn.Conv2d(8, 8, 1, seed=3),
        ),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AvgPool2d(2, padding=1, count_include_pad=False),
        nn.Conv2d(8, 6, 2, stride=1, dilation=2, activation="gelu", seed=4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5, seed=5),
    )
    return model.eval()


def test_pyfastopt_cnn_export_roundtrip(tmp_path):
    model = _pf_cnn()
    x = np.random.default_rng(6).standard_normal((2, 3, 12, 11)).astype(np.float32)
    want = model(x).copy()
    path = tmp_path / "cnn.onnx"
    pfo.save(model, path, input_shape=(3, 12, 11))
    data = path.read_bytes()
    close(ort_run(data, x), want)
    again = pfo.load(data)
    np.testing.assert_array_equal(again(x), want)
    convs = [s.layer for s in again.steps if isinstance(s.layer, nn.Conv2d)]
    assert [c.activation for c in convs] == ["relu", None, None, "gelu"]


def test_export_refuses_nhwc_and_adaptive(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        pfo.save(nn.Conv2d(2, 2, 3, layout="NHWC"), tmp_path / "a.onnx", input_shape=(4, 4, 2))
    with pytest.raises(ValueError, match="output_size"):
        pfo.save(nn.AdaptiveAvgPool2d(2), tmp_path / "b.onnx", input_shape=(2, 4, 4))
    with pytest.raises(ValueError, match="divisor_override"):
        pfo.save(nn.AvgPool2d(2, divisor_override=3), tmp_path / "c.onnx", input_shape=(1, 4, 4))


def test_loaded_block_backward_matches_torch():
    """Graph.backward through Conv (depthwise; the exporter folds the eval-mode BatchNorms
    into the convolutions), Clip (ReLU6) and the residual Add: dx equals torch's autograd
    through the eval-mode module."""
    module, shape = MODELS["mobilenetv2_block"]
    model = pfo.load(export(module, (1, *shape)))
    assert not any(isinstance(s.layer, nn.BatchNorm2d) for s in model.steps)
    x = np.random.default_rng(7).standard_normal((2, *shape)).astype(np.float32)
    dy = np.random.default_rng(8).standard_normal((2, *shape)).astype(np.float32)
    model.train()  # Graph.backward needs a training-mode forward
    y = model(x)
    dx = model.backward(dy)
    module.eval()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(dy))
    close(y, yt.detach().numpy())
    close(dx, xt.grad.numpy(), 1e-4)


@pytest.mark.parametrize("opset", [11, 19])
@pytest.mark.parametrize("name", ["mobilenetv2_block", "pools"])
def test_other_opsets(name, opset):
    """Clip's bounds as inputs (opset 11+), AveragePool with a dilations attribute (19)."""
    module, shape = MODELS[name]
    data = export(module, (1, *shape), opset=opset)
    x = np.random.default_rng(9).standard_normal((2, *shape)).astype(np.float32)
    close(pfo.load(data)(x), ort_run(data, x))
