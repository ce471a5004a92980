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

# The levels the `simd` / `qsimd` fixtures run each test at: by default every level the
# machine has, so one pytest run covers them all. PF_TEST_SIMD_LEVELS=forced (set by
# .ci/aarch64 for its runs of the whole suite or the subset with PYFASTOPT_SIMD forced
# to each level in turn) runs them at the forced level only: every level is still
# tested, once, in its own run, instead of every level again in each of the runs (4x4
# times under emulation). Tests that compare levels with each other loop over
# SIMD_LEVELS / QSIMD_LEVELS themselves and keep every level.
if os.environ.get("PF_TEST_SIMD_LEVELS", "all") == "forced":
    _forced = os.environ.get("PYFASTOPT_SIMD", "")
    if _forced not in SIMD_LEVELS:
        raise pytest.UsageError(
            f"PF_TEST_SIMD_LEVELS=forced needs PYFASTOPT_SIMD set to one of {SIMD_LEVELS}, "
            f"got {_forced!r}"
        )
    FIXTURE_LEVELS = [_forced]
elif os.environ.get("PF_TEST_SIMD_LEVELS", "all") == "all":
    FIXTURE_LEVELS = list(SIMD_LEVELS)
else:
    raise pytest.UsageError("PF_TEST_SIMD_LEVELS must be 'all' (default) or 'forced'")


@pytest.fixture(params=FIXTURE_LEVELS)
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


@pytest.fixture(params=FIXTURE_LEVELS)
def qsimd(request):
    """Like ``simd``, for the int8 GEMM (amx is one of the levels)."""
    previous = _core.config.get_simd_level()
    _core.config.set_simd_level(request.param)
    try:
        yield request.param
    finally:
        _core.config.set_simd_level(previous)
