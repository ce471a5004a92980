"""pyfastopt's instruction-count cases (see icount.py): the hot kernels at fixed sizes.

Each ``case_<name>()`` does its setup (not counted) and returns the zero-argument
callable whose instructions are counted: one call of the public API, on one thread, at
the SIMD level icount.py pins. Inputs are seeded and outputs preallocated where the API
allows, so every call does the same work. Sizes are large enough that the kernel
dominates Python's per-call overhead, and small enough that the whole set runs in well
under a minute under callgrind. The first line of each docstring is the table's "what".
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import pyfastopt
from pyfastopt import optim, quant

Call = Callable[[], Any]
SEED = 20260101


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def _f32(*shape: int) -> np.ndarray:
    return _rng().standard_normal(shape, dtype=np.float32)


def _params(count: int, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = _rng()
    params = [rng.standard_normal(size, dtype=np.float32) for _ in range(count)]
    grads = [rng.standard_normal(size, dtype=np.float32) for _ in range(count)]
    return params, grads


# ------------------------------------------------------------------ element-wise
def case_axpby_f32_1e6() -> Call:
    """ops.axpby_(y, x, a, b): 1e6 float32"""
    y, x = _f32(1_000_000), _f32(1_000_000)
    return lambda: pyfastopt.ops.axpby_(y, x, 0.5, 0.999)


def case_l2_norm_f32_10x1e5() -> Call:
    """ops.l2_norm over 10 float32 tensors of 1e5 (the clipping reduction)"""
    xs = _params(10, 100_000)[0]
    return lambda: pyfastopt.ops.l2_norm(xs)


# ------------------------------------------------------------------ optimizers
def _step(opt: optim.Optimizer, grads: list[np.ndarray]) -> Call:
    opt.step(grads)  # first step creates the state: the counted steps are steady ones
    return lambda: opt.step(grads)


def case_adam_f32_10x1e5() -> Call:
    """optim.Adam step: 10 float32 tensors of 1e5"""
    params, grads = _params(10, 100_000)
    return _step(optim.Adam(params, lr=1e-3), grads)


def case_adamw_f32_10x1e5() -> Call:
    """optim.AdamW step (weight_decay=1e-2): 10 float32 tensors of 1e5"""
    params, grads = _params(10, 100_000)
    return _step(optim.AdamW(params, lr=1e-3), grads)


def case_sgd_momentum_f32_10x1e5() -> Call:
    """optim.SGD step (momentum=0.9, weight_decay=1e-4): 10 float32 tensors of 1e5"""
    params, grads = _params(10, 100_000)
    return _step(optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4), grads)


# ------------------------------------------------------------------ dropout
def case_dropout_f32_1e6() -> Call:
    """dropout(x, p=0.1, out=...): 1e6 float32 (Philox mask + scale)"""
    x = _f32(1_000_000)
    out = np.empty_like(x)
    return lambda: pyfastopt.dropout(x, 0.1, seed=7, out=out, offset=3)


# ------------------------------------------------------------------ GEMM
def case_matmul_f32_32() -> Call:
    """matmul 32x32 @ 32x32 float32, out= (small: call overhead + direct path)"""
    a, b = _f32(32, 32), _f32(32, 32)
    out = np.empty((32, 32), np.float32)
    return lambda: pyfastopt.matmul(a, b, out)


def case_matmul_f32_256() -> Call:
    """matmul 256x256 @ 256x256 float32, out= (packed path)"""
    a, b = _f32(256, 256), _f32(256, 256)
    out = np.empty((256, 256), np.float32)
    return lambda: pyfastopt.matmul(a, b, out)


def case_linear_gelu_f32_64x784x256() -> Call:
    """linear(x, W, b, 'gelu'): x (64, 784), W (256, 784) float32, out="""
    x, w, b = _f32(64, 784), _f32(256, 784) * 0.05, _f32(256)
    out = np.empty((64, 256), np.float32)
    return lambda: pyfastopt.linear(x, w, b, "gelu", out)


# ------------------------------------------------------------------ batch norm
def _bn_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = _f32(32, 64, 16, 16) * 2.0 + 1.0
    return x, np.ones(64, np.float32), np.zeros(64, np.float32)


def case_batch_norm_train_f32_32x64x16x16() -> Call:
    """batch_norm_train with running stats: (32, 64, 16, 16) float32, out="""
    x, w, b = _bn_inputs()
    rm, rv = np.zeros(64, np.float32), np.ones(64, np.float32)
    out = np.empty_like(x)
    return lambda: pyfastopt.batch_norm_train(x, w, b, rm, rv, out=out)


def case_batch_norm_backward_f32_32x64x16x16() -> Call:
    """batch_norm_backward: (32, 64, 16, 16) float32, out="""
    x, w, b = _bn_inputs()
    _, mean, invstd = pyfastopt.batch_norm_train(x, w, b)
    dy = _f32(32, 64, 16, 16)
    out = np.empty_like(x)
    return lambda: pyfastopt.batch_norm_backward(dy, x, w, mean, invstd, out=out)


# ------------------------------------------------------------------ int8
def case_quantize_f32_1e6_int8() -> Call:
    """quant.quantize per tensor to int8: 1e6 float32, out="""
    x = _f32(1_000_000)
    out = np.empty(x.shape, np.int8)
    return lambda: quant.quantize(x, 0.05, 3, np.int8, out=out)


def case_matmul_int8_256() -> Call:
    """quant.matmul_int8: uint8 256x256 @ int8 256x256 -> int32"""
    rng = _rng()
    a = rng.integers(0, 256, (256, 256), dtype=np.uint8)
    b = rng.integers(-128, 128, (256, 256), dtype=np.int8)
    return lambda: quant.matmul_int8(a, 128, b, 0)


def case_quantized_mlp_b32() -> Call:
    """QuantizedSequential forward, dynamic int8 MLP 784-512-256-10, batch 32"""
    rng = _rng()
    sizes = [784, 512, 256, 10]
    layers = [
        quant.QuantizedLinear.from_float(
            rng.standard_normal((n, k), dtype=np.float32) / np.sqrt(k),
            rng.standard_normal(n, dtype=np.float32) * 0.1,
            activation="relu" if i < len(sizes) - 2 else None,
        )
        for i, (k, n) in enumerate(zip(sizes, sizes[1:]))
    ]
    model = quant.QuantizedSequential(layers)
    x = rng.random((32, 784), dtype=np.float32)
    return lambda: model(x)


def _qconv_lenet(n: int, hw: int, c: int, co: int, pad: int) -> Call:
    rng = _rng()
    x = rng.integers(0, 256, (n, hw, hw, c), dtype=np.uint8)
    w = np.clip(np.rint(rng.standard_normal((co, c, 5, 5)) * 30), -127, 127).astype(np.int8)
    ws = np.full(co, 0.002, np.float32)
    bias = rng.integers(-500, 500, co).astype(np.int32)
    return lambda: quant.conv2d_int8(
        x, 3, w, 0, bias, padding=pad, layout="NHWC", x_scale=0.05, weight_scale=ws,
        out_scale=0.2, out_zero_point=np.uint8(0), activation="relu",
    )  # fmt: skip


def case_qconv_5x5_c1_b32() -> Call:
    """conv2d_int8 NHWC 5x5 1 -> 16 channels, pad 2, 32 x 28 x 28, uint8 out (LeNet conv1)"""
    return _qconv_lenet(32, 28, 1, 16, 2)


def case_qconv_5x5_c16_b32() -> Call:
    """conv2d_int8 NHWC 5x5 16 -> 32 channels, 32 x 14 x 14, uint8 out (LeNet conv2)"""
    return _qconv_lenet(32, 14, 16, 32, 0)
