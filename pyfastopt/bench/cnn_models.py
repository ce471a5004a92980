"""The small MobileNet-like CNN that the int8 convolution benchmarks run (issue 17 point 9),
built for every runtime from one set of float weights.

Network (3x64x64 input): a 3x3 stride-2 stem 3->16, then three depthwise-separable
blocks (3x3 depthwise + BatchNorm + ReLU, 1x1 pointwise + BatchNorm + ReLU) 16->32,
32->64 (stride 2), 64->128 (stride 2), global average pool, Linear 128->10. BatchNorm
has non-trivial running statistics (seeded), so folding matters.

* :func:`float_model`: the ``pyfastopt.nn`` model (eval mode) in either layout; both
  layouts share the same weights.
* :func:`int8_model`: ``quantize_model(..., mode="static")`` of the NHWC model, calibrated
  on seeded random images (:class:`pyfastopt.quant.QuantizedCNN`).
* :func:`numpy_forward`: the folded float network in NumPy (the rows' reference).

Used by ``cases_conv.py`` (``pyfastopt bench``). ONNX Runtime's int8 (quantize_static,
QDQ) of the same network is timed by the asv suite (benchmarks/benchmarks/bench_qconv.py,
each runtime in its own process): ``pyfastopt bench`` rows have no ONNX Runtime column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INPUT = (3, 64, 64)  # C, H, W
# (in, out, stride) of the depthwise-separable blocks after the stem
BLOCKS = ((16, 32, 1), (32, 64, 2), (64, 128, 2))


def float_model(layout: str = "NHWC", seed: int = 0) -> Any:
    """The float32 network in ``layout`` (eval mode), same weights for any layout."""
    from .. import nn

    L = layout
    ss = [int(s) for s in np.random.SeedSequence(seed).generate_state(16, np.uint32)]
    layers: list[Any] = [
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False, layout=L, seed=ss[0]),
        nn.BatchNorm2d(16, layout=L),
        nn.ReLU(),
    ]
    for i, (a, b, s) in enumerate(BLOCKS):
        layers += [
            nn.Conv2d(
                a, a, 3, stride=s, padding=1, groups=a, bias=False, layout=L, seed=ss[1 + 2 * i]
            ),
            nn.BatchNorm2d(a, layout=L),
            nn.ReLU(),
            nn.Conv2d(a, b, 1, bias=False, layout=L, seed=ss[2 + 2 * i]),
            nn.BatchNorm2d(b, layout=L),
            nn.ReLU(),
        ]
    layers += [
        nn.AdaptiveAvgPool2d(1, layout=L),
        nn.Flatten(layout=L),
        nn.Linear(128, 10, seed=ss[15]),
    ]
    model = nn.Sequential(*layers)
    rng = np.random.default_rng(seed + 1)
    bns: list[Any] = [m for _, m in model._walk() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        n = bn.num_features
        bn.weight[...] = rng.uniform(0.5, 1.5, n)
        bn.bias[...] = rng.uniform(-0.2, 0.2, n)
        bn.running_mean[...] = rng.uniform(-0.1, 0.1, n)
        bn.running_var[...] = rng.uniform(0.2, 0.6, n)
    return model.eval()


def images(n: int, layout: str = "NHWC", seed: int = 1) -> np.ndarray:
    """Seeded smooth-ish random images in [0, 1], float32, (n, 3, 64, 64) or NHWC."""
    rng = np.random.default_rng(seed)
    c, h, w = INPUT
    coarse = rng.uniform(0, 1, (n, c, h // 8, w // 8)).astype(np.float32)
    x = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
    x = (0.7 * x + 0.3 * rng.uniform(0, 1, x.shape)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x


def int8_model(seed: int = 0, calib: int = 32) -> Any:
    """Static int8 QuantizedCNN of the NHWC model, calibrated on ``calib`` images."""
    from ..quant import quantize_model

    return quantize_model(float_model("NHWC", seed), images(calib, "NHWC"), mode="static")


def macs(batch: int) -> int:
    """Multiply-adds of one forward at ``batch``."""
    total, h = 0, INPUT[1] // 2
    total += h * h * 16 * 3 * 9  # stem, stride 2
    for a, b, s in BLOCKS:
        h //= s
        total += h * h * a * 9 + h * h * a * b
    return batch * (total + 128 * 10)


def numpy_forward(model: Any) -> Any:
    """``f(x)``: the folded float network (NHWC) in NumPy, float32."""
    from ..quant import cnn
    from .cases_conv import _numpy_conv_nhwc

    nodes = cnn.fold(model)

    def f(x: np.ndarray) -> np.ndarray:
        h = x
        for n in nodes:
            if n.kind == "conv":
                w = n.weight.astype(np.float32)
                h = _numpy_conv_nhwc(h, w, n.stride[0], n.padding[0], n.groups)
                h = h + n.bias.astype(np.float32)
                if n.relu:
                    h = np.maximum(h, 0)
            elif n.kind == "adaptive_avgpool":
                h = h.mean(axis=(1, 2), keepdims=True)
            elif n.kind == "flatten":
                h = h.reshape(h.shape[0], -1)
            elif n.kind == "linear":
                h = h @ n.weight.T.astype(np.float32) + n.bias.astype(np.float32)
        return h

    return f
