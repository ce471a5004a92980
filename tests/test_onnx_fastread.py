"""pyfastopt.onnx._fastread: initializers read as views of the file's bytes, the rest
parsed by protobuf; anything unexpected falls back to protobuf's whole parse."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pfo = pytest.importorskip("pyfastopt.onnx")

from pyfastopt import nn  # noqa: E402
from pyfastopt.onnx import _fastread  # noqa: E402

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int32, np.int64, np.bool_]


def _model_with(arrays, raw=True):
    h = onnx.helper
    inits = []
    for name, a in arrays.items():
        t = onnx.numpy_helper.from_array(a, name)
        if not raw and a.dtype == np.float32:
            t = h.make_tensor(name, onnx.TensorProto.FLOAT, a.shape, a.reshape(-1).tolist())
        inits.append(t)
    g = h.make_graph(
        [h.make_node("Identity", ["x"], ["y"])],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        initializer=inits,
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_split_matches_numpy_helper():
    rng = np.random.default_rng(0)
    arrays = {
        f"t{i}": (rng.standard_normal((3, 5, 7)) * 50).astype(dt) for i, dt in enumerate(DTYPES)
    }
    arrays["scalar"] = np.array(1.5, np.float32)
    arrays["empty"] = np.zeros((0, 4), np.float32)
    arrays["big"] = rng.standard_normal((300, 300)).astype(np.float32)  # a view, not a copy
    data = _model_with(arrays).SerializeToString()
    stripped, got = _fastread.split(data)
    assert len(stripped) < len(data) - arrays["big"].nbytes
    parsed = onnx.ModelProto()
    parsed.ParseFromString(stripped)
    assert [t.name for t in parsed.graph.initializer] == list(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape
        np.testing.assert_array_equal(got[name], a)
    assert np.shares_memory(got["big"], np.frombuffer(data, np.uint8))


def test_non_raw_initializers_left_to_protobuf():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = _model_with({"w": w, "i": np.arange(4, dtype=np.int64)}, raw=False).SerializeToString()
    stripped, got = _fastread.split(data)
    assert set(got) == {"i"}  # float_data stays in the protobuf part
    parsed = onnx.ModelProto()
    parsed.ParseFromString(stripped)
    by_name = {t.name: t for t in parsed.graph.initializer}
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(by_name["w"]), w)


@pytest.mark.parametrize("cut", [1, 7, 100, 5000])
def test_truncated_files_are_value_errors(tmp_path, cut):
    model = nn.Sequential(nn.Linear(64, 64, seed=0), nn.ReLU(), nn.Linear(64, 8, seed=1)).eval()
    path = tmp_path / "m.onnx"
    pfo.save(model, path)
    data = path.read_bytes()
    assert _fastread.split(data[:-cut]) is None
    with pytest.raises(ValueError):
        pfo.load(data[:-cut])


def test_large_file_memory_mapped_load(tmp_path):
    """A file over 1 MiB is mapped; the loaded weights equal the saved ones and are the
    layer's own (writable) copies."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((600, 600)).astype(np.float32)
    b = rng.standard_normal(600).astype(np.float32)
    model = nn.Sequential(nn.Linear.from_weights(w, b, activation="relu")).eval()
    path = tmp_path / "big.onnx"
    pfo.save(model, path)
    assert path.stat().st_size > 1 << 20
    loaded = pfo.load(path)
    np.testing.assert_array_equal(loaded[0].weight, w)
    np.testing.assert_array_equal(loaded[0].bias, b)
    loaded[0].weight[0, 0] = 7.0  # the layer owns its weights
    x = rng.standard_normal((4, 600)).astype(np.float32)
    np.testing.assert_array_equal(pfo.load(path)(x), model(x))


def test_split_refuses_odd_layouts():
    """Two graph fields (protobuf merges them) or a graph without initializers: None."""
    data = _model_with({"w": np.ones(3, np.float32)}).SerializeToString()
    assert _fastread.split(data + data) is None
    assert _fastread.split(_model_with({}).SerializeToString()) is None
    assert _fastread.split(b"\xff\xff\xff") is None
