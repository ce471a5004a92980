"""requantize and qlinear_matmul: ONNX Runtime's QLinearMatMul bit for bit (u8 x u8, and
u8 x s8 with weights where ORT's AVX2 kernel does not saturate), and a float64
reference of the documented formula."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import quant


def reference_requantize(acc, mult, zp, dtype):
    info = np.iinfo(dtype)
    v = (acc.astype(np.float32).astype(np.float64) * np.float64(np.float32(mult))).astype(
        np.float32
    )
    return np.clip(np.rint(v.astype(np.float64)) + zp, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_requantize_formula(dtype):
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**31), 2**31, 3000, dtype=np.int64).astype(np.int32)
    acc[:6] = [0, 1, -1, 2**24 + 1, 127, -128]
    for mult in (1e-3, 0.5, 1.0, 2.0**-20, 0.0123):
        zp = 128 if dtype == np.uint8 else 3
        got = quant.requantize(acc, mult, zp, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, reference_requantize(acc, mult, zp, dtype))
    # ties round to even: 2.5 -> 2, 3.5 -> 4
    np.testing.assert_array_equal(
        quant.requantize(np.array([5, 7, -5], np.int32), 0.5, 0, np.int8), [2, 4, -2]
    )


def test_requantize_per_column_and_errors():
    acc = np.arange(12, dtype=np.int32).reshape(3, 4) * 100
    s = np.array([0.01, 0.02, 0.03, 0.04])
    got = quant.requantize(acc, s, 10, np.uint8)
    expected = np.stack([reference_requantize(acc[:, j], s[j], 10, np.uint8) for j in range(4)], 1)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(TypeError, match="acc"):
        quant.requantize(acc.astype(np.int64), 0.1, 0)
    with pytest.raises(ValueError, match="scale"):
        quant.requantize(acc, -0.1, 0)
    with pytest.raises(ValueError, match="scale"):
        quant.requantize(acc, np.ones(3), 0)
    with pytest.raises(ValueError, match="zero_point"):
        quant.requantize(acc, 0.1, 300, np.uint8)
    with pytest.raises(TypeError, match="dtype"):
        quant.requantize(acc, 0.1, 0, np.int16)


def _ort_qlinear_matmul(a, sa, za, b, sb, zb, sy, zy):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(sa, np.float32), "sa"),
        numpy_helper.from_array(np.array(za, a.dtype), "za"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(sb, np.float32), "sb"),
        numpy_helper.from_array(np.array(zb, b.dtype), "zb"),
        numpy_helper.from_array(np.array(sy, np.float32), "sy"),
        numpy_helper.from_array(np.array(zy, np.uint8), "zy"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])
    elem = helper.np_dtype_to_tensor_dtype(a.dtype)
    graph = helper.make_graph(
        [node],
        "qlmm",
        [helper.make_tensor_value_info("a", elem, list(a.shape))],
        [
            helper.make_tensor_value_info(
                "y", helper.np_dtype_to_tensor_dtype(np.dtype(np.uint8)), None
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"a": a})[0]


@pytest.mark.parametrize("bdt", [np.uint8, np.int8])
@pytest.mark.parametrize("shape", [(1, 784, 10), (32, 64, 48), (7, 3, 5)])
def test_qlinear_matmul_matches_onnxruntime(bdt, shape):
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    if bdt == np.uint8:
        b = rng.integers(0, 256, (k, n)).astype(np.uint8)
        zb = 131
    else:  # |w| <= 63: ORT's AVX2 u8 x s8 kernel cannot saturate its int16 pairs
        b = rng.integers(-63, 64, (k, n)).astype(np.int8)
        zb = 0
    sa, za, sb, sy, zy = 0.02, 120, 0.015, 0.9, 128
    expected = _ort_qlinear_matmul(a, sa, za, b, sb, zb, sy, zy)
    got = quant.qlinear_matmul(a, sa, np.uint8(za), b, sb, bdt(zb), sy, np.uint8(zy))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
