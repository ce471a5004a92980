"""nn.Conv2d, pooling layers, Flatten / BatchNorm2d in channels-last, Residual: parity
with torch.nn (forward, gradients, state_dict keys) in both layouts, and a small CNN
(conv-BN-ReLU-pool x 2 + linear) training a few SGD steps exactly as torch does."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import nn, optim

torch = pytest.importorskip("torch")
F = torch.nn.functional


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _conv_pair(layout, activation, **kw):
    m = nn.Conv2d(4, 6, 3, dtype=np.float64, seed=0, layout=layout, activation=activation, **kw)
    pad = kw.get("padding", 0)
    tkw = {k: v for k, v in kw.items() if k != "padding"}
    t = torch.nn.Conv2d(4, 6, 3, padding=pad, dtype=torch.float64, **tkw)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    return m, t


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize(
    "kw", [{}, {"stride": 2, "padding": 1}, {"groups": 2, "padding": "same", "dilation": 2}]
)
def test_conv2d_layer_matches_torch(rng, layout, activation, kw):
    m, t = _conv_pair(layout, activation, **kw)
    assert list(m.state_dict()) == list(t.state_dict()) == ["weight", "bias"]
    x = rng.standard_normal((2, 4, 9, 8))
    xt = torch.from_numpy(x).requires_grad_()
    yt = t(xt)
    yt = {None: lambda v: v, "relu": F.relu, "gelu": F.gelu}[activation](yt)
    nhwc = layout == "NHWC"
    y = m(to_nhwc(x) if nhwc else x)
    y = to_nchw(y) if nhwc else y
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(dy))
    dx = m.backward(to_nhwc(dy) if nhwc else dy)
    dx = to_nchw(dx) if nhwc else dx
    tol = 1e-7 if activation == "gelu" else 1e-11  # gelu' from Phi = y / z
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(m.grad_weight, t.weight.grad.numpy(), rtol=0, atol=tol * 10)
    np.testing.assert_allclose(m.grad_bias, t.bias.grad.numpy(), rtol=0, atol=tol * 10)


def test_conv2d_layer_validation():
    with pytest.raises(ValueError, match=r"in_channels \(5\) must be divisible by groups \(2\)"):
        nn.Conv2d(5, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"out_channels \(5\) must be divisible by groups \(2\)"):
        nn.Conv2d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(4, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(4, 4, 3, padding=-1)
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv2d(4, 4, "3")
    m = nn.Conv2d(4, 4, 3)
    with pytest.raises(TypeError, match="float64"):
        m(np.zeros((1, 4, 5, 5)))
    with pytest.raises(ValueError, match="weight with shape"):
        m(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Conv2d(4, 4, 3).backward(np.zeros((1, 4, 3, 3), np.float32))


def test_conv2d_init_matches_torch_bounds():
    m = nn.Conv2d(8, 16, (3, 5), groups=2, seed=1)
    bound = 1 / np.sqrt(8 // 2 * 3 * 5)
    assert m.weight.shape == (16, 4, 3, 5) and m.weight.dtype == np.float32
    assert np.abs(m.weight).max() <= bound and np.abs(m.weight).max() > 0.9 * bound
    assert np.abs(m.bias).max() <= bound


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pool_layers_match_torch(rng, layout):
    x = rng.standard_normal((2, 3, 9, 10))
    pairs = [
        (nn.MaxPool2d(3, 2, 1, layout=layout), torch.nn.MaxPool2d(3, 2, 1)),
        (nn.MaxPool2d(2, ceil_mode=True, layout=layout), torch.nn.MaxPool2d(2, ceil_mode=True)),
        (
            nn.AvgPool2d(3, 2, 1, count_include_pad=False, layout=layout),
            torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        ),
        (nn.AdaptiveAvgPool2d((2, 3), layout=layout), torch.nn.AdaptiveAvgPool2d((2, 3))),
        (nn.AdaptiveAvgPool2d(1, layout=layout), torch.nn.AdaptiveAvgPool2d(1)),
    ]
    nhwc = layout == "NHWC"
    for m, t in pairs:
        xt = torch.from_numpy(x).requires_grad_()
        yt = t(xt)
        y = m(to_nhwc(x) if nhwc else x)
        y = to_nchw(y) if nhwc else y
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=1e-14)
        dy = rng.standard_normal(y.shape)
        yt.backward(torch.from_numpy(dy))
        dx = m.backward(to_nhwc(dy) if nhwc else dy)
        np.testing.assert_allclose(to_nchw(dx) if nhwc else dx, xt.grad.numpy(), atol=1e-14)
        assert m.parameters() == [] and m.state_dict() == {}


def test_pool_layer_validation():
    with pytest.raises(ValueError, match="at most half"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="output_size"):
        nn.AdaptiveAvgPool2d(0)
    with pytest.raises(ValueError, match="layout"):
        nn.AvgPool2d(2, layout="HWC")


def test_flatten_nhwc_is_torch_order(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    f = nn.Flatten(layout="NHWC")
    y = f(to_nhwc(x))
    np.testing.assert_array_equal(y, x.reshape(2, -1))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(f.backward(dy), to_nhwc(dy.reshape(x.shape)))


def test_batchnorm2d_channels_last_matches_nchw(rng):
    x = rng.standard_normal((4, 3, 5, 6)) * 2 + 1
    a = nn.BatchNorm2d(3, dtype=np.float64)
    b = nn.BatchNorm2d(3, dtype=np.float64, layout="NHWC")
    assert list(a.state_dict()) == list(b.state_dict())
    ya = a(x)
    yb = b(to_nhwc(x))
    np.testing.assert_allclose(to_nchw(yb), ya, rtol=0, atol=1e-13)
    dy = rng.standard_normal(x.shape)
    np.testing.assert_allclose(to_nchw(b.backward(to_nhwc(dy))), a.backward(dy), atol=1e-13)
    np.testing.assert_allclose(b.grad_weight, a.grad_weight, atol=1e-12)
    np.testing.assert_allclose(b.running_var, a.running_var, atol=1e-14)
    a.eval()
    b.eval()
    np.testing.assert_allclose(to_nchw(b(to_nhwc(x))), a(x), atol=1e-13)
    np.testing.assert_allclose(to_nchw(b.backward(to_nhwc(dy))), a.backward(dy), atol=1e-13)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        b(x)


def test_residual(rng):
    body = [nn.Conv2d(3, 3, 3, padding=1, dtype=np.float64, seed=2), nn.ReLU()]
    r = nn.Residual(*body)
    x = rng.standard_normal((2, 3, 6, 6))
    conv = torch.nn.Conv2d(3, 3, 3, padding=1, dtype=torch.float64)
    conv.load_state_dict({k: torch.from_numpy(v) for k, v in body[0].state_dict().items()})
    xt = torch.from_numpy(x).requires_grad_()
    yt = F.relu(conv(xt)) + xt
    np.testing.assert_allclose(r(x), yt.detach().numpy(), atol=1e-13)
    dy = rng.standard_normal(x.shape)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(r.backward(dy), xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(body[0].grad_weight, conv.weight.grad.numpy(), atol=1e-12)
    assert list(r.state_dict()) == ["0.weight", "0.bias"]
    bad = nn.Residual(nn.Conv2d(3, 4, 1, dtype=np.float64))
    with pytest.raises(ValueError, match="Residual"):
        bad(x)


def _cnn(layout, seed=0):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, dtype=np.float64, seed=seed, layout=layout),
        nn.BatchNorm2d(8, dtype=np.float64, layout=layout),
        nn.ReLU(),
        nn.MaxPool2d(2, layout=layout),
        nn.Residual(
            nn.Conv2d(8, 8, 3, padding=1, dtype=np.float64, seed=seed + 1, layout=layout),
            nn.BatchNorm2d(8, dtype=np.float64, layout=layout),
        ),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, groups=4, dtype=np.float64, seed=seed + 2, layout=layout),
        nn.BatchNorm2d(12, dtype=np.float64, layout=layout),
        nn.ReLU(),
        nn.AvgPool2d(2, layout=layout),
        nn.Flatten(layout=layout),
        nn.Linear(12 * 2 * 2, 5, dtype=np.float64, seed=seed + 3),
    )


class _TorchResidual(torch.nn.Sequential):
    def forward(self, x):
        return super().forward(x) + x


def _torch_cnn():
    T = torch.nn
    d = torch.float64
    return T.Sequential(
        T.Conv2d(3, 8, 3, padding=1, dtype=d),
        T.BatchNorm2d(8, dtype=d),
        T.ReLU(),
        T.MaxPool2d(2),
        _TorchResidual(T.Conv2d(8, 8, 3, padding=1, dtype=d), T.BatchNorm2d(8, dtype=d)),
        T.ReLU(),
        T.Conv2d(8, 12, 3, padding=1, groups=4, dtype=d),
        T.BatchNorm2d(12, dtype=d),
        T.ReLU(),
        T.AvgPool2d(2),
        T.Flatten(),
        T.Linear(48, 5, dtype=d),
    )


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_small_cnn_training_matches_torch(rng, layout):
    model = _cnn(layout)
    tm = _torch_cnn()
    assert list(model.state_dict()) == list(tm.state_dict())
    tm.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()})
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9)
    nhwc = layout == "NHWC"
    for _ in range(4):
        x = rng.standard_normal((6, 3, 8, 8))
        labels = rng.integers(0, 5, 6)
        loss, dlogits = nn.cross_entropy(model(to_nhwc(x) if nhwc else x), labels)
        model.backward(dlogits, need_dx=False)
        opt.step(model.gradients())
        topt.zero_grad()
        lt = F.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(labels))
        lt.backward()
        topt.step()
        assert loss == pytest.approx(lt.item(), rel=1e-10)
    for k, v in tm.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-9, atol=1e-11)
    model.eval()
    tm.eval()
    x = rng.standard_normal((3, 3, 8, 8))
    y = model(to_nhwc(x) if nhwc else x)
    np.testing.assert_allclose(y, tm(torch.from_numpy(x)).detach().numpy(), atol=1e-10)


def test_cnn_float32_layouts_agree_bitwise(rng):
    """The conv kernels give the same bits in both layouts; BatchNorm and pooling are
    compared to a tolerance (different reduction shapes)."""
    a = nn.Conv2d(3, 8, 3, padding=1, seed=3)
    b = nn.Conv2d(3, 8, 3, padding=1, seed=3, layout="NHWC")
    x = rng.standard_normal((4, 3, 10, 10)).astype(np.float32)
    assert np.array_equal(to_nchw(b(to_nhwc(x))), a(x))
    dy = rng.standard_normal((4, 8, 10, 10)).astype(np.float32)
    assert np.array_equal(to_nchw(b.backward(to_nhwc(dy))), a.backward(dy))
    assert np.array_equal(b.grad_weight, a.grad_weight)


def test_cnn_steps_reuse_buffers_and_allocate_little(rng):
    import tracemalloc

    model = _cnn("NHWC")
    opt = optim.SGD(model.parameters(), lr=0.01)
    x = rng.standard_normal((64, 8, 8, 3))
    labels = rng.integers(0, 5, 64)

    def step():
        _, d = nn.cross_entropy(model(x), labels)
        model.backward(d, need_dx=False)
        opt.step(model.gradients())

    step()
    step()
    assert model[0](x) is model[0](x) and model[3](model[2]._y) is model[3](model[2]._y)
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # one activation is 64 x 8 x 8 x 8 x 8 B = 256 KiB; NumPy's ufunc buffer (ReLU's
    # dy * mask casts the bool mask in chunks of 8192 elements) is 64 KiB
    assert peak < 100 * 1024, peak


def test_cnn_eval_forward_from_threads_and_deepcopy(rng):
    import copy
    import pickle
    import threading

    model = _cnn("NCHW")
    model.eval()
    xs = [rng.standard_normal((4, 3, 8, 8)) for _ in range(3)]
    want = [model(x).copy() for x in xs]
    got: list = [None] * 3

    def work(i):
        for _ in range(5):
            y = model(xs[i])
            got[i] = y.copy()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert np.array_equal(clone(xs[0]), want[0])
