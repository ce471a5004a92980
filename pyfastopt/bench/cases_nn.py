"""Bench cases for ``pyfastopt.nn``: one full training step of an MLP.

The model is 784-1024-1024-10 (MNIST-sized input) built from
``Linear -> BatchNorm1d -> ReLU -> Dropout(0.2)`` blocks and a final ``Linear``,
float32, batch 256. One step is forward, softmax cross-entropy, backward (no gradient
for the input) and an AdamW step (lr 1e-3, weight decay 1e-2) on all 10 parameter
tensors (1.86e6 parameters). ``work`` counts the GEMM FLOPs of the step (forward
``x @ W.T`` for every layer, ``dW = dy.T @ x`` for every layer, ``dx = dy @ W`` for all
but the first), compared with the machine's FMA peak (``limit="fma"``); the
element-wise layers and the optimizer add memory traffic on top.

Implementations (each with its own copy of the same initial weights):

* ``pyfastopt``: ``nn.Sequential`` of ``nn.Linear``, ``nn.BatchNorm1d``,
  ``nn.ReLU(inplace=True)``, ``nn.Dropout``; ``nn.cross_entropy``;
  ``model.backward(d, need_dx=False)``; ``optim.AdamW.step(model.gradients())``.
* ``numpy``: the same step written carefully by hand: every activation, mask and
  gradient preallocated and written with ``out=`` ufuncs and ``np.matmul(..., out=)``
  (BLAS, same thread count), BatchNorm's backward in the folded 4-pass form, ReLU and
  dropout backward fused into one mask multiply, the masks drawn with
  ``Generator.random(out=)``, AdamW as in ``cases_optim`` (folded constants).
* ``torch``: ``torch.nn.Sequential`` of the same layers (``ReLU(inplace=True)``),
  ``F.cross_entropy``, ``loss.backward()``, ``torch.optim.AdamW`` with ``foreach=True``
  and with ``fused=True`` (the faster counts), ``zero_grad(set_to_none=True)``.

Correctness guard: the three draw different dropout masks, so in the call that follows
``reset()`` (the harness's check call, and the warm-up call of the timing) NumPy and torch
apply pyfastopt's masks for that step (:func:`pyfastopt.dropout_mask` of each layer's seed
and step) instead of their own; every implementation starts from the same weights and a
fresh optimizer. The compared output is ``[loss, dW_first / max|dW_first|,
dW_last / max|dW_last|]``. Timed steps then go on from there, each drawing its own masks
and training on the same batch (lr 1e-3 keeps everything finite).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .cases_optim import NumpyAdam
from .registry import Case, Context, Prepared, register

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 1e-2
P_DROP = 0.2
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
SEED_DROPOUT = 1000  # layer i's dropout seed is SEED_DROPOUT + i


def gemm_flops(sizes: tuple[int, ...], batch: int) -> int:
    """FLOPs of the step's GEMMs: forward and dW for every layer, dx for all but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    per_layer = [2 * batch * i * o for i, o in pairs]
    return 3 * sum(per_layer) - per_layer[0]


def make_model(sizes: tuple[int, ...], p: float = P_DROP, seed: int = 0) -> Any:
    """The pyfastopt model: [Linear, BatchNorm1d, ReLU, Dropout] blocks, final Linear."""
    from .. import nn

    layers: list[Any] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-2], sizes[1:-1])):
        layers += [
            nn.Linear(fan_in, fan_out, seed=seed + i),
            nn.BatchNorm1d(fan_out, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Dropout(p, seed=SEED_DROPOUT + i),
        ]
    layers.append(nn.Linear(sizes[-2], sizes[-1], seed=seed + len(sizes)))
    return nn.Sequential(*layers)


def _check_masks(model: Any, batch: int) -> list[np.ndarray]:
    """The keep-masks pyfastopt's dropout layers use in their next forward."""
    from .. import dropout_mask, nn

    drops = [m for m in model if isinstance(m, nn.Dropout)]
    sizes = [m.num_features for m in model if isinstance(m, nn.BatchNorm1d)]
    return [dropout_mask((batch, c), d.p, d.seed, offset=d.step) for d, c in zip(drops, sizes)]


class NumpyMLP:
    """The same training step in NumPy with preallocated buffers (see the module doc).

    ``params`` is the flat list ``[W, b, gamma, beta] * blocks + [W, b]`` (updated in
    place by the AdamW step); ``running`` the ``[mean, var] * blocks`` buffers.
    """

    def __init__(self, params: Any, running: Any, batch: int, p: float, seed: int) -> None:
        self.params = params
        self.running = running
        self.grads = [np.zeros_like(q) for q in params]
        self.nblocks = (len(params) - 2) // 4
        self.batch, self.p, self.scale = batch, p, np.float32(1.0 / (1.0 - p))
        self.rng = np.random.default_rng(seed)
        self.opt: Any = None
        self.fixed_masks: list[np.ndarray] | None = None
        f32 = np.float32
        widths = [params[4 * i].shape[0] for i in range(self.nblocks)]
        n = batch
        self.h = [np.empty((n, c), f32) for c in widths]  # linear outputs (BN inputs)
        self.xhat = [np.empty((n, c), f32) for c in widths]
        self.y = [np.empty((n, c), f32) for c in widths]  # BN + ReLU outputs
        self.a = [np.empty((n, c), f32) for c in widths]  # dropout outputs (next inputs)
        self.keep = [np.empty((n, c), bool) for c in widths]
        self.pos = [np.empty((n, c), bool) for c in widths]
        self.u = [np.empty((n, c), f32) for c in widths]
        self.invstd = [np.empty(c, f32) for c in widths]
        self.tmp = [np.empty((n, c), f32) for c in widths]
        self.dh = [np.empty((n, c), f32) for c in widths]
        self.da = [np.empty((n, c), f32) for c in widths]
        self.logits = np.empty((n, params[-1].shape[0]), f32)

    def reset_optimizer(self) -> None:
        self.opt = NumpyAdam(self.params, LR, BETAS, EPS, weight_decay=WEIGHT_DECAY, decoupled=True)

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        P, G, nb = self.params, self.grads, self.nblocks
        matmul, multiply, add, subtract = np.matmul, np.multiply, np.add, np.subtract
        reduce = np.add.reduce
        n = self.batch
        inp = x
        fixed, self.fixed_masks = self.fixed_masks, None
        # ---- forward
        for i in range(nb):
            w, b, gamma, beta = P[4 * i : 4 * i + 4]
            h, xhat, y, a = self.h[i], self.xhat[i], self.y[i], self.a[i]
            matmul(inp, w.T, out=h)
            add(h, b, out=h)
            mean = reduce(h, axis=0) / n
            subtract(h, mean, out=xhat)
            multiply(xhat, xhat, out=self.tmp[i])
            var = reduce(self.tmp[i], axis=0) / n
            invstd = self.invstd[i]
            np.divide(1.0, np.sqrt(var + BN_EPS), out=invstd)
            multiply(xhat, invstd, out=xhat)
            multiply(xhat, gamma, out=y)
            add(y, beta, out=y)
            rm, rv = self.running[2 * i : 2 * i + 2]
            rm *= 1 - BN_MOMENTUM
            rm += BN_MOMENTUM * mean
            rv *= 1 - BN_MOMENTUM
            rv += (BN_MOMENTUM * n / (n - 1)) * var
            np.maximum(y, 0, out=y)  # ReLU in place
            self.rng.random(dtype=np.float32, out=self.u[i])
            np.greater_equal(self.u[i], self.p, out=self.keep[i])
            if fixed is not None:
                np.copyto(self.keep[i], fixed[i])
            multiply(y, self.keep[i], out=a)
            multiply(a, self.scale, out=a)
            inp = a
        w, b = P[-2:]
        logits = matmul(inp, w.T, out=self.logits)
        add(logits, b, out=logits)
        # ---- softmax cross-entropy (small: N x classes)
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        loss = float(-(z[rows, labels] - np.log(s[:, 0])).mean())
        d = e / s
        d[rows, labels] -= 1.0
        d *= np.float32(1.0 / n)
        # ---- backward
        matmul(d.T, inp, out=G[-2])
        reduce(d, axis=0, out=G[-1])
        dnext = self.da[-1]
        matmul(d, w, out=dnext)
        for i in range(nb - 1, -1, -1):
            gamma = P[4 * i + 2]
            da, dh, xhat, tmp = self.da[i], self.dh[i], self.xhat[i], self.tmp[i]
            # dropout and ReLU backward: one mask (kept and positive), one scale
            pos = self.pos[i]
            np.greater(self.y[i], 0, out=pos)
            np.logical_and(pos, self.keep[i], out=pos)
            multiply(da, pos, out=da)
            multiply(da, self.scale, out=da)
            # BatchNorm backward: dx = g s (dy - (dbeta + xhat dgamma) / n)
            dbeta = reduce(da, axis=0, out=G[4 * i + 3])
            multiply(da, xhat, out=tmp)
            dgamma = reduce(tmp, axis=0, out=G[4 * i + 2])
            multiply(xhat, dgamma / n, out=tmp)
            add(tmp, dbeta / n, out=tmp)
            subtract(da, tmp, out=dh)
            multiply(dh, gamma * self.invstd[i], out=dh)
            # Linear backward
            inp_i = x if i == 0 else self.a[i - 1]
            matmul(dh.T, inp_i, out=G[4 * i])
            reduce(dh, axis=0, out=G[4 * i + 1])
            if i > 0:
                matmul(dh, P[4 * i], out=self.da[i - 1])
        self.opt.step_folded(G)
        return loss


def _torch_model(torch: Any, sizes: tuple[int, ...], p: float) -> Any:
    nn_ = torch.nn
    dropout_base: Any = nn_.Dropout

    class FixableDropout(dropout_base):
        """torch's Dropout, or a given mask for one call (the correctness guard)."""

        fixed: Any = None

        def forward(self, x: Any) -> Any:
            if self.fixed is None:
                return super().forward(x)
            mask, self.fixed = self.fixed, None
            return x * mask * (1.0 / (1.0 - self.p))

    layers: list[Any] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [
            nn_.Linear(fan_in, fan_out),
            nn_.BatchNorm1d(fan_out, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn_.ReLU(inplace=True),
            FixableDropout(p),
        ]
    layers.append(nn_.Linear(sizes[-2], sizes[-1]))
    return nn_.Sequential(*layers)


def _setup(ctx: Context, sizes: tuple[int, ...], batch: int) -> Prepared:
    from .. import nn, optim

    rng = ctx.rng()
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    labels = rng.integers(0, sizes[-1], batch)
    model = make_model(sizes)
    init = model.state_dict()
    st: dict[str, Any] = {}

    def pf_step() -> float:
        logits = model(x)
        loss, d = nn.cross_entropy(logits, labels)
        model.backward(d, need_dx=False)
        st["pf_opt"].step(grads)
        return loss

    grads = model.gradients()

    # NumPy: its own arrays, in the model's parameter order
    names = [k for k, _ in model.named_parameters()]
    np_params = [init[k].copy() for k in names]
    run_names = [k for k in init if k.endswith(("running_mean", "running_var"))]
    np_running = [init[k].copy() for k in run_names]
    ref = NumpyMLP(np_params, np_running, batch, P_DROP, ctx.seed + 1)

    impls: dict[str, Any] = {
        "pyfastopt": pf_step,
        "numpy": lambda: ref.step(x, labels),
    }

    torch = ctx.torch
    tmodel = None
    if torch is not None:
        tmodel = _torch_model(torch, sizes, P_DROP)
        xt, lt = torch.from_numpy(x), torch.from_numpy(labels)
        F = torch.nn.functional

        def make_torch_step(flag: str) -> Any:
            def tstep() -> float:
                opt = st["torch_opt"][flag]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(tmodel(xt), lt)
                loss.backward()
                opt.step()
                return loss.item()

            return tstep

        impls["torch"] = {flag: make_torch_step(flag) for flag in ("foreach", "fused")}

    def reset() -> None:
        model.load_state_dict(init)
        for m in model:
            if isinstance(m, nn.Dropout):
                m.step = 0
        st["pf_opt"] = optim.AdamW(
            model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY
        )
        masks = _check_masks(model, batch)
        for dst, k in zip(np_params, names):
            np.copyto(dst, init[k])
        for dst, k in zip(np_running, run_names):
            np.copyto(dst, init[k])
        ref.reset_optimizer()
        ref.fixed_masks = masks
        if tmodel is not None:
            tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in init.items()})
            drops = [m for m in tmodel if hasattr(m, "fixed")]
            for d, mask in zip(drops, masks):
                d.fixed = torch.from_numpy(mask)
            opts = {}
            for flag in ("foreach", "fused"):
                try:
                    opts[flag] = torch.optim.AdamW(
                        tmodel.parameters(),
                        lr=LR,
                        betas=BETAS,
                        eps=EPS,
                        weight_decay=WEIGHT_DECAY,
                        **{flag: True},
                    )
                except Exception:  # a torch without this variant: the harness drops it
                    opts[flag] = None
            st["torch_opt"] = opts

    def output(impl: str, loss: float) -> np.ndarray:
        if impl == "pyfastopt":
            g0, g1 = model[0].grad_weight, model[-1].grad_weight
        elif impl == "numpy":
            g0, g1 = ref.grads[0], ref.grads[-2]
        else:
            assert tmodel is not None
            g0, g1 = tmodel[0].weight.grad.numpy(), tmodel[-1].weight.grad.numpy()
        parts = [np.array([loss])] + [g.ravel() / np.abs(g).max() for g in (g0, g1)]
        return np.concatenate(parts).astype(np.float64)

    reset()
    return Prepared(impls, reset=reset, output=output)


def _name(sizes: tuple[int, ...], batch: int) -> str:
    return f"MLP {'-'.join(map(str, sizes))} BN+ReLU+Dropout AdamW step f32 batch={batch}"


for _sizes, _batch, _quick in (((784, 1024, 1024, 10), 256, False), ((64, 128, 128, 10), 32, True)):
    register(
        Case(
            family="nn",
            name=_name(_sizes, _batch),
            limit="fma",
            work=gemm_flops(_sizes, _batch),
            setup=functools.partial(_setup, sizes=_sizes, batch=_batch),
            quick=_quick,
            rtol=1e-3,
            atol=1e-4,
            note=f"forward + cross-entropy + backward + AdamW; work = GEMM flops "
            f"({gemm_flops(_sizes, _batch) / 1e9:.2f} GFLOP)",
        )
    )
