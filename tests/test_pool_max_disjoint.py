"""Max pool backward when windows never overlap (dilation 1, stride >= kernel, e.g. 2x2
stride 2: the CNN's pooling; kernels/conv/pool_driver.cpp writes dx once per window
instead of zeroing and scattering): against torch autograd exactly (one term per dx
element), gaps between windows (stride > kernel) and remainders (H, W not multiples of
the stride) zeroed, padding and ceil_mode, NaN / inf / -0 in x and dy, both layouts
bitwise equal, every SIMD level, 1/2/3 threads, non-contiguous dy."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIMD_LEVELS = _core.config.supported_levels()

# (N, C, H, W, kernel, stride, padding, ceil_mode)
CASES = [
    (2, 5, 8, 8, 2, 2, 0, False),  # the CNN's pool
    (2, 3, 9, 11, 2, 2, 0, False),  # odd H, W: last row / column in no window
    (2, 3, 9, 11, 2, 2, 0, True),  # ceil_mode: clipped last windows
    (1, 4, 10, 10, 2, 3, 0, False),  # stride > kernel: gaps
    (2, 3, 7, 9, 3, 3, 1, False),  # padding
    (2, 3, 7, 9, (3, 2), (3, 4), (1, 1), True),
    (2, 37, 6, 8, 2, 2, 0, False),  # odd channel count
    (1, 300, 4, 4, 2, 2, 0, False),  # more channels than one channel block (256)
    (3, 2, 1, 9, (1, 2), (1, 2), 0, False),  # H = 1
    (3, 2, 9, 1, (2, 1), (2, 1), 0, False),  # W = 1
]
IDS = [f"d{i}" for i in range(len(CASES))]


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def data(rng, case, dtype, specials=False):
    n, c, h, w = case[:4]
    # few distinct values: ties inside windows
    x = rng.integers(-3, 4, (n, c, h, w)).astype(dtype)
    if specials:
        flat = x.reshape(-1)
        idx = rng.choice(flat.size, size=max(1, flat.size // 10), replace=False)
        flat[idx[0::3]] = np.nan
        flat[idx[1::3]] = np.inf
        flat[idx[2::3]] = -np.inf
    return x


def ours_bwd(dy, x, case, layout):
    k, s, p, cm = case[4:]
    if layout == "NHWC":
        return to_nchw(
            pyfastopt.max_pool2d_backward(
                to_nhwc(dy), to_nhwc(x), k, s, p, ceil_mode=cm, layout="NHWC"
            )
        )
    return pyfastopt.max_pool2d_backward(dy, x, k, s, p, ceil_mode=cm)


def torch_bwd(dy, x, case):
    k, s, p, cm = case[4:]
    xt = torch.tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, k, s, p, ceil_mode=cm)
    y.backward(torch.tensor(dy))
    return xt.grad.numpy()


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("specials", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_exactly(case, specials, dtype, rng):
    x = data(rng, case, dtype, specials)
    k, s, p, cm = case[4:]
    y = pyfastopt.max_pool2d(x, k, s, p, ceil_mode=cm)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy.reshape(-1)[::7] = -0.0
    ref = torch_bwd(dy, x, case)
    for layout in ("NCHW", "NHWC"):
        got = ours_bwd(dy, x, case, layout)
        assert got.shape == ref.shape
        assert got.tobytes() == ref.tobytes(), layout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_levels_threads(dtype, rng):
    previous = _core.config.get_simd_level()
    try:
        for case in [*CASES, (16, 24, 16, 16, 2, 2, 0, False)]:
            x = data(rng, case, dtype, specials=True)
            k, s, p, cm = case[4:]
            dy = rng.standard_normal(pyfastopt.max_pool2d(x, k, s, p, ceil_mode=cm).shape)
            dy = dy.astype(dtype)
            ref = None
            for level in SIMD_LEVELS:
                _core.config.set_simd_level(level)
                for nt in (1, 2, 3):
                    pyfastopt.set_num_threads(nt)
                    for layout in ("NCHW", "NHWC"):
                        got = ours_bwd(dy, x, case, layout)
                        if ref is None:
                            ref = got
                        assert got.tobytes() == ref.tobytes(), (case, level, nt, layout)
    finally:
        _core.config.set_simd_level(previous)


def test_out_overwritten_and_non_contiguous_dy(rng):
    case = CASES[1]
    x = data(rng, case, np.float32)
    y = pyfastopt.max_pool2d(x, 2, 2)
    big = rng.standard_normal((*y.shape[:3], 2 * y.shape[3])).astype(np.float32)
    dy = big[..., ::2]
    assert not dy.flags.c_contiguous
    out = np.full(x.shape, 7.0, np.float32)  # stale values must not survive
    got = pyfastopt.max_pool2d_backward(dy, x, 2, 2, out=out)
    ref = torch_bwd(np.ascontiguousarray(dy), x, case)
    assert got.tobytes() == ref.tobytes()
