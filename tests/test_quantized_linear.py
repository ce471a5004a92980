"""QuantizedLinear and QuantizedSequential: bit-exact against a NumPy emulation of the same
integer pipeline (pyfastopt/quant/linear.py's docstring), close to the float layer within
the quantization error bound, identical on every SIMD level and thread count."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import QSIMD_LEVELS

import pyfastopt
from pyfastopt import _core
from pyfastopt.quant import QuantizedLinear, QuantizedSequential

F32 = np.float32


# ---- NumPy emulation of the documented pipeline -------------------------------------------


def weight_quant(w, per_channel=True):
    w = w.astype(F32)
    absmax = np.abs(w).max(axis=1) if per_channel else np.abs(w).max().reshape(1)
    scale = (absmax.astype(F32) / F32(127)).astype(F32)
    scale[scale == 0] = 1
    s = scale[:, None] if per_channel else scale[0]
    return np.clip(np.rint(w / s), -127, 127).astype(np.int8), scale


def dyn_qparams(x):
    lo = min(F32(x.min(initial=0)), F32(0))
    hi = max(F32(x.max(initial=0)), F32(0))
    scale = F32((np.float64(hi) - np.float64(lo)) / 255.0)
    if scale == 0:
        scale = F32(1)
    zp = int(np.clip(np.rint(-np.float64(lo) / np.float64(scale)), 0, 255))
    return scale, zp


def quantize_u8(x, scale, zp):
    return np.clip(np.rint(x.astype(F32) / F32(scale)).astype(np.int64) + zp, 0, 255).astype(
        np.uint8
    )


def relu_f32(y):
    return np.where(y < 0, F32(0), y).astype(F32)


def emulate(layer, x):
    """The layer's output computed from its documented rules with NumPy."""
    wq = layer.weight_q.astype(np.int64)
    ws = np.broadcast_to(layer.weight_scale, (layer.out_features,)).astype(F32)
    relu = layer.activation == "relu"
    if layer.mode == "static":
        s, zp = F32(layer.input_scale), layer.input_zero_point
        xq = x if x.dtype == np.uint8 else quantize_u8(x.astype(F32), s, zp)
        acc = (xq.astype(np.int64) - zp) @ wq.T
        if layer.output_scale is not None:
            sw = np.float64(s) * ws.astype(np.float64)
            acc = acc.copy()
            if layer.bias is not None:
                acc += np.rint(layer.bias.astype(np.float64) / sw).astype(np.int64)
            mult = (sw / np.float64(layer.output_scale)).astype(F32)
            q = np.rint(acc.astype(F32) * mult).astype(np.int64) + layer.output_zero_point
            lo = layer.output_zero_point if relu else 0
            return np.clip(q, lo, 255).astype(np.uint8)
        y = acc.astype(F32) * (s * ws).astype(F32)
    elif layer.act_granularity == "row":
        rows = [dyn_qparams(r) for r in x.astype(F32)]
        sc = np.array([r[0] for r in rows], F32)
        zp = np.array([r[1] for r in rows], np.int64)
        xq = np.stack([quantize_u8(r, s, z) for r, (s, z) in zip(x.astype(F32), rows)])
        acc = (xq.astype(np.int64) - zp[:, None]) @ wq.T
        y = (acc.astype(F32) * ws) * sc[:, None]
    else:
        s, zp = dyn_qparams(x.astype(F32))
        xq = quantize_u8(x.astype(F32), s, zp)
        acc = (xq.astype(np.int64) - zp) @ wq.T
        y = acc.astype(F32) * (s * ws).astype(F32)
    if layer.bias is not None:
        y = y + layer.bias
    return relu_f32(y) if relu else y.astype(F32)


def make_layer(rng, n_in, n_out, bias=True, **kw):
    w = (rng.standard_normal((n_out, n_in)) * 0.1).astype(F32)
    b = rng.standard_normal(n_out).astype(F32) if bias else None
    return QuantizedLinear.from_float(w, b, **kw), w, b


# ---- weight quantization ---------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_rule(rng, per_channel):
    w = (rng.standard_normal((17, 33)) * 0.3).astype(F32)
    w[3] = 0  # a zero row
    w[5, 7] = 127 * 0.0125  # exact ties appear with the scale below
    layer = QuantizedLinear.from_float(w, None, per_channel=per_channel)
    q, s = weight_quant(w, per_channel)
    np.testing.assert_array_equal(layer.weight_q, q)
    np.testing.assert_array_equal(layer.weight_scale, s)
    assert layer.weight_q.dtype == np.int8 and layer.weight_scale.dtype == np.float32
    assert layer.weight_scale.shape == ((17,) if per_channel else (1,))
    assert np.abs(layer.weight_q).max() == 127 and layer.weight_q.min() >= -127
    assert (layer.in_features, layer.out_features) == (33, 17)


def test_weight_rounds_half_to_even():
    w = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5]], F32)  # scale 1 exactly
    layer = QuantizedLinear.from_float(w)
    np.testing.assert_array_equal(layer.weight_q[0], [127, 0, 2, 2, 0, -2])


# ---- dynamic mode -----------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["tensor", "row"])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_dynamic_matches_emulation(qsimd, rng, granularity, activation, per_channel):
    for batch, n_in, n_out in [(1, 784, 512), (7, 65, 33), (32, 100, 10), (3, 5, 70)]:
        layer, _, _ = make_layer(
            rng,
            n_in,
            n_out,
            activation=activation,
            per_channel=per_channel,
            act_granularity=granularity,
        )
        x = (rng.standard_normal((batch, n_in)) * 2 + 0.5).astype(F32)
        got = layer(x)
        assert got.dtype == np.float32 and got.shape == (batch, n_out)
        np.testing.assert_array_equal(got, emulate(layer, x))


@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_dynamic_close_to_float_layer(rng, granularity):
    layer, w, b = make_layer(rng, 256, 64, act_granularity=granularity)
    x = rng.standard_normal((16, 256)).astype(F32)
    got = layer(x).astype(np.float64)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    # |error| <= a_scale/2 sum|w| + w_scale/2 sum|x| + K a_scale w_scale / 4 (+ rounding)
    if granularity == "tensor":
        a_scale = np.full((16, 1), dyn_qparams(x)[0], np.float64)
    else:
        a_scale = np.array([dyn_qparams(r)[0] for r in x], np.float64)[:, None]
    ws = layer.weight_scale.astype(np.float64)[None, :]
    bound = (
        a_scale / 2 * np.abs(w).sum(axis=1)[None, :]
        + ws / 2 * np.abs(x).sum(axis=1)[:, None]
        + 256 * a_scale * ws / 4
    )
    err = np.abs(got - ref)
    assert (err <= bound * 1.001 + 1e-4).all()
    assert err.max() > 0  # it is quantized


def test_dynamic_input_forms(rng):
    layer, _, _ = make_layer(rng, 40, 12, activation="relu")
    x = (rng.standard_normal((6, 80)) * 3).astype(np.float64)[:, ::2]  # float64, strided
    want = emulate(layer, x.astype(F32))
    np.testing.assert_array_equal(layer(x), want)
    one = layer(x[2].astype(F32))
    assert one.shape == (12,)
    np.testing.assert_array_equal(one, emulate(layer, x[2:3].astype(F32))[0])
    assert layer(np.zeros((0, 40), F32)).shape == (0, 12)
    np.testing.assert_array_equal(
        layer(np.zeros((2, 40), F32)), emulate(layer, np.zeros((2, 40), F32))
    )


# ---- static mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [None, "relu"])
def test_static_float_and_uint8_inputs(qsimd, rng, activation):
    layer, _, _ = make_layer(rng, 96, 40, activation=activation)
    x = (rng.standard_normal((9, 96)) * 1.5).astype(F32)
    layer.set_input_qparams(0.02, 117)
    assert layer.mode == "static"
    got = layer(x)
    np.testing.assert_array_equal(got, emulate(layer, x))
    xq = quantize_u8(x, F32(0.02), 117)
    np.testing.assert_array_equal(layer(xq), got)  # uint8 input used as is


@pytest.mark.parametrize("activation", [None, "relu"])
def test_static_requantized_output(qsimd, rng, activation):
    layer, _, _ = make_layer(rng, 96, 40, activation=activation)
    x = (rng.standard_normal((9, 96)) * 1.5).astype(F32)
    layer.set_input_qparams(0.02, 117)
    layer.set_output_qparams(0.05, 100)
    got = layer(x)
    assert got.dtype == np.uint8
    want = emulate(layer, x)
    np.testing.assert_array_equal(got, want)
    if activation:
        assert (got == 100).any()  # the relu clamp at the output zero point


def test_requantize_bias_folding_close_to_float(rng):
    layer, _, _ = make_layer(rng, 64, 16)
    x = rng.uniform(-1, 1, (5, 64)).astype(F32)
    layer.set_input_qparams(2 / 255, 128)
    yf = layer(x).astype(np.float64)
    layer.set_output_qparams(0.02, 128)
    yq = layer(x)
    deq = (yq.astype(np.float64) - 128) * 0.02
    inside = (yf > -128 * 0.02) & (yf < 127 * 0.02)
    assert inside.mean() > 0.5
    assert np.abs(deq - yf)[inside].max() <= 0.02 / 2 + 1e-3


@pytest.mark.parametrize("scale", [0.1, 0.5, 3e-3, 1.7e-38])
def test_static_quantization_ties_follow_the_division_rule(qsimd, rng, scale):
    # x / scale at, just above and just below every half-integer in range (and at the
    # integers): the float path must round exactly like round_half_even(x / scale)
    layer = make_layer(rng, 640, 8)[0]
    s = F32(scale)
    layer.set_input_qparams(scale, 100)
    grid = np.arange(-320, 320, dtype=np.float64)
    ties = ((grid + 0.5) * np.float64(s)).astype(F32)
    x = np.stack(
        [
            ties,
            np.nextafter(ties, F32(np.inf)),
            np.nextafter(ties, F32(-np.inf)),
            (grid * np.float64(s)).astype(F32),
        ]
    )
    xq = quantize_u8(x, s, 100)
    assert (xq > 0).any() and (xq < 255).any()
    np.testing.assert_array_equal(layer(x), layer(xq))


def test_static_errors(rng):
    layer, _, _ = make_layer(rng, 8, 4)
    with pytest.raises(ValueError, match="static"):
        layer(np.zeros((2, 8), np.uint8))
    with pytest.raises(ValueError, match="set_input_qparams"):
        layer.set_output_qparams(0.1, 0)
    with pytest.raises(ValueError, match="zero_point"):
        layer.set_input_qparams(0.1, 256)
    with pytest.raises(ValueError, match="scale"):
        layer.set_input_qparams(-0.1, 3)


def test_layer_errors(qsimd, rng):
    layer, _, _ = make_layer(rng, 8, 4)
    with pytest.raises(ValueError, match="in_features"):
        layer(np.zeros((2, 9), F32))
    with pytest.raises(TypeError, match="x"):
        layer(np.zeros((2, 8), np.int32))
    with pytest.raises(ValueError, match="NaN"):
        layer(np.full((2, 8), np.nan, F32))
    wide, _, _ = make_layer(rng, 100, 3)
    for pos, bad in [(37, np.nan), (99, np.inf), (0, -np.inf), (50, np.nan)]:
        x = np.ones((2, 100), F32)
        x[1, pos] = bad  # in the vector body and in the tail
        with pytest.raises(ValueError, match="NaN"):
            wide(x)
    with pytest.raises(ValueError, match="activation"):
        QuantizedLinear.from_float(np.zeros((2, 2), F32), activation="gelu")
    with pytest.raises(ValueError, match="act_granularity"):
        QuantizedLinear.from_float(np.zeros((2, 2), F32), act_granularity="col")
    with pytest.raises(TypeError, match="weight"):
        QuantizedLinear.from_float(np.zeros((2, 2), np.int32))


# ---- levels and threads ---------------------------------------------------------------------


def test_same_output_on_every_level_and_thread_count(rng):
    # 130 * 1000 * 200 multiply-adds: enough work for 3 threads (driver: 8M per thread)
    layer, _, _ = make_layer(rng, 1000, 200, activation="relu")
    x = rng.standard_normal((130, 1000)).astype(F32)
    previous = _core.config.get_simd_level()
    outs = []
    try:
        for level in QSIMD_LEVELS:
            _core.config.set_simd_level(level)
            for t in (1, 2, 3):
                pyfastopt.set_num_threads(t)
                outs.append(layer(x))
    finally:
        _core.config.set_simd_level(previous)
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()
    np.testing.assert_array_equal(outs[0], emulate(layer, x))


# ---- QuantizedSequential ----------------------------------------------------------------------


def mlp(rng, sizes=(784, 512, 256, 10), granularity="tensor"):
    layers = []
    for i in range(len(sizes) - 1):
        act = "relu" if i + 2 < len(sizes) else None
        layers.append(
            make_layer(rng, sizes[i], sizes[i + 1], activation=act, act_granularity=granularity)[0]
        )
    return layers


@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_sequential_equals_chained_layers(qsimd, rng, granularity):
    layers = mlp(rng, granularity=granularity)
    model = QuantizedSequential(layers)
    assert len(model) == 3 and model.layers[0] is layers[0]
    for batch in (1, 2, 32, 67):
        x = rng.standard_normal((batch, 784)).astype(F32)
        want = x
        for layer in layers:
            want = layer(want)
        got = model(x)
        assert got.dtype == np.float32 and got.shape == (batch, 10)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            got, emulate(layers[2], emulate(layers[1], emulate(layers[0], x)))
        )
    assert model(np.zeros(784, F32)).shape == (10,)


def test_sequential_static_uint8_chain(qsimd, rng):
    layers = mlp(rng, sizes=(64, 48, 32, 8))
    layers[0].set_input_qparams(0.03, 128)
    layers[0].set_output_qparams(0.05, 0)
    layers[1].set_input_qparams(0.05, 0)
    layers[1].set_output_qparams(0.04, 3)
    layers[2].set_input_qparams(0.04, 3)
    model = QuantizedSequential(layers)
    x = rng.standard_normal((5, 64)).astype(F32)
    h0 = layers[0](x)
    h1 = layers[1](h0)
    assert h0.dtype == np.uint8 and h1.dtype == np.uint8
    np.testing.assert_array_equal(model(x), layers[2](h1))
    np.testing.assert_array_equal(h1, emulate(layers[1], emulate(layers[0], x)))
    # a uint8-emitting last layer is dequantized
    layers[2].set_output_qparams(0.5, 10)
    model = QuantizedSequential(layers)
    q = layers[2](h1)
    np.testing.assert_array_equal(model(x), (q.astype(F32) - F32(10)) * F32(0.5))


def test_sequential_mixed_modes(rng):
    layers = mlp(rng, sizes=(30, 20, 10))
    layers[1].set_input_qparams(0.1, 50)
    model = QuantizedSequential(layers)
    x = rng.standard_normal((4, 30)).astype(F32)
    np.testing.assert_array_equal(model(x), layers[1](layers[0](x)))


def test_sequential_errors(rng):
    a = make_layer(rng, 10, 6)[0]
    b = make_layer(rng, 7, 3)[0]
    with pytest.raises(ValueError, match="in_features"):
        QuantizedSequential([a, b])
    with pytest.raises(ValueError, match="at least one"):
        QuantizedSequential([])
    with pytest.raises(TypeError, match="QuantizedLinear"):
        QuantizedSequential([a, "x"])
    c = make_layer(rng, 6, 3)[0]
    a.set_input_qparams(0.1, 0)
    a.set_output_qparams(0.1, 0)
    with pytest.raises(ValueError, match="static"):
        QuantizedSequential([a, c])
    model = QuantizedSequential([make_layer(rng, 6, 3)[0]])
    with pytest.raises(ValueError, match="in_features"):
        model(np.zeros((1, 5), F32))
    with pytest.raises(ValueError, match="NaN"):
        model(np.array([[np.inf] * 6], F32))


def test_sequential_attributes_rebuild(rng):
    layers = mlp(rng, sizes=(20, 16, 4))
    model = QuantizedSequential(layers)
    rebuilt = []
    for layer in model.layers:
        new = QuantizedLinear(
            layer.weight_q, layer.weight_scale, layer.bias, layer.activation, layer.act_granularity
        )
        rebuilt.append(new)
    x = rng.standard_normal((3, 20)).astype(F32)
    np.testing.assert_array_equal(QuantizedSequential(rebuilt)(x), model(x))


# ---- PyTorch parity -----------------------------------------------------------------------------


def test_close_to_torch_dynamic_linear(rng):
    torch = pytest.importorskip("torch")
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynLinear
    except ImportError:
        pytest.skip("torch.ao.nn.quantized.dynamic is not available")
    w = (rng.standard_normal((32, 128)) * 0.1).astype(F32)
    b = rng.standard_normal(32).astype(F32)
    x = rng.standard_normal((8, 128)).astype(F32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its quantized tensor types
        try:
            tl = DynLinear(128, 32, dtype=torch.qint8)
            scales = torch.from_numpy((np.abs(w).max(axis=1) / 127).astype(np.float64))
            zps = torch.zeros(32, dtype=torch.long)
            qw = torch.quantize_per_channel(torch.from_numpy(w), scales, zps, 0, torch.qint8)
            tl.set_weight_bias(qw, torch.from_numpy(b))
            ref = tl(torch.from_numpy(x)).detach().numpy()
        except (RuntimeError, ValueError) as e:
            pytest.skip(f"torch dynamic quantized linear unavailable: {e}")
    got = QuantizedLinear.from_float(w, b)(x)
    flt = x @ w.T + b
    # both are within the quantization error of the float layer, and of each other
    step = np.abs(flt).max() * 0.02
    assert np.abs(got - flt).max() < step
    assert np.abs(got - ref).max() < step
