"""asv benchmarks for ``pyfastopt.conv2d`` / ``conv2d_backward`` and pooling, float32,
on the layers of issue 17: ResNet-18 (3x3 64->64 at 56x56; 3x3 128->128 at 28x28,
stride 1 and 2; 1x1 256->256 at 14x14) and MobileNetV2 blocks (1x1 expand, 3x3
depthwise, 1x1 project at 56x56 and 14x14), batch 32, both layouts, 1 and 2 threads.

``layer`` is ``"<name> <layout>"``. ``time_forward`` is ``conv2d`` (with a preallocated
``out=``), ``time_forward_backward`` adds ``conv2d_backward`` (dx, dweight, dbias).
``track_gflops_forward`` reports 2 * multiply-adds / second (compare with the FMA peak of
``pyfastopt bench``'s machine probes). Pooling: max 3x3/2 and global average at ResNet
sizes. Only pyfastopt's public API (other libraries are measured in their own processes
by ``pyfastopt bench``); ``pyfastopt.conv2d`` is looked up in ``setup``, so commits
without it skip these benchmarks.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .common import THREADS, Benchmark, best_seconds

BATCH = 32
# name: (C, H, W, Co, k, stride, padding, groups)
LAYERS = {
    "resnet3x3_64_56": (64, 56, 56, 64, 3, 1, 1, 1),
    "resnet3x3_128_28": (128, 28, 28, 128, 3, 1, 1, 1),
    "resnet3x3_128_28_s2": (128, 28, 28, 128, 3, 2, 1, 1),
    "resnet1x1_256_14": (256, 14, 14, 256, 1, 1, 0, 1),
    "mbv2_expand_24_144_56": (24, 56, 56, 144, 1, 1, 0, 1),
    "mbv2_dw3x3_144_56": (144, 56, 56, 144, 3, 1, 1, 144),
    "mbv2_project_144_24_56": (144, 56, 56, 24, 1, 1, 0, 1),
    "mbv2_expand_96_576_14": (96, 14, 14, 576, 1, 1, 0, 1),
    "mbv2_dw3x3_576_14": (576, 14, 14, 576, 3, 1, 1, 576),
    "mbv2_project_576_96_14": (576, 14, 14, 96, 1, 1, 0, 1),
}
NAMES = [f"{name} {layout}" for name in LAYERS for layout in ("NHWC", "NCHW")]


class Conv2d(Benchmark):
    """conv2d forward and forward + backward, float32, batch 32."""

    params: ClassVar[list] = [NAMES, THREADS]
    param_names: ClassVar[list[str]] = ["layer", "threads"]
    timeout = 600
    #: the tiny grid tests/test_benchmarks.py runs (batch 2 of a shrunken layer)
    smoke_params: ClassVar[list] = [["tiny NHWC", "tiny NCHW"], THREADS]

    def setup(self, layer, threads):
        import pyfastopt

        self.conv = getattr(pyfastopt, "conv2d", None)
        if self.conv is None:
            raise NotImplementedError("this pyfastopt has no conv2d")
        self.backward = pyfastopt.conv2d_backward
        self.set_threads(threads)
        name, layout = layer.split()
        c, h, w, co, k, s, p, g = LAYERS.get(name, (8, 9, 9, 8, 3, 1, 1, 1))
        n = BATCH if name in LAYERS else 2
        rng = np.random.default_rng(1234)
        self.layout = layout
        shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
        self.x = rng.standard_normal(shape, dtype=np.float32)
        self.w = rng.standard_normal((co, c // g, k, k), dtype=np.float32) * 0.1
        self.b = np.zeros(co, np.float32)
        self.args = {"stride": s, "padding": p, "groups": g, "layout": layout}
        self.y = self.conv(self.x, self.w, self.b, **self.args)
        self.dy = rng.standard_normal(self.y.shape, dtype=np.float32)
        oh, ow = (self.y.shape[1:3]) if layout == "NHWC" else self.y.shape[2:4]
        self.macs = n * oh * ow * co * (c // g) * k * k

    def _forward(self):
        return self.conv(self.x, self.w, self.b, out=self.y, **self.args)

    def time_forward(self, layer, threads):
        self._forward()

    def time_forward_backward(self, layer, threads):
        self._forward()
        self.backward(self.dy, self.x, self.w, **self.args)

    def track_gflops_forward(self, layer, threads):
        return 2 * self.macs / best_seconds(self._forward) / 1e9

    track_gflops_forward.unit = "GFLOP/s"


class Pool2d(Benchmark):
    """max_pool2d 3x3 stride 2 pad 1 (ResNet stem) and global average pooling."""

    params: ClassVar[list] = [["NHWC", "NCHW"], THREADS]
    param_names: ClassVar[list[str]] = ["layout", "threads"]
    smoke_params: ClassVar[list] = [["NHWC", "NCHW"], [1]]

    def setup(self, layout, threads):
        import pyfastopt

        self.pool = getattr(pyfastopt, "max_pool2d", None)
        if self.pool is None:
            raise NotImplementedError("this pyfastopt has no pooling")
        self.gap = pyfastopt.global_avg_pool2d
        self.set_threads(threads)
        rng = np.random.default_rng(1234)
        shape = (BATCH, 112, 112, 64) if layout == "NHWC" else (BATCH, 64, 112, 112)
        self.x = rng.standard_normal(shape, dtype=np.float32)
        self.layout = layout

    def time_max_pool_3x3_s2(self, layout, threads):
        self.pool(self.x, 3, 2, 1, layout=self.layout)

    def time_global_avg_pool(self, layout, threads):
        self.gap(self.x, layout=self.layout)
