"""Pooling's vectorized paths (channels-last across channels, channels-first along the
padded plane): float64 against torch at sizes with several vector blocks and tails, and
the bits identical for NCHW and NHWC, 1/2/3 threads and every SIMD level, including NaN
and -inf inputs (max: torch's scan; average: the documented double sum and division)."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


# (shape, kernel, stride, padding, dilation, ceil_mode)
CASES = [
    ((2, 37, 19, 23), 3, 2, 1, 1, False),  # ResNet stem pool, odd channels and sizes
    ((2, 13, 20, 21), 3, 2, 1, 1, True),
    ((1, 9, 12, 40), (3, 2), (1, 3), (1, 1), (2, 1), True),
    ((2, 5, 1, 17), (1, 3), (1, 2), (0, 1), 1, False),  # H = 1
    ((2, 70, 7, 7), 2, None, 0, 1, False),
]


def _dy(y):
    """A deterministic gradient of y's shape (finite where y is not)."""
    return np.cos(np.nan_to_num(y, nan=0.5, posinf=1.0, neginf=-1.0))


def _pools(x, layout, case):
    _, k, s, p, d, cm = case

    def run(fn, *a, **kw):
        if layout == "NHWC":
            return to_nchw(fn(to_nhwc(x), *a, layout=layout, **kw))
        return fn(x, *a, layout=layout, **kw)

    def run_bwd(fn, dy, *a, **kw):
        if layout == "NHWC":
            return to_nchw(fn(to_nhwc(dy), to_nhwc(x), *a, layout=layout, **kw))
        return fn(dy, x, *a, layout=layout, **kw)

    y1 = run(pyfastopt.max_pool2d, k, s, p, d, cm)
    y2 = run(pyfastopt.avg_pool2d, k, s, p, cm, True)
    y3 = run(pyfastopt.avg_pool2d, k, s, p, cm, False)
    y4 = run(pyfastopt.adaptive_avg_pool2d, (3, 5))
    y5 = run(pyfastopt.global_avg_pool2d)
    g1 = run_bwd(pyfastopt.max_pool2d_backward, _dy(y1), k, s, p, d, cm)
    g2 = run_bwd(pyfastopt.avg_pool2d_backward, _dy(y2), k, s, p, cm, True)
    g4 = run_bwd(pyfastopt.adaptive_avg_pool2d_backward, _dy(y4))
    return [y1, y2, y3, y4, y5, g1, g2, g4]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_pools_match_torch_float64(rng, case, layout):
    shape, k, s, p, d, cm = case
    x = rng.standard_normal(shape)
    got = _pools(x, layout, case)
    xt = torch.tensor(x, requires_grad=True)
    refs = [
        F.max_pool2d(xt, k, s, p, d, cm),
        F.avg_pool2d(xt, k, s, p, cm, True),
        F.avg_pool2d(xt, k, s, p, cm, False),
        F.adaptive_avg_pool2d(xt, (3, 5)),
        F.adaptive_avg_pool2d(xt, 1),
    ]
    for g, r in zip(got[:5], refs, strict=True):
        np.testing.assert_allclose(g, r.detach().numpy(), rtol=1e-12, atol=1e-12)
    for gi, ri in ((5, 0), (6, 1), (7, 3)):
        xg = torch.tensor(x, requires_grad=True)
        fns = [
            lambda t: F.max_pool2d(t, k, s, p, d, cm),
            lambda t: F.avg_pool2d(t, k, s, p, cm, True),
            None,
            lambda t: F.adaptive_avg_pool2d(t, (3, 5)),
        ]
        y = fns[ri](xg)
        y.backward(torch.tensor(_dy(y.detach().numpy())))
        np.testing.assert_allclose(got[gi], xg.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pools_bitwise_layouts_threads_simd(rng, dtype):
    previous = _core.config.get_simd_level()
    try:
        for case in CASES:
            x = rng.standard_normal(case[0]).astype(dtype)
            x.flat[::37] = -np.inf
            x.flat[5::101] = np.nan
            ref = None
            for level in _core.config.supported_levels():
                _core.config.set_simd_level(level)
                for threads in (1, 2, 3):
                    pyfastopt.set_num_threads(threads)
                    for layout in ("NCHW", "NHWC"):
                        got = [a.tobytes() for a in _pools(x, layout, case)]
                        if ref is None:
                            ref = got
                        for i, (a, r) in enumerate(zip(got, ref, strict=True)):
                            assert a == r, (case, level, threads, layout, i)
    finally:
        _core.config.set_simd_level(previous)
