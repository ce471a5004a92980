"""clip_grad_norm_ / clip_grad_value_: float64 references, PyTorch's rule and NaN
behaviour, every SIMD level and thread count, bad input; torch parity when installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core
from pyfastopt.optim import clip_grad_norm_, clip_grad_value_


def make_grads(rng, dtypes=(np.float32, np.float64), sizes=(1000, 1, 0, 70_001, 33)):
    return [
        (rng.standard_normal(n) * (i + 1)).astype(dtypes[i % len(dtypes)])
        for i, n in enumerate(sizes)
    ]


def ref_norm(grads, p):
    flat = np.concatenate([np.abs(g.astype(np.float64)).ravel() for g in grads])
    if p == math.inf:
        return float(flat.max()) if flat.size else 0.0
    if p == -math.inf:
        return float(flat.min()) if flat.size else math.inf
    if p == 0:
        return float(np.count_nonzero(flat))
    return math.fsum((flat**p).tolist()) ** (1.0 / p)


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0, 3.0, 0.0, -math.inf])
def test_clip_norm_matches_reference(simd, rng, norm_type):
    grads = make_grads(rng)
    before = [g.copy() for g in grads]
    expected = ref_norm(before, norm_type)
    max_norm = expected / 3 if expected else 1.0
    total = clip_grad_norm_(grads, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(expected, rel=1e-12)
    coef = min(1.0, max_norm / (expected + 1e-6))
    for g, b in zip(grads, before):
        assert g.dtype == b.dtype
        tol = 1e-6 if g.dtype == np.float32 else 1e-14
        np.testing.assert_allclose(g, b.astype(np.float64) * coef, rtol=tol, atol=1e-30)
    # after clipping, the norm is max_norm (up to the 1e-6 guard and rounding)
    if norm_type not in (0.0, -math.inf):
        assert ref_norm(grads, norm_type) == pytest.approx(max_norm, rel=1e-5)


@pytest.mark.parametrize("norm_type", [50.0, 1e3, 2.0**64])
def test_clip_norm_large_p_does_not_overflow(norm_type):
    # found by the fuzzer: |g|**p overflowed to inf; the p-norm tends to max|g|
    g = [np.array([1.0367526, -0.5], np.float32), np.array([0.25])]
    total = clip_grad_norm_(g, 10.0, norm_type=norm_type)
    assert math.isfinite(total)
    assert total == pytest.approx(
        ref_norm([np.array([1.0367526, -0.5], np.float32), np.array([0.25])], math.inf), rel=0.02
    )


def test_clip_norm_below_threshold_changes_no_bit(rng):
    grads = make_grads(rng)
    before = [g.copy() for g in grads]
    total = clip_grad_norm_(grads, 1e9)
    assert total == pytest.approx(ref_norm(before, 2), rel=1e-12)
    for g, b in zip(grads, before):
        assert g.tobytes() == b.tobytes()


def test_clip_norm_single_array_and_empty(rng):
    g = np.array([3.0, 4.0])
    assert clip_grad_norm_(g, 1.0) == 5.0
    np.testing.assert_allclose(g, [3 / (5 + 1e-6), 4 / (5 + 1e-6)], rtol=1e-15)
    assert clip_grad_norm_([], 1.0) == 0.0
    assert clip_grad_norm_([np.zeros((0, 3), np.float32)], 1.0) == 0.0


def test_clip_norm_bitwise_any_threads_and_level(rng):
    base = make_grads(rng, sizes=(1_000_003, 70_001, 5))
    outs = set()
    previous = _core.config.get_simd_level()
    try:
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            for t in (1, 2, 3):
                grads = [g.copy() for g in base]
                with pyfastopt.threads(t):
                    total = clip_grad_norm_(grads, 10.0)
                outs.add((total.hex(), b"".join(g.tobytes() for g in grads)))
    finally:
        _core.config.set_simd_level(previous)
    assert len(outs) == 1


def test_clip_norm_nonfinite_like_pytorch():
    grads = [np.array([1.0, np.nan, 2.0], np.float32), np.array([3.0])]
    total = clip_grad_norm_(grads, 1.0)
    assert math.isnan(total)
    assert all(np.isnan(g).all() for g in grads)  # scaled by a NaN coefficient
    grads = [np.array([1.0, np.inf]), np.array([-2.0, 0.5])]
    total = clip_grad_norm_(grads, 1.0)
    assert total == math.inf
    # coefficient 1/(inf) = 0: finite entries become 0, inf * 0 = NaN
    assert np.isnan(grads[0][1]) and grads[0][0] == 0.0
    assert (grads[1] == 0).all()
    assert clip_grad_norm_([np.array([np.inf, 1.0])], 1.0, norm_type=math.inf) == math.inf


def test_clip_norm_error_if_nonfinite_leaves_grads():
    grads = [np.array([1.0, np.nan]), np.array([2.0], np.float32)]
    before = [g.copy() for g in grads]
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(grads, 1.0, error_if_nonfinite=True)
    for g, b in zip(grads, before):
        assert np.array_equal(g, b, equal_nan=True)


def test_clip_norm_bad_input(rng):
    g = np.ones(4)
    for bad, exc, msg in [
        (-1.0, ValueError, "max_norm must be >= 0"),
        (math.nan, ValueError, "max_norm must not be NaN"),
        ("1", TypeError, "max_norm must be a real number"),
    ]:
        with pytest.raises(exc, match=msg):
            clip_grad_norm_([g], bad)
    with pytest.raises(ValueError, match="norm_type must be >= 0"):
        clip_grad_norm_([g], 1.0, norm_type=-2.0)
    with pytest.raises(TypeError, match="error_if_nonfinite must be a bool"):
        clip_grad_norm_([g], 1.0, error_if_nonfinite="yes")
    ro = np.ones(4)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match=r"grads\[1\].*read-only"):
        clip_grad_norm_([g, ro], 1e9)  # refused even though nothing would be scaled
    with pytest.raises(ValueError, match=r"grads\[0\].*C-contiguous"):
        clip_grad_norm_([np.ones(8)[::2]], 1.0)
    with pytest.raises(TypeError, match=r"grads\[0\].*float32 or float64"):
        clip_grad_norm_([np.ones(3, np.int32)], 1.0)
    with pytest.raises(TypeError, match="grads must be an array or a list"):
        clip_grad_norm_(3.0, 1.0)
    buf = np.ones(10)
    with pytest.raises(ValueError, match="share memory"):
        clip_grad_norm_([buf[:6], buf[4:]], 0.1)
    assert (buf == 1).all()


def test_clip_value(simd, rng):
    grads = make_grads(rng)
    grads[0][:3] = [np.nan, np.inf, -np.inf]
    before = [g.copy() for g in grads]
    assert clip_grad_value_(grads, 0.5) is None
    for g, b in zip(grads, before):
        expect = np.clip(b, -0.5, 0.5)  # NumPy's clip keeps NaN too
        assert np.array_equal(g, expect, equal_nan=True)
        assert g.dtype == b.dtype


def test_clip_value_bad_input():
    with pytest.raises(ValueError, match="clip_value must be >= 0"):
        clip_grad_value_([np.ones(2)], -1.0)
    with pytest.raises(TypeError, match="clip_value must be a real number"):
        clip_grad_value_([np.ones(2)], None)
    ro = np.ones(2)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        clip_grad_value_([ro], 1.0)
    clip_grad_value_([], 1.0)


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_norm_matches_torch(rng, norm_type, dtype):
    torch = pytest.importorskip("torch")
    grads = [rng.standard_normal(s).astype(dtype) for s in ((50, 7), (300,), (1,))]
    tensors = [
        torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True) for g in grads
    ]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g.copy())
    ours = clip_grad_norm_(grads, 0.5, norm_type=norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(tensors, 0.5, norm_type=norm_type, foreach=False).item()
    # torch accumulates float32 norms in float32; we accumulate in float64
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert ours == pytest.approx(theirs, rel=rtol)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=rtol, atol=0)


def test_clip_value_matches_torch(rng):
    torch = pytest.importorskip("torch")
    g = rng.standard_normal(1000).astype(np.float32)
    g[5] = np.nan
    t = torch.zeros(1000, requires_grad=True)
    t.grad = torch.from_numpy(g.copy())
    clip_grad_value_([g], 0.3)
    torch.nn.utils.clip_grad_value_([t], 0.3, foreach=False)
    assert np.array_equal(g, t.grad.numpy(), equal_nan=True)
