"""Bench case for a ``pyfastopt.nn`` CNN training step (issue 17 point 9): a small CNN of
three ``Conv2d 3x3 (pad 1) -> BatchNorm2d -> ReLU -> MaxPool2d 2`` blocks (3->32->64->128
channels) and a final ``Linear(128*4*4, 10)``, float32, batch 64 of 32x32x3 images. One
step is forward, softmax cross-entropy, backward (no gradient for the input) and an SGD
step (lr 0.01, momentum 0.9) on every parameter. ``work`` counts the convolutions' and
the linear layer's multiply-adds of forward, backward-data (all but the first conv) and
backward-weight, x2 (``limit="fma"``).

Implementations (each with its own copy of the same initial weights, each library in its
own process under ``pyfastopt bench``):

* ``pyfastopt``: ``nn.Sequential`` in channels-last (``layout="NHWC"``, the fast layout;
  the first conv takes the NHWC batch), ``nn.cross_entropy``, ``model.backward(d,
  need_dx=False)``, ``optim.SGD.step(model.gradients())``.
* ``numpy``: the same step by hand, float32: convolutions as im2col (strided windows of
  the zero-padded input) contracted by ``np.tensordot`` (BLAS), backward-data as the
  transposed contraction accumulated into the padded gradient, BatchNorm's textbook
  formulas, max pool 2x2 by reshaping (ties to the first position, as torch).
* ``torch``: ``torch.nn.Sequential`` of the same layers, ``F.cross_entropy``,
  ``loss.backward()``, ``torch.optim.SGD(momentum=0.9)`` (foreach), in NCHW and in
  ``channels_last`` (the faster counts).

Correctness guard: the step after ``reset()`` from identical weights; the compared
output is ``[loss, dW_first / max|dW_first|, dW_last / max|dW_last|]``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .registry import Case, Context, Prepared, register

LR, MOMENTUM, BN_EPS, BN_MOMENTUM = 0.01, 0.9, 1e-5, 0.1
CHANNELS = (3, 32, 64, 128)
CLASSES = 10


def conv_macs(batch: int, hw: int = 32) -> int:
    """Multiply-adds of one step's convolutions and linear layer (fwd, bwd-data, bwd-w)."""
    total, size = 0, hw
    for i, (a, b) in enumerate(zip(CHANNELS[:-1], CHANNELS[1:])):
        fwd = batch * size * size * a * b * 9
        total += fwd * (2 if i == 0 else 3)
        size //= 2
    lin = batch * CHANNELS[-1] * size * size * CLASSES
    return total + 2 * lin


def make_model(layout: str = "NHWC", seed: int = 0) -> Any:
    from .. import nn

    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(CHANNELS[:-1], CHANNELS[1:])):
        layers += [
            nn.Conv2d(a, b, 3, padding=1, layout=layout, seed=seed + i),
            nn.BatchNorm2d(b, eps=BN_EPS, momentum=BN_MOMENTUM, layout=layout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, layout=layout),
        ]
    layers += [nn.Flatten(layout=layout), nn.Linear(CHANNELS[-1] * 16, CLASSES, seed=seed + 9)]
    return nn.Sequential(*layers)


def _windows(xp: np.ndarray, k: int) -> np.ndarray:
    """(N, H+2, W+2, C) -> (N, H, W, C, k, k) strided view."""
    return np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))


class NumpyCNN:
    """The step by hand in NumPy, NHWC float32 (see the module doc). ``params`` is the
    model's flat parameter list ``[W, b, gamma, beta] * 3 + [W, b]`` (W as torch's)."""

    def __init__(self, params: list[np.ndarray], running: list[np.ndarray]) -> None:
        self.params, self.running = params, running
        self.grads = [np.zeros_like(p) for p in params]
        self.mom = [np.zeros_like(p) for p in params]
        self.first = True

    def reset_optimizer(self) -> None:
        for m in self.mom:
            m[...] = 0
        self.first = True

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        P, G = self.params, self.grads
        f32 = np.float32
        cache = []
        a = x  # NHWC
        for i in range(3):
            w, b, gamma, beta = P[4 * i : 4 * i + 4]
            xp = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
            win = _windows(xp, 3)  # N, H, W, C, 3, 3
            h = np.tensordot(win, w, ([3, 4, 5], [1, 2, 3])) + b  # N, H, W, Co
            n_el = h.shape[0] * h.shape[1] * h.shape[2]
            mean = h.mean(axis=(0, 1, 2))
            xc = h - mean
            var = (xc * xc).mean(axis=(0, 1, 2))
            invstd = (1.0 / np.sqrt(var + BN_EPS)).astype(f32)
            xhat = xc * invstd
            z = xhat * gamma + beta
            rm, rv = self.running[2 * i : 2 * i + 2]
            rm *= 1 - BN_MOMENTUM
            rm += BN_MOMENTUM * mean
            rv *= 1 - BN_MOMENTUM
            rv += BN_MOMENTUM * var * n_el / (n_el - 1)
            r = np.maximum(z, 0)
            n, hh, ww, c = r.shape
            blocks = r.reshape(n, hh // 2, 2, ww // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
            flat = blocks.reshape(n, hh // 2, ww // 2, c, 4)
            arg = flat.argmax(axis=-1)
            pooled = np.take_along_axis(flat, arg[..., None], -1)[..., 0]
            cache.append((xp, win, xhat, invstd, z, arg, None))
            a = pooled
        feat = a.transpose(0, 3, 1, 2).reshape(a.shape[0], -1)  # torch's (c, h, w) order
        w, b = P[-2:]
        logits = feat @ w.T + b
        zl = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(zl)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(len(labels))
        loss = float(-(zl[rows, labels] - np.log(s[:, 0])).mean())
        d = e / s
        d[rows, labels] -= 1.0
        d = (d / len(labels)).astype(f32)
        G[-2][...] = d.T @ feat
        G[-1][...] = d.sum(axis=0)
        da = (d @ w).reshape(a.shape[0], a.shape[3], a.shape[1], a.shape[2]).transpose(0, 2, 3, 1)
        for i in range(2, -1, -1):
            w, b, gamma, beta = P[4 * i : 4 * i + 4]
            xp, win, xhat, invstd, z, arg, _ = cache[i]
            n, hh, ww, c = z.shape
            # max pool backward (the argmax position of each 2x2 block)
            onehot = (np.arange(4) == arg[..., None]).astype(f32) * da[..., None]
            dr = onehot.reshape(n, hh // 2, ww // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
            dz = dr.reshape(n, hh, ww, c) * (z > 0)
            m = n * hh * ww
            dbeta = dz.sum(axis=(0, 1, 2))
            dgamma = (dz * xhat).sum(axis=(0, 1, 2))
            dh = (gamma * invstd) * (dz - (dbeta + xhat * dgamma) / m)
            G[4 * i + 2][...] = dgamma
            G[4 * i + 3][...] = dbeta
            G[4 * i][...] = np.tensordot(dh, win, ([0, 1, 2], [0, 1, 2]))  # Co, C, 3, 3
            G[4 * i + 1][...] = dh.sum(axis=(0, 1, 2))
            if i > 0:
                dcol = np.tensordot(dh, w, ([3], [0]))  # N, H, W, C, 3, 3
                dxp = np.zeros(xp.shape, f32)
                for r in range(3):
                    for q in range(3):
                        dxp[:, r : r + hh, q : q + ww] += dcol[..., r, q]
                da = dxp[:, 1:-1, 1:-1]
        for p, g, mo in zip(P, G, self.mom):
            if self.first:
                mo[...] = g
            else:
                mo *= MOMENTUM
                mo += g
            p -= LR * mo
        self.first = False
        return loss


def _torch_model(torch: Any) -> Any:
    nn_ = torch.nn
    layers: list[Any] = []
    for a, b in zip(CHANNELS[:-1], CHANNELS[1:]):
        layers += [
            nn_.Conv2d(a, b, 3, padding=1),
            nn_.BatchNorm2d(b, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn_.ReLU(inplace=True),
            nn_.MaxPool2d(2),
        ]
    layers += [nn_.Flatten(), nn_.Linear(CHANNELS[-1] * 16, CLASSES)]
    return nn_.Sequential(*layers)


def _setup(ctx: Context, batch: int) -> Prepared:
    from .. import nn, optim

    rng = ctx.rng()
    x = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)  # NHWC
    labels = rng.integers(0, CLASSES, batch)
    model = make_model("NHWC")
    init = model.state_dict()
    st: dict[str, Any] = {}
    grads = model.gradients()

    def pf_step() -> float:
        loss, d = nn.cross_entropy(model(x), labels)
        model.backward(d, need_dx=False)
        st["pf_opt"].step(grads)
        return loss

    names = [k for k, _ in model.named_parameters()]
    np_params = [init[k].copy() for k in names]
    run_names = [k for k in init if k.endswith(("running_mean", "running_var"))]
    np_running = [init[k].copy() for k in run_names]
    ref = NumpyCNN(np_params, np_running)
    impls: dict[str, Any] = {"pyfastopt": pf_step, "numpy": lambda: ref.step(x, labels)}

    torch = ctx.torch
    tmodels: dict[str, Any] = {}
    if torch is not None:
        F = torch.nn.functional
        lt = torch.from_numpy(labels)
        xs = {
            "NCHW": torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
            "channels_last": torch.from_numpy(x).permute(0, 3, 1, 2),
        }
        for fmt in xs:
            tmodels[fmt] = _torch_model(torch)
            if fmt == "channels_last":
                tmodels[fmt] = tmodels[fmt].to(memory_format=torch.channels_last)

        def make_step(fmt: str) -> Any:
            def tstep() -> float:
                opt = st["torch_opt"][fmt]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(tmodels[fmt](xs[fmt]), lt)
                loss.backward()
                opt.step()
                return loss.item()

            return tstep

        impls["torch"] = {fmt: make_step(fmt) for fmt in xs}

    def reset() -> None:
        model.load_state_dict(init)
        st["pf_opt"] = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        for dst, k in zip(np_params, names):
            np.copyto(dst, init[k])
        for dst, k in zip(np_running, run_names):
            np.copyto(dst, init[k])
        ref.reset_optimizer()
        if tmodels:
            opts = {}
            for fmt, tm in tmodels.items():
                sd = {k: torch.from_numpy(v.copy()) for k, v in init.items()}
                tm.load_state_dict(sd, strict=False)
                if fmt == "channels_last":
                    tm.to(memory_format=torch.channels_last)
                opts[fmt] = torch.optim.SGD(tm.parameters(), lr=LR, momentum=MOMENTUM)
            st["torch_opt"] = opts

    def output(impl: str, loss: float) -> np.ndarray:
        if impl == "pyfastopt":
            g0, g1 = model[0].grad_weight, model[-1].grad_weight
        elif impl == "numpy":
            g0, g1 = ref.grads[0], ref.grads[-2]
        else:
            tm = next(iter(tmodels.values()))
            g0, g1 = tm[0].weight.grad.numpy(), tm[-1].weight.grad.numpy()
        parts = [np.array([loss])] + [np.ravel(g) / np.abs(g).max() for g in (g0, g1)]
        return np.concatenate(parts).astype(np.float64)

    reset()
    return Prepared(impls, reset=reset, output=output)


for _batch, _quick in ((64, False), (4, True)):
    register(
        Case(
            family="nn",
            name=f"CNN 3x(conv3x3-BN-ReLU-maxpool)+linear SGD step f32 32x32x3 batch={_batch}",
            limit="fma",
            work=2 * conv_macs(_batch),
            setup=functools.partial(_setup, batch=_batch),
            quick=_quick,
            rtol=2e-3,
            atol=2e-4,
            note=(
                "forward + cross-entropy + backward + SGD(momentum); work = 2 x conv/linear "
                "MACs; convs 32->64 and 64->128: y and dx winograd F(2x2,3x3), the 3->32 "
                "stem and dweight implicit GEMM"
            ),
        )
    )
