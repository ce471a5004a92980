"""The clamped-B product kernel (QGemmKernels::clamp_b, the AVX2 vpmaddubsw table): pairs
of int8 weights (k = 2q, 2q + 1) whose same-sign sum leaves [-128, 128] are stored
clamped and their remainder added from a sparse list; the result must stay exact for
every pair at and around that boundary, every A value (255 included), and the awkward
shapes (K odd, K not a multiple of 4, N not a multiple of 16, M = 1..33 rows modulo the
4-row tile), on every level and thread count. ``matmul_int8`` packs B for the product
table from 64 rows of A on (fewer: the level's own table, cheaper to pack), so the tests
give A at least 64 rows (:func:`tall`)."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core
from pyfastopt.quant import matmul_int8

_staged = _core.qgemm.qgemm_staged

# (b0, b1) pairs: at the boundary (kept), one past it (clamped), the extremes
PAIRS = [
    (64, 64),
    (65, 64),
    (64, 65),
    (127, 1),
    (127, 2),
    (1, 127),
    (2, 127),
    (127, 127),
    (-64, -64),
    (-65, -64),
    (-64, -65),
    (-128, 0),
    (0, -128),
    (-128, -1),
    (-1, -128),
    (-128, -128),
    (-127, -2),
    (127, -128),
    (-128, 127),
    (0, 0),
    (100, 29),
    (100, 28),
]


def tall(a, rng):
    """a with 64 random rows appended (the same row count modulo the 4-row tile): enough
    rows for matmul_int8 to take the product table."""
    extra = rng.integers(0, 256, size=(64, a.shape[1])).astype(np.uint8)
    return np.vstack([a, extra.view(a.dtype) if a.dtype == np.int8 else extra])


def reference(a, za, b, zb):
    return (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)


def boundary_b(k, n, rng, per_col=1):
    """k x n int8: small values (|b| <= 40, no pair ever clamped) with `per_col` row pairs
    (2q, 2q + 1) per column taken from PAIRS. Few clamped pairs (at most per_col * n,
    under the driver's dense-remainder limit of k n / 128 + 64), so the product table's
    clamp and sparse remainder are what runs; dense clamping (a fallback to the level's
    own table) is covered by test_qgemm.py's extreme-value tests."""
    b = rng.integers(-40, 41, size=(k, n)).astype(np.int8)
    half = k // 2
    for j in range(n):
        for t in range(min(per_col, half)):
            q = (7 * j + t) % half
            b[2 * q, j], b[2 * q + 1, j] = PAIRS[(j + 5 * t) % len(PAIRS)]
    return b


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 31, 44, 65, 130])
def test_boundary_pairs_exact(qsimd, rng, k):
    for n in (1, 15, 16, 17, 33):
        b = boundary_b(k, n, rng)
        assert k < 2 or {tuple(b[2 * q : 2 * q + 2, 0]) for q in range(k // 2)} & set(PAIRS)
        for m in (1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33):
            a = np.full((m, k), 255, np.uint8)
            a[1::2] = rng.integers(0, 256, size=a[1::2].shape)
            a = tall(a, rng)
            for za, zb in ((0, 0), (255, 0), (0, -128), (17, 5)):
                np.testing.assert_array_equal(matmul_int8(a, za, b, zb), reference(a, za, b, zb))


def test_boundary_pairs_uint8_and_strided_b(qsimd, rng):
    # uint8 B (stored as B - 128) and transposed / strided views hit the clamp too
    k, n, m = 45, 37, 21
    bs = boundary_b(k, n, rng)
    bu = (bs.astype(np.int16) + 128).astype(np.uint8)
    a = tall(rng.integers(200, 256, size=(m, k)).astype(np.uint8), rng)
    np.testing.assert_array_equal(matmul_int8(a, 3, bu, 128), reference(a, 3, bu, 128))
    bt = np.ascontiguousarray(bs.T).T  # column-major view
    np.testing.assert_array_equal(matmul_int8(a, 3, bt, -7), reference(a, 3, bs, -7))
    wide = np.zeros((k, 2 * n), np.int8)
    wide[:, ::2] = bs
    np.testing.assert_array_equal(matmul_int8(a, 3, wide[:, ::2], 1), reference(a, 3, bs, 1))
    ai = (a.astype(np.int16) - 128).astype(np.int8)  # int8 A: A' = A + 128 in 0..255
    np.testing.assert_array_equal(matmul_int8(ai, -128, bs, 0), reference(ai, -128, bs, 0))


def test_output_stages_and_threads_with_clamped_pairs(rng):
    # every output stage on a B full of clamped pairs, identical for 1, 2 and 3 threads
    m, k, n = 67, 531, 250
    b = boundary_b(k, n, rng, per_col=2)
    a = rng.integers(0, 256, size=(m, k)).astype(np.uint8)
    cs = rng.uniform(1e-5, 1e-4, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    want = reference(a, 9, b, 0)
    outs = []
    for t in (1, 2, 3):  # (conftest restores the thread count)
        pyfastopt.set_num_threads(t)
        np.testing.assert_array_equal(matmul_int8(a, 9, b, 0), want)
        f = _staged(a, 9, b, 0, "f32", cs, None, bias, True, None, None, t)
        np.testing.assert_array_equal(
            f, np.maximum((want.astype(np.float32) * cs) + bias, 0).astype(np.float32)
        )
        u8 = _staged(a, 9, b, 0, "u8", cs, None, None, False, 7, None, t)
        outs.append((f.tobytes(), u8.tobytes()))
    assert outs[1] == outs[0] and outs[2] == outs[0]


@pytest.mark.parametrize("benign_rows", [0, 32])
def test_dense_clamping_falls_back_exactly(qsimd, rng, benign_rows):
    # most pairs clamped (weights near +-127): the remainder list would be dense, so the
    # driver packs for the level's own table instead: at once when its sample (the first
    # 16 row pairs) shows it, else as soon as its scan passes the limit (benign first rows)
    k, n, m = 130, 40, 70
    b = rng.choice(np.array([-128, -127, 126, 127], np.int8), size=(k, n))
    b[:benign_rows] = rng.integers(-20, 21, size=(benign_rows, n))
    a = tall(np.full((m - 64, k), 255, np.uint8), rng)
    for za, zb in ((0, 0), (255, -128), (3, 1)):
        np.testing.assert_array_equal(matmul_int8(a, za, b, zb), reference(a, za, b, zb))
