"""Golden bits across architectures (issue 20, point 3): the results of
tests/golden_cases.py, written on x86-64 by tools/golden.py, recomputed here at every SIMD
level this machine runs (aarch64 under qemu in .ci/aarch64) and compared bit for bit."""

from __future__ import annotations

import os

import numpy as np
import pytest
from golden_cases import compute

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "golden.npz")


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as f:
        return {k: f[k] for k in f.files}


def test_golden_file_is_small_and_complete(golden):
    assert os.path.getsize(GOLDEN) < 1_000_000
    families = {k.split("/")[0] for k in golden}
    assert families == {
        "optim",
        "dropout",
        "quant",
        "batchnorm",
        "qgemm",
        "gemm",
        "conv",
        "pool",
        "qconv",
    }


def test_same_bits_as_x86(simd, golden):
    got = compute()
    assert sorted(got) == sorted(golden)
    bad = []
    for key, want in golden.items():
        have = np.asarray(got[key])
        if have.dtype != want.dtype or have.shape != want.shape or have.tobytes() != want.tobytes():
            bad.append(key)
    assert not bad, f"level {simd}: not the golden bits: {bad}"
