"""Same bits on every SIMD level (ARCHITECTURE.md), checked across processes.

Each level runs in its own interpreter with PYFASTOPT_SIMD=<level> (the level is then
fixed from start-up, as users set it), computes every case below and prints a digest of
each result's bytes; every level must print the scalar reference's digests. Covers every
GEMM path (packed, direct, dot, batched), linear with each epilogue (bias, relu, gelu, gelu_tanh,
both dtypes), linear_backward, the activations on edge values, and the int8/quantization
and element-wise families (the other families' own tests compare levels in-process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import FIXTURE_LEVELS, TIMEOUT_SCALE

# Each level the machine has against scalar's bits; with PF_TEST_SIMD_LEVELS=forced
# (conftest.py) only the forced level, since the runs at the other forced levels check theirs.
COMPARED = [lvl for lvl in FIXTURE_LEVELS if lvl != "scalar"]

SCRIPT = textwrap.dedent(
    r"""
    import hashlib, json
    import numpy as np
    import pyfastopt
    import pyfastopt.ops
    from pyfastopt import _core
    from pyfastopt.quant import quantize, dequantize, matmul_int8

    out = {}
    paths = {}

    def record(name, arr):
        a = np.ascontiguousarray(arr)
        if a.dtype.kind == "f":  # NaN sign/payload is not part of the contract: one NaN
            a = np.where(np.isnan(a), np.array(np.nan, a.dtype), a)
        out[name] = a.dtype.str + str(a.shape) + hashlib.sha256(a.tobytes()).hexdigest()

    def data(seed, shape, dtype):
        r = np.random.default_rng(seed)
        return (r.standard_normal(shape) * 2).astype(dtype)

    for dt in (np.float32, np.float64):
        d = np.dtype(dt).name
        # matmul: shapes chosen to take each path (recorded and checked by the test)
        for m, n, k in [(300, 200, 257), (96, 640, 520), (8, 24, 40), (5, 7, 3), (1, 300, 700),
                        (33, 1, 129), (64, 64, 64), (2, 1000, 300)]:
            a = data(m * 7 + k, (m, k), dt)
            b = data(n * 11 + k, (k, n), dt)
            name = f"matmul {d} {m}x{n}x{k}"
            paths[name] = _core.gemm.path(m, n, k, k, 1, n, 1)
            record(name, pyfastopt.matmul(a, b))
            bt = np.ascontiguousarray(b.T).T  # B with unit row stride (W^T): the dot form
            paths[name + " bT"] = _core.gemm.path(m, n, k, k, 1, 1, k)
            record(name + " bT", pyfastopt.matmul(a, bt))
            at = np.ascontiguousarray(a.T).T  # A with unit row stride (packing transposes)
            record(name + " aT", pyfastopt.matmul(at, b))
        # batched and broadcast
        record(f"batched {d}", pyfastopt.matmul(data(1, (3, 17, 33), dt), data(2, (3, 33, 21), dt)))
        record(f"broadcast {d}", pyfastopt.matmul(data(3, (4, 1, 9, 70), dt), data(4, (5, 70, 6), dt)))
        # linear with every epilogue; the issue's case (256, 128) x (10, 128) takes the dot path
        for (m, i, o) in [(256, 128, 10), (1, 700, 33), (64, 300, 200), (7, 19, 5), (300, 257, 96)]:
            x = data(m + i, (m, i), dt)
            w = data(i + o, (o, i), dt) * 0.3
            bias = data(o, (o,), dt)
            paths[f"linear {d} {m}x{i}x{o}"] = _core.gemm.path(m, o, i, i, 1, 1, i)
            for act in (None, "relu", "gelu", "gelu_tanh"):
                for bb in (None, bias):
                    tag = f"linear {d} {m}x{i}x{o} act={act} bias={bb is not None}"
                    record(tag, pyfastopt.linear(x, w, bb, activation=act))
            dy = data(o * 3, (m, o), dt)
            for j, g in enumerate(pyfastopt.linear_backward(dy, x, w)):
                record(f"linear_backward {d} {m}x{i}x{o} {j}", g)
        # activations on edge values (through a 1x1 identity weight: the epilogue alone)
        v = np.concatenate([np.linspace(-15, 15, 3001), [0.0, -0.0, 1e-30, -1e-30, 1e-45, 40, -40,
                            np.inf, -np.inf, np.nan]]).astype(dt)
        for act in ("relu", "gelu", "gelu_tanh"):
            record(f"standalone {act} {d}", _core.gemm.activate(v, act))
            for shape_tag, x, w in [("col", v[:, None], np.ones((1, 1), dt)),
                                    ("row", v[None, :], np.eye(v.size, dtype=dt)[:64])]:
                record(f"act {act} {d} {shape_tag}", pyfastopt.linear(x, w, activation=act))
        # element-wise family and quantization
        x = data(99, (1003,), dt)
        record(f"quantize {d}", quantize(x, 0.05, 3, np.int8))
        record(f"quantize u8 axis {d}", quantize(x.reshape(17, 59), np.linspace(0.01, 0.2, 59), 128, np.uint8, axis=1))
        for n in (1003, 40, 7):
            y = data(97 + n, (n,), dt)
            pyfastopt.ops.axpby_(y, data(98 + n, (n,), dt), 0.3, -1.7)
            record(f"axpby {d} {n}", y)
            out[f"sum_squares {d} {n}"] = pyfastopt.ops.sum_squares(data(96 + n, (n,), dt)).hex()
    q = np.random.default_rng(5).integers(-128, 128, (61, 77), dtype=np.int8)
    record("dequantize", dequantize(q, 0.037, -3))
    a8 = np.random.default_rng(6).integers(0, 256, (29, 300), dtype=np.uint8)
    b8 = np.random.default_rng(7).integers(-128, 128, (300, 45), dtype=np.int8)
    record("matmul_int8", matmul_int8(a8, 7, b8, -2))
    print(json.dumps({"digests": out, "paths": paths, "level": _core.config.get_simd_level()}))
    """
)


def run_level(level: str) -> dict:
    env = dict(os.environ, PYFASTOPT_SIMD=level, PYFASTOPT_NUM_THREADS="2")
    r = subprocess.run(
        [sys.executable, "-P", "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=600 * TIMEOUT_SCALE,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["level"] == level
    return result


@pytest.fixture(scope="module")
def scalar_result():
    return run_level("scalar")


def test_cases_cover_every_gemm_path(scalar_result):
    paths = set(scalar_result["paths"].values())
    assert {"packed", "direct", "dot"} <= paths, paths
    # the linear(x (256, 128), W (10, 128)) is a dot-path product
    assert scalar_result["paths"]["linear float32 256x128x10"] == "dot"


@pytest.mark.parametrize("level", COMPARED)
def test_every_level_gives_the_scalar_bits(level, scalar_result):
    got = run_level(level)
    assert got["paths"] == scalar_result["paths"]  # the path never depends on the level
    want = scalar_result["digests"]
    differ = sorted(k for k in want if got["digests"].get(k) != want[k])
    assert not differ, f"{level} differs from scalar on {len(differ)} cases: {differ[:20]}"
    assert got["digests"].keys() == want.keys()
