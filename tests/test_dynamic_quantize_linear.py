"""quant.dynamic_quantize_linear against ONNX Runtime's DynamicQuantizeLinear, bit for bit,
and against ONNX's reference formula in float64 where they agree."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import quant

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ort_op():
    h = onnx.helper
    node = h.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", 1, None)],
        [
            h.make_tensor_value_info("y", 2, None),
            h.make_tensor_value_info("s", 1, []),
            h.make_tensor_value_info("z", 2, []),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})


def _cases():
    rng = np.random.default_rng(0)
    out = {
        "normal": rng.standard_normal((37, 53)),
        "wide": rng.standard_normal(10_000) * 1e4,
        "tiny": rng.standard_normal(300) * 1e-30,
        "positive": rng.random((4, 5, 6)) * 7 + 0.5,
        "negative": -rng.random(1000) * 3 - 1,
        "one": np.array([2.5]),
        "scalar": np.array(-1.25),
        "zeros": np.zeros((3, 4)),
        "huge": np.array([-1e38, 2.4e38, 1.0]),
        "odd_len": rng.standard_normal(1_000_003),
    }
    # exact ties: x / scale lands on k + 0.5 for many k (round half to even decides)
    scale = np.float32(2.0) / np.float32(255.0)
    k = np.arange(-200, 55, dtype=np.float32)
    out["ties"] = np.concatenate([[-2.0 * 200 / 255, 2.0 * 55 / 255], (k + 0.5) * scale])
    out["grid"] = np.linspace(-1, 3, 4097)
    for i in range(20):  # random ranges, some lopsided
        lo, hi = sorted(rng.standard_normal(2) * 10.0 ** rng.integers(-3, 4))
        out[f"rand{i}"] = rng.uniform(lo, hi, 513)
    return out


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_bit_exact_vs_onnxruntime(ort_op, name):
    x = CASES[name].astype(np.float32)
    y, scale, zp = quant.dynamic_quantize_linear(x)
    want_y, want_s, want_z = ort_op(x)
    assert y.dtype == np.uint8 and y.shape == x.shape
    assert isinstance(scale, np.float32) and isinstance(zp, np.uint8)
    assert scale.tobytes() == np.float32(want_s).tobytes(), (scale, want_s)
    assert zp == want_z
    np.testing.assert_array_equal(y, want_y)


def test_matches_onnx_reference_formula():
    # ONNX's reference (onnx/reference/ops/op_dynamic_quantize_linear.py), float32
    rng = np.random.default_rng(5)
    for _ in range(50):
        x = (rng.standard_normal(200) * rng.uniform(0.01, 100) + rng.uniform(-5, 5)).astype(
            np.float32
        )
        x_min = np.minimum(0, np.min(x))
        x_max = np.maximum(0, np.max(x))
        s = np.float32((x_max - x_min) / np.float32(255))
        z = np.uint8(np.clip(np.rint((np.float32(0) - x_min) / s), 0, 255))
        want = np.clip(np.rint(x / s) + z, 0, 255).astype(np.uint8)
        y, scale, zp = quant.dynamic_quantize_linear(x)
        assert scale == s and zp == z
        np.testing.assert_array_equal(y, want)


def test_edges():
    y, s, z = quant.dynamic_quantize_linear(np.zeros(0, np.float32))
    assert y.shape == (0,) and s == 1.0 and z == 0
    y, s, z = quant.dynamic_quantize_linear(np.zeros((2, 2), np.float32))
    assert s == 1.0 and z == 0 and not y.any()
    # float64 and float16 inputs are converted to float32 first
    x = np.array([-1.0, 0.3, 2.0])
    a = quant.dynamic_quantize_linear(x)
    b = quant.dynamic_quantize_linear(x.astype(np.float32))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and a[2] == b[2]
    quant.dynamic_quantize_linear(x.astype(np.float16))
    for bad in ([np.nan, 1.0], [np.inf, 0.0], [-np.inf]):
        with pytest.raises(ValueError, match="finite"):
            quant.dynamic_quantize_linear(np.array(bad, np.float32))
    with pytest.raises(ValueError, match="overflows"):
        quant.dynamic_quantize_linear(np.array([-3e38, 3.4e38], np.float32))
    with pytest.raises(ValueError, match="underflows"):
        quant.dynamic_quantize_linear(np.array([1e-44], np.float32))
    with pytest.raises(TypeError, match="float32"):
        quant.dynamic_quantize_linear(np.arange(4))
