"""Shared fixtures: SIMD level sweep, thread counts, seeded data, odd sizes."""

from __future__ import annotations

import os

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

SIMD_LEVELS = _core.config.supported_levels()  # every level this machine runs
DTYPES = [np.float32, np.float64]
# 0, 1, sizes around every vector width / unroll (8, 16, 32, 64) and block edge, large.
ODD_SIZES = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 129, 1000]
BLOCK_EDGE_SIZES = [16383, 16384, 16385, 65535, 65536, 65537, 1_000_003]
# Multiplies the time limits of child interpreters: .ci/aarch64 sets it, since an
# emulated Python (qemu user mode) on a shared machine takes minutes to import numpy.
TIMEOUT_SCALE = float(os.environ.get("PF_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture(params=SIMD_LEVELS)
def simd(request):
    """Run the test under each SIMD level the machine has, then restore the level."""
    previous = _core.config.get_simd_level()
    _core.config.set_simd_level(request.param)
    try:
        yield request.param
    finally:
        _core.config.set_simd_level(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = pyfastopt.get_num_threads()
    yield
    pyfastopt.set_num_threads(n)


# The int8 GEMM's levels: every level, amx included where the machine has it (AMX is a
# regular dispatch level; PYFASTOPT_SIMD=avx512 there runs the VNNI kernels). Kept as a
# separate name for the int8 tests.
QSIMD_LEVELS = list(SIMD_LEVELS)


@pytest.fixture(params=QSIMD_LEVELS)
def qsimd(request):
    """Like ``simd``, for the int8 GEMM (amx is one of the levels)."""
    previous = _core.config.get_simd_level()
    _core.config.set_simd_level(request.param)
    try:
        yield request.param
    finally:
        _core.config.set_simd_level(previous)
