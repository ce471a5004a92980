"""The case registry behind ``pyfastopt bench``.

A *case* is one side-by-side comparison: the same computation done by pyfastopt, by the
best plain NumPy equivalent and (where PyTorch is installed) by idiomatic PyTorch. Each
kernel family keeps its cases in its own module (``cases_ops.py`` for ``pyfastopt.ops``,
``cases_optim.py`` for ``pyfastopt.optim``, ``cases_dropout.py`` for
``pyfastopt.dropout``, ``cases_gemm.py`` for ``pyfastopt.matmul`` / ``linear`` /
``linear_backward``, ``cases_batchnorm.py`` for ``pyfastopt.batch_norm_*``,
``cases_nn.py`` for a ``pyfastopt.nn`` training step, ``cases_quant.py`` for
``pyfastopt.quant``'s quantize/dequantize, ``cases_qgemm.py`` for
``pyfastopt.quant.matmul_int8`` / ``QuantizedSequential``, ``cases_conv.py`` for
``pyfastopt.conv2d``) and adds it to
:data:`CASE_MODULES`.

Registering cases
-----------------
Call :func:`register` once per case at module import time::

    from .registry import Case, Prepared, register

    def _setup_scale(ctx, n):
        rng = ctx.rng()
        x = rng.standard_normal(n, dtype=np.float32)
        impls = {
            "pyfastopt": functools.partial(pyfastopt.ops.scale, x, 2.0),
            # several honest NumPy spellings: the harness times each, keeps the fastest
            "numpy": {"ufunc out=": functools.partial(np.multiply, x, 2.0, out=out)},
        }
        if ctx.torch is not None:  # never import torch yourself: use ctx.torch
            xt = ctx.torch.from_numpy(x.copy())
            impls["torch"] = functools.partial(xt.mul_, 2.0)
        return Prepared(impls, reset=..., output=...)

    for n, quick in ((10**6, False), (10**3, True)):
        register(Case(family="ops", name=f"scale f32 n={fmt_count(n)}", limit="bandwidth",
                      work=2 * n * 4, setup=functools.partial(_setup_scale, n=n),
                      quick=quick))

Rules a case follows:

* ``limit`` is what bounds the kernel: ``"bandwidth"`` (``work`` = bytes moved per call,
  compared with the ``a += s*b`` stream), ``"bandwidth_sgd"`` / ``"bandwidth_adam"``
  (bytes too, compared with in-place streams that update 2 / 3 arrays from one
  read-only array: SGD-momentum's and Adam's access patterns), ``"bandwidth_copy"``
  (bytes, compared with the out-of-place ``y = s*x`` stream, 8 B/element: dropout's
  pattern; see :mod:`pyfastopt.bench.limits`), ``"fma"`` (``work`` = fp32 FLOPs per call) or
  ``"vnni"`` (``work`` = int8 ops per call, 2 per multiply-accumulate). The report
  divides ``work`` by the pyfastopt time and compares it with the machine limit measured
  in the same run.
* ``setup(ctx)`` allocates the data (seeded: ``ctx.rng()``) and returns zero-argument
  callables, one per implementation, that do *one* call each. They are timed as they
  are, so bind arguments up front (``functools.partial`` is cheapest) and allocate
  nothing per call that the implementation does not genuinely need.
* Before timing, the harness calls ``reset()`` (if given), runs every implementation once
  and compares each result (``output(impl, returned_value)``, default: the returned
  value) with NumPy's using ``np.allclose(rtol=case.rtol, atol=case.atol)``. In-place
  kernels therefore give each implementation its own buffers and restore them in
  ``reset``.
* Stateful implementations (optimizer steps) restore their state in ``reset`` too, so
  the guard compares one step from identical starting points (see ``cases_optim.py``).
* ``quick=True`` cases are the tiny smoke set run by ``pyfastopt bench --quick`` (and
  the test suite) instead of the full-size ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Union

__all__ = [
    "CASE_MODULES",
    "IMPLEMENTATIONS",
    "LIMIT_KINDS",
    "Case",
    "Context",
    "Prepared",
    "cases",
    "families",
    "fmt_count",
    "load_cases",
    "register",
]

#: Modules that register cases when imported; each kernel family appends its own.
CASE_MODULES: list[str] = [
    "pyfastopt.bench.cases_ops",
    "pyfastopt.bench.cases_optim",
    "pyfastopt.bench.cases_dropout",
    "pyfastopt.bench.cases_gemm",
    "pyfastopt.bench.cases_batchnorm",
    "pyfastopt.bench.cases_nn",
    "pyfastopt.bench.cases_quant",
    "pyfastopt.bench.cases_qgemm",
    "pyfastopt.bench.cases_conv",
    "pyfastopt.bench.cases_pool",
    "pyfastopt.bench.cases_cnn",
]

#: Implementation keys, in report order. ``numpy`` is the reference for correctness.
IMPLEMENTATIONS = ("pyfastopt", "numpy", "torch")

#: Limit kind -> (unit of ``work``, unit of achieved throughput).
LIMIT_KINDS = {
    "bandwidth": ("bytes", "GB/s"),
    "bandwidth_sgd": ("bytes", "GB/s"),
    "bandwidth_adam": ("bytes", "GB/s"),
    "bandwidth_copy": ("bytes", "GB/s"),
    "fma": ("flop", "GFLOP/s"),
    "vnni": ("op", "GOP/s"),
}

Callable0 = Callable[[], Any]
#: One implementation: a callable, or several variants {label: callable} of which the
#: harness keeps the fastest (e.g. NumPy with a temporary vs with a preallocated buffer).
Impl = Union[Callable0, "dict[str, Callable0]"]


@dataclass
class Context:
    """What a case's ``setup`` gets: the optional torch module and a seeded RNG."""

    torch: Any = None
    quick: bool = False
    seed: int = 20240611
    threads: int = 1  # the child's thread count (for peers configured per session)

    def rng(self) -> Any:
        import numpy as np

        return np.random.default_rng(self.seed)


@dataclass
class Prepared:
    """The callables a case's ``setup`` returns.

    ``impls`` maps ``"pyfastopt"``, ``"numpy"`` and optionally ``"torch"`` to a zero-arg
    callable (or a ``{variant: callable}`` dict). ``reset`` restores inputs that the
    implementations modify in place; ``output(impl, returned)`` gives the array to check
    against NumPy's (default: the returned value itself).
    """

    impls: dict[str, Impl]
    reset: Callable[[], None] | None = None
    output: Callable[[str, Any], Any] | None = None


@dataclass(frozen=True)
class Case:
    """One registered comparison (see the module docstring)."""

    family: str
    name: str
    limit: str
    work: float
    setup: Callable[[Context], Prepared] = field(compare=False)
    quick: bool = False
    rtol: float = 1e-5
    atol: float = 1e-6
    note: str = ""
    #: extra libraries (``"onnxruntime"``) timed for this row only, each in its own child
    #: process; their times go to ``Row.time_us`` and the row's detail, not the columns
    #: (a tuple of names; typed Any so that cases may pass ``**tolerances`` dicts)
    peers: Any = ()

    def __post_init__(self) -> None:
        if self.limit not in LIMIT_KINDS:
            raise ValueError(
                f"case {self.name!r}: limit must be one of {sorted(LIMIT_KINDS)}, got {self.limit!r}"
            )
        if not self.family or not self.name:
            raise ValueError("a case needs a family and a name")
        if not self.work > 0:
            raise ValueError(f"case {self.name!r}: work must be > 0, got {self.work!r}")

    @property
    def work_unit(self) -> str:
        return LIMIT_KINDS[self.limit][0]

    @property
    def rate_unit(self) -> str:
        return LIMIT_KINDS[self.limit][1]


_REGISTRY: dict[tuple[str, str, bool], Case] = {}
_loaded = False


def register(case: Case) -> Case:
    """Add ``case`` to the registry (a family module calls this at import time)."""
    key = (case.family, case.name, case.quick)
    if key in _REGISTRY:
        raise ValueError(f"bench case registered twice: {case.family} / {case.name}")
    _REGISTRY[key] = case
    return case


def load_cases() -> None:
    """Import every module in :data:`CASE_MODULES` (once) so its cases register."""
    global _loaded
    if _loaded:
        return
    for module in CASE_MODULES:
        importlib.import_module(module)
    _loaded = True


def families() -> list[str]:
    """Registered family names, in registration order."""
    load_cases()
    seen: dict[str, None] = {}
    for family, _, _ in _REGISTRY:
        seen.setdefault(family, None)
    return list(seen)


def cases(only: Iterable[str] | None = None, quick: bool = False) -> list[Case]:
    """Registered cases of the full (or, with ``quick``, the smoke) set, in order."""
    load_cases()
    wanted = None if only is None else set(only)
    return [
        c for c in _REGISTRY.values() if c.quick == quick and (wanted is None or c.family in wanted)
    ]


def fmt_count(n: float) -> str:
    """``10**6 -> "1e6"``, ``2 * 10**6 -> "2e6"``, ``1500 -> "1500"``."""
    n = int(n)
    if n >= 1000:
        mantissa, exp = n, 0
        while mantissa % 10 == 0:
            mantissa //= 10
            exp += 1
        if exp >= 3 and mantissa < 10:
            return f"{mantissa}e{exp}"
    return str(n)
