"""asv benchmarks for ``pyfastopt.nn``: one training step of an MLP vs NumPy, and the
eval-mode forward (inference) of one model, from one thread or shared by two.

``model`` is ``"<layer sizes> b<batch>"``: ``[Linear, BatchNorm1d, ReLU(inplace),
Dropout(0.2)]`` blocks and a final Linear, float32; one step is forward, cross-entropy,
backward (no input gradient) and an AdamW step. The NumPy baseline
(``MLPTrainingStepNumPy``, a ``PeerBenchmark``: never in a process with pyfastopt) is the
hand-written preallocated step of ``common.NumpyMLP`` (BLAS GEMMs on the same thread
count), from its own seeded initial weights of the same shapes.
``track_gflops_step_pyfastopt`` counts the step's GEMM flops.

``pyfastopt.nn`` is imported in ``setup``, so commits without it skip these benchmarks
instead of breaking discovery. Every implementation takes one step in ``setup``.
"""

from __future__ import annotations

import threading
from typing import ClassVar

import numpy as np

from .common import (
    P_DROP,
    THREADS,
    WEIGHT_DECAY,
    Benchmark,
    NumpyMLP,
    PeerBenchmark,
    best_seconds,
    gemm_flops,
    mlp_init,
    parse_model,
    pyfastopt_mlp,
)

MODELS = ["784-1024-1024-10 b256", "784-256-10 b64"]


def _batch(sizes: tuple[int, ...], batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    return x, rng.integers(0, sizes[-1], batch)


class MLPTrainingStep(Benchmark):
    """Forward + cross-entropy + backward + AdamW: pyfastopt.nn, float32."""

    params: ClassVar[list] = [MODELS, THREADS]
    param_names: ClassVar[list[str]] = ["model", "threads"]
    #: the tiny grid tests/test_benchmarks.py runs
    smoke_params: ClassVar[list] = [["32-16-4 b8"], THREADS]

    def setup(self, model, threads):
        try:
            from pyfastopt import nn, optim
        except ImportError:
            raise NotImplementedError("this pyfastopt has no nn") from None
        self.set_threads(threads)
        sizes, batch = parse_model(model)
        self.x, self.labels = _batch(sizes, batch)
        self.model = pyfastopt_mlp(sizes)
        self.opt = optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=WEIGHT_DECAY)
        self.grads = self.model.gradients()
        self.cross_entropy = nn.cross_entropy
        self.flops = gemm_flops(sizes, batch)
        self.time_step_pyfastopt(model, threads)

    def time_step_pyfastopt(self, model, threads):
        _, d = self.cross_entropy(self.model(self.x), self.labels)
        self.model.backward(d, need_dx=False)
        self.opt.step(self.grads)

    def track_gflops_step_pyfastopt(self, model, threads):
        return self.flops / best_seconds(lambda: self.time_step_pyfastopt(model, threads)) / 1e9

    track_gflops_step_pyfastopt.unit = "GFLOP/s"


class MLPTrainingStepNumPy(PeerBenchmark):
    """The same training step written by hand in NumPy (preallocated, BLAS GEMMs)."""

    params: ClassVar[list] = [MODELS, THREADS]
    param_names: ClassVar[list[str]] = ["model", "threads"]
    smoke_params: ClassVar[list] = [["32-16-4 b8"], THREADS]

    def setup(self, model, threads):
        self.set_threads(threads)
        sizes, batch = parse_model(model)
        self.x, self.labels = _batch(sizes, batch)
        params, running = mlp_init(sizes)
        self.ref = NumpyMLP(params, running, batch, P_DROP, seed=1)
        self.time_step_numpy(model, threads)

    def time_step_numpy(self, model, threads):
        self.ref.step(self.x, self.labels)


EVAL_MODELS = ["784-512-256-10 b1", "784-512-256-10 b64", "16-16-16-16 b1"]


class MLPEvalForward(Benchmark):
    """``model(x)`` in eval mode, float32 (the blocks of MLPTrainingStep, Dropout off).

    ``time_forward``: one thread (kernels on ``threads`` threads). Eval mode keeps one
    set of output buffers per calling thread (thread-safe inference), so this is where
    that bookkeeping would show (``16-16-16-16 b1`` is Python overhead only).
    ``time_forward_two_callers``: two Python threads each run ``calls`` forwards of the
    same model at once (an inference server sharing one model; kernels single-threaded).
    """

    params: ClassVar[list] = [EVAL_MODELS, THREADS]
    param_names: ClassVar[list[str]] = ["model", "threads"]
    smoke_params: ClassVar[list] = [["32-16-4 b8"], [1]]
    calls = 20

    def setup(self, model, threads):
        try:
            import pyfastopt.nn  # noqa: F401
        except ImportError:
            raise NotImplementedError("this pyfastopt has no nn") from None
        self.set_threads(threads)
        sizes, batch = parse_model(model)
        self.x = np.random.default_rng(1234).standard_normal((batch, sizes[0]), dtype=np.float32)
        self.model = pyfastopt_mlp(sizes).eval()
        self.model(self.x)

    def time_forward(self, model, threads):
        self.model(self.x)

    def time_forward_two_callers(self, model, threads):
        def run():
            for _ in range(self.calls):
                self.model(self.x)

        workers = [threading.Thread(target=run) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
