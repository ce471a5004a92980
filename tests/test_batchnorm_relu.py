"""Batch norm fused with a following ReLU: ``batch_norm_train(..., activation="relu")``,
``batch_norm_backward(..., activation="relu", y=y)`` and the fusion that ``nn.Sequential``
does for a training-mode ``BatchNorm*`` followed by ``ReLU``.

* bitwise: the fused forward is the plain forward then ``np.maximum(y, 0)``; the fused
  backward is ``dy * (y > 0)`` (the ReLU backward) then the plain backward -- every
  layout of ``test_batchnorm.LAYOUTS``, float32/float64, every SIMD level;
* the same bits for 1, 2 and 3 threads and at every SIMD level against scalar;
* values against PyTorch (``F.batch_norm(training=True)`` then ``relu``, autograd),
  float64 to 1e-10, NCHW and channels-last, odd shapes (C=1, N=1, H=W=1);
* non-contiguous inputs, argument errors naming the argument;
* nn: ``Sequential(..., BatchNorm2d, ReLU, ...)`` trains bitwise as the layers run one by
  one (NCHW and NHWC, ``ReLU(inplace=True)`` too), and does not fuse in eval mode.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES
from test_batchnorm import LAYOUT_IDS, LAYOUTS, channels, data, params, same_bits

import pyfastopt
from pyfastopt import _core, nn


def _fused(x, axis, dtype, rm=None, rv=None, seed=12):
    c = channels(x.shape, axis)
    w, b = params(c)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, rm, rv, axis=axis, activation="relu")
    dy = data(x.shape, dtype, seed=seed, loc=0.0, scale=1.0)
    dx, dw, db = pyfastopt.batch_norm_backward(
        dy, x, w, mean, invstd, axis=axis, activation="relu", y=y
    )
    return {"y": y, "mean": mean, "invstd": invstd, "dx": dx, "dw": dw, "db": db}


def _unfused(x, axis, dtype, rm=None, rv=None, seed=12):
    c = channels(x.shape, axis)
    w, b = params(c)
    z, mean, invstd = pyfastopt.batch_norm_train(x, w, b, rm, rv, axis=axis)
    y = np.maximum(z, 0)
    dy = data(x.shape, dtype, seed=seed, loc=0.0, scale=1.0)
    g = np.multiply(dy, y > 0)  # nn.ReLU's backward
    dx, dw, db = pyfastopt.batch_norm_backward(g, x, w, mean, invstd, axis=axis)
    return {"y": y, "mean": mean, "invstd": invstd, "dx": dx, "dw": dw, "db": db}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "shape", "axis"), LAYOUTS, ids=LAYOUT_IDS)
def test_fused_is_unfused_bitwise(simd, name, shape, axis, dtype):
    x = data(shape, dtype, seed=3)
    c = channels(shape, axis)
    rm1, rv1 = np.zeros(c, dtype), np.ones(c, dtype)
    rm2, rv2 = rm1.copy(), rv1.copy()
    got = _fused(x, axis, dtype, rm1, rv1)
    want = _unfused(x, axis, dtype, rm2, rv2)
    assert (got["y"] == 0).any() and (got["y"] > 0).any(), "the test needs both signs"
    for key in got:
        same_bits(got[key], want[key], f"{key} ({name}, {simd})")
    same_bits(rm1, rm2, "running_mean")
    same_bits(rv1, rv2, "running_var")


BIG = [
    ((8, 32, 16, 16), 1),  # fused channel blocks
    ((16, 16, 16, 32), -1),  # channels-last columns
    ((64, 8, 40, 40), 1),  # runs, reduction tasks
    ((3, 7, 70001), 1),  # split runs
    ((2048, 24), -1),
]


@pytest.mark.parametrize(("shape", "axis"), BIG, ids=[f"{s}-axis{a}" for s, a in BIG])
def test_bitwise_identical_for_1_2_3_threads(shape, axis):
    x = data(shape, np.float32, seed=5)
    with pyfastopt.threads(1):
        one = _fused(x, axis, np.float32)
    for n in (2, 3):
        with pyfastopt.threads(n):
            other = _fused(x, axis, np.float32)
        for key in one:
            same_bits(other[key], one[key], f"{key} with {n} threads vs 1")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [*BIG[:2], ((3, 4, 5, 7), 1), ((4, 5, 3), -1)])
def test_same_bits_on_every_simd_level(simd, shape, axis, dtype):
    x = data(shape, dtype, seed=7)
    got = _fused(x, axis, dtype)
    _core.config.set_simd_level("scalar")  # the fixture restores the level
    want = _fused(x, axis, dtype)
    for key in got:
        same_bits(got[key], want[key], f"{key} at {simd} vs scalar")


def _torch_reference(torch, x, w, b, g, axis):
    """relu(F.batch_norm(training=True)) and its autograd gradients, float64."""
    F = torch.nn.functional
    t = torch.from_numpy(x.copy())
    if axis == -1 and x.ndim > 2:
        t = t.movedim(-1, 1)
    xt = t.requires_grad_(True)
    wt = torch.from_numpy(w.copy()).requires_grad_(True)
    bt = torch.from_numpy(b.copy()).requires_grad_(True)
    rm = torch.zeros(w.shape, dtype=torch.float64)
    rv = torch.ones(w.shape, dtype=torch.float64)
    yt = F.relu(F.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=0.1, eps=1e-5))
    gt = torch.from_numpy(g.copy())
    if axis == -1 and x.ndim > 2:
        gt = gt.movedim(-1, 1)
    yt.backward(gt)

    def back(a):
        if axis == -1 and x.ndim > 2:
            a = a.movedim(1, -1)
        return a.detach().numpy()

    return back(yt), back(xt.grad), wt.grad.numpy(), bt.grad.numpy(), rm.numpy(), rv.numpy()


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((4, 6, 5, 7), 1),
        ((4, 5, 7, 6), -1),
        ((3, 20, 16, 16), 1),
        ((5, 1, 4, 4), 1),  # C = 1
        ((4, 4, 4, 1), -1),  # C = 1 channels-last
        ((1, 3, 5, 5), 1),  # N = 1
        ((1, 5, 5, 3), -1),
        ((9, 4, 1, 1), 1),  # H = W = 1
        ((9, 1, 1, 4), -1),
        ((7, 3), 1),
    ],
)
def test_matches_torch_float64(shape, axis):
    torch = pytest.importorskip("torch")
    c = channels(shape, axis)
    w, b = params(c, seed=4)
    x = data(shape, np.float64, seed=8)
    g = data(shape, np.float64, seed=9, loc=0.0, scale=1.0)
    rm, rv = np.zeros(c), np.ones(c)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, rm, rv, axis=axis, activation="relu")
    dx, dw, db = pyfastopt.batch_norm_backward(
        g, x, w, mean, invstd, axis=axis, activation="relu", y=y
    )
    y_t, dx_t, dw_t, db_t, rm_t, rv_t = _torch_reference(torch, x, w, b, g, axis)
    for what, got, want in [
        ("y", y, y_t),
        ("dx", dx, dx_t),
        ("dweight", dw, dw_t),
        ("dbias", db, db_t),
        ("running_mean", rm, rm_t),
        ("running_var", rv, rv_t),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=what)


def test_non_contiguous_inputs():
    base = data((4, 6, 10, 8), np.float32, seed=2)
    x = base[:, :, ::2, :]  # (4, 6, 5, 8), non-contiguous
    dyb = data((4, 6, 5, 16), np.float32, seed=3)
    dy = dyb[..., ::2]
    w, b = params(6)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, activation="relu")
    y_ref = np.maximum(pyfastopt.batch_norm_train(np.ascontiguousarray(x), w, b)[0], 0)
    same_bits(y, y_ref, "y from a strided x")
    ybig = np.zeros((4, 6, 5, 16), np.float32)
    ybig[..., ::2] = y
    y_strided = ybig[..., ::2]
    got = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, activation="relu", y=y_strided)
    want = pyfastopt.batch_norm_backward(
        np.ascontiguousarray(dy), np.ascontiguousarray(x), w, mean, invstd, activation="relu", y=y
    )
    for a, e, what in zip(got, want, ("dx", "dweight", "dbias")):
        same_bits(a, e, what + " from strided dy, x, y")


def test_out_arguments_and_aliasing():
    x = data((3, 5, 7, 6), np.float64, seed=1)
    w, b = params(6)
    out = np.empty_like(x)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, axis=-1, out=out, activation="relu")
    assert y is out
    dy = data(x.shape, np.float64, seed=2)
    want = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, -1, activation="relu", y=y)
    # dx written over dy (element-wise aliasing allowed), and over y itself
    dy2 = dy.copy()
    got = pyfastopt.batch_norm_backward(
        dy2, x, w, mean, invstd, -1, out=dy2, activation="relu", y=y
    )
    same_bits(got[0], want[0], "dx into dy")
    y2 = y.copy()
    got = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, -1, out=y2, activation="relu", y=y2)
    same_bits(got[0], want[0], "dx into y")
    # in place forward (out = x)
    x2 = x.copy()
    pyfastopt.batch_norm_train(x2, w, b, axis=-1, out=x2, activation="relu")
    same_bits(x2, y, "y in place")


def test_argument_errors():
    x = data((4, 3, 5, 5), np.float32)
    w, b = params(3)
    with pytest.raises(ValueError, match="activation"):
        pyfastopt.batch_norm_train(x, w, b, activation="gelu")
    with pytest.raises(ValueError, match="activation"):
        pyfastopt.batch_norm_train(x, w, b, activation=1)
    y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, activation="relu")
    with pytest.raises(ValueError, match="activation"):
        pyfastopt.batch_norm_backward(x, x, w, mean, invstd, activation="tanh", y=y)
    with pytest.raises(ValueError, match="y"):
        pyfastopt.batch_norm_backward(x, x, w, mean, invstd, activation="relu")
    with pytest.raises(ValueError, match="y is only used"):
        pyfastopt.batch_norm_backward(x, x, w, mean, invstd, y=y)
    with pytest.raises(ValueError, match=r"y.*\(4, 3, 5, 4\)"):
        pyfastopt.batch_norm_backward(x, x, w, mean, invstd, activation="relu", y=y[..., :4])
    with pytest.raises(TypeError, match="y"):
        pyfastopt.batch_norm_backward(
            x, x, w, mean, invstd, activation="relu", y=y.astype(np.float64)
        )
    with pytest.raises(TypeError, match="y"):
        pyfastopt.batch_norm_backward(x, x, w, mean, invstd, activation="relu", y="no")
    with pytest.raises(ValueError, match="more than 1 value"):
        pyfastopt.batch_norm_train(x[:1, :, :1, :1], None, None, activation="relu")


def test_nan_and_empty():
    x = data((4, 3, 5, 5), np.float64)
    x[1, 1, 2, 2] = np.nan
    y, _, _ = pyfastopt.batch_norm_train(x, None, None, activation="relu")
    assert np.isnan(y[:, 1]).all() and not np.isnan(y[:, [0, 2]]).any()
    e = np.empty((0, 3, 5, 5))
    y, mean, invstd = pyfastopt.batch_norm_train(e, None, None, activation="relu")
    dx, dw, db = pyfastopt.batch_norm_backward(e, e, None, mean, invstd, activation="relu", y=y)
    assert y.shape == dx.shape == e.shape and not dw.any() and not db.any()


# ----------------------------------------------------------------------------- nn


def _model(layout, dtype, inplace, seed=0):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, layout=layout, dtype=dtype, seed=seed),
        nn.BatchNorm2d(8, layout=layout, dtype=dtype),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2, layout=layout),
        nn.Conv2d(8, 4, 3, padding=1, layout=layout, dtype=dtype, seed=seed + 1),
        nn.BatchNorm2d(4, layout=layout, dtype=dtype),
        nn.ReLU(inplace=inplace),
        nn.Flatten(layout=layout),
        nn.Linear(4 * 4 * 4, 3, dtype=dtype, seed=seed + 2),
    )


def _step_one_by_one(model, x, dy):
    out = x
    for layer in model.layers:
        out = layer.forward(out)
    g = dy
    for layer in reversed(model.layers):
        g = layer.backward(g)
    return out, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_sequential_fuses_bitwise(layout, inplace, dtype):
    shape = (5, 8, 8, 3) if layout == "NHWC" else (5, 3, 8, 8)
    x = data(shape, dtype, seed=21)
    dy = data((5, 3), dtype, seed=22)
    fused, plain = _model(layout, dtype, inplace), _model(layout, dtype, inplace)
    for step in range(2):
        out_f = fused.forward(x + step)
        assert fused.layers[2]._fused and fused.layers[6]._fused
        dx_f = fused.backward(dy)
        out_p, dx_p = _step_one_by_one(plain, x + step, dy)
        assert not plain.layers[2]._fused
        same_bits(out_f, out_p, f"output, step {step}")
        same_bits(dx_f, dx_p, f"dx, step {step}")
        named = fused.named_parameters()
        for (name, _), g_f, g_p in zip(named, fused.gradients(), plain.gradients()):
            same_bits(g_f, g_p, f"gradient {name}, step {step}")
        for key, v in fused.state_dict().items():
            same_bits(np.atleast_1d(v), np.atleast_1d(plain.state_dict()[key]), f"state {key}")


def test_sequential_eval_mode_is_not_fused():
    model = _model("NCHW", np.float32, False)
    x = data((2, 3, 8, 8), np.float32, seed=1)
    model.forward(x)
    model.eval()
    y = model.forward(x)
    assert not model.layers[2]._fused
    plain = x
    for layer in model.layers:
        plain = layer.forward(plain)
    same_bits(y, plain, "eval output")
    # a batch norm in eval mode inside a training model: not fused either
    model.train()
    model.layers[1].eval()
    model.forward(x)
    assert not model.layers[2]._fused and model.layers[6]._fused


def test_sequential_matches_torch_float64():
    torch = pytest.importorskip("torch")
    model = nn.Sequential(
        nn.BatchNorm2d(3, dtype=np.float64),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(48, 2, dtype=np.float64),
    )
    tmodel = torch.nn.Sequential(
        torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(48, 2)
    ).double()
    tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    x = data((6, 3, 4, 4), np.float64, seed=3)
    dy = data((6, 2), np.float64, seed=4)
    y = model.forward(x)
    dx = model.backward(dy)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = tmodel(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    for g, (tname, tp) in zip(model.gradients(), tmodel.named_parameters()):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-10, atol=1e-10, err_msg=tname)


def test_deepcopy_and_pickle_of_a_fused_model():
    import copy
    import pickle

    model = _model("NHWC", np.float32, True)
    x = data((3, 8, 8, 3), np.float32, seed=5)
    dy = data((3, 3), np.float32, seed=6)
    model.forward(x)
    model.backward(dy)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with pytest.raises(RuntimeError, match="before forward"):
            clone.layers[2].backward(dy)  # a copy starts with a forward
        same_bits(clone.forward(x + 1), model.forward(x + 1), "output of the copy")
        same_bits(clone.backward(dy), model.backward(dy), "dx of the copy")
    relu = nn.ReLU()
    del relu.__dict__["_fused"]  # as unpickled from before the fusion existed
    relu.forward(x)
    assert relu.backward(dy=np.ones_like(x)).shape == x.shape
