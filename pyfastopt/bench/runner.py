"""Runs registered bench cases: correctness guard, timing per thread count, report.

For each case: ``setup`` once, then for each thread count (pyfastopt via
``pyfastopt.threads``, every BLAS/OpenMP pool via ``threadpoolctl``, torch via
``torch.set_num_threads``, all restored afterwards): run every implementation once on
reset inputs and compare with NumPy; time each implementation (the fastest variant
counts); print the row at once. The machine limits are measured first, in the same run.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import numpy as np

from .limits import Limits, format_limits, measure_limits
from .registry import IMPLEMENTATIONS, Case, Context, Prepared
from .timing import FULL, QUICK, TimingConfig, best_time

__all__ = ["Report", "Row", "format_table_header", "run"]

OK, MISMATCH, ERROR = "ok", "MISMATCH", "ERROR"


@dataclass
class Row:
    family: str
    case: str
    threads: int
    limit_kind: str
    work: float
    work_unit: str
    rate_unit: str
    status: str = OK
    detail: str = ""
    note: str = ""
    time_us: dict[str, float | None] = field(default_factory=dict)
    variant: dict[str, str] = field(default_factory=dict)
    variants_us: dict[str, dict[str, float]] = field(default_factory=dict)
    ratio_numpy: float | None = None  # numpy time / pyfastopt time: > 1, pyfastopt faster
    ratio_torch: float | None = None
    achieved: float | None = None  # work / pyfastopt time, in rate_unit
    limit: float | None = None  # machine limit for this thread count, in rate_unit
    fraction_of_limit: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    limits: list[Limits]
    rows: list[Row]
    torch_version: str | None
    torch_status: str
    timing: TimingConfig
    quick: bool

    @property
    def failed(self) -> bool:
        return any(r.status != OK for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        from .. import __version__
        from .._config import config_dict

        return {
            "schema": 1,
            "pyfastopt": __version__,
            "numpy": np.__version__,
            "torch": self.torch_version,
            "torch_status": self.torch_status,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "quick": self.quick,
            "timing": asdict(self.timing),
            "limits": [lim.as_dict() for lim in self.limits],
            "rows": [r.as_dict() for r in self.rows],
            "status": "failed" if self.failed else "ok",
            "config": config_dict(),
        }


# ----------------------------------------------------------------------------- helpers


def import_torch(enabled: bool = True) -> tuple[Any, str]:
    """(torch module or None, a word on why not). Imported here only, never at import."""
    if not enabled:
        return None, "disabled (--no-torch)"
    try:
        import torch
    except ImportError:
        return None, "not installed"
    except Exception as exc:  # a broken install must not break the bench
        return None, f"import failed: {type(exc).__name__}: {exc}"
    return torch, "ok"


@contextlib.contextmanager
def thread_limits(n: int, controller: Any, torch: Any) -> Iterator[None]:
    from .._config import threads

    cm = controller.limit(limits=n) if controller is not None else contextlib.nullcontext()
    with cm, threads(n):
        previous = None
        if torch is not None:
            previous = torch.get_num_threads()
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None and previous is not None:
                torch.set_num_threads(previous)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _variants(impl: Any) -> dict[str, Any]:
    return dict(impl) if isinstance(impl, dict) else {"": impl}


def _describe_diff(got: np.ndarray, ref: np.ndarray) -> str:
    if got.shape != ref.shape:
        return f"shape {got.shape} vs {ref.shape}"
    with np.errstate(all="ignore"):
        diff = np.abs(got - ref)
        worst = int(np.nanargmax(diff)) if diff.size and not np.isnan(diff).all() else 0
    if got.ndim == 0:
        rel = abs(float(got) - float(ref)) / abs(float(ref)) if float(ref) else float("inf")
        return f"{float(got):.10g} vs {float(ref):.10g} (relative difference {rel:.2g})"
    return f"max |diff| {float(diff.flat[worst]):.3g} at {worst} ({got.flat[worst]!r} vs {ref.flat[worst]!r})"


def check(case: Case, prepared: Prepared, impls: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Run every implementation once on reset inputs; compare with the NumPy result.

    Returns (status, detail). A torch implementation that raises is dropped from
    ``impls`` (torch is optional); anything else raising is an ERROR.
    """
    results: list[tuple[str, str, np.ndarray]] = []
    notes: list[str] = []
    for key in list(impls):
        for label, fn in list(impls[key].items()):
            if prepared.reset is not None:
                prepared.reset()
            try:
                returned = fn()
                got = prepared.output(key, returned) if prepared.output else returned
                results.append((key, label, _to_numpy(got)))
            except Exception as exc:
                if key == "torch":
                    del impls[key][label]
                    notes.append(
                        f"torch{' ' + label if label else ''} dropped: {type(exc).__name__}: {exc}"
                    )
                    continue
                return ERROR, f"{key} {label}: {type(exc).__name__}: {exc}"
        if key == "torch" and not impls[key]:
            del impls[key]
    if prepared.reset is not None:
        prepared.reset()
    ref = next((r for r in results if r[0] == "numpy"), None)
    if ref is None:
        return ERROR, "case has no numpy implementation"
    bad = []
    for key, label, got in results:
        if got is ref[2]:
            continue
        if got.shape == ref[2].shape and np.allclose(got, ref[2], rtol=case.rtol, atol=case.atol):
            continue
        name = f"{key}[{label}]" if label else key
        message = f"{name} vs numpy: {_describe_diff(got, ref[2])}"
        if key == "torch":
            # torch is the comparison, not the subject: its own rounding (e.g. float32
            # accumulation in norms) is reported, and the row still counts.
            notes.append(f"note: {message} (outside rtol={case.rtol:g}, atol={case.atol:g})")
        else:
            bad.append(message)
    if bad:
        return MISMATCH, "; ".join(bad + notes)
    return OK, "; ".join(notes)


def _time_impls(impls: dict[str, dict[str, Any]], row: Row, timing: TimingConfig) -> None:
    for key in IMPLEMENTATIONS:
        variants = impls.get(key)
        if not variants:
            row.time_us[key] = None
            continue
        per_variant = {label: best_time(fn, timing) * 1e6 for label, fn in variants.items()}
        best_label = min(per_variant, key=per_variant.__getitem__)
        row.time_us[key] = per_variant[best_label]
        if best_label:
            row.variant[key] = best_label
            row.variants_us[key] = per_variant


def _finish_row(row: Row, limits: Limits) -> None:
    t_pf = row.time_us.get("pyfastopt")
    if not t_pf or t_pf <= 0:
        return
    t_np, t_torch = row.time_us.get("numpy"), row.time_us.get("torch")
    row.ratio_numpy = t_np / t_pf if t_np else None
    row.ratio_torch = t_torch / t_pf if t_torch else None
    row.achieved = row.work / (t_pf * 1e-6) / 1e9
    row.limit = limits.value(row.limit_kind)
    row.fraction_of_limit = row.achieved / row.limit if row.limit > 0 else None


# ----------------------------------------------------------------------------- table


def _fmt_us(t: float | None) -> str:
    if t is None:
        return "-"
    if t < 10:
        return f"{t:.2f}"
    if t < 1000:
        return f"{t:.1f}"
    return f"{t:,.0f}"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


class _Table:
    def __init__(self, cases: Sequence[Case], out: TextIO) -> None:
        self.out = out
        self.wf = max([6, *(len(c.family) for c in cases)])
        self.wc = max([4, *(len(c.name) for c in cases)])
        self.cols = (
            ("thr", 3),
            ("pyfastopt us", 12),
            ("numpy us", 10),
            ("torch us", 10),
            ("x NumPy", 8),
            ("x torch", 8),
            ("achieved", 13),
        )

    def _line(self, family: str, case: str, cells: Sequence[str], last: str) -> str:
        parts = [f"{family:<{self.wf}}", f"{case:<{self.wc}}"]
        parts += [f"{c:>{w}}" for c, (_, w) in zip(cells, self.cols)]
        parts.append(last)
        return "  ".join(parts).rstrip()

    def header(self) -> None:
        line = self._line("family", "case", [h for h, _ in self.cols], "of machine limit")
        print(line, file=self.out)
        print("-" * len(line), file=self.out)

    def row(self, r: Row) -> None:
        if r.status != OK:
            cells = [str(r.threads), "-", "-", "-", r.status, "", ""]
            print(self._line(r.family, r.case, cells, ""), file=self.out)
            print(f"{'':<{self.wf}}  -> {r.detail}", file=self.out)
        else:
            achieved = "-" if r.achieved is None else f"{r.achieved:.1f} {r.rate_unit}"
            if r.fraction_of_limit is None:
                of_limit = "-"
            else:
                of_limit = f"{100 * r.fraction_of_limit:.0f}% of {r.limit:.1f} {r.rate_unit}"
            cells = [
                str(r.threads),
                _fmt_us(r.time_us.get("pyfastopt")),
                _fmt_us(r.time_us.get("numpy")),
                _fmt_us(r.time_us.get("torch")),
                _fmt_ratio(r.ratio_numpy),
                _fmt_ratio(r.ratio_torch),
                achieved,
            ]
            print(self._line(r.family, r.case, cells, of_limit), file=self.out)
            if r.detail:
                print(f"{'':<{self.wf}}  -> {r.detail}", file=self.out)
        self.out.flush()


def format_table_header(cases: Sequence[Case]) -> str:
    import io

    buf = io.StringIO()
    _Table(cases, buf).header()
    return buf.getvalue()


# ----------------------------------------------------------------------------- run


def run(
    cases: Sequence[Case],
    thread_counts: Sequence[int],
    *,
    quick: bool = False,
    use_torch: bool = True,
    out: TextIO = sys.stdout,
) -> Report:
    """Measure the limits, then check and time every case at every thread count."""
    from .. import __version__
    from .._config import config_dict

    torch, torch_status = import_torch(use_torch)
    torch_version = getattr(torch, "__version__", None) if torch is not None else None
    try:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
    except Exception:  # pragma: no cover - threadpoolctl is a declared dependency
        controller = None
    timing = QUICK if quick else FULL

    cfg = config_dict()
    print(
        f"pyfastopt {__version__} bench{' --quick' if quick else ''}: SIMD {cfg['simd']['level']}, "
        f"NumPy {np.__version__}, torch {torch_version or torch_status}, "
        f"threads {','.join(map(str, thread_counts))}",
        file=out,
    )
    limits = {n: measure_limits(n, quick=quick) for n in thread_counts}
    print(format_limits(list(limits.values())), file=out)
    print(file=out)

    table = _Table(cases, out)
    table.header()
    rows: list[Row] = []
    ctx = Context(torch=torch, quick=quick)
    for case in cases:
        base = dict(
            family=case.family,
            case=case.name,
            limit_kind=case.limit,
            work=float(case.work),
            work_unit=case.work_unit,
            rate_unit=case.rate_unit,
            note=case.note,
        )
        try:
            prepared = case.setup(ctx)
            impls = {k: _variants(v) for k, v in prepared.impls.items()}
            missing = [k for k in ("pyfastopt", "numpy") if not impls.get(k)]
            if missing:
                raise ValueError(f"setup returned no {' / '.join(missing)} implementation")
        except Exception as exc:
            detail = f"setup failed: {type(exc).__name__}: {exc}"
            for n in thread_counts:
                row = Row(threads=n, status=ERROR, detail=detail, **base)
                rows.append(row)
                table.row(row)
            continue
        for n in thread_counts:
            row = Row(threads=n, **base)
            with thread_limits(n, controller, torch):
                try:
                    row.status, row.detail = check(case, prepared, impls)
                    if row.status == OK:
                        _time_impls(impls, row, timing)
                        _finish_row(row, limits[n])
                except Exception as exc:
                    row.status = ERROR
                    row.detail = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc(file=sys.stderr)
            rows.append(row)
            table.row(row)
        del prepared, impls

    print(
        "\nx NumPy / x torch = their time / pyfastopt's (> 1: pyfastopt faster); "
        f"best of {timing.repeats} batches of >= {timing.min_batch_s * 1e3:g} ms;\n"
        "NumPy and torch count their fastest variant (see --json). "
        "'of machine limit': pyfastopt's rate vs the probe above\n"
        "at the same thread count (in-cache sizes can beat the DRAM stream).",
        file=out,
    )
    return Report(
        limits=list(limits.values()),
        rows=rows,
        torch_version=torch_version,
        torch_status=torch_status,
        timing=timing,
        quick=quick,
    )


def plot(report: Report, path: str) -> None:
    """A horizontal bar chart of the ratios (matplotlib, no pyplot state touched)."""
    from matplotlib.figure import Figure

    rows = [r for r in report.rows if r.status == OK and r.ratio_numpy is not None]
    labels = [f"{r.family}: {r.case} [{r.threads}t]" for r in rows]
    has_torch = any(r.ratio_torch is not None for r in rows)
    height = 0.38 if has_torch else 0.7
    fig = Figure(figsize=(9, 1.2 + 0.45 * max(1, len(rows))), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(len(rows), dtype=float)
    ax.barh(
        ys - (height / 2 if has_torch else 0),
        [r.ratio_numpy for r in rows],
        height,
        label="vs NumPy",
    )
    if has_torch:
        ax.barh(ys + height / 2, [r.ratio_torch or 0.0 for r in rows], height, label="vs torch")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of pyfastopt (their time / pyfastopt time; > 1 is faster)")
    ax.set_title(f"pyfastopt bench{' --quick' if report.quick else ''}")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=110)
