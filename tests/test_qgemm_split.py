"""The int8 GEMM driver's split of small-M products (qgemm_driver.cpp: A packed once and
the B panels cut into several tasks per thread) and of larger ones (row blocks, several
per thread): exact against an int64 reference and bitwise identical for 1, 2 and 3
threads on every SIMD level, for odd M and N, M below the thread count, M = 1, N not a
multiple of the column panel, per-row and per-column zero points and every output stage."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core
from pyfastopt.quant import matmul_int8

_staged = _core.qgemm.qgemm_staged

# (m, k, n): at least 3M multiply-adds (the AVX2 and scalar tables add a thread per 1M),
# N never a multiple of 16 (the AVX2 panel) except the 512-wide batch-32 layer.
SMALL_M = [
    (1, 3001, 1001),
    (2, 1999, 777),
    (3, 1501, 700),
    (5, 1203, 555),
    (31, 401, 257),
    (32, 784, 512),
    (33, 301, 333),
]
# row blocks (several per thread; more rows than one A block holds on some tables), and
# small M with too few B panels to split them (column blocks, A packed per block)
LARGE_M = [(203, 1001, 211), (517, 257, 45), (129, 5000, 19), (300, 700, 250), (3, 20001, 60)]


def reference(a, za, b, zb):
    za = np.asarray(za, np.int64)
    za = za[:, None] if za.ndim == 1 else za
    return (a.astype(np.int64) - za) @ (b.astype(np.int64) - np.asarray(zb, np.int64))


def rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


def stages(rng, a, za, b, zb, m, n, threads):
    cs = rng.uniform(1e-4, 1e-2, n).astype(np.float32)
    rs = rng.uniform(0.5, 2.0, m).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    cb = rng.integers(-5000, 5000, n).astype(np.int32)
    return [
        _staged(a, za, b, zb, "i32", threads=threads).tobytes(),
        _staged(a, za, b, zb, "f32", cs, rs, bias, True, threads=threads).tobytes(),
        _staged(a, za, b, zb, "u8", cs * 0.05, None, None, False, 9, cb, threads=threads).tobytes(),
        _staged(
            a, za, b, zb, "i8", cs * 0.05, None, None, True, -3, None, threads=threads
        ).tobytes(),
    ]


@pytest.mark.parametrize("shape", SMALL_M + LARGE_M, ids=lambda s: "x".join(map(str, s)))
def test_split_identical_for_1_2_3_threads(qsimd, rng, shape):
    m, k, n = shape
    a = rand(rng, np.uint8, (m, k))
    b = rand(rng, np.int8, (k, n))
    want = reference(a, 77, b, -3)
    np.testing.assert_array_equal(_staged(a, 77, b, -3, "i32", threads=1), want)
    r = np.random.default_rng(5)
    base = stages(r, a, 77, b, -3, m, n, 1)
    for t in (2, 3):
        r = np.random.default_rng(5)
        assert stages(r, a, 77, b, -3, m, n, t) == base, f"{t} threads"


@pytest.mark.parametrize(
    "shape",
    [(1, 3001, 1001), (3, 1501, 700), (33, 301, 333), (203, 1001, 211)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_split_per_row_and_per_column_zero_points(qsimd, rng, shape):
    m, k, n = shape
    a = rand(rng, np.int8, (m, k))
    b = rand(rng, np.uint8, (k, n))
    za = rng.integers(-128, 128, m).astype(np.int8)
    zb = rng.integers(0, 256, n).astype(np.uint8)
    want = reference(a, za, b, zb)
    outs = []
    for t in (1, 2, 3):
        pyfastopt.set_num_threads(t)
        c = matmul_int8(a, za, b, zb)
        np.testing.assert_array_equal(c, want)
        outs.append(_staged(a, za, b, 5, "f32", np.full(n, 0.01, np.float32), threads=t).tobytes())
    assert outs[1] == outs[0] and outs[2] == outs[0]


def test_split_strided_a(qsimd, rng):
    # A read through strides (the packer's generic path) in the small-M split
    a_big = rand(rng, np.uint8, (7, 2 * 1601))
    a = a_big[::2, ::2]
    b = rand(rng, np.int8, (1601, 901))
    want = reference(a, 200, b, 7)
    for t in (1, 2, 3):
        pyfastopt.set_num_threads(t)
        np.testing.assert_array_equal(matmul_int8(a, 200, b, 7), want)


@pytest.mark.parametrize("batch", [1, 3, 32])
def test_split_quantized_linear_from_float(qsimd, rng, batch):
    # the float input quantized while A is packed (pack_a_f32), dynamic per-row qparams
    from test_quantized_linear import emulate, make_layer

    layer, _, _ = make_layer(rng, 1500, 700, activation="relu")
    x = rng.standard_normal((batch, 1500)).astype(np.float32)
    outs = []
    for t in (1, 2, 3):
        pyfastopt.set_num_threads(t)
        outs.append(layer(x).tobytes())
    assert outs[1] == outs[0] and outs[2] == outs[0]
    np.testing.assert_array_equal(
        np.frombuffer(outs[0], np.float32).reshape(batch, 700), emulate(layer, x)
    )
