"""asv benchmarks for ``pyfastopt.optim``: one Adam, AdamW or SGD-momentum step vs NumPy.

One optimizer step per ``time_*`` call, float32, with fixed gradients, over size x
threads: pyfastopt in ``Adam`` / ``AdamW`` / ``SGDMomentum``, and a careful NumPy step
(preallocated scratch, in-place ufuncs, bias corrections as Python floats, a loop over
the tensors) in ``AdamNumPy`` / ``AdamWNumPy`` / ``SGDMomentumNumPy`` (``PeerBenchmark``:
never in a process with pyfastopt).
``size`` is an element count (one tensor) or ``"<tensors>x<elements each>"`` (the
multi-tensor case). ``track_bandwidth_step`` reports pyfastopt's GB/s, counting 28
bytes per element for Adam/AdamW (read param, grad, m, v; write param, m, v) and 20 for
SGD with momentum (read param, grad, buffer; write param, buffer).

``pyfastopt.optim`` is imported in ``setup``, so commits without it skip these
benchmarks instead of breaking discovery. Every optimizer takes one step in ``setup``:
every timed call is a steady-state step with its state already allocated.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .common import (
    BETAS,
    EPS,
    LR,
    THREADS,
    WEIGHT_DECAY,
    Benchmark,
    NumpyAdamW,
    PeerBenchmark,
    best_seconds,
    get_vector,
    scratch_views,
)

SIZES = [100_000, 1_000_000, 10_000_000, "200x5e4"]
MOMENTUM = 0.9


def parse_size(size) -> tuple[int, int]:
    """``100_000 -> (1, 100000)``, ``"200x5e4" -> (200, 50000)``."""
    if isinstance(size, str):
        count, _, each = size.partition("x")
        return int(count), int(float(each))
    return 1, int(size)


def make_tensors(size, seed: int) -> list[np.ndarray]:
    """Writeable float32 tensors for ``size`` (separate arrays), seeded."""
    count, each = parse_size(size)
    flat = get_vector(count * each, "float32", seed=seed)
    return [flat[i * each : (i + 1) * each].copy() for i in range(count)]


class NumpySGD:
    """SGD with momentum in NumPy (PyTorch's equations, no dampening or Nesterov)."""

    def __init__(self, params):
        self.params = params
        self.buf = [np.zeros_like(p) for p in params]
        self.tmp = scratch_views(params)
        self.t = 0

    def step(self, grads) -> None:
        first = self.t == 0
        self.t += 1
        multiply, add = np.multiply, np.add
        for p, g, buf, tmp in zip(self.params, grads, self.buf, self.tmp):
            if first:
                np.copyto(buf, g)
            else:
                multiply(buf, MOMENTUM, out=buf)
                add(buf, g, out=buf)
            multiply(buf, -LR, out=tmp)
            add(p, tmp, out=p)


class _OptimStep(Benchmark):
    """pyfastopt's step; asv skips this class (leading underscore), subclasses set ``kind``."""

    params: ClassVar[list] = [SIZES, THREADS]
    param_names: ClassVar[list[str]] = ["size", "threads"]
    #: the tiny grid tests/test_benchmarks.py runs: its generic shrinking only handles
    #: all-numeric size axes, and this one also has a multi-tensor string
    smoke_params: ClassVar[list] = [[1_000, "4x250"], THREADS]
    kind: ClassVar[str | None] = None
    bytes_per_element: ClassVar[int] = 28

    def make_optimizer(self, optim: Any, params):
        raise NotImplementedError

    def setup(self, size, threads):
        if self.kind is None:
            raise NotImplementedError  # the base class itself is no benchmark
        try:
            from pyfastopt import optim
        except ImportError:
            raise NotImplementedError("this pyfastopt has no pyfastopt.optim") from None
        self.set_threads(threads)
        self.grads = make_tensors(size, seed=12)
        params = make_tensors(size, seed=11)
        self.nelements = sum(p.size for p in params)
        self.opt = self.make_optimizer(optim, params)
        self.opt.step(self.grads)  # allocate the state: time steady-state steps

    def time_step_pyfastopt(self, size, threads):
        self.opt.step(self.grads)

    def track_bandwidth_step(self, size, threads):
        step, grads = self.opt.step, self.grads
        seconds = best_seconds(lambda: step(grads))
        return self.bytes_per_element * self.nelements / seconds / 1e9

    track_bandwidth_step.unit = "GB/s"


class _NumpyStep(PeerBenchmark):
    """The NumPy baseline's step; subclasses set ``kind``."""

    params: ClassVar[list] = [SIZES, THREADS]
    param_names: ClassVar[list[str]] = ["size", "threads"]
    smoke_params: ClassVar[list] = [[1_000, "4x250"], THREADS]
    kind: ClassVar[str | None] = None

    def make_optimizer(self, params):
        raise NotImplementedError

    def setup(self, size, threads):
        if self.kind is None:
            raise NotImplementedError
        self.set_threads(threads)
        self.grads = make_tensors(size, seed=12)
        self.ref = self.make_optimizer(make_tensors(size, seed=11))
        self.ref.step(self.grads)

    def time_step_numpy(self, size, threads):
        self.ref.step(self.grads)


class Adam(_OptimStep):
    """``pyfastopt.optim.Adam(lr=1e-3)`` step; 28 bytes per element."""

    kind = "adam"
    bytes_per_element = 28

    def make_optimizer(self, optim, params):
        return optim.Adam(params, lr=LR, betas=BETAS, eps=EPS)


class AdamNumPy(_NumpyStep):
    """The same Adam step in NumPy."""

    kind = "adam"

    def make_optimizer(self, params):
        return NumpyAdamW(params, weight_decay=0.0)


class AdamW(_OptimStep):
    """``pyfastopt.optim.AdamW(lr=1e-3, weight_decay=1e-2)`` step; 28 bytes per element."""

    kind = "adamw"
    bytes_per_element = 28

    def make_optimizer(self, optim, params):
        return optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)


class AdamWNumPy(_NumpyStep):
    """The same AdamW step in NumPy."""

    kind = "adamw"

    def make_optimizer(self, params):
        return NumpyAdamW(params, weight_decay=WEIGHT_DECAY)


class SGDMomentum(_OptimStep):
    """``pyfastopt.optim.SGD(lr=1e-3, momentum=0.9)`` step; 20 bytes per element."""

    kind = "sgd"
    bytes_per_element = 20

    def make_optimizer(self, optim, params):
        return optim.SGD(params, lr=LR, momentum=MOMENTUM)


class SGDMomentumNumPy(_NumpyStep):
    """The same SGD-momentum step in NumPy."""

    kind = "sgd"

    def make_optimizer(self, params):
        return NumpySGD(params)
