"""asv benchmarks for the issue-17 CNN training step: three ``Conv2d 3x3 (pad 1) ->
BatchNorm2d -> ReLU -> MaxPool2d 2`` blocks (3->32->64->128) and ``Linear(2048, 10)``,
float32, batch 64 of 32x32x3 images; one step is forward, cross-entropy, backward (no
input gradient) and SGD (lr 0.01, momentum 0.9).

``CNNTrainingStep`` times pyfastopt's ``nn`` (channels-last); ``TorchCNNTrainingStep``
(a ``PeerBenchmark``, never in a process with pyfastopt) the same network in torch with
autograd and ``torch.optim.SGD``, in NCHW and channels_last. The same network is the
``pyfastopt bench`` row of ``cases_cnn.py``. Commits without ``pyfastopt.nn.Conv2d`` skip
these benchmarks.

``CNNBatchNormReLU`` times one block's ``BatchNorm2d -> ReLU(inplace=True)`` pair of that
network (training forward + backward, channels-last) as ``nn.Sequential`` runs it: fused
(``batch_norm_train(..., activation="relu")`` and its backward) and, for comparison, the
two layers one after the other (commits without the fusion skip ``fused=True``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .common import THREADS, Benchmark, PeerBenchmark

BATCHES = [64]
LR, MOMENTUM = 0.01, 0.9


def _data(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    return rng.standard_normal((batch, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, batch)


class CNNTrainingStep(Benchmark):
    """pyfastopt.nn, channels-last, float32."""

    params: ClassVar[list] = [BATCHES, THREADS]
    param_names: ClassVar[list[str]] = ["batch", "threads"]
    timeout = 300
    smoke_params: ClassVar[list] = [[2], [1]]

    def setup(self, batch, threads):
        from pyfastopt import nn, optim

        if not hasattr(nn, "Conv2d"):
            raise NotImplementedError("this pyfastopt has no nn.Conv2d")
        self.set_threads(threads)
        self.x, self.labels = _data(batch)
        layers = []
        for i, (a, b) in enumerate(((3, 32), (32, 64), (64, 128))):
            layers += [
                nn.Conv2d(a, b, 3, padding=1, layout="NHWC", seed=i),
                nn.BatchNorm2d(b, layout="NHWC"),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, layout="NHWC"),
            ]
        layers += [nn.Flatten(layout="NHWC"), nn.Linear(128 * 16, 10, seed=9)]
        self.model = nn.Sequential(*layers)
        self.opt = optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.grads = self.model.gradients()
        self.cross_entropy = nn.cross_entropy
        self.time_step(batch, threads)

    def time_step(self, batch, threads):
        _, d = self.cross_entropy(self.model(self.x), self.labels)
        self.model.backward(d, need_dx=False)
        self.opt.step(self.grads)


class TorchCNNTrainingStep(PeerBenchmark):
    """torch autograd + torch.optim.SGD, NCHW and channels_last."""

    params: ClassVar[list] = [["NCHW", "channels_last"], BATCHES, THREADS]
    param_names: ClassVar[list[str]] = ["memory_format", "batch", "threads"]
    timeout = 300
    smoke_params: ClassVar[list] = [["NCHW"], [2], [1]]

    def setup(self, memory_format, batch, threads):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("torch is not installed") from None
        self.set_threads(threads)
        nn_ = torch.nn
        layers = []
        for a, b in ((3, 32), (32, 64), (64, 128)):
            layers += [
                nn_.Conv2d(a, b, 3, padding=1),
                nn_.BatchNorm2d(b),
                nn_.ReLU(inplace=True),
                nn_.MaxPool2d(2),
            ]
        self.model = nn_.Sequential(*layers, nn_.Flatten(), nn_.Linear(128 * 16, 10))
        x, labels = _data(batch)
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        if memory_format == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.labels = torch.from_numpy(labels)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.F = torch.nn.functional
        self.time_step(memory_format, batch, threads)

    def time_step(self, memory_format, batch, threads):
        self.opt.zero_grad(set_to_none=True)
        self.F.cross_entropy(self.model(self.x), self.labels).backward()
        self.opt.step()


# (batch, H=W, C) of the three BatchNorm2d layers of the network
BN_SHAPES = ["64x32x32x32", "64x16x16x64", "64x8x8x128"]


class CNNBatchNormReLU(Benchmark):
    """One BatchNorm2d + ReLU pair of the network, NHWC float32, train forward + backward."""

    params: ClassVar[list] = [BN_SHAPES, [True, False], THREADS]
    param_names: ClassVar[list[str]] = ["shape", "fused", "threads"]
    smoke_params: ClassVar[list] = [["64x8x8x128"], [True], [1]]

    def setup(self, shape, fused, threads):
        import inspect

        import pyfastopt
        from pyfastopt import nn

        if fused and "activation" not in inspect.signature(pyfastopt.batch_norm_train).parameters:
            raise NotImplementedError("this pyfastopt has no fused batch norm + ReLU")
        self.set_threads(threads)
        n, h, w, c = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(5)
        self.x = rng.standard_normal((n, h, w, c), dtype=np.float32)
        self.dy = rng.standard_normal((n, h, w, c), dtype=np.float32)
        self.model = nn.Sequential(nn.BatchNorm2d(c, layout="NHWC"), nn.ReLU(inplace=True))
        if not fused and hasattr(self.model[0], "_fuses_relu"):
            self.model[0]._fuses_relu = lambda: False  # the layers one by one
        self.time_train_step(shape, fused, threads)

    def time_train_step(self, shape, fused, threads):
        self.model.forward(self.x)
        self.model.backward(self.dy)
