"""asv benchmarks for pooling at ResNet sizes, float32, batch 32, both layouts, 1 and 2
threads: ``max_pool2d`` 3x3 stride 2 pad 1 on 64x112x112 (forward and backward),
``avg_pool2d`` 3x3 stride 1 pad 1 on 256x14x14, ``global_avg_pool2d`` on 512x7x7.
``Pool2dResNet`` times pyfastopt; ``TorchPool2dResNet`` (a ``PeerBenchmark``) the same
calls in torch (NHWC as channels_last tensors). See also ``bench_conv.Pool2d``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .common import THREADS, Benchmark, PeerBenchmark

BATCH = 32


def _inputs(layout: str, small: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    n = 2 if small else BATCH
    sizes = {"max": (64, 112, 112), "avg": (256, 14, 14), "gap": (512, 7, 7)}
    if small:
        sizes = {k: (8, 9, 9) for k in sizes}
    out = {}
    for k, (c, h, w) in sizes.items():
        shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
        out[k] = rng.standard_normal(shape, dtype=np.float32)
    return out


class Pool2dResNet(Benchmark):
    params: ClassVar[list] = [["NHWC", "NCHW"], THREADS]
    param_names: ClassVar[list[str]] = ["layout", "threads"]
    smoke_params: ClassVar[list] = [["NHWC tiny", "NCHW tiny"], [1]]

    def setup(self, layout, threads):
        import pyfastopt

        if not hasattr(pyfastopt, "max_pool2d"):
            raise NotImplementedError("this pyfastopt has no pooling")
        self.pf = pyfastopt
        self.set_threads(threads)
        self.layout = layout.split()[0]
        self.x = _inputs(self.layout, layout.endswith("tiny"))
        self.y = pyfastopt.max_pool2d(self.x["max"], 3, 2, 1, layout=self.layout)
        self.dy = np.ones_like(self.y)

    def time_max_pool_3x3_s2(self, layout, threads):
        self.pf.max_pool2d(self.x["max"], 3, 2, 1, layout=self.layout, out=self.y)

    def time_max_pool_3x3_s2_backward(self, layout, threads):
        self.pf.max_pool2d_backward(self.dy, self.x["max"], 3, 2, 1, layout=self.layout)

    def time_avg_pool_3x3(self, layout, threads):
        self.pf.avg_pool2d(self.x["avg"], 3, 1, 1, layout=self.layout)

    def time_global_avg_pool(self, layout, threads):
        self.pf.global_avg_pool2d(self.x["gap"], layout=self.layout)


class TorchPool2dResNet(PeerBenchmark):
    params: ClassVar[list] = [["NHWC", "NCHW"], THREADS]
    param_names: ClassVar[list[str]] = ["layout", "threads"]
    smoke_params: ClassVar[list] = [["NHWC tiny", "NCHW tiny"], [1]]

    def setup(self, layout, threads):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("torch is not installed") from None
        self.set_threads(threads)
        self.F = torch.nn.functional
        lay = layout.split()[0]
        xs = _inputs(lay, layout.endswith("tiny"))
        self.x = {}
        for k, v in xs.items():
            t = torch.from_numpy(v)
            self.x[k] = t.permute(0, 3, 1, 2) if lay == "NHWC" else t
        self.xg = self.x["max"].clone().requires_grad_(True)
        y = self.F.max_pool2d(self.xg, 3, 2, 1)
        self.dy = torch.ones_like(y)

    def time_max_pool_3x3_s2(self, layout, threads):
        with self.no_grad():
            self.F.max_pool2d(self.x["max"], 3, 2, 1)

    def time_max_pool_3x3_s2_backward(self, layout, threads):
        self.F.max_pool2d(self.xg, 3, 2, 1).backward(self.dy)

    def time_avg_pool_3x3(self, layout, threads):
        with self.no_grad():
            self.F.avg_pool2d(self.x["avg"], 3, 1, 1)

    def time_global_avg_pool(self, layout, threads):
        with self.no_grad():
            self.F.adaptive_avg_pool2d(self.x["gap"], 1)

    def no_grad(self):
        import torch

        return torch.no_grad()
