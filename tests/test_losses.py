"""pyfastopt.nn losses: NumPy float64 references, finite differences, torch parity,
numerical stability, input validation, no aliasing."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt import nn


def _log_softmax_ref(z):
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _ce_ref(z, labels):
    return -_log_softmax_ref(z)[np.arange(len(labels)), labels].mean()


def _distill_ref(s, t, labels, temp, alpha):
    ls, lt = _log_softmax_ref(s / temp), _log_softmax_ref(t / temp)
    kl = (np.exp(lt) * (lt - ls)).sum() / len(s)
    return alpha * temp**2 * kl + (1 - alpha) * _ce_ref(s, labels)


def _fd(f, z, h=1e-6):
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        old = z[idx]
        z[idx] = old + h
        fp = f(z)
        z[idx] = old - h
        fm = f(z)
        z[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g


# ----------------------------------------------------------------------------- cross entropy


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 3), (32, 10)])
def test_cross_entropy_matches_reference_and_fd(shape, rng):
    z = rng.standard_normal(shape) * 3
    labels = rng.integers(0, shape[1], shape[0])
    loss, d = nn.cross_entropy(z, labels)
    assert isinstance(loss, float)
    assert loss == pytest.approx(_ce_ref(z, labels), rel=1e-13, abs=1e-15)
    np.testing.assert_allclose(d, _fd(lambda v: _ce_ref(v, labels), z), rtol=1e-6, atol=1e-9)
    assert d.shape == z.shape and d.dtype == np.float64


def test_cross_entropy_float32_and_stability(rng):
    z = (rng.standard_normal((6, 4)) * 1e4).astype(np.float32)  # exp would overflow
    labels = np.array([0, 1, 2, 3, 0, 1])
    loss, d = nn.cross_entropy(z, labels)
    assert np.isfinite(loss) and np.isfinite(d).all() and d.dtype == np.float32
    assert loss == pytest.approx(_ce_ref(z.astype(np.float64), labels), rel=1e-6)
    np.testing.assert_allclose(d.sum(axis=1), 0, atol=1e-6)  # softmax - onehot rows sum to 0
    z = np.full((2, 3), -1e30, np.float32)
    loss, d = nn.cross_entropy(z, [0, 2])
    assert loss == pytest.approx(np.log(3), rel=1e-6)


def test_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((20, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 20)
    loss, d = nn.cross_entropy(z, labels)
    zt = torch.from_numpy(z).requires_grad_()
    lt = torch.nn.functional.cross_entropy(zt, torch.from_numpy(labels))
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-6)
    np.testing.assert_allclose(d, zt.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_cross_entropy_does_not_alias_or_modify(rng):
    z = rng.standard_normal((4, 3))
    z0 = z.copy()
    _, d1 = nn.cross_entropy(z, [0, 1, 2, 0])
    _, d2 = nn.cross_entropy(z, [0, 1, 2, 0])
    np.testing.assert_array_equal(z, z0)
    assert d1 is not d2 and not np.shares_memory(d1, z) and not np.shares_memory(d1, d2)


@pytest.mark.parametrize(
    ("labels", "exc", "match"),
    [
        ([0, 1, 3], ValueError, r"labels must be in \[0, 3\).*got 3"),
        ([0, -1, 2], ValueError, "got -1"),
        ([0, 1], ValueError, r"labels has shape \(2,\), expected \(3,\)"),
        ([[0, 1, 2]], ValueError, "labels has shape"),
        ([0.0, 1.0, 2.0], TypeError, "labels must be integers"),
        ([True, False, True], TypeError, "labels must be integers"),
    ],
)
def test_cross_entropy_bad_labels(labels, exc, match):
    with pytest.raises(exc, match=match):
        nn.cross_entropy(np.zeros((3, 3)), np.array(labels))


def test_cross_entropy_bad_logits():
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        nn.cross_entropy(np.zeros(3), [0])
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        nn.cross_entropy(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(TypeError, match="logits must have dtype"):
        nn.cross_entropy(np.zeros((2, 3), np.int64), [0, 1])


# ----------------------------------------------------------------------------- mse


def test_mse_matches_reference_fd_and_torch(rng):
    p = rng.standard_normal((5, 3))
    t = rng.standard_normal((5, 3))
    loss, d = nn.mse_loss(p, t)
    assert loss == pytest.approx(((p - t) ** 2).mean(), rel=1e-14)
    np.testing.assert_allclose(d, _fd(lambda v: ((v - t) ** 2).mean(), p), rtol=1e-6, atol=1e-9)
    torch = pytest.importorskip("torch")
    pt = torch.from_numpy(p).requires_grad_()
    lt = torch.nn.functional.mse_loss(pt, torch.from_numpy(t))
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-13)
    np.testing.assert_allclose(d, pt.grad.numpy(), rtol=1e-13)


def test_mse_errors_and_dtype(rng):
    with pytest.raises(ValueError, match=r"pred has shape \(2, 3\), target has shape \(3,\)"):
        nn.mse_loss(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        nn.mse_loss(np.zeros(0), np.zeros(0))
    with pytest.raises(TypeError, match="target"):
        nn.mse_loss(np.zeros(2), np.zeros(2, int))
    p = rng.standard_normal(4).astype(np.float32)
    _, d = nn.mse_loss(p, np.zeros(4, np.float32))
    assert d.dtype == np.float32 and not np.shares_memory(d, p)


# ----------------------------------------------------------------------------- distillation


@pytest.mark.parametrize(("temp", "alpha"), [(4.0, 0.9), (1.0, 0.5), (2.5, 0.0), (3.0, 1.0)])
def test_distillation_matches_reference_and_fd(temp, alpha, rng):
    s = rng.standard_normal((6, 5)) * 2
    t = rng.standard_normal((6, 5)) * 2
    labels = rng.integers(0, 5, 6)
    loss, d = nn.distillation_loss(s, t, labels, temperature=temp, alpha=alpha)
    assert loss == pytest.approx(_distill_ref(s, t, labels, temp, alpha), rel=1e-12)
    f = lambda v: _distill_ref(v, t, labels, temp, alpha)  # noqa: E731
    np.testing.assert_allclose(d, _fd(f, s), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_distillation_matches_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    s = (rng.standard_normal((16, 10)) * 3).astype(dtype)
    t = (rng.standard_normal((16, 10)) * 3).astype(dtype)
    labels = rng.integers(0, 10, 16)
    temp, alpha = 4.0, 0.9
    loss, d = nn.distillation_loss(s, t, labels, temperature=temp, alpha=alpha)
    st = torch.from_numpy(s).requires_grad_()
    tt = torch.from_numpy(t)
    soft = F.kl_div(F.log_softmax(st / temp, 1), F.softmax(tt / temp, 1), reduction="batchmean")
    lt = alpha * temp**2 * soft + (1 - alpha) * F.cross_entropy(st, torch.from_numpy(labels))
    lt.backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(lt.item(), rel=tol)
    assert d.dtype == dtype
    np.testing.assert_allclose(d, st.grad.numpy(), rtol=tol * 10, atol=tol / 10)


def test_distillation_equal_logits_and_one_hot_teacher(rng):
    s = rng.standard_normal((3, 4))
    loss, d = nn.distillation_loss(s, s.copy(), None, alpha=1.0)
    assert loss == pytest.approx(0.0, abs=1e-14)
    np.testing.assert_allclose(d, 0, atol=1e-15)
    t = np.array([[1e4, 0, 0, 0]] * 3)  # softmax(t/T) has exact zeros: 0 log 0 = 0
    loss, d = nn.distillation_loss(s, t, None, temperature=1.0, alpha=1.0)
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert loss == pytest.approx(-_log_softmax_ref(s)[:, 0].mean(), rel=1e-12)


def test_distillation_errors():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"student_logits has shape \(2, 3\), teacher_logits"):
        nn.distillation_loss(z, np.zeros((2, 4)), [0, 1])
    with pytest.raises(ValueError, match="temperature"):
        nn.distillation_loss(z, z, [0, 1], temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        nn.distillation_loss(z, z, [0, 1], alpha=1.5)
    with pytest.raises(TypeError, match="alpha"):
        nn.distillation_loss(z, z, [0, 1], alpha="0.5")
    with pytest.raises(ValueError, match="labels may only be None"):
        nn.distillation_loss(z, z, None)
    with pytest.raises(ValueError, match="got 3"):
        nn.distillation_loss(z, z, [0, 3], alpha=1.0)
