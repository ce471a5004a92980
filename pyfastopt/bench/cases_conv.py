"""Bench cases for ``pyfastopt.conv2d`` (forward, float32): the ResNet-18 and MobileNetV2
layers of issue 17 at batch 32, channels-last (NHWC) and channels-first (NCHW).

``work``: 2 x multiply-adds (``limit="fma"``) for dense convolutions; bytes (read x,
write y, ``limit="bandwidth_copy"``) for depthwise ones, which are memory-bound.

Implementations, each one call:

* ``pyfastopt``: ``conv2d`` allocating its output, and with a preallocated ``out=``.
* ``numpy``: im2col as a strided view (``sliding_window_view`` of the zero-padded input)
  contracted with the weight by ``np.tensordot`` (per group; depthwise by ``einsum``)
  -- BLAS sgemm on a copy of the windows.
* ``torch``: ``F.conv2d`` under ``no_grad`` (oneDNN); NHWC cases on ``channels_last``
  tensors.

Correctness guard: the outputs compared with NumPy's at ``rtol=1e-3, atol=1e-3``.

``conv2d f32 fwd+bwd ...`` (the dense layers): forward and backward producing y, dx,
dweight and dbias (pyfastopt: ``conv2d`` + ``conv2d_backward``; torch: ``F.conv2d`` and
``torch.autograd.grad`` with respect to x, weight and bias; NumPy: per-tap tensordots),
work 3 x 2 x multiply-adds; the checked vector is y, dx, dweight and dbias (the last two
divided by sqrt(pixels)).

Also the int8 inference of a small MobileNet-like CNN (``cnn_models.py``) at 3x64x64,
batch 1 and 32: ``conv2d int8 mobilenet-like ...`` (pyfastopt: the static
``QuantizedCNN``; limit ``vnni``, work 2 x multiply-adds) and ``conv2d f32
mobilenet-like ...`` (pyfastopt's fp32 ``nn`` forward; limit ``fma``), each against
NumPy's float forward of the folded network (int8 rows guarded at ``rtol=atol=0.05``:
quantization error, logits of about 0.2). The int8 rows also time ONNX Runtime's int8
(``quantize_static`` QDQ of the same network, NCHW input) in its own child process
(``Case.peers``): its time and pyfastopt's speed-up over it are in the row's detail.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .registry import Case, Context, Prepared, register

# name: (N, C, H, W, Co, k, stride, padding, groups, quick)
LAYERS = {
    "resnet 3x3 64->64 56x56": (32, 64, 56, 56, 64, 3, 1, 1, 1, False),
    "resnet 3x3 128->128 28x28": (32, 128, 28, 28, 128, 3, 1, 1, 1, False),
    "resnet 3x3 128->128 28x28 s2": (32, 128, 28, 28, 128, 3, 2, 1, 1, False),
    "resnet 1x1 256->256 14x14": (32, 256, 14, 14, 256, 1, 1, 0, 1, False),
    "mbv2 1x1 24->144 56x56": (32, 24, 56, 56, 144, 1, 1, 0, 1, False),
    "mbv2 dw3x3 144 56x56": (32, 144, 56, 56, 144, 3, 1, 1, 144, False),
    "mbv2 1x1 144->24 56x56": (32, 144, 56, 56, 24, 1, 1, 0, 1, False),
    "mbv2 1x1 96->576 14x14": (32, 96, 14, 14, 576, 1, 1, 0, 1, False),
    "mbv2 dw3x3 576 14x14": (32, 576, 14, 14, 576, 3, 1, 1, 576, False),
    "mbv2 1x1 576->96 14x14": (32, 576, 14, 14, 96, 1, 1, 0, 1, False),
    "tiny 3x3 8->8 9x9": (2, 8, 9, 9, 8, 3, 1, 1, 1, True),
    "tiny dw3x3 8 9x9": (2, 8, 9, 9, 8, 3, 2, 1, 8, True),
}


def _numpy_conv_nhwc(
    x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int
) -> np.ndarray:
    """NHWC x, (Co, C/g, k, k) w -> NHWC y via strided windows and tensordot."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    k = w.shape[2]
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[
        :, ::stride, ::stride
    ]  # (N, OH, OW, C, k, k)
    cg, cog = w.shape[1], w.shape[0] // groups
    if cg == 1 and cog == 1:  # depthwise
        return np.einsum("nhwcij,cij->nhwc", win, w[:, 0], optimize=True)
    outs = [
        np.tensordot(
            win[:, :, :, g * cg : (g + 1) * cg], w[g * cog : (g + 1) * cog], ([3, 4, 5], [1, 2, 3])
        )
        for g in range(groups)
    ]
    return outs[0] if groups == 1 else np.concatenate(outs, axis=3)


def _setup(ctx: Context, spec: tuple, layout: str) -> Prepared:
    from .. import conv2d

    n, c, h, w_, co, k, s, p, g, _ = spec
    rng = ctx.rng()
    x_nhwc = rng.standard_normal((n, h, w_, c), dtype=np.float32)
    wt = (
        rng.standard_normal((co, c // g, k, k), dtype=np.float32) / np.sqrt(c // g * k * k)
    ).astype(np.float32)
    nhwc = layout == "NHWC"
    x = x_nhwc if nhwc else np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    args = {"stride": s, "padding": p, "groups": g, "layout": layout}
    y_pf = conv2d(x, wt, **args)

    def numpy_conv() -> np.ndarray:
        y = _numpy_conv_nhwc(x_nhwc, wt, s, p, g)
        return y if nhwc else y.transpose(0, 3, 1, 2)

    impls: dict = {
        "pyfastopt": {
            "allocating": functools.partial(conv2d, x, wt, **args),
            "out=": functools.partial(conv2d, x, wt, out=y_pf, **args),
        },
        "numpy": numpy_conv,
    }
    torch = ctx.torch
    if torch is not None:
        F = torch.nn.functional
        xt = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2) if nhwc else torch.from_numpy(x)
        wtt = torch.from_numpy(wt)
        if nhwc:
            wtt = wtt.contiguous(memory_format=torch.channels_last)

        def torch_conv() -> Any:
            with torch.no_grad():
                return F.conv2d(xt, wtt, None, s, p, 1, g)

        impls["torch"] = torch_conv

    def output(impl: str, returned: Any) -> np.ndarray:
        if impl == "torch":
            y = returned.numpy() if not nhwc else returned.permute(0, 2, 3, 1).numpy()
            return np.ascontiguousarray(y)
        return np.asarray(returned)

    return Prepared(impls, output=output)


def _numpy_conv_backward_nhwc(
    dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: int, pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias) of a groups=1 convolution, NHWC dy and x, by tensordot per tap."""
    _, h, w_, _ = x.shape
    _, _, kh, kw = w.shape
    oh, ow = dy.shape[1], dy.shape[2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    dxp = np.zeros_like(xp)
    dw = np.empty_like(w)
    for r in range(kh):
        for s in range(kw):
            rows = slice(r, r + stride * (oh - 1) + 1, stride)
            cols = slice(s, s + stride * (ow - 1) + 1, stride)
            dxp[:, rows, cols] += dy @ w[:, :, r, s]
            dw[:, :, r, s] = np.tensordot(dy, xp[:, rows, cols], ([0, 1, 2], [0, 1, 2]))
    dx = dxp[:, pad : pad + h, pad : pad + w_] if pad else dxp
    return dx, dw, dy.sum(axis=(0, 1, 2))


def _setup_backward(ctx: Context, spec: tuple, layout: str) -> Prepared:
    """Forward + backward (y, dx, dweight, dbias) of one layer; torch by autograd."""
    from .. import conv2d, conv2d_backward

    n, c, h, w_, co, k, s, p, g, _ = spec
    rng = ctx.rng()
    x_nhwc = rng.standard_normal((n, h, w_, c), dtype=np.float32)
    wt = (
        rng.standard_normal((co, c // g, k, k), dtype=np.float32) / np.sqrt(c // g * k * k)
    ).astype(np.float32)
    b = rng.standard_normal(co, dtype=np.float32)
    oh = (h + 2 * p - k) // s + 1
    dy_nhwc = rng.standard_normal((n, oh, oh, co), dtype=np.float32)
    nhwc = layout == "NHWC"

    def to_layout(a: np.ndarray) -> np.ndarray:
        return a if nhwc else np.ascontiguousarray(a.transpose(0, 3, 1, 2))

    def from_layout(a: np.ndarray) -> np.ndarray:
        return a if nhwc else a.transpose(0, 2, 3, 1)

    x, dy = to_layout(x_nhwc), to_layout(dy_nhwc)
    args = {"stride": s, "padding": p, "groups": g, "layout": layout}

    def pyfastopt_step() -> tuple:
        y = conv2d(x, wt, b, **args)
        return (y, *conv2d_backward(dy, x, wt, **args))

    def numpy_step() -> tuple:
        y = _numpy_conv_nhwc(x_nhwc, wt, s, p, g) + b
        dx, dw, db = _numpy_conv_backward_nhwc(dy_nhwc, x_nhwc, wt, s, p)
        return to_layout(y), to_layout(dx), dw, db

    impls: dict = {"pyfastopt": {"conv2d + conv2d_backward": pyfastopt_step}, "numpy": numpy_step}
    torch = ctx.torch
    if torch is not None:
        F = torch.nn.functional
        if nhwc:
            xt = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
            dyt = torch.from_numpy(dy_nhwc).permute(0, 3, 1, 2)
            wtt = torch.from_numpy(wt).contiguous(memory_format=torch.channels_last)
        else:
            xt, dyt, wtt = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(wt)
        xt.requires_grad_(True)
        wtt.requires_grad_(True)
        bt = torch.from_numpy(b).requires_grad_(True)

        def torch_step() -> tuple:
            y = F.conv2d(xt, wtt, bt, s, p, 1, g)
            return (y, *torch.autograd.grad(y, (xt, wtt, bt), dyt))

        impls["torch"] = torch_step

    def output(impl: str, returned: Any) -> np.ndarray:
        y, dx, dw, db = returned
        if impl == "torch":
            y, dx = (t.detach().permute(0, 2, 3, 1).numpy() for t in (y, dx))
            dw, db = dw.detach().numpy(), db.detach().numpy()
        else:
            y, dx = from_layout(np.asarray(y)), from_layout(np.asarray(dx))
        # scaled so that one tolerance fits all: dweight and dbias sum over every pixel
        scale = 1.0 / np.sqrt(n * oh * oh)
        return np.concatenate(
            [np.ravel(y), np.ravel(dx), np.ravel(dw) * scale, np.ravel(db) * scale]
        )

    return Prepared(impls, output=output)


def _setup_mobilenet(ctx: Context, batch: int, int8: bool) -> Prepared:
    from . import cnn_models

    model = cnn_models.float_model("NHWC", seed=0)
    x = cnn_models.images(batch, "NHWC", seed=2)
    ref = cnn_models.numpy_forward(model)
    if int8:
        qm = cnn_models.int8_model(seed=0)
        impls: dict = {"pyfastopt": {"int8 QuantizedCNN (static)": functools.partial(qm, x)}}
        # ONNX Runtime (only ever called in its own child: the session is made there)
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        session: list[Any] = []

        def ort_int8() -> Any:
            if not session:
                session.append(cnn_models.ort_int8_session(ctx.threads, seed=0))
            return session[0].run(None, {"input": x_nchw})[0]

        impls["onnxruntime"] = {"int8 QDQ (quantize_static)": ort_int8}
    else:
        impls = {"pyfastopt": {"fp32 nn forward": functools.partial(model, x)}}
    impls["numpy"] = {"float32 (folded, im2col)": functools.partial(ref, x)}
    return Prepared(impls)


def _register() -> None:
    from .cnn_models import macs as network_macs

    for batch, quick in ((1, False), (32, False)):
        for int8 in (True, False):
            register(
                Case(
                    family="conv",
                    name=f"conv2d {'int8' if int8 else 'f32'} mobilenet-like 3x64x64 b{batch} NHWC",
                    limit="vnni" if int8 else "fma",
                    work=2 * network_macs(batch),
                    setup=functools.partial(_setup_mobilenet, batch=batch, int8=int8),
                    quick=quick,
                    rtol=0.05 if int8 else 1e-3,
                    atol=0.05 if int8 else 1e-3,
                    note="2 x multiply-adds of the whole network",
                    peers=("onnxruntime",) if int8 else (),
                )
            )
    from .._conv import _winograd_selected

    for name, spec in LAYERS.items():
        n, c, h, w, co, k, s, p, g, quick = spec
        oh = (h + 2 * p - k) // s + 1
        macs = n * oh * oh * co * (c // g) * k * k
        depthwise = c // g == 1
        wino = _winograd_selected(np.float32, (c, co), (k, k), (s, s), (1, 1), g, (p,) * 4)
        # the kernel that runs (work stays the direct convolution's multiply-adds)
        algo = (
            "winograd F(2x2,3x3)" if wino else "depthwise direct" if depthwise else "implicit GEMM"
        )
        for layout in ("NHWC", "NCHW"):
            register(
                Case(
                    family="conv",
                    name=f"conv2d f32 {name} {layout}",
                    limit="bandwidth_copy" if depthwise else "fma",
                    work=4 * (n * h * w * c + n * oh * oh * co) if depthwise else 2 * macs,
                    setup=functools.partial(_setup, spec=spec, layout=layout),
                    quick=quick,
                    rtol=1e-3,
                    atol=1e-3,
                    note=(
                        f"bytes read x + write y; {algo}"
                        if depthwise
                        else f"2 x direct multiply-adds; {algo}"
                    ),
                )
            )
            if depthwise or g != 1:
                continue  # the depthwise fwd+bwd rows belong to the depthwise kernels
            register(
                Case(
                    family="conv",
                    name=f"conv2d f32 fwd+bwd {name} {layout}",
                    limit="fma",
                    work=3 * 2 * macs,
                    setup=functools.partial(_setup_backward, spec=spec, layout=layout),
                    quick=quick,
                    rtol=1e-3,
                    atol=1e-3,
                    note=(
                        f"3 x 2 x direct multiply-adds (y, dx, dweight); y and dx {algo}"
                        if wino
                        else f"3 x 2 x multiply-adds (y, dx, dweight); {algo}"
                    ),
                )
            )


_register()
