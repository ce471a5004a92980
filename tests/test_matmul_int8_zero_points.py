"""matmul_int8 with ONNX MatMulInteger's zero-point forms: 1-element arrays, per-row
a_zero_point (M,) and per-column b_zero_point (N,); exact against an int64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import quant


def reference(a, za, b, zb):
    a64 = a.astype(np.int64)
    b64 = b.astype(np.int64)
    za = np.asarray(za, np.int64)
    zb = np.asarray(zb, np.int64)
    a64 = a64 - (za[:, None] if za.ndim and za.size > 1 else za.reshape(()))
    b64 = b64 - (zb[None, :] if zb.ndim and zb.size > 1 else zb.reshape(()))
    return (a64 @ b64).astype(np.int32)


@pytest.mark.parametrize("adt", [np.uint8, np.int8])
@pytest.mark.parametrize("bdt", [np.int8, np.uint8])
@pytest.mark.parametrize("mode", ["row", "col", "both", "one-element"])
@pytest.mark.parametrize("shape", [(1, 1, 2), (5, 17, 3), (33, 70, 9), (4, 0, 6)])
def test_exact(adt, bdt, mode, shape):
    m, k, n = shape
    rng = np.random.default_rng(m * 100 + k + n)
    ai, bi = np.iinfo(adt), np.iinfo(bdt)
    a = rng.integers(ai.min, ai.max + 1, (m, k)).astype(adt)
    b = rng.integers(bi.min, bi.max + 1, (k, n)).astype(bdt)
    za = rng.integers(ai.min, ai.max + 1, m).astype(adt)
    zb = rng.integers(bi.min, bi.max + 1, n).astype(bdt)
    if mode == "row":
        zb = zb[:1].reshape(())
    elif mode == "col":
        za = np.int64(za[0])
    elif mode == "one-element":
        za, zb = za[:1], zb[:1]
    got = quant.matmul_int8(a, za, b, zb)
    assert got.dtype == np.int32 and got.shape == (m, n)
    np.testing.assert_array_equal(got, reference(a, za, b, zb))


def test_non_contiguous_and_lists():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (9, 40)).astype(np.uint8)[:, ::2]
    b = rng.integers(-128, 128, (11, 20)).astype(np.int8).T
    za = list(range(9))
    zb = np.arange(-5, 6, dtype=np.int32)
    np.testing.assert_array_equal(quant.matmul_int8(a, za, b, zb), reference(a, za, b, zb))


def test_wraps_like_the_kernel():
    # K large enough that the true sum leaves int32: both paths agree modulo 2**32
    k = 40000
    a = np.full((2, k), 255, np.uint8)
    b = np.full((k, 2), -128, np.int8)
    per_tensor = quant.matmul_int8(a, 0, b, 127)
    per_col = quant.matmul_int8(a, 0, b, np.array([127, 127], np.int8))
    np.testing.assert_array_equal(per_col, per_tensor)


def test_errors():
    a = np.zeros((3, 4), np.uint8)
    b = np.zeros((4, 2), np.int8)
    with pytest.raises(ValueError, match="a_zero_point"):
        quant.matmul_int8(a, np.zeros(2, np.uint8), b, 0)  # not M
    with pytest.raises(ValueError, match="b_zero_point"):
        quant.matmul_int8(a, 0, b, np.zeros(3, np.int8))  # not N
    with pytest.raises(ValueError, match="a_zero_point"):
        quant.matmul_int8(a, np.array([0, 1, 256]), b, 0)  # outside uint8
    with pytest.raises(TypeError, match="b_zero_point"):
        quant.matmul_int8(a, 0, b, np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="a_zero_point"):
        quant.matmul_int8(np.zeros(4, np.uint8), np.zeros(3, np.uint8), b, 0)  # 1-D a_q


@pytest.mark.parametrize("adt", [np.uint8, np.int8])
@pytest.mark.parametrize("bdt", [np.int8, np.uint8])
def test_vector_zero_points_every_level_and_thread_count(qsimd, adt, bdt):
    # the kernel's output stage applies them (row_za / col_zb): 67 x 521 x 83 (2.9M
    # multiply-adds: several threads on the AVX2 and scalar tables), edge tiles on
    # every level, exact against the int64 reference for 1, 2 and 3 threads
    import pyfastopt

    m, k, n = 67, 521, 83
    rng = np.random.default_rng(m + k + n)
    ai, bi = np.iinfo(adt), np.iinfo(bdt)
    a = rng.integers(ai.min, ai.max + 1, (m, k)).astype(adt)
    b = rng.integers(bi.min, bi.max + 1, (k, n)).astype(bdt)
    za = rng.integers(ai.min, ai.max + 1, m).astype(adt)
    zb = rng.integers(bi.min, bi.max + 1, n).astype(bdt)
    for mode_za, mode_zb in ((za, zb), (za, int(zb[0])), (int(za[0]), zb)):
        want = reference(a, mode_za, b, mode_zb)
        for t in (1, 2, 3):
            pyfastopt.set_num_threads(t)
            np.testing.assert_array_equal(quant.matmul_int8(a, mode_za, b, mode_zb), want)


def test_vector_zero_points_wrap_like_scalar_ones():
    # K = 70000 with extreme values: the true sums leave int32; per-row / per-column
    # zero points give the same int32 (modulo 2**32) as the scalar zero points
    k = 70000
    rng = np.random.default_rng(1)
    a = np.where(rng.random((3, k)) < 0.9, 255, 0).astype(np.uint8)
    b = np.where(rng.random((k, 4)) < 0.9, -128, 127).astype(np.int8)
    want = np.vstack(
        [
            np.hstack(
                [
                    quant.matmul_int8(a[i : i + 1], za, b[:, j : j + 1], zb)
                    for j, zb in enumerate((127, -5, 0, 3))
                ]
            )
            for i, za in enumerate((0, 200, 255))
        ]
    )
    got = quant.matmul_int8(
        a, np.array([0, 200, 255], np.uint8), b, np.array([127, -5, 0, 3], np.int8)
    )
    np.testing.assert_array_equal(got, want)
    full = (a.astype(np.int64) - np.array([0, 200, 255])[:, None]) @ (
        b.astype(np.int64) - np.array([127, -5, 0, 3])[None, :]
    )
    assert np.abs(full).max() >= 2**31  # the wrapping regime
    np.testing.assert_array_equal(got, ((full + 2**31) % 2**32 - 2**31).astype(np.int32))
