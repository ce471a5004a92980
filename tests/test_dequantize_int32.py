"""dequantize of int32 values (biases, accumulators), as ONNX DequantizeLinear defines it:
zero point 0, y = float32(q) * float32(scale); checked against ONNX Runtime's operator
(skipped without onnx/onnxruntime) and against a float64 reference rounded once."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import quant

EDGE = np.array(
    [0, 1, -1, 2**24, 2**24 + 1, 2**24 + 3, -(2**24) - 1, 2**31 - 1, -(2**31), 123456789],
    dtype=np.int32,
)


def reference(q, scale, axis=None):
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None and s.ndim:
        view = [1] * q.ndim
        view[axis] = s.size
        s = s.reshape(view)
    # int32 -> float32 rounds once (nearest even); the float32 product rounds once: the
    # float64 product of two float32 values is exact, so rounding it to float32 is that.
    return (q.astype(np.float32).astype(np.float64) * s.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("scale", [0.5, 1e-3, 0.1, 3.0e-7])
def test_per_tensor_bits(scale):
    rng = np.random.default_rng(0)
    q = np.concatenate([EDGE, rng.integers(-(2**31), 2**31, 1000, dtype=np.int64).astype(np.int32)])
    y = quant.dequantize(q, scale, 0)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, reference(q, scale))


def test_per_channel_and_out():
    rng = np.random.default_rng(1)
    q = rng.integers(-(2**31), 2**31, (5, 7), dtype=np.int64).astype(np.int32)
    scales = rng.uniform(1e-4, 1.0, 7).astype(np.float32)
    y = quant.dequantize(q, scales, np.zeros(7, np.int32), axis=1)
    np.testing.assert_array_equal(y, reference(q, scales, axis=1))
    out = np.empty((5, 7), np.float32)
    assert quant.dequantize(q, scales, 0 * np.zeros(7, np.int64), axis=1, out=out) is out
    np.testing.assert_array_equal(out, y)
    # non-contiguous input
    qt = q.T
    np.testing.assert_array_equal(
        quant.dequantize(qt, scales, np.zeros(7, np.int32), axis=0), reference(qt, scales, 0)
    )


def test_errors_name_the_argument():
    q = np.arange(6, dtype=np.int32)
    with pytest.raises(ValueError, match="zero_point"):
        quant.dequantize(q, 0.5, 3)
    with pytest.raises(TypeError, match="zero_point"):
        quant.dequantize(q, 0.5, 0.0)
    with pytest.raises(ValueError, match="scale"):
        quant.dequantize(q, -1.0, 0)
    with pytest.raises(TypeError, match="out"):
        quant.dequantize(q, 0.5, 0, out=np.empty(6, np.float64))
    with pytest.raises(ValueError, match="out"):
        quant.dequantize(q, 0.5, 0, out=np.empty(5, np.float32))
    with pytest.raises(TypeError, match="int32"):
        quant.dequantize(q.astype(np.int16), 0.5, 0)


def test_matches_onnxruntime():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(2)
    q = np.concatenate([EDGE, rng.integers(-(2**31), 2**31, 500, dtype=np.int64).astype(np.int32)])
    scale = np.float32(0.0123)
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph(
        [node],
        "dq",
        [helper.make_tensor_value_info("x", TensorProto.INT32, [q.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [q.size])],
        initializer=[
            helper.make_tensor("s", TensorProto.FLOAT, [], [float(scale)]),
            helper.make_tensor("z", TensorProto.INT32, [], [0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = sess.run(None, {"x": q})
    np.testing.assert_array_equal(quant.dequantize(q, scale, 0), expected)
    del onnx
