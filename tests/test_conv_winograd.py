"""The float32 Winograd F(2x2, 3x3) path of conv2d / conv2d_backward (dx): against a
float64 torch reference at the error bound of cpp/include/pyfastopt/conv.h (every padding
form, odd sizes, H or W = 1 or 2, batch 1, bias and activations, large-magnitude and
mixed-sign data), the fallback to the direct path for non-finite or overflowing data, the
algorithm= argument (auto / direct / winograd, validation, nn.Conv2d), and bitwise
identity across thread counts, SIMD levels and layouts."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIMD_LEVELS = _core.config.supported_levels()
U = 2.0**-24

# (N, C, H, W, Co, padding (top, bottom, left, right))
CASES = [
    (2, 16, 8, 8, 16, (1, 1, 1, 1)),
    (1, 17, 9, 7, 19, (1, 1, 1, 1)),  # batch 1, odd sizes: partial tiles, odd channels
    (2, 20, 5, 6, 24, (0, 0, 0, 0)),  # valid
    (2, 16, 7, 8, 18, (1, 2, 0, 1)),  # asymmetric
    (2, 18, 6, 5, 16, (2, 2, 2, 2)),  # padding 2
    (3, 16, 1, 9, 16, (1, 1, 1, 1)),  # H = 1
    (2, 16, 2, 2, 20, (1, 1, 1, 1)),  # H = W = 2
    (2, 16, 9, 1, 17, (1, 1, 1, 1)),  # W = 1
    (1, 300, 6, 5, 40, (1, 1, 1, 1)),  # C > 256: two K blocks
    (1, 24, 6, 6, 300, (1, 1, 0, 2)),  # Co > 256, NR tails
    (4, 32, 15, 13, 32, (1, 1, 1, 1)),  # several blocks of tiles
    (2, 4, 6, 6, 5, (1, 1, 1, 1)),  # few channels (forced winograd only)
]
IDS = [f"w{i}" for i in range(len(CASES))]


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def make(rng, case, scale=1.0, shift=0.0):
    n, c, h, w, co, _ = case
    x = (rng.standard_normal((n, c, h, w)) * scale + shift).astype(np.float32)
    wt = rng.standard_normal((co, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    return x, wt, b


def ref_conv(x, w, b, pad, act=None):
    xt = F.pad(torch.tensor(x, dtype=torch.float64), (pad[2], pad[3], pad[0], pad[1]))
    bt = None if b is None else torch.tensor(b, dtype=torch.float64)
    y = F.conv2d(xt, torch.tensor(w, dtype=torch.float64), bt)
    if act == "relu":
        y = F.relu(y)
    elif act == "gelu":
        y = F.gelu(y)
    return y.numpy()


def wino_bound(x, w, b, pad, oh, ow):
    """conv.h's bound: |y - y_exact| <= (C + 8) u (9 sum_c |w_oc|_1 |d_c|_1 + |b_o|) with d_c
    the 4x4 input patch (zeros outside) of the output's 2x2 tile."""
    n, c, h, wd = x.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2))
    hh, ww = min(h, 2 * th + 2 - pad[0]), min(wd, 2 * tw + 2 - pad[2])
    xp[:, :, pad[0] : pad[0] + hh, pad[2] : pad[2] + ww] = np.abs(x[:, :, :hh, :ww])
    patch = np.zeros((n, c, th, tw))
    for a in range(4):
        for bb in range(4):
            patch += xp[:, :, a : a + 2 * th : 2, bb : bb + 2 * tw : 2]
    wn = np.abs(w.astype(np.float64)).sum(axis=(2, 3))  # (Co, C)
    t = 9.0 * np.einsum("oc,nchw->nohw", wn, patch)
    t = np.repeat(np.repeat(t, 2, axis=2), 2, axis=3)[:, :, :oh, :ow]
    if b is not None:
        t = t + np.abs(b.astype(np.float64))[None, :, None, None]
    return (c + 8) * U * t


def run_fwd(x, w, b, pad, layout, algorithm, act=None):
    xi = to_nhwc(x) if layout == "NHWC" else x
    y = pyfastopt.conv2d(xi, w, b, 1, pad, activation=act, layout=layout, algorithm=algorithm)
    return to_nchw(y) if layout == "NHWC" else y


def run_dx(dy, x, w, pad, layout, algorithm):
    nhwc = layout == "NHWC"
    dx, _, _ = pyfastopt.conv2d_backward(
        to_nhwc(dy) if nhwc else dy,
        to_nhwc(x) if nhwc else x,
        w,
        1,
        pad,
        layout=layout,
        need_dweight=False,
        need_dbias=False,
        algorithm=algorithm,
    )
    return to_nchw(dx) if nhwc else dx


def dx_as_forward(w, pad):
    """backward-data of a stride-1 3x3 conv = forward conv of dy with the flipped,
    transposed weight and padding 2 - p per side."""
    wf = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return wf, tuple(2 - p for p in pad)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_within_bound(rng, case, layout):
    pad = case[5]
    for scale, shift in ((1.0, 0.0), (1e15, 0.0), (1.0, 3.0)):  # also large, mixed sign
        x, w, b = make(rng, case, scale, shift)
        ref = ref_conv(x, w, b, pad)
        y = run_fwd(x, w, b, pad, layout, "winograd")
        assert y.dtype == np.float32 and y.shape == ref.shape
        bound = wino_bound(x, w, b, pad, ref.shape[2], ref.shape[3])
        err = np.abs(y.astype(np.float64) - ref)
        assert np.all(err <= bound), f"max excess {np.max(err - bound)} (scale {scale})"
        # Winograd ran (its rounding differs from the direct chain's somewhere)
        if scale == 1.0 and shift == 0.0 and y.size > 64:
            assert y.tobytes() != run_fwd(x, w, b, pad, layout, "direct").tobytes()


@pytest.mark.parametrize("act", ["relu", "gelu"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_forward_activation_within_bound(rng, act, layout):
    for case in (CASES[1], CASES[3]):
        pad = case[5]
        x, w, b = make(rng, case)
        z = ref_conv(x, w, b, pad)
        ref = ref_conv(x, w, b, pad, act)
        y = run_fwd(x, w, b, pad, layout, "auto", act)
        bound = wino_bound(x, w, b, pad, z.shape[2], z.shape[3])
        # relu is 1-Lipschitz and exact; gelu's slope is below 1.13, plus its one rounding
        tol = bound if act == "relu" else 1.13 * bound + U * np.abs(ref) + 1e-30
        assert np.all(np.abs(y - ref) <= tol)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_data_within_bound(rng, case, layout):
    n, _c, h, wd, co, pad = case
    x, w, _ = make(rng, case)
    oh, ow = h + pad[0] + pad[1] - 2, wd + pad[2] + pad[3] - 2
    dy = rng.standard_normal((n, co, oh, ow)).astype(np.float32)
    dxt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = F.conv2d(
        F.pad(dxt, (pad[2], pad[3], pad[0], pad[1])), torch.tensor(w, dtype=torch.float64)
    )
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    ref = dxt.grad.numpy()
    wf, padf = dx_as_forward(w, pad)
    bound = wino_bound(dy, wf, None, padf, h, wd)
    dx = run_dx(dy, x, w, pad, layout, "winograd")
    assert dx.dtype == np.float32 and dx.shape == ref.shape
    assert np.all(np.abs(dx - ref) <= bound)
    if dx.size > 64:
        assert dx.tobytes() != run_dx(dy, x, w, pad, layout, "direct").tobytes()


def test_auto_selection(rng):
    """auto: Winograd for >= 16 channels both ways, direct below; float64 always direct."""
    for case, wino in ((CASES[0], True), (CASES[11], False), ((2, 8, 6, 6, 32, (1,) * 4), False)):
        x, w, b = make(rng, case)
        pad = case[5]
        auto = run_fwd(x, w, b, pad, "NCHW", "auto").tobytes()
        assert auto == run_fwd(x, w, b, pad, "NCHW", "winograd" if wino else "direct").tobytes()
    x, w, b = make(rng, CASES[0])
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    y = run_fwd(x64, w64, b64, CASES[0][5], "NCHW", "winograd")
    assert y.tobytes() == run_fwd(x64, w64, b64, CASES[0][5], "NCHW", "direct").tobytes()
    # shapes outside the path: stride 2, dilation 2, 5x5, groups 2, padding 3 -> direct
    x = rng.standard_normal((2, 16, 9, 9)).astype(np.float32)
    for kw in (
        {"stride": 2, "padding": 1},
        {"dilation": 2, "padding": 2},
        {"padding": 3},
        {"groups": 2, "padding": 1},
    ):
        wt = rng.standard_normal((16, 16 // kw.get("groups", 1), 3, 3)).astype(np.float32)
        a = pyfastopt.conv2d(x, wt, algorithm="winograd", **kw)
        d = pyfastopt.conv2d(x, wt, algorithm="direct", **kw)
        assert a.tobytes() == d.tobytes(), kw


def test_padding_same(rng):
    x = rng.standard_normal((2, 16, 7, 6)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    y = pyfastopt.conv2d(x, w, padding="same", algorithm="winograd")
    ref = ref_conv(x, w, None, (1, 1, 1, 1))
    assert np.all(np.abs(y - ref) <= wino_bound(x, w, None, (1, 1, 1, 1), 7, 6))


@pytest.mark.parametrize("bad", ["inf_x", "nan_x", "ninf_w", "nan_w", "huge"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_non_finite_and_overflow_fall_back(rng, bad, layout):
    """Non-finite or overflow-prone data: the direct path's result, bit for bit (inf - inf
    inside the transforms would give NaN where the direct sum is inf)."""
    case = CASES[0]
    x, w, b = make(rng, case)
    if bad == "inf_x":
        x[0, 3, 2, 2] = x[0, 3, 2, 4] = np.inf  # the same tile: d0 - d2 = inf - inf
    elif bad == "nan_x":
        x[1, 0, 5, 5] = np.nan
    elif bad == "ninf_w":
        w[2, 1, 0, 0] = -np.inf
    elif bad == "nan_w":
        w[3, 3, 1, 1] = np.nan
    else:
        x *= np.float32(1e36)
    pad = case[5]
    y = run_fwd(x, w, b, pad, layout, "auto")
    assert y.tobytes() == run_fwd(x, w, b, pad, layout, "direct").tobytes()
    dy = x[:, :16].copy()  # same shape (16 -> 16 channels, padding 1)
    dx = run_dx(dy, x, w, pad, layout, "auto")
    assert dx.tobytes() == run_dx(dy, x, w, pad, layout, "direct").tobytes()
    if bad == "inf_x":
        assert np.isinf(y).any()


def test_algorithm_validation(rng):
    x, w, _b = make(rng, CASES[0])
    with pytest.raises(ValueError, match="algorithm"):
        pyfastopt.conv2d(x, w, algorithm="fft")
    with pytest.raises(TypeError, match="algorithm"):
        pyfastopt.conv2d(x, w, algorithm=1)
    with pytest.raises(ValueError, match="algorithm"):
        pyfastopt.conv2d_backward(x, x, w, padding=1, algorithm="Winograd")
    with pytest.raises(ValueError, match="algorithm"):
        pyfastopt.nn.Conv2d(16, 16, 3, algorithm="gemm")


def test_nn_conv2d_algorithm(rng):
    """nn.Conv2d's algorithm attribute reaches the forward and dx."""
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    dy = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    outs = {}
    for algo in ("direct", "winograd", "auto"):
        m = pyfastopt.nn.Conv2d(16, 16, 3, padding=1, seed=0, algorithm=algo)
        y = m.forward(x).copy()
        dx = m.backward(dy).copy()
        outs[algo] = (y.tobytes(), dx.tobytes())
        if algo == "direct":
            assert "algorithm='direct'" in repr(m)
            d = pyfastopt.conv2d(x, m.weight, m.bias, 1, 1, algorithm="direct")
            assert y.tobytes() == d.tobytes()
    assert outs["auto"] == outs["winograd"]
    assert outs["direct"] != outs["winograd"]


def test_bitwise_threads_simd_layouts(rng):
    cases = [CASES[1], CASES[3], CASES[8], CASES[10], (8, 24, 20, 20, 40, (1, 1, 1, 1))]
    previous = _core.config.get_simd_level()
    try:
        for case in cases:
            n, _c, h, wd, co, pad = case
            x, w, b = make(rng, case)
            oh, ow = h + pad[0] + pad[1] - 2, wd + pad[2] + pad[3] - 2
            dy = rng.standard_normal((n, co, oh, ow)).astype(np.float32)
            ref = None
            for level in SIMD_LEVELS:
                _core.config.set_simd_level(level)
                for threads in (1, 2, 3):
                    pyfastopt.set_num_threads(threads)
                    for layout in ("NCHW", "NHWC"):
                        got = (
                            run_fwd(x, w, b, pad, layout, "auto", "gelu").tobytes(),
                            run_dx(dy, x, w, pad, layout, "auto").tobytes(),
                        )
                        if ref is None:
                            ref = got
                        assert got == ref, f"{case} {level} threads={threads} {layout}"
    finally:
        _core.config.set_simd_level(previous)


def test_bench_rule_matches_the_kernel(rng):
    """pyfastopt._conv._winograd_selected (the benchmarks' label) is the kernel's rule."""
    from pyfastopt._conv import _winograd_selected

    for c, co, pad, stride in ((16, 16, 1, 1), (15, 32, 1, 1), (32, 16, (0, 2, 1, 1), 1),
                               (16, 16, 3, 1), (16, 16, 1, 2)):  # fmt: skip
        x = rng.standard_normal((1, c, 7, 6)).astype(np.float32)
        w = rng.standard_normal((co, c, 3, 3)).astype(np.float32)
        p4 = (pad,) * 4 if isinstance(pad, int) else pad
        sel = _winograd_selected(np.float32, (c, co), (3, 3), (stride,) * 2, (1, 1), 1, p4)
        auto = pyfastopt.conv2d(x, w, None, stride, pad)
        want = pyfastopt.conv2d(x, w, None, stride, pad, algorithm="winograd" if sel else "direct")
        other = pyfastopt.conv2d(x, w, None, stride, pad, algorithm="direct" if sel else "winograd")
        assert auto.tobytes() == want.tobytes()
        if sel:
            assert auto.tobytes() != other.tobytes()
