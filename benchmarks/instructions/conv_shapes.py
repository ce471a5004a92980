"""Conv instruction-count cases for A/B comparisons of conv kernel changes (see icount.py).

The CNN step's small-image layers (batch 16 here: the same per-image work as the step's
batch 64) and the regression shapes of the ResNet-size layers, forward, backward-data and
backward-weight, NHWC and NCHW. Not the CI gate's cases (cases.py): run it with its own
baseline, e.g. an old build's ``--update`` and the new build's compare::

    python benchmarks/instructions/icount.py --cases benchmarks/instructions/conv_shapes.py \\
        --baseline /tmp/conv_base.json --update --reps 1
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import pyfastopt

Call = Callable[[], Any]

# (name, C, Co, H=W, batch, kernel, stride, layouts)
_SHAPES = [
    ("stem3_32_32", 3, 32, 32, 16, 3, 1, ("NHWC",)),
    ("c32_64_16", 32, 64, 16, 16, 3, 1, ("NHWC", "NCHW")),
    ("c64_128_8", 64, 128, 8, 16, 3, 1, ("NHWC", "NCHW")),
    ("c64_64_56", 64, 64, 56, 2, 3, 1, ("NHWC", "NCHW")),
    ("c128_28", 128, 128, 28, 2, 3, 1, ("NHWC", "NCHW")),
    ("c128_28_s2", 128, 128, 28, 2, 3, 2, ("NHWC", "NCHW")),
    ("p256_14", 256, 256, 14, 2, 1, 1, ("NHWC", "NCHW")),
]


def _make(c: int, co: int, hw: int, b: int, k: int, s: int, layout: str, op: str) -> Call:
    rng = np.random.default_rng(7)
    shape = (b, hw, hw, c) if layout == "NHWC" else (b, c, hw, hw)
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((co, c, k, k), dtype=np.float32) * 0.1
    bias = np.zeros(co, np.float32)
    pad = k // 2
    y = pyfastopt.conv2d(x, w, bias, stride=s, padding=pad, layout=layout)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    if op == "fwd":
        return lambda: pyfastopt.conv2d(x, w, bias, stride=s, padding=pad, layout=layout)
    if op == "bwd_data":
        return lambda: pyfastopt.conv2d_backward(
            dy, x, w, stride=s, padding=pad, layout=layout, need_dweight=False, need_dbias=False
        )
    return lambda: pyfastopt.conv2d_backward(
        dy, x, w, stride=s, padding=pad, layout=layout, need_dx=False, need_dbias=False
    )


for _name, _c, _co, _hw, _b, _k, _s, _layouts in _SHAPES:
    for _layout in _layouts:
        for _op in ("fwd", "bwd_data", "bwd_weight"):
            if _c == 3 and _op == "bwd_data":
                continue

            def _case(
                c: int = _c,
                co: int = _co,
                hw: int = _hw,
                b: int = _b,
                k: int = _k,
                s: int = _s,
                layout: str = _layout,
                op: str = _op,
            ) -> Call:
                return _make(c, co, hw, b, k, s, layout, op)

            _case.__doc__ = f"conv {_c}->{_co} {_k}x{_k}/{_s} {_hw}x{_hw} b{_b} {_layout} {_op}"
            globals()[f"case_{_name}_{_layout.lower()}_{_op}"] = _case
