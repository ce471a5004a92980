"""The results pyfastopt promises are bitwise identical on every architecture (x86-64,
aarch64) and every SIMD level: fixed inputs, outputs keyed by name.

``tools/golden.py`` writes them, computed on x86-64, to ``tests/golden/golden.npz``;
``tests/test_golden.py`` recomputes them wherever it runs (every SIMD level the machine
has; aarch64 under qemu in ``.ci/aarch64``) and compares bits. What is in here is exactly
the list in ARCHITECTURE.md, "Same bits on every architecture"; what may differ (and why)
is listed there too and deliberately left out.

Inputs come from integer formulas (no random generator, whose streams could change
between NumPy versions), at sizes that are not multiples of any vector width so that
main loops and tails are both covered.
"""

from __future__ import annotations

import numpy as np

import pyfastopt
from pyfastopt import optim, quant


def _floats(n: int, salt: int, dtype: type = np.float32, scale: float = 1.0) -> np.ndarray:
    """Deterministic values in about [-scale, scale): a fixed integer hash, exactly scaled."""
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(salt * 40503 + 12345)) % np.uint64(1 << 20)
    return ((h.astype(np.float64) - (1 << 19)) * (scale / (1 << 19))).astype(dtype)


def _bytes(shape: tuple[int, ...], salt: int, dtype: type) -> np.ndarray:
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(40503) + np.uint64(salt * 2654435761)) % np.uint64(256)
    v = h.astype(np.int64)
    if dtype == np.int8:
        v = v - 128
    return v.astype(dtype).reshape(shape)


def _optimizers(out: dict[str, np.ndarray]) -> None:
    n = 301
    cases = {
        "adam_f32": (np.float32, lambda p: optim.Adam(p, lr=1e-2, weight_decay=1e-2, amsgrad=True)),
        "adam_f64": (np.float64, lambda p: optim.Adam(p, lr=1e-2, betas=(0.8, 0.95))),
        "adamw_bf16": (
            np.float32,
            lambda p: optim.AdamW(p, lr=3e-3, weight_decay=0.1, state_dtype="bfloat16"),
        ),
        "sgd_nesterov_f32": (
            np.float32,
            lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        ),
        "sgd_f64": (
            np.float64,
            lambda p: optim.SGD(p, lr=0.1, momentum=0.5, dampening=0.1, l1=1e-3),
        ),
    }
    for name, (dtype, make) in cases.items():
        p = _floats(n, 1, dtype)
        opt = make([p])
        for step in range(3):
            opt.step([_floats(n, 10 + step, dtype, scale=2.0)])
        out[f"optim/{name}/param"] = p.copy()
        for key, value in sorted(opt.state_dict()["state"][0].items()):
            if isinstance(value, np.ndarray):
                out[f"optim/{name}/{key}"] = np.array(value)


def _dropout(out: dict[str, np.ndarray]) -> None:
    for dtype in (np.float32, np.float64):
        x = _floats(1000, 2, dtype)
        y, mask = pyfastopt.dropout(x, p=0.3, seed=1234, offset=7, return_mask=True)
        out[f"dropout/{np.dtype(dtype).name}/y"] = y
        out[f"dropout/{np.dtype(dtype).name}/mask"] = mask
    out["dropout/mask_p0.9"] = pyfastopt.dropout_mask((13, 77), 0.9, 99, offset=3)


def _quantize(out: dict[str, np.ndarray]) -> None:
    x = _floats(1003, 3, np.float32, scale=4.0)
    for dtype, zp in ((np.int8, -3), (np.uint8, 131)):
        q = quant.quantize(x, 0.03125 * 1.1, zp, dtype)
        out[f"quant/{np.dtype(dtype).name}/q"] = q
        out[f"quant/{np.dtype(dtype).name}/dq"] = quant.dequantize(q, 0.03125 * 1.1, zp)
    x2 = _floats(17 * 19, 4, np.float32, scale=3.0).reshape(17, 19)
    s = (np.arange(1, 20, dtype=np.float32) / 97.0).astype(np.float32)
    zp2 = (np.arange(19) % 7 - 3).astype(np.int32)
    q2 = quant.quantize(x2, s, zp2, np.int8, axis=1)
    out["quant/per_axis/q"] = q2
    out["quant/per_axis/dq"] = quant.dequantize(q2, s, zp2, axis=1)
    xd = _floats(257, 5, np.float64, scale=2.0)
    out["quant/f64/q"] = quant.quantize(xd, 0.0123, 7, np.int8)


def _batchnorm(out: dict[str, np.ndarray]) -> None:
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        x = _floats(6 * 5 * 7 * 3, 6, dtype, scale=3.0).reshape(6, 5, 7, 3)
        w = _floats(5, 7, dtype) + dtype(1.5)
        b = _floats(5, 8, dtype)
        rm = np.zeros(5, dtype)
        rv = np.ones(5, dtype)
        y, mean, invstd = pyfastopt.batch_norm_train(x, w, b, rm, rv, momentum=0.1, eps=1e-5)
        out[f"batchnorm/{name}/y"] = y
        out[f"batchnorm/{name}/mean"] = mean
        out[f"batchnorm/{name}/invstd"] = invstd
        out[f"batchnorm/{name}/running_mean"] = rm
        out[f"batchnorm/{name}/running_var"] = rv
        dy = _floats(x.size, 9, dtype).reshape(x.shape)
        dx, dw, db = pyfastopt.batch_norm_backward(dy, x, w, mean, invstd)
        out[f"batchnorm/{name}/dx"] = dx
        out[f"batchnorm/{name}/dw"] = dw
        out[f"batchnorm/{name}/db"] = db
        out[f"batchnorm/{name}/infer"] = pyfastopt.batch_norm_infer(x, w, b, rm, rv, eps=1e-5)
        # batch norm fused with ReLU (forward and backward), channels-first and -last
        for axis in (1, 3):
            c = x.shape[axis]
            wr, br = _floats(c, 10 + axis, dtype) + dtype(1.0), _floats(c, 12 + axis, dtype)
            yr, mr, sr = pyfastopt.batch_norm_train(x, wr, br, axis=axis, activation="relu")
            out[f"batchnorm/{name}/relu{axis}/y"] = yr
            out[f"batchnorm/{name}/relu{axis}/grads"] = np.concatenate(
                [
                    np.ravel(g)
                    for g in pyfastopt.batch_norm_backward(
                        dy, x, wr, mr, sr, axis=axis, activation="relu", y=yr
                    )
                ]
            )


def _qgemm(out: dict[str, np.ndarray]) -> None:
    m, k, n = 19, 70, 29  # odd against every register tile (4x4, 6x8, 8x12, 12x32)
    a_u8 = _bytes((m, k), 1, np.uint8)
    a_s8 = _bytes((m, k), 2, np.int8)
    b_s8 = _bytes((k, n), 3, np.int8)
    b_u8 = _bytes((k, n), 4, np.uint8)
    out["qgemm/i32/u8s8"] = quant.matmul_int8(a_u8, 3, b_s8, -2)
    out["qgemm/i32/s8u8"] = quant.matmul_int8(a_s8, -5, b_u8, 128)
    out["qgemm/i32/u8s8_T"] = quant.matmul_int8(a_u8[::-1], 0, b_s8.T.copy().T, 0)
    acc = out["qgemm/i32/u8s8"]
    out["qgemm/requantize/u8"] = quant.requantize(acc, 0.0007, 120, np.uint8)
    out["qgemm/requantize/i8"] = quant.requantize(acc, 0.0007, -4, np.int8)
    out["qgemm/qlinear/u8"] = quant.qlinear_matmul(a_u8, 0.02, 128, b_s8, 0.01, 0, 0.05, 128)
    # float32 output pipeline through the quantized linear layer: dynamic per tensor and
    # per row, bias, relu; static with output qparams (uint8 out).
    x = _floats(m * k, 5, np.float32, scale=2.0).reshape(m, k)
    w = _bytes((n, k), 6, np.int8)
    ws = (np.arange(1, n + 1, dtype=np.float32) / 512.0).astype(np.float32)
    bias = _floats(n, 7, np.float32)
    for gran in ("tensor", "row"):
        for act in (None, "relu"):
            layer = quant.QuantizedLinear(w, ws, bias, activation=act, act_granularity=gran)
            out[f"qgemm/linear/{gran}/{act}"] = layer(x)
    layer = quant.QuantizedLinear(w, ws, bias)
    layer.set_input_qparams(0.015, 100)
    out["qgemm/linear/static"] = layer(x)
    layer.set_output_qparams(0.05, 77)
    out["qgemm/linear/static_u8"] = layer(x)


def _gemm(out: dict[str, np.ndarray]) -> None:
    # Every path of gemm.h (packed, direct, dot) has a fixed FMA order and canonical lane
    # count; float32 gelu is a polynomial (no libm). float64 gelu is left out (libm erfc).
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        a = _floats(37 * 300, 11, dtype).reshape(37, 300)
        b = _floats(300 * 45, 12, dtype).reshape(300, 45)
        out[f"gemm/{name}/packed"] = pyfastopt.matmul(a, b)
        out[f"gemm/{name}/small"] = pyfastopt.matmul(a[:3, :20], b[:20, :7])
        w = _floats(45 * 300, 13, dtype).reshape(45, 300)
        bias = _floats(45, 14, dtype)
        out[f"gemm/{name}/linear_relu"] = pyfastopt.linear(a[:2], w, bias, activation="relu")
    a = _floats(9 * 70, 15, np.float32, scale=3.0).reshape(9, 70)
    w = _floats(33 * 70, 16, np.float32).reshape(33, 70)
    out["gemm/float32/linear_gelu"] = pyfastopt.linear(a, w, None, activation="gelu")


def _conv(out: dict[str, np.ndarray]) -> None:
    # Every conv path has a fixed reduction order (r, s, c) and fixed batch blocks for
    # dweight: the packed implicit GEMM (both layouts, stride, dilation, asymmetric padding,
    # groups), 1x1, the small-Cin path, depthwise (with a channel multiplier); float32 gelu
    # is the polynomial of the gemm epilogue (float64 gelu uses libm: left out); float32
    # "wino" runs Winograd F(2x2, 3x3) (forward and dx; its transforms are baseline code).
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        cases = {
            # key: (N, C, H, W, Co, k, stride, padding, dilation, groups)
            "3x3": (2, 29, 5, 4, 6, 3, 1, 1, 1, 1),
            "s2d2": (1, 9, 9, 10, 5, 3, 2, (1, 0, 2, 1), 2, 1),
            "1x1": (2, 17, 3, 5, 9, 1, 1, 0, 1, 1),
            "cin3": (2, 3, 9, 7, 8, 3, 2, 1, 1, 1),
            "groups2": (1, 12, 5, 6, 10, 3, 1, 1, 1, 2),
            "dw": (2, 11, 6, 5, 11, 3, 1, 1, 1, 11),
            "dwmult": (2, 6, 8, 7, 12, 3, 2, 1, 1, 6),
            # float32: Winograd F(2x2, 3x3) (>= 16 channels both ways), odd sizes
            "wino": (2, 16, 5, 7, 17, 3, 1, (1, 2, 0, 1), 1, 1),
        }
        for i, (key, (n, c, h, w_, co, k, st, pad, dil, g)) in enumerate(cases.items()):
            x = _floats(n * c * h * w_, 20 + i, dtype).reshape(n, c, h, w_)
            wt = _floats(co * (c // g) * k * k, 40 + i, dtype).reshape(co, c // g, k, k)
            bias = _floats(co, 60 + i, dtype)
            geo = dict(stride=st, padding=pad, dilation=dil, groups=g)
            for layout in ("NCHW", "NHWC"):
                xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                y = pyfastopt.conv2d(xl, wt, bias, activation="relu", layout=layout, **geo)
                out[f"conv/{name}/{key}/{layout}/y"] = y
                dy = _floats(y.size, 80 + i, dtype).reshape(y.shape)
                grads = pyfastopt.conv2d_backward(dy, xl, wt, layout=layout, **geo)
                out[f"conv/{name}/{key}/{layout}/grads"] = np.concatenate(
                    [np.ravel(v) for v in grads]
                )
    x = _floats(2 * 8 * 6 * 6, 99, np.float32).reshape(2, 6, 6, 8)
    wt = _floats(12 * 8 * 9, 98, np.float32).reshape(12, 8, 3, 3)
    out["conv/float32/gelu/NHWC/y"] = pyfastopt.conv2d(
        x, wt, None, padding="same", activation="gelu", layout="NHWC"
    )


def _pool(out: dict[str, np.ndarray]) -> None:
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        x = _floats(11 * 7 * 6, 101, dtype).reshape(1, 11, 7, 6)
        for layout in ("NCHW", "NHWC"):
            xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            calls = {
                "max": (
                    pyfastopt.max_pool2d,
                    pyfastopt.max_pool2d_backward,
                    (3,),
                    {"stride": 2, "padding": 1},
                ),
                "max_ceil": (
                    pyfastopt.max_pool2d,
                    pyfastopt.max_pool2d_backward,
                    (2,),
                    {"stride": 2, "dilation": 2, "ceil_mode": True},
                ),
                "avg": (
                    pyfastopt.avg_pool2d,
                    pyfastopt.avg_pool2d_backward,
                    (3,),
                    {"stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
                ),
                "avg_s1": (
                    pyfastopt.avg_pool2d,
                    pyfastopt.avg_pool2d_backward,
                    (3,),
                    {"stride": 1},
                ),
                "adaptive": (
                    pyfastopt.adaptive_avg_pool2d,
                    pyfastopt.adaptive_avg_pool2d_backward,
                    ((4, 3),),
                    {},
                ),
            }
            for key, (fwd, bwd, args, kw) in calls.items():
                y = fwd(xl, *args, layout=layout, **kw)
                dy = _floats(y.size, 102, dtype).reshape(y.shape)
                if key == "adaptive":
                    dx = bwd(dy, xl, layout=layout)
                else:
                    dx = bwd(dy, xl, *args, layout=layout, **kw)
                out[f"pool/{name}/{key}/{layout}/y"] = y
                out[f"pool/{name}/{key}/{layout}/dx"] = dx
            out[f"pool/{name}/global/{layout}/y"] = pyfastopt.global_avg_pool2d(xl, layout=layout)


def _qconv(out: dict[str, np.ndarray]) -> None:
    x = _bytes((2, 13, 9, 10), 110, np.uint8)
    w = _bytes((17, 13, 3, 3), 111, np.int8)
    wd = _bytes((13, 1, 3, 3), 112, np.int8)
    bias = (_bytes((17,), 113, np.int8).astype(np.int32) * 37).astype(np.int32)
    ws = (np.arange(1, 18, dtype=np.float32) / 700.0).astype(np.float32)
    for layout in ("NCHW", "NHWC"):
        xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out[f"qconv/i32/{layout}"] = quant.conv2d_int8(
            xl, 7, w, 0, bias, stride=2, padding=1, layout=layout
        )
        scaled = dict(padding=1, layout=layout, x_scale=0.02, weight_scale=ws)
        out[f"qconv/f32/{layout}"] = quant.conv2d_int8(
            xl, 7, w, 0, bias, **scaled, activation="relu"
        )
        out[f"qconv/u8/{layout}"] = quant.conv2d_int8(
            xl, 7, w, 0, bias, **scaled, out_scale=0.05, out_zero_point=np.uint8(100)
        )
        out[f"qconv/dw/{layout}"] = quant.conv2d_int8(
            xl, 128, wd, 0, None, padding=1, groups=13, layout=layout
        )


def compute() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    _optimizers(out)
    _dropout(out)
    _quantize(out)
    _batchnorm(out)
    _qgemm(out)
    _gemm(out)
    _conv(out)
    _pool(out)
    _qconv(out)
    return out
