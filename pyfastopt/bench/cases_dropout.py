"""Bench cases for ``pyfastopt.dropout``: training-mode dropout of a float32 array.

Memory-bound (limit ``"bandwidth_copy"``, the out-of-place ``y = s*x`` stream):
``y = dropout(x, p, seed)`` reads x and writes y, 8 bytes per element; the mask comes from
a counter-based RNG (Philox4x32-10) computed in registers, never stored. Compared with:

* NumPy: ``(rng.random(n, dtype=np.float32) >= p) * x * scale`` with
  ``rng = np.random.default_rng(...)``, and the same with every buffer preallocated
  (``random(out=)``, ``greater_equal(out=)``, ``multiply(out=)``); the harness keeps the
  faster. Generating the uniforms dominates NumPy's time.
* torch: ``torch.nn.functional.dropout(xt, p, training=True)`` (a new tensor per call).

pyfastopt is timed allocating its result (``dropout(x, p, seed)``, as torch does) and
writing into a preallocated ``out=`` (as NumPy's fastest spelling does); the faster counts.

Correctness guard: the RNGs differ, so outputs cannot be compared element by element.
Each output is reduced to ``[keep fraction, 1.0 if every kept value is x * 1/(1-p)]``
(x is drawn from [1, 2), so y != 0 exactly where kept) and compared with NumPy's with
``atol`` = 5 standard deviations of the difference of two independent keep fractions,
``5 * sqrt(2 p (1 - p) / n)``; a wrong scale flips the second entry from 1 to 0.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .registry import Case, Context, Prepared, fmt_count, register

_P = 0.5
_SEED = 20240611


def _setup_dropout(ctx: Context, n: int, p: float) -> Prepared:
    from .. import dropout  # resolved here: a build without it fails this case only

    rng = ctx.rng()
    x = rng.uniform(1.0, 2.0, n).astype(np.float32)  # no zeros: y != 0 <=> kept
    scale = np.float32(1.0 / (1.0 - p))
    y_pf = np.empty_like(x)
    np_rng = np.random.default_rng(ctx.seed + 1)
    u = np.empty_like(x)
    keep = np.empty(n, dtype=bool)
    y_np = np.empty_like(x)
    random, greater_equal, multiply = np_rng.random, np.greater_equal, np.multiply
    f32 = np.float32

    def numpy_temporaries() -> np.ndarray:
        return (random(n, dtype=f32) >= p) * x * scale

    def numpy_preallocated() -> np.ndarray:
        random(dtype=f32, out=u)
        greater_equal(u, p, out=keep)
        multiply(x, scale, out=y_np)
        multiply(y_np, keep, out=y_np)
        return y_np

    impls: dict = {
        "pyfastopt": {
            "dropout(x, p, seed)": functools.partial(dropout, x, p, _SEED),
            "out=": functools.partial(dropout, x, p, _SEED, out=y_pf),
        },
        "numpy": {
            "(random(n) >= p) * x * scale": numpy_temporaries,
            "preallocated out=": numpy_preallocated,
        },
    }
    torch = ctx.torch
    if torch is not None:
        xt = torch.from_numpy(x)
        impls["torch"] = functools.partial(torch.nn.functional.dropout, xt, p, training=True)

    def output(impl: str, returned: Any) -> np.ndarray:
        if hasattr(returned, "detach"):  # a torch tensor
            returned = returned.detach().cpu().numpy()
        y = np.asarray(returned)
        kept = y != 0
        ratios = y[kept].astype(np.float64) / x[kept]
        scaled = bool(np.allclose(ratios, float(scale), rtol=1e-6, atol=0.0))
        return np.array([np.count_nonzero(kept) / n, 1.0 if scaled else 0.0])

    return Prepared(impls, output=output)


def _register() -> None:
    for n, quick in ((10**6, False), (10**7, False), (10**4, True)):
        register(
            Case(
                family="dropout",
                name=f"dropout f32 p={_P:g} n={fmt_count(n)}",
                limit="bandwidth_copy",
                work=8 * n,
                setup=functools.partial(_setup_dropout, n=n, p=_P),
                quick=quick,
                rtol=0.0,
                atol=5 * math.sqrt(2 * _P * (1 - _P) / n),
                note=(
                    "y = x * mask / (1 - p), Philox mask; bytes = 8 n (read x, write y); "
                    "guard compares [keep fraction, kept values == x * scale]"
                ),
            )
        )


_register()
