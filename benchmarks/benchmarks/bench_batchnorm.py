"""asv benchmarks for ``pyfastopt.batch_norm_*`` vs NumPy: a float32 training step
(forward + backward) and the evaluation forward.

``layout`` is ``"<NCHW|NC|NHWC> <shape>"`` (NCHW and NC use axis=1, NHWC axis=-1), over
threads. The training step is ``batch_norm_train`` (running statistics updated in place)
then ``batch_norm_backward``; NumPy is the textbook formulas (float32 reductions over the
non-channel axes, ``xhat`` kept for the backward). Eval is ``batch_norm_infer`` vs
``x * scale + shift`` with per-channel constants. pyfastopt is also timed with
preallocated ``out=`` arrays (``*_out``). ``track_bandwidth_*`` report GB/s (with
``out=``) counting the minimal bytes: 24 per element for forward + backward (forward
reads x twice and writes y; backward reads x and dy and writes dx), 8 for eval (read x,
write y).

The NumPy baseline lives in ``BatchNormNumPy`` (``PeerBenchmark``: never in a process
with pyfastopt). ``pyfastopt.batch_norm_train`` is looked up in ``setup``, so commits without it skip
these benchmarks instead of breaking discovery.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .common import THREADS, Benchmark, PeerBenchmark, best_seconds

EPS = 1e-5
MOMENTUM = 0.1
LAYOUTS = ["NCHW 32x64x56x56", "NCHW 64x256x14x14", "NC 256x1024", "NHWC 32x56x56x64"]


def parse_layout(layout: str) -> tuple[tuple[int, ...], int]:
    """``"NHWC 32x56x56x64" -> ((32, 56, 56, 64), -1)``."""
    kind, _, dims = layout.partition(" ")
    return tuple(int(d) for d in dims.split("x")), (-1 if kind == "NHWC" else 1)


class _BatchNormData:
    params: ClassVar[list] = [LAYOUTS, THREADS]
    param_names: ClassVar[list[str]] = ["layout", "threads"]
    #: the tiny grid tests/test_benchmarks.py runs
    smoke_params: ClassVar[list] = [["NCHW 4x8x6x6", "NHWC 4x6x6x8"], THREADS]

    def setup(self, layout, threads):
        self.set_threads(threads)
        shape, self.axis = parse_layout(layout)
        rng = np.random.default_rng(1234)
        self.x = rng.standard_normal(shape, dtype=np.float32)
        self.dy = rng.standard_normal(shape, dtype=np.float32)
        c = shape[self.axis]
        self.w = np.ones(c, np.float32)
        self.b = np.zeros(c, np.float32)
        self.rm = np.zeros(c, np.float32)
        self.rv = np.ones(c, np.float32)
        self.axes = tuple(i for i in range(len(shape)) if i != self.axis % len(shape))
        bshape = [1] * len(shape)
        bshape[self.axis % len(shape)] = c
        self.bshape = bshape
        self.n = math.prod(shape) // c
        self.scale = (self.w / np.sqrt(self.rv + EPS)).reshape(bshape)
        self.shift = (self.b - self.rm * self.scale.ravel()).reshape(bshape)
        self.y_out = np.empty_like(self.x)
        self.dx_out = np.empty_like(self.x)


class BatchNorm(_BatchNormData, Benchmark):
    """Training step and eval forward: pyfastopt, float32."""

    def setup(self, layout, threads):
        import pyfastopt

        self.train = getattr(pyfastopt, "batch_norm_train", None)
        if self.train is None:
            raise NotImplementedError("this pyfastopt has no batch norm")
        self.backward = pyfastopt.batch_norm_backward
        self.infer = pyfastopt.batch_norm_infer
        super().setup(layout, threads)

    def _pyfastopt_step(self, y_out=None, dx_out=None):
        _, mean, invstd = self.train(
            self.x, self.w, self.b, self.rm, self.rv, MOMENTUM, EPS, self.axis, out=y_out
        )
        return self.backward(self.dy, self.x, self.w, mean, invstd, self.axis, out=dx_out)

    def _pyfastopt_step_out(self):
        return self._pyfastopt_step(self.y_out, self.dx_out)

    def time_train_backward_pyfastopt(self, layout, threads):
        self._pyfastopt_step()

    def time_train_backward_pyfastopt_out(self, layout, threads):
        self._pyfastopt_step_out()

    def time_infer_pyfastopt(self, layout, threads):
        self.infer(self.x, self.w, self.b, self.rm, self.rv, EPS, self.axis)

    def time_infer_pyfastopt_out(self, layout, threads):
        self.infer(self.x, self.w, self.b, self.rm, self.rv, EPS, self.axis, out=self.y_out)

    def track_bandwidth_train_backward_pyfastopt(self, layout, threads):
        return 24 * self.x.size / best_seconds(self._pyfastopt_step_out) / 1e9

    track_bandwidth_train_backward_pyfastopt.unit = "GB/s"

    def track_bandwidth_infer_pyfastopt(self, layout, threads):
        x, w, b, rm, rv, axis, out = self.x, self.w, self.b, self.rm, self.rv, self.axis, self.y_out
        seconds = best_seconds(lambda: self.infer(x, w, b, rm, rv, EPS, axis, out=out))
        return 8 * x.size / seconds / 1e9

    track_bandwidth_infer_pyfastopt.unit = "GB/s"


class BatchNormNumPy(_BatchNormData, PeerBenchmark):
    """The textbook NumPy formulas for the same training step and eval forward."""

    def _numpy_step(self):
        x, dy, axes, n = self.x, self.dy, self.axes, self.n
        w = self.w.reshape(self.bshape)
        mean = x.mean(axis=axes, keepdims=True)
        xc = x - mean
        var = np.mean(xc * xc, axis=axes, keepdims=True)
        invstd = 1.0 / np.sqrt(var + np.float32(EPS))
        xhat = xc * invstd
        y = xhat * w + self.b.reshape(self.bshape)
        self.rm[:] = (1 - MOMENTUM) * self.rm + MOMENTUM * mean.ravel()
        self.rv[:] = (1 - MOMENTUM) * self.rv + MOMENTUM * var.ravel() * (n / (n - 1))
        sum_dy = dy.sum(axis=axes, keepdims=True)
        sum_dy_xhat = np.sum(dy * xhat, axis=axes, keepdims=True)
        return y, (w * invstd) * (dy - sum_dy / n - xhat * (sum_dy_xhat / n))

    def time_train_backward_numpy(self, layout, threads):
        self._numpy_step()

    def time_infer_numpy(self, layout, threads):
        return self.x * self.scale + self.shift
