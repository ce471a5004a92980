"""The max pool backward with the ReLU mask (kind 3 of the pool binding) and nn.Sequential's
fused batch norm -> ReLU -> max pool backward: bitwise the unfused results (NumPy's
``dy * (y > 0)`` after ``max_pool2d_backward``; the layers' own backward one at a time),
NaN, inf and signed zeros included, for every layout, geometry, thread count and SIMD
level."""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core, nn
from pyfastopt._conv import _max_pool2d_backward_relu

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
GEOMS = [
    (2, 3, 8, 8, 2, 2, 0, 1, False),  # disjoint 2x2 windows covering the input
    (2, 5, 9, 7, 2, 2, 0, 1, False),  # disjoint, a remainder row / column
    (2, 5, 9, 7, 2, 2, 0, 1, True),  # ceil_mode: clipped last windows
    (1, 17, 11, 13, 2, 2, 1, 1, True),  # padding: clipped first windows
    (2, 4, 10, 10, 2, 3, 0, 1, False),  # stride > kernel: uncovered positions
    (2, 3, 9, 9, 3, 2, 1, 1, True),  # overlapping windows
    (1, 33, 12, 10, (2, 3), (2, 3), 0, 1, False),  # disjoint, not 2x2
    (1, 3, 12, 12, 2, 2, 0, 2, False),  # dilation
    (1, 300, 4, 6, 2, 2, 0, 1, False),  # more channels than one block
]


def _special(rng, shape, dtype):
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    k = max(1, flat.size // 12)
    idx = rng.choice(flat.size, size=5 * k, replace=False)
    flat[idx[:k]] = np.nan
    flat[idx[k : 2 * k]] = np.inf
    flat[idx[2 * k : 3 * k]] = -np.inf
    flat[idx[3 * k : 4 * k]] = -0.0
    flat[idx[4 * k :]] = 0.0
    return a


def _shape(n, c, h, w, layout):
    return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)


def _args(geom, layout):
    _, _, _, _, k, s, p, d, cm = geom
    return {
        "kernel_size": k,
        "stride": s,
        "padding": p,
        "dilation": d,
        "ceil_mode": cm,
        "layout": layout,
    }


def _check(geom, layout, dtype, rng, relu_input):
    n, c, h, w = geom[:4]
    x = _special(rng, _shape(n, c, h, w, layout), dtype)
    if relu_input:  # the pool's input as a ReLU writes it: no negatives, no -0
        x = np.maximum(x, 0)
        x[x == 0] = 0.0
    a = _args(geom, layout)
    y = pyfastopt.max_pool2d(x, **a)
    dy = _special(rng, y.shape, dtype)
    with np.errstate(invalid="ignore"):  # inf * 0
        want = np.multiply(pyfastopt.max_pool2d_backward(dy, x, **a), x > 0)
    got = _max_pool2d_backward_relu(dy, x, **a)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    out = np.full_like(x, 7.0)
    assert _max_pool2d_backward_relu(dy, x, **a, out=out) is out
    assert out.tobytes() == want.tobytes()


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu_input", [False, True])
def test_masked_backward_is_backward_times_mask(simd, rng, geom, layout, dtype, relu_input):
    _check(geom, layout, dtype, rng, relu_input)


def test_masked_backward_validation(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="dy must have the shape"):
        _max_pool2d_backward_relu(np.zeros((1, 2, 3, 3), np.float32), x, 2)
    with pytest.raises(ValueError, match="pool kind"):
        _core.conv.pool_forward(3, x, 2, 2, 2, 2, 0, 0, 1, 1, False, False, 0, 0, 0, False)


def test_masked_backward_threads_and_simd(rng):
    previous = _core.config.get_simd_level()
    ref = None
    try:
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            for threads in (1, 2, 3):
                pyfastopt.set_num_threads(threads)
                got = []
                for geom in GEOMS[:6]:
                    for layout in ("NCHW", "NHWC"):
                        r = np.random.default_rng(5)
                        n, c, h, w = geom[:4]
                        x = np.maximum(_special(r, _shape(n, c, h, w, layout), np.float32), 0)
                        a = _args(geom, layout)
                        dy = _special(r, pyfastopt.max_pool2d(x, **a).shape, np.float32)
                        got.append(_max_pool2d_backward_relu(dy, x, **a).tobytes())
                if ref is None:
                    ref = got
                assert got == ref, (level, threads)
    finally:
        _core.config.set_simd_level(previous)


# ---- nn.Sequential: batch norm -> ReLU -> max pool --------------------------------------


def _model(layout, c, pool_args):
    bn = nn.BatchNorm2d(c, layout=layout) if layout == "NHWC" else nn.BatchNorm2d(c)
    rng = np.random.default_rng(3)
    if bn.weight is not None:
        bn.weight[:] = rng.standard_normal(c).astype(np.float32)
        bn.bias[:] = rng.standard_normal(c).astype(np.float32)  # type: ignore[index]
    return nn.Sequential(bn, nn.ReLU(), nn.MaxPool2d(**pool_args, layout=layout))


def _unfused(model, x, dy):
    """The same model's layers one at a time (no fusion at all)."""
    bn, relu, pool = model.layers
    z = relu.forward(bn.forward(x))
    y = pool.forward(z)
    with np.errstate(invalid="ignore"):  # the ReLU's inf * 0
        dx = bn.backward(relu.backward(pool.backward(dy)))
    return y, dx, bn.grad_weight.copy(), bn.grad_bias.copy()


def _fused(model, x, dy):
    y = model(x).copy()
    dx = model.backward(dy)
    bn = model.layers[0]
    return y, dx.copy(), bn.grad_weight.copy(), bn.grad_bias.copy()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(
    ("c", "h", "w", "pool_args"),
    [
        (32, 8, 8, {"kernel_size": 2}),
        (7, 9, 11, {"kernel_size": 2, "ceil_mode": True}),
        (5, 9, 9, {"kernel_size": 3, "stride": 2, "padding": 1}),
    ],
)
@pytest.mark.parametrize("special", [False, True])
def test_sequential_fused_matches_unfused(simd, layout, c, h, w, pool_args, special):
    rng = np.random.default_rng(11)
    shape = _shape(4, c, h, w, layout)
    x = rng.standard_normal(shape).astype(np.float32) * 2 + 0.5
    if special:  # NaN in channel 0 (all of it / one value), signed zeros elsewhere
        if layout == "NHWC":
            x[..., 0] = np.nan
        else:
            x[:, 0, 0, 0] = np.nan
        x.reshape(-1)[5::97] = -0.0
    fused_model = _model(layout, c, pool_args)
    plain_model = _model(layout, c, pool_args)
    y_ref = pyfastopt.max_pool2d(np.maximum(x, 0), **pool_args, layout=layout)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    if special:
        dy.reshape(-1)[3::41] = np.inf
        dy.reshape(-1)[7::53] = -0.0
    for _ in range(2):  # the second step reuses every buffer
        got = _fused(fused_model, x, dy)
        want = _unfused(plain_model, x, dy)
        for g, wv in zip(got, want, strict=True):
            assert g.tobytes() == wv.tobytes()
    assert (
        fused_model.layers[0].running_mean.tobytes() == plain_model.layers[0].running_mean.tobytes()
    )


@pytest.mark.parametrize("threads", [1, 3])
def test_cnn_step_fused_matches_unfused_threads(threads):
    """The benchmark CNN shape (conv -> BN -> ReLU -> pool blocks): the fused Sequential
    backward equals the layers run one at a time, at 1 and 3 threads."""
    pyfastopt.set_num_threads(threads)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 16, 16, 3)).astype(np.float32)

    def build():
        r = np.random.default_rng(0)
        m = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, layout="NHWC"),
            nn.BatchNorm2d(8, layout="NHWC"),
            nn.ReLU(),
            nn.MaxPool2d(2, layout="NHWC"),
            nn.Conv2d(8, 12, 3, padding=1, layout="NHWC"),
            nn.BatchNorm2d(12, layout="NHWC"),
            nn.ReLU(),
            nn.MaxPool2d(2, layout="NHWC"),
        )
        for p in m.parameters():
            p[...] = r.standard_normal(p.shape).astype(p.dtype) * 0.3
        return m

    fused, plain = build(), build()
    out = fused(x)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = fused.backward(dy).copy()
    h = x
    for layer in plain.layers:
        h = layer.forward(h)
    assert h.tobytes() == out.tobytes()
    g = dy
    for layer in reversed(plain.layers):
        g = layer.backward(g)
    assert g.tobytes() == dx.tobytes()
    for a, b in zip(fused.gradients(), plain.gradients(), strict=True):
        assert a.tobytes() == b.tobytes()


def test_layers_used_separately_after_a_fused_forward():
    """After a Sequential training forward, each layer's own backward keeps its
    documented meaning: the pool's gradient is not masked, the batch norm applies the
    fused ReLU's mask itself."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6, 6, 5)).astype(np.float32)
    model = _model("NHWC", 5, {"kernel_size": 2})
    y = model(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    bn, relu, pool = model.layers
    dz = pool.backward(dy).copy()
    assert dz.tobytes() == pyfastopt.max_pool2d_backward(dy, pool._x, 2, layout="NHWC").tobytes()
    dx_manual = bn.backward(relu.backward(dz)).copy()
    dx_model = model.backward(dy)
    assert dx_manual.tobytes() == dx_model.tobytes()


def test_eval_mode_and_need_dx():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 5, 6, 6)).astype(np.float32)
    model = _model("NCHW", 5, {"kernel_size": 2})
    y = model(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = model.backward(dy).copy()
    gw = model.layers[0].grad_weight.copy()
    assert model.backward(dy, need_dx=False) is None
    assert model.layers[0].grad_weight.tobytes() == gw.tobytes()
    model.eval()  # no fusion in eval mode: the ReLU masks, the batch norm is affine
    ye = model(x)
    dxe = model.backward(dy)
    bn, relu, pool = model.layers
    want = bn.backward(relu.backward(pool.backward(dy)))
    assert dxe.tobytes() == want.tobytes()
    assert ye.shape == y.shape and dxe.shape == dx.shape


# ---- global average pooling, channels-last: pool_avg / chan_sums paths -----------------


@pytest.mark.parametrize(
    "shape",
    [(3, 4, 4, 64), (3, 5, 3, 64), (3, 4, 4, 63), (2, 7, 7, 512), (2, 1, 1, 300), (2, 9, 9, 100)],
)
@pytest.mark.parametrize("threads", [1, 3])
def test_global_avg_nhwc_is_the_sequential_double_chain(simd, shape, threads):
    """Either kernel (chosen by pixel and channel counts) gives the chain
    0 + x0 + x1 + ... in double, one division, one rounding; NCHW gives the same bits."""
    pyfastopt.set_num_threads(threads)
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    n, h, w, c = shape
    s = np.zeros((n, c))
    for p in x.reshape(n, h * w, c).transpose(1, 0, 2):
        s = s + p.astype(np.float64)
    want = (s / (h * w)).astype(np.float32).reshape(n, 1, 1, c)
    got = pyfastopt.global_avg_pool2d(x, layout="NHWC")
    assert got.tobytes() == want.tobytes()
    nchw = pyfastopt.global_avg_pool2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    assert nchw.reshape(-1).tobytes() == got.reshape(-1).tobytes()


# ---- batch norm + ReLU -> 2x2 max pool in one call each way (channels-last) ------------
from pyfastopt._batchnorm import (  # noqa: E402
    _batch_norm_backward_relu_maxpool,
    _batch_norm_train_relu_maxpool,
)

# (N, H, W, C): row blocks of the batch norm's reduction (RB rows) holding whole pool
# rows (the fused backward) or not (its fallback), one or many blocks, C = 3 (parameters
# repeated to a period), C > 256 (several column blocks unfused), odd H / W (fallback)
BNPOOL_SHAPES = [
    (4, 8, 8, 32),  # one block
    (16, 16, 16, 32),  # RB = 1024 rows: 4 blocks of 2 images
    (64, 8, 8, 128),  # RB = 256: 16 blocks
    (5, 10, 6, 33),
    (6, 4, 4, 3),
    (2, 4, 6, 300),
    (40, 6, 6, 32),  # RB = 1024 is not a multiple of 2 W = 12: the backward's fallback
    (3, 9, 7, 5),  # odd H and W: both fall back
    (2, 2, 2, 17),
]


def _bnpool_inputs(shape, dtype, special, seed=0):
    r = np.random.default_rng(seed)
    n, h, w, c = shape
    x = (r.standard_normal(shape) * 2 + 0.3).astype(dtype)
    wgt = r.standard_normal(c).astype(dtype)
    bias = r.standard_normal(c).astype(dtype)
    dy = r.standard_normal((n, h // 2, w // 2, c)).astype(dtype)
    if special:
        x[..., 0].reshape(-1)[1] = np.nan  # channel 0: all NaN after the statistics
        if c > 2:
            x[..., 2].reshape(-1)[3] = np.inf
        x.reshape(-1)[5::37] = -0.0
        x.reshape(-1)[6::41] = 0.0
        dy.reshape(-1)[3::29] = np.inf
        dy.reshape(-1)[4::31] = np.nan
        dy.reshape(-1)[7::23] = -0.0
    return x, wgt, bias, dy


def _bnpool_unfused(x, wgt, bias, dy, rm, rv):
    y, mean, invstd = pyfastopt.batch_norm_train(
        x, wgt, bias, rm, rv, 0.1, 1e-5, axis=-1, activation="relu"
    )
    pooled = pyfastopt.max_pool2d(y, 2, layout="NHWC")
    with np.errstate(invalid="ignore"):  # inf * 0
        dz = np.multiply(pyfastopt.max_pool2d_backward(dy, y, 2, layout="NHWC"), y > 0)
    dx, dw, db = pyfastopt.batch_norm_backward(dz, x, wgt, mean, invstd, axis=-1)
    return [y, mean, invstd, pooled, rm, rv, dx, dw, db]


def _bnpool_fused(x, wgt, bias, dy, rm, rv, buffers=False):
    kw = {}
    if buffers:
        kw = {"out": np.full_like(x, 5.0), "pooled_out": np.full_like(dy, 5.0)}
    y, mean, invstd, pooled = _batch_norm_train_relu_maxpool(x, wgt, bias, rm, rv, 0.1, 1e-5, **kw)
    if buffers:
        assert y is kw["out"] and pooled is kw["pooled_out"]
    bkw = {}
    if buffers:
        bkw = {"dz_out": np.full_like(x, 5.0), "out": np.full_like(x, 5.0)}
    dx, dw, db = _batch_norm_backward_relu_maxpool(dy, y, x, wgt, mean, invstd, **bkw)
    if buffers:
        assert dx is bkw["out"]
    return [y, mean, invstd, pooled, rm, rv, dx, dw, db]


@pytest.mark.parametrize("shape", BNPOOL_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [False, True])
def test_bn_relu_maxpool_matches_unfused_calls(simd, shape, dtype, special):
    x, wgt, bias, dy = _bnpool_inputs(shape, dtype, special)
    c = shape[-1]
    rm0, rv0 = np.linspace(-1, 1, c).astype(dtype), np.linspace(0.5, 2, c).astype(dtype)
    want = _bnpool_unfused(x, wgt, bias, dy, rm0.copy(), rv0.copy())
    for buffers in (False, True):
        got = _bnpool_fused(x, wgt, bias, dy, rm0.copy(), rv0.copy(), buffers)
        for i, (g, wv) in enumerate(zip(got, want, strict=True)):
            assert g.dtype == wv.dtype and g.shape == wv.shape, i
            assert g.tobytes() == wv.tobytes(), i


def test_bn_relu_maxpool_threads_and_simd():
    previous = _core.config.get_simd_level()
    ref = None
    try:
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            for threads in (1, 2, 3):
                pyfastopt.set_num_threads(threads)
                got = []
                for shape in BNPOOL_SHAPES:
                    x, wgt, bias, dy = _bnpool_inputs(shape, np.float32, True, seed=1)
                    c = shape[-1]
                    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
                    got += [a.tobytes() for a in _bnpool_fused(x, wgt, bias, dy, rm, rv)]
                if ref is None:
                    ref = got
                assert got == ref, (level, threads)
    finally:
        _core.config.set_simd_level(previous)


def test_bn_relu_maxpool_validation():
    x = np.zeros((2, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="H, W >= 2"):
        _batch_norm_train_relu_maxpool(x[:, :1], None, None, None, None, 0.1, 1e-5)
    with pytest.raises(ValueError, match="H, W >= 2"):
        _batch_norm_train_relu_maxpool(x[0], None, None, None, None, 0.1, 1e-5)
    with pytest.raises(ValueError, match="pooled_out must have shape"):
        _batch_norm_train_relu_maxpool(
            x, None, None, None, None, 0.1, 1e-5, pooled_out=np.zeros((2, 2, 2, 2), np.float32)
        )
    with pytest.raises(ValueError, match="eps must be positive"):
        _batch_norm_train_relu_maxpool(x, None, None, None, None, 0.1, 0.0)
    y, mean, invstd, _ = _batch_norm_train_relu_maxpool(x, None, None, None, None, 0.1, 1e-5)
    with pytest.raises(ValueError, match="dy must have the shape"):
        _batch_norm_backward_relu_maxpool(
            np.zeros((2, 4, 4, 3), np.float32), y, x, None, mean, invstd
        )
    with pytest.raises(ValueError, match="y"):
        _batch_norm_backward_relu_maxpool(
            np.zeros((2, 2, 2, 3), np.float32), y[:1], x, None, mean, invstd
        )
    with pytest.raises(ValueError, match="save_mean"):
        _batch_norm_backward_relu_maxpool(
            np.zeros((2, 2, 2, 3), np.float32), y, x, None, mean[:2], invstd
        )


def _bench_like(seed=0):
    r = np.random.default_rng(seed)
    m = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, layout="NHWC"),
        nn.BatchNorm2d(32, layout="NHWC"),
        nn.ReLU(),
        nn.MaxPool2d(2, layout="NHWC"),
        nn.Conv2d(32, 64, 3, padding=1, layout="NHWC"),
        nn.BatchNorm2d(64, layout="NHWC"),
        nn.ReLU(),
        nn.MaxPool2d((2, 2), stride=2, layout="NHWC"),
        nn.Flatten(layout="NHWC"),
        nn.Linear(64 * 8 * 8, 10),
    )
    for p in m.parameters():
        p[...] = r.standard_normal(p.shape).astype(p.dtype) * 0.2
    return m


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sequential_bn_relu_pool_one_call_each_way(threads, monkeypatch):
    """The benchmark CNN's blocks at batch 16 (several reduction blocks per batch norm):
    Sequential's fused forward and backward (two calls per block) take the fused kernels
    and give the bits of the layers run one at a time, over two steps."""
    from pyfastopt.nn import layers as nn_layers

    calls = {"fwd": 0, "bwd": 0}
    fwd, bwd = nn_layers._batch_norm_train_relu_maxpool, nn_layers._batch_norm_backward_relu_maxpool

    def count_fwd(*a, **k):
        calls["fwd"] += 1
        return fwd(*a, **k)

    def count_bwd(*a, **k):
        calls["bwd"] += 1
        return bwd(*a, **k)

    monkeypatch.setattr(nn_layers, "_batch_norm_train_relu_maxpool", count_fwd)
    monkeypatch.setattr(nn_layers, "_batch_norm_backward_relu_maxpool", count_bwd)
    pyfastopt.set_num_threads(threads)
    rng = np.random.default_rng(7)
    fused, plain = _bench_like(), _bench_like()
    for step in range(2):
        x = rng.standard_normal((16, 32, 32, 3)).astype(np.float32)
        out = fused(x).copy()
        dy = rng.standard_normal(out.shape).astype(np.float32)
        dx = fused.backward(dy).copy()
        h = x
        for layer in plain.layers:
            h = layer.forward(h)
        assert h.tobytes() == out.tobytes(), step
        g = dy
        for layer in reversed(plain.layers):
            g = layer.backward(g)
        assert g.tobytes() == dx.tobytes(), step
        for a, b in zip(fused.gradients(), plain.gradients(), strict=True):
            assert a.tobytes() == b.tobytes(), step
        for a, b in zip(fused.state_dict().values(), plain.state_dict().values(), strict=True):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), step
    assert calls == {"fwd": 4, "bwd": 4}


@pytest.mark.parametrize("frozen", [None, 0, 1, 4])
def test_sequential_bn_relu_pool_need_dx_and_frozen(frozen):
    """need_dx=False, and frozen layers (the first conv, the first batch norm, the
    second conv: what needs a gradient changes), fused as unfused."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    fused, plain = _bench_like(1), _bench_like(1)
    if frozen is not None:
        fused.layers[frozen].frozen = plain.layers[frozen].frozen = True
    out = fused(x)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    assert fused.backward(dy, need_dx=False) is None
    h = x
    for layer in plain.layers:
        h = layer.forward(h)
    assert h.tobytes() == out.tobytes()
    assert plain.backward(dy, need_dx=False) is None
    for a, b in zip(fused.gradients(), plain.gradients(), strict=True):
        assert a.tobytes() == b.tobytes()
    fused.layers[0].frozen = plain.layers[0].frozen = True
    fused.layers[1].frozen = plain.layers[1].frozen = True
    fused(x)
    dxf = fused.backward(dy)
    g = dy
    for layer in reversed(plain.layers):
        g = layer.backward(g)
    assert dxf.tobytes() == g.tobytes()
