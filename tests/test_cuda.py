"""The optional CUDA module: clear errors without it, same bits as the CPU kernel with it."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import _cuda, ops


def test_require_explains_how_to_build():
    if _cuda.built():
        pytest.skip("this build has the CUDA module")
    assert not _cuda.available()
    with pytest.raises(RuntimeError, match="PYFASTOPT_CUDA=1 pip install"):
        _cuda.require()


@pytest.mark.skipif(not _cuda.available(), reason="needs the CUDA module and a GPU")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 255, 257, 1_000_003])
def test_cuda_axpby_matches_cpu_bitwise(dtype, n):
    cuda = _cuda.require()
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    y_cpu, y_gpu = y.copy(), y.copy()
    ops.axpby_(y_cpu, x, 0.3, -1.7)
    cuda.axpby_(y_gpu, x, 0.3, -1.7)
    assert y_gpu.tobytes() == y_cpu.tobytes()


@pytest.mark.skipif(not _cuda.available(), reason="needs the CUDA module and a GPU")
def test_cuda_shares_validation():
    cuda = _cuda.require()
    y = np.zeros(3)
    y.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        cuda.axpby_(y, np.ones(3), 1.0, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        cuda.axpby_(np.zeros(3), np.ones(3, np.int8), 1.0, 1.0)
