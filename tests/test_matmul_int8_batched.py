"""matmul_int8 on N-D operands (numpy.matmul broadcasting, ONNX MatMulInteger) with every
zero-point form, including ONNX's N-D per-row (..., M, 1) / per-column (..., 1, N) ones;
exact against an int64 NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import quant


def reference(a, za, b, zb):
    """int64 matmul of (a - za) and (b - zb), zero points broadcast as ONNX defines them
    (a 1-D per-row za of a 2-D a is (M, 1); a 1-D per-column zb is (1, N)), wrapped to
    int32."""
    a64 = a.astype(np.int64)
    b64 = b.astype(np.int64)
    za = np.asarray(za, np.int64)
    zb = np.asarray(zb, np.int64)
    if za.ndim == 1 and za.size > 1:
        za = za[:, None]
    if zb.ndim == 1 and zb.size > 1:
        zb = zb[None, :]
    if za.size == 1:
        za = za.reshape(())
    if zb.size == 1:
        zb = zb.reshape(())
    return np.matmul(a64 - za, b64 - zb).astype(np.int32)


def rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


SHAPES = [
    ((2, 3, 5), (5, 4)),  # a weight: one kernel call
    ((2, 3, 5), (2, 5, 4)),
    ((3, 1, 4, 6), (2, 6, 5)),  # broadcast both ways
    ((4, 6), (3, 6, 2)),  # 2-D a against a stack
    ((6,), (3, 6, 2)),  # 1-D a (a row), dropped from the result
    ((2, 3, 6), (6,)),  # 1-D b (a column)
    ((1, 2, 3, 4), (5, 1, 4, 3)),
    ((0, 3, 4), (4, 2)),  # empty batch
    ((2, 0, 4), (2, 4, 3)),  # empty M
    ((2, 3, 0), (1, 0, 3)),  # K == 0: zeros
    ((2, 3, 4), (2, 4, 0)),  # empty N
]


@pytest.mark.parametrize(("ashape", "bshape"), SHAPES)
@pytest.mark.parametrize("adt", [np.uint8, np.int8])
@pytest.mark.parametrize("bdt", [np.int8, np.uint8])
def test_batched_per_tensor(ashape, bshape, adt, bdt):
    rng = np.random.default_rng(len(ashape) * 10 + len(bshape))
    a, b = rand(rng, adt, ashape), rand(rng, bdt, bshape)
    za, zb = int(rand(rng, adt, ())), int(rand(rng, bdt, ()))
    got = quant.matmul_int8(a, za, b, zb)
    want = reference(a, za, b, zb)
    assert got.dtype == np.int32 and got.shape == want.shape == np.matmul(a, b).shape
    np.testing.assert_array_equal(got, want)
    # 1-element arrays are per-tensor too (ONNX)
    got1 = quant.matmul_int8(a, np.array([za], adt), b, np.array([[zb]], bdt))
    np.testing.assert_array_equal(got1, want)


@pytest.mark.parametrize(
    ("ashape", "bshape"), [s for s in SHAPES if len(s[0]) >= 2 and len(s[1]) >= 2]
)
@pytest.mark.parametrize("mode", ["row", "col", "both"])
def test_batched_per_row_and_column(ashape, bshape, mode):
    rng = np.random.default_rng(sum(ashape) + 7 * sum(bshape))
    a, b = rand(rng, np.uint8, ashape), rand(rng, np.int8, bshape)
    # ONNX's N-D forms: a_zero_point [D..., M, 1], b_zero_point [D..., 1, N]
    za = rand(rng, np.uint8, (*ashape[:-1], 1)) if mode in ("row", "both") else 3
    zb = rand(rng, np.int8, (*bshape[:-2], 1, bshape[-1])) if mode in ("col", "both") else -7
    if mode != "row" and bshape[-1] == 1:
        zb = -7
    got = quant.matmul_int8(a, za, b, zb)
    want = np.matmul(
        a.astype(np.int64) - np.asarray(za, np.int64), b.astype(np.int64) - np.asarray(zb, np.int64)
    ).astype(np.int32)
    np.testing.assert_array_equal(got, want)


def test_per_row_zero_points_broadcast_over_batch():
    # za (1, M, 1) shared by every batch of a (B, M, K); zb (1, N) per column of a 2-D b
    rng = np.random.default_rng(3)
    a = rand(rng, np.int8, (4, 5, 9))
    b = rand(rng, np.uint8, (9, 6))
    za = rand(rng, np.int8, (1, 5, 1))
    zb = rand(rng, np.uint8, (1, 6))
    got = quant.matmul_int8(a, za, b, zb)
    want = np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb).astype(np.int32)
    np.testing.assert_array_equal(got, want)
    # the 2-D 1-D forms still work and equal the (M, 1) / (1, N) ones
    a2 = a[0]
    np.testing.assert_array_equal(
        quant.matmul_int8(a2, za.reshape(-1), b, zb.reshape(-1)),
        quant.matmul_int8(a2, za[0], b, zb),
    )


def test_non_contiguous_batched():
    rng = np.random.default_rng(11)
    a = rand(rng, np.uint8, (3, 8, 20))[:, ::2, ::-2]  # (3, 4, 10), negative strides
    b = np.swapaxes(rand(rng, np.int8, (3, 7, 10)), -1, -2)  # (3, 10, 7) transposed views
    za = rand(rng, np.uint8, (3, 4, 1))
    zb = np.full((1, 7), 5, np.int8)
    got = quant.matmul_int8(a, za, b, zb)
    want = np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb).astype(np.int32)
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous


def test_batched_equals_per_matrix_calls():
    rng = np.random.default_rng(5)
    a = rand(rng, np.uint8, (2, 3, 6, 40))
    b = rand(rng, np.int8, (3, 40, 9))
    got = quant.matmul_int8(a, 100, b, -3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(got[i, j], quant.matmul_int8(a[i, j], 100, b[j], -3))


def test_wraps_modulo_2_32_batched():
    k = 40000
    a = np.full((2, 2, k), 255, np.uint8)
    b = np.full((2, k, 2), -128, np.int8)
    want = np.matmul(a.astype(np.int64), b.astype(np.int64) - 127).astype(np.int32)
    np.testing.assert_array_equal(quant.matmul_int8(a, 0, b, 127), want)
    zb = np.full((2, 1, 2), 127, np.int8)
    np.testing.assert_array_equal(quant.matmul_int8(a, 0, b, zb), want)


def test_matches_onnxruntime_matmulinteger():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    # uint8 x uint8: ONNX Runtime's u8 x s8 kernels on x86 without VNNI (vpmaddubsw)
    # saturate pairs of products to int16, so they are not exact there; u8 x u8 is
    rng = np.random.default_rng(9)
    a = rand(rng, np.uint8, (2, 3, 4, 8))
    b = rand(rng, np.uint8, (3, 8, 5))
    node = helper.make_node("MatMulInteger", ["A", "B", "za", "zb"], ["Y"])
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("A", TensorProto.UINT8, a.shape),
            helper.make_tensor_value_info("B", TensorProto.UINT8, b.shape),
            helper.make_tensor_value_info("za", TensorProto.UINT8, [1]),
            helper.make_tensor_value_info("zb", TensorProto.UINT8, [1]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    za, zb = np.array([7], np.uint8), np.array([130], np.uint8)
    (want,) = sess.run(None, {"A": a, "B": b, "za": za, "zb": zb})
    np.testing.assert_array_equal(quant.matmul_int8(a, za, b, zb), want)
    del onnx


def test_errors_batched():
    a = np.zeros((2, 3, 4), np.uint8)
    b = np.zeros((2, 4, 5), np.int8)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(3, 4, 5\)"):
        quant.matmul_int8(a, 0, np.zeros((3, 4, 5), np.int8), 0)  # batch 2 vs 3
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 5, 5\)"):
        quant.matmul_int8(a, 0, np.zeros((2, 5, 5), np.int8), 0)  # K
    with pytest.raises(TypeError, match="a_q"):
        quant.matmul_int8(a.astype(np.int16), 0, b, 0)
    with pytest.raises(TypeError, match="b_q"):
        quant.matmul_int8(a, 0, b.astype(np.float32), 0)
    with pytest.raises(ValueError, match="a_zero_point"):
        quant.matmul_int8(a, np.zeros(3, np.uint8), b, 0)  # 1-D per-row needs 2-D a
    with pytest.raises(ValueError, match="a_zero_point"):
        quant.matmul_int8(a, np.zeros((2, 3, 2), np.uint8), b, 0)  # not (..., M, 1)
    with pytest.raises(ValueError, match="b_zero_point"):
        quant.matmul_int8(a, 0, b, np.zeros((3, 1, 5), np.int8))  # batch 3 vs 2
    with pytest.raises(ValueError, match="a_zero_point"):
        quant.matmul_int8(a, np.full((2, 3, 1), 300), b, 0)  # outside uint8
    with pytest.raises(TypeError, match="b_zero_point"):
        quant.matmul_int8(a, 0, b, np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match="a_zero_point"):
        quant.matmul_int8(np.zeros((0, 3, 4), np.uint8), 256, b[:1], 0)  # checked when empty
    with pytest.raises(ValueError, match="a_q"):
        quant.matmul_int8(np.zeros((), np.uint8), 0, b, 0)


@pytest.mark.parametrize("bshape", [(16, 5), (3, 16, 5)])
def test_qlinear_matmul_batched_matches_onnxruntime(bshape):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(21)
    a = rand(rng, np.uint8, (2, 3, 4, 16))
    b = rand(rng, np.uint8, bshape)
    params = {
        "a_scale": np.array(0.02, np.float32),
        "a_zero_point": np.array(120, np.uint8),
        "b_scale": np.array(0.03, np.float32),
        "b_zero_point": np.array(131, np.uint8),
        "y_scale": np.array(0.05, np.float32),
        "y_zero_point": np.array(128, np.uint8),
    }
    names = [
        "a",
        "a_scale",
        "a_zero_point",
        "b",
        "b_scale",
        "b_zero_point",
        "y_scale",
        "y_zero_point",
    ]
    feeds = {"a": a, "b": b, **params}
    elem = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.float32): TensorProto.FLOAT}
    graph = helper.make_graph(
        [helper.make_node("QLinearMatMul", names, ["y"])],
        "g",
        [helper.make_tensor_value_info(n, elem[feeds[n].dtype], feeds[n].shape) for n in names],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, feeds)
    got = quant.qlinear_matmul(
        a,
        params["a_scale"],
        params["a_zero_point"],
        b,
        params["b_scale"],
        params["b_zero_point"],
        params["y_scale"],
        params["y_zero_point"],
    )
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
