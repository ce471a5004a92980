"""Bench cases for pooling (family ``conv``), float32, batch 32, at ResNet sizes, both
layouts: ``max_pool2d`` 3x3 stride 2 pad 1 on the stem's 64x112x112, ``avg_pool2d`` 3x3
stride 1 pad 1 on 256x14x14, and ``global_avg_pool2d`` (adaptive to 1x1) on 512x7x7 and
on 64x56x56. Memory-bound: ``work`` is the bytes read (x) plus written (y),
``limit="bandwidth_copy"``.

Implementations: ``pyfastopt`` (allocating, and with ``out=``); ``numpy`` (strided
windows of the padded input reduced with ``max`` / ``mean``, or ``mean`` over H, W);
``torch`` (``F.max_pool2d`` / ``F.avg_pool2d`` / ``F.adaptive_avg_pool2d`` under
``no_grad``, NHWC cases on ``channels_last`` tensors).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .registry import Case, Context, Prepared, register

# name: (kind, N, C, H, W, k, stride, pad, quick)
POOLS = {
    "max_pool2d 3x3 s2 64x112x112": ("max", 32, 64, 112, 112, 3, 2, 1, False),
    "avg_pool2d 3x3 s1 256x14x14": ("avg", 32, 256, 14, 14, 3, 1, 1, False),
    "global_avg_pool2d 512x7x7": ("gap", 32, 512, 7, 7, 0, 0, 0, False),
    "global_avg_pool2d 64x56x56": ("gap", 32, 64, 56, 56, 0, 0, 0, False),
    "max_pool2d 3x3 s2 8x9x9 tiny": ("max", 2, 8, 9, 9, 3, 2, 1, True),
}


def _out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1 if k else 1


def _numpy_pool(x: np.ndarray, kind: str, k: int, s: int, p: int) -> np.ndarray:
    """NHWC reference."""
    if kind == "gap":
        return x.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(x.dtype)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s]
    if kind == "max":
        return win.max(axis=(-2, -1))
    return win.mean(axis=(-2, -1), dtype=np.float64).astype(x.dtype)  # count_include_pad


def _setup(ctx: Context, spec: tuple, layout: str) -> Prepared:
    from .. import avg_pool2d, global_avg_pool2d, max_pool2d

    kind, n, c, h, w, k, s, p, _ = spec
    rng = ctx.rng()
    x_nhwc = rng.standard_normal((n, h, w, c), dtype=np.float32)
    nhwc = layout == "NHWC"
    x = x_nhwc if nhwc else np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    if kind == "max":
        fn = functools.partial(max_pool2d, x, k, s, p, layout=layout)
    elif kind == "avg":
        fn = functools.partial(avg_pool2d, x, k, s, p, layout=layout)
    else:
        fn = functools.partial(global_avg_pool2d, x, layout=layout)
    y = fn()

    def numpy_pool() -> np.ndarray:
        r = _numpy_pool(x_nhwc, kind, k, s, p)
        return r if nhwc else r.transpose(0, 3, 1, 2)

    impls: dict = {
        "pyfastopt": {"allocating": fn, "out=": functools.partial(fn, out=y)},
        "numpy": numpy_pool,
    }
    torch = ctx.torch
    if torch is not None:
        F = torch.nn.functional
        xt = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2) if nhwc else torch.from_numpy(x)

        def torch_pool() -> Any:
            with torch.no_grad():
                if kind == "max":
                    return F.max_pool2d(xt, k, s, p)
                if kind == "avg":
                    return F.avg_pool2d(xt, k, s, p)
                return F.adaptive_avg_pool2d(xt, 1)

        impls["torch"] = torch_pool

    def output(impl: str, returned: Any) -> np.ndarray:
        if impl == "torch":
            r = returned.numpy() if not nhwc else returned.permute(0, 2, 3, 1).numpy()
            return np.ascontiguousarray(r)
        return np.asarray(returned)

    return Prepared(impls, output=output)


def _register() -> None:
    for name, spec in POOLS.items():
        _, n, c, h, w, k, s, p, quick = spec
        oh, ow = _out(h, k, s, p), _out(w, k, s, p)
        for layout in ("NHWC", "NCHW"):
            register(
                Case(
                    family="conv",
                    name=f"{name} f32 b{n} {layout}",
                    limit="bandwidth_copy",
                    work=4 * (n * h * w * c + n * oh * ow * c),
                    setup=functools.partial(_setup, spec=spec, layout=layout),
                    quick=quick,
                    rtol=1e-5,
                    atol=1e-5,
                    note="bytes read x + write y",
                )
            )


_register()
