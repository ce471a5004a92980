"""pyfastopt.gelu (both forms), linear's "gelu_tanh" epilogue and nn.GELU: against an
extended-precision reference and torch.nn.functional.gelu within derived bounds, the same
bits on every SIMD level, thread count and path (standalone == epilogue)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core, nn

EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}


def reference(x, approximate):
    """GELU of the float values x in numpy.longdouble (x86: 64-bit mantissa), rounded
    to float64. tanh form as x * sigmoid(2u): no cancellation anywhere."""
    xl = x.astype(np.longdouble)
    if approximate == "tanh":
        c0 = np.longdouble(math.sqrt(2.0 / math.pi))
        u = c0 * (xl + np.longdouble(0.044715) * xl**3)
        with np.errstate(over="ignore"):
            e = np.exp(-2 * np.abs(u))
        y = xl * np.where(xl >= 0, 1, e) / (1 + e)
    else:
        from math import erfc

        y = np.array([0.5 * float(v) * erfc(-float(v) / math.sqrt(2.0)) for v in x.ravel()])
        y = y.reshape(x.shape)
    return np.asarray(y, dtype=np.float64)


def points(dtype):
    rng = np.random.default_rng(1)
    xs = [
        np.linspace(-12, 12, 4801),
        rng.normal(0, 3, 5000),
        np.geomspace(1e-30, 1e3, 400),
        -np.geomspace(1e-30, 1e3, 400),
        [0.0, -0.0, 1e-45, -1e-45, 5.0, -5.0, 9.5, -9.5, 10.5, -10.5, 30.0, -30.0],
        [1e12, -1e12, 1e15, -1e15, 3e38, -3e38],
    ]
    x = np.concatenate([np.asarray(v, np.float64) for v in xs])
    with np.errstate(over="ignore"):
        return x.astype(dtype)


# Error bounds relative to |x| (y = x * s(x), 0 <= s <= 1, so an error in s of d is an
# error d |x| in y):
#   float64: u has 4 roundings (4 eps relative), exp is within 1 ulp, the division and
#     the product 1 ulp: |ours - exact| <= (4 * max(2|u| e^{-2|u|}) + 3) eps |x|
#     <= (4 * 0.37 + 3) eps |x| < 5 eps |x|; erf form: erfc within 1 ulp, 3 roundings.
#   float32 tanh form: the same structure with Cephes' exp polynomial (2 ulp): 8 eps32.
#   float32 erf form: the kernel's documented 2e-7 |x|.
# torch: its own error (tanh form: 1 + tanh(u) loses one tanh ulp absolute, so
# ~4 eps |x|; erf form a few ulp), so ours vs torch is within the sum.
OURS = {
    (np.float64, "none"): 5 * EPS[np.float64],
    (np.float64, "tanh"): 5 * EPS[np.float64],
    (np.float32, "none"): 2e-7,
    (np.float32, "tanh"): 8 * EPS[np.float32],
}
TORCH = {
    (np.float64, "none"): 10 * EPS[np.float64],
    (np.float64, "tanh"): 10 * EPS[np.float64],
    (np.float32, "none"): 2e-7 + 6 * EPS[np.float32],
    (np.float32, "tanh"): 16 * EPS[np.float32],
}


def finite(x):
    return np.isfinite(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_against_extended_precision(simd, dtype, approximate):
    x = points(dtype)
    y = pyfastopt.gelu(x, approximate)
    assert y.dtype == dtype and y.shape == x.shape
    ok = finite(x)
    ref = reference(x[ok], approximate)
    err = np.abs(y[ok].astype(np.float64) - ref)
    bound = OURS[(dtype, approximate)] * np.abs(x[ok].astype(np.float64))
    # below float's smallest normal the result is allowed to flush (tiny |x| * Phi)
    bound += float(np.finfo(dtype).tiny)
    worst = np.argmax(err - bound)
    assert np.all(err <= bound), (x[ok][worst], y[ok][worst], ref[worst])
    # the float64 form is within 1e-12 relative to |x| of the formula, with room to spare
    if dtype == np.float64:
        assert np.all(err <= 1e-14 * np.abs(x[ok]) + 1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_against_torch(dtype, approximate):
    torch = pytest.importorskip("torch")
    x = points(dtype)
    x = x[finite(x)]
    want = torch.nn.functional.gelu(torch.from_numpy(x), approximate=approximate).numpy()
    got = pyfastopt.gelu(x, approximate=approximate)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = TORCH[(dtype, approximate)] * np.abs(x.astype(np.float64)) + float(np.finfo(dtype).tiny)
    worst = np.argmax(err - bound)
    assert np.all(err <= bound), (x[worst], got[worst], want[worst])


def test_special_values(simd):
    for dtype in (np.float32, np.float64):
        x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38], dtype)
        for approximate in ("none", "tanh"):
            y = pyfastopt.gelu(x, approximate)
            assert np.isnan(y[0])
            assert y[1] == np.inf
            assert y[2] == 0 or np.isnan(y[2])  # -inf * 0 (torch: nan for the erf form)
            assert y[3] == 0 and y[4] == 0
            assert y[5] == x[5]
            assert abs(float(y[6])) < 1e-30


def test_every_level_same_bits():
    x = points(np.float32)
    x64 = points(np.float64)
    prev = _core.config.get_simd_level()
    outs = []
    try:
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            outs.append(
                [pyfastopt.gelu(v, a) for v in (x, x64) for a in ("none", "tanh")]
                + [
                    pyfastopt.linear(
                        x[:1000].reshape(-1, 8), np.eye(8, dtype=np.float32), None, "gelu_tanh"
                    )
                ]
            )
    finally:
        _core.config.set_simd_level(prev)
    for o in outs[1:]:
        for got, want in zip(o, outs[0]):
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_threads_same_bits():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 4, 300_001).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        pyfastopt.set_num_threads(n)
        outs.append(pyfastopt.gelu(x, "tanh"))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("approximate", "act"), [("none", "gelu"), ("tanh", "gelu_tanh")])
def test_standalone_equals_the_linear_epilogue(simd, dtype, approximate, act):
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (37, 50)).astype(dtype)
    w = rng.normal(0, 0.3, (29, 50)).astype(dtype)
    b = rng.normal(0, 1, 29).astype(dtype)
    z = pyfastopt.linear(x, w, b)
    for xx in (x, x[:1], x[:3]):  # packed, dot and direct paths
        zz = pyfastopt.linear(xx, w, b)
        np.testing.assert_array_equal(
            pyfastopt.linear(xx, w, b, act), pyfastopt.gelu(zz, approximate)
        )
    del z


def test_out_and_in_place_and_strides():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (40, 30))
    want = pyfastopt.gelu(x, "tanh")
    out = np.empty_like(x)
    assert pyfastopt.gelu(x, "tanh", out=out) is out
    np.testing.assert_array_equal(out, want)
    y = x.copy()
    pyfastopt.gelu(y, "tanh", out=y)  # in place
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(pyfastopt.gelu(x.T, "tanh"), want.T)  # strided input
    np.testing.assert_array_equal(pyfastopt.gelu(x[:, ::-2]), pyfastopt.gelu(x)[:, ::-2])
    # out overlapping x (shifted): x is read through a copy
    z = x.ravel().copy()
    pyfastopt.gelu(z[:-1], out=z[1:])
    np.testing.assert_array_equal(z[1:], pyfastopt.gelu(x.ravel()[:-1]))
    assert pyfastopt.gelu(np.zeros((0, 3), np.float32)).shape == (0, 3)
    assert pyfastopt.gelu(np.float64(1.0)).shape == ()


def test_errors():
    with pytest.raises(ValueError, match="approximate"):
        pyfastopt.gelu(np.ones(3), "erf")
    with pytest.raises(TypeError, match="approximate"):
        pyfastopt.gelu(np.ones(3), None)
    with pytest.raises(TypeError, match="x"):
        pyfastopt.gelu(np.ones(3, np.int32))
    with pytest.raises(ValueError, match="out"):
        pyfastopt.gelu(np.ones(3), out=np.empty(4))
    with pytest.raises(TypeError, match="out"):
        pyfastopt.gelu(np.ones(3), out=np.empty(3, np.float32))
    with pytest.raises(ValueError, match="gelu_tanh"):
        pyfastopt.linear(np.ones((2, 3)), np.ones((4, 3)), None, "tanh")


# ---- nn --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_gelu_tanh_layer_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    layer = nn.Linear(10, 6, activation="gelu_tanh", dtype=dtype, seed=0)
    x = rng.normal(0, 2, (5, 10)).astype(dtype)
    dy = rng.normal(0, 1, (5, 6)).astype(dtype)
    y = layer(x)
    dx = layer.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.weight, requires_grad=True)
    tb = torch.tensor(layer.bias, requires_grad=True)
    ty = torch.nn.functional.gelu(torch.nn.functional.linear(tx, tw, tb), approximate="tanh")
    ty.backward(torch.from_numpy(dy))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(layer.grad_weight, tw.grad.numpy(), rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(layer.grad_bias, tb.grad.numpy(), rtol=tol * 10, atol=tol * 10)
    # Linear + GELU(tanh) layer == the fused layer, bit for bit
    plain = nn.Linear.from_weights(layer.weight, layer.bias)
    np.testing.assert_array_equal(nn.GELU("tanh")(plain(x)), y)


def test_gelu_layer_uses_the_kernel():
    rng = np.random.default_rng(9)
    x = rng.normal(0, 3, (4, 7)).astype(np.float32)
    for approximate in ("none", "tanh"):
        np.testing.assert_array_equal(nn.GELU(approximate)(x), pyfastopt.gelu(x, approximate))


# ---- ONNX: Gelu(approximate="tanh") after Gemm/MatMul fuses into Linear's epilogue ---------


def test_onnx_round_trip_gelu_tanh(tmp_path):
    pytest.importorskip("onnx")
    from pyfastopt import onnx as pf_onnx

    model = nn.Sequential(nn.Linear(6, 9, activation="gelu_tanh", seed=1), nn.Linear(9, 3, seed=2))
    model.eval()
    path = tmp_path / "m.onnx"
    pf_onnx.save(model, path, opset=20)
    back = pf_onnx.load(path)
    layers = list(back)
    assert layers[0].activation == "gelu_tanh"
    x = np.random.default_rng(0).normal(0, 2, (5, 6)).astype(np.float32)
    np.testing.assert_array_equal(back(x), model(x))
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_allclose(model(x), ref, rtol=1e-5, atol=1e-6)


def test_torch_export_of_tanh_gelu_fuses(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from pyfastopt import onnx as pf_onnx

    torch.manual_seed(0)
    tm = torch.nn.Sequential(
        torch.nn.Linear(6, 9), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(9, 3)
    )
    tm.eval()
    path = tmp_path / "t.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tm,
            (torch.zeros(2, 6),),
            str(path),
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    back = pf_onnx.load(path)
    assert [getattr(m, "activation", None) for m in back][:1] == ["gelu_tanh"]
    x = np.random.default_rng(1).normal(0, 2, (5, 6)).astype(np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(back(x), want, rtol=1e-5, atol=1e-5)
