"""quantize's NaN policy: qmax by default (torch's), qmin with nan="qmin" (ONNX Runtime's
QuantizeLinear, checked against onnxruntime itself); the same bits on every SIMD level."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import quant


def _with_nans(n, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, n).astype(dtype)
    x[::3] = np.nan
    x[1::7] = -np.nan  # the sign bit set: still NaN
    return x


@pytest.mark.parametrize("n", [1, 5, 16, 31, 64, 1000, 70001])
@pytest.mark.parametrize(
    ("qdt", "zp"), [(np.uint8, 128), (np.uint8, 0), (np.int8, -5), (np.int8, 127)]
)
def test_policies(simd, n, qdt, zp):
    x = _with_nans(n)
    nan = np.isnan(x)
    lo, hi = np.iinfo(qdt).min, np.iinfo(qdt).max
    default = quant.quantize(x, 0.05, zp, qdt)
    assert (default[nan] == hi).all()
    q = quant.quantize(x, 0.05, zp, qdt, nan="qmin")
    assert (q[nan] == lo).all()
    # everything else is untouched
    np.testing.assert_array_equal(q[~nan], default[~nan])
    np.testing.assert_array_equal(quant.quantize(x, 0.05, zp, qdt, nan="qmax"), default)


def test_float64_per_channel_and_out(simd):
    x = _with_nans(60, np.float64).reshape(3, 20)
    out = np.empty((3, 20), np.int8)
    got = quant.quantize(
        x, np.array([0.1, 0.2, 0.3]), np.array([1, -2, 3]), np.int8, axis=0, nan="qmin", out=out
    )
    assert got is out
    assert (out[np.isnan(x)] == -128).all()
    ref = quant.quantize(x, np.array([0.1, 0.2, 0.3]), np.array([1, -2, 3]), np.int8, axis=0)
    np.testing.assert_array_equal(out[~np.isnan(x)], ref[~np.isnan(x)])


def test_same_bits_on_every_level():
    from pyfastopt import _core

    x = _with_nans(4099)
    prev = _core.config.get_simd_level()
    outs = []
    try:
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            outs.append(quant.quantize(x, 0.07, 100, np.uint8, nan="qmin"))
    finally:
        _core.config.set_simd_level(prev)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_bad_policy():
    with pytest.raises(ValueError, match="nan"):
        quant.quantize(np.zeros(3, np.float32), 0.1, 0, nan="zero")
    with pytest.raises(TypeError, match="nan"):
        quant.quantize(np.zeros(3, np.float32), 0.1, 0, nan=None)


@pytest.mark.parametrize(
    ("qdt", "zp"), [(np.uint8, 77), (np.uint8, 255), (np.int8, 9), (np.int8, -128)]
)
@pytest.mark.parametrize("per_channel", [False, True])
def test_qmin_is_onnxruntime_quantizelinear(qdt, zp, per_channel):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = _with_nans(2 * 37).reshape(2, 37)
    x[0, 5], x[1, 6] = np.inf, -np.inf
    if per_channel:
        scale = np.array([0.1, 0.25], np.float32)
        zero = np.array([zp, zp // 2], qdt)
        attrs = {"axis": 0}
    else:
        scale, zero, attrs = np.array(0.1, np.float32), np.array(zp, qdt), {}
    elem = TensorProto.UINT8 if qdt == np.uint8 else TensorProto.INT8
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, scale.shape),
            helper.make_tensor_value_info("z", elem, zero.shape),
        ],
        [helper.make_tensor_value_info("y", elem, x.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"x": x, "s": scale, "z": zero})
    got = quant.quantize(x, scale, zero, qdt, axis=0 if per_channel else None, nan="qmin")
    np.testing.assert_array_equal(got, want)
    assert (want[np.isnan(x)] == np.iinfo(qdt).min).all()
