"""Runs registered bench cases: correctness guard, timing per thread count, report.

For each thread count, one child process per library (pyfastopt, NumPy, torch) is
started with its thread count set in its environment (:mod:`pyfastopt.bench.isolation`).
For each case: every child sets the case up and runs its own implementation once on
reset inputs; this process compares the results with NumPy's; then each child calibrates
its batch sizes and the timed batches alternate between the children (the fastest batch
of each variant counts, the fastest variant of each library counts); the row is printed
at once. The machine limits are measured first, each thread count in its own child.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import numpy as np

from .isolation import Worker, WorkerError, busy_process
from .limits import Limits, format_limits
from .registry import IMPLEMENTATIONS, Case, Prepared
from .timing import FULL, QUICK, TimingConfig

__all__ = ["Report", "Row", "RuntimeRow", "format_table_header", "run", "run_runtime"]

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
    pid: dict[str, int] = field(default_factory=dict)  # the child that timed each library

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RuntimeRow:
    """One measurement of the runtime family (see :mod:`pyfastopt.bench.runtime`)."""

    case: str
    kind: str  # "mixed" or "tail"
    name: str  # the peer (mixed) or the kernel (tail)
    threads: int
    competitor: bool = False  # tail: next to a busy process
    note: str = ""
    status: str = OK
    detail: str = ""
    pid: int | None = None
    family: str = "runtime"
    #: mixed: ms_mixed, ms_pyfastopt, ms_peer, ratio; tail: p50_us, p99_us, max_us, ...
    values: dict[str, float] = field(default_factory=dict)

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
    runtime: list[RuntimeRow] = field(default_factory=list)
    pids: dict[str, list[int]] = field(default_factory=dict)  # children per library

    @property
    def failed(self) -> bool:
        return any(r.status != OK for r in self.rows) or any(r.status != OK for r in self.runtime)

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
            "runtime": [r.as_dict() for r in self.runtime],
            "parent_pid": os.getpid(),
            "pids": self.pids,
            "status": "failed" if self.failed else "ok",
            "config": config_dict(),
        }


# ----------------------------------------------------------------------------- helpers


def torch_available(enabled: bool = True) -> str:
    """ "ok", or a word on why torch is left out. The parent never imports torch: only
    the torch child does."""
    import importlib.util

    if not enabled:
        return "disabled (--no-torch)"
    try:
        found = importlib.util.find_spec("torch") is not None
    except Exception as exc:  # a broken install must not break the bench
        return f"lookup failed: {type(exc).__name__}: {exc}"
    return "ok" if found else "not installed"


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
                if key not in ("pyfastopt", "numpy"):
                    del impls[key][label]
                    notes.append(
                        f"{key}{' ' + label if label else ''} dropped: {type(exc).__name__}: {exc}"
                    )
                    continue
                return ERROR, f"{key} {label}: {type(exc).__name__}: {exc}"
        if key not in ("pyfastopt", "numpy") and not impls[key]:
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
        if key not in ("pyfastopt", "numpy"):
            # torch (and a row's peers) is the comparison, not the subject: its own rounding (e.g. float32
            # accumulation in norms) is reported, and the row still counts.
            notes.append(f"note: {message} (outside rtol={case.rtol:g}, atol={case.atol:g})")
        else:
            bad.append(message)
    if bad:
        return MISMATCH, "; ".join(bad + notes)
    return OK, "; ".join(notes)


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


#: pause after a child's batch before the next child's, so the pool it leaves spinning
#: (OpenMP's busy-wait after a region, OpenBLAS's wait for new work) has gone to sleep
SETTLE_S = 0.02


def _loaded_impls(replies: dict[str, dict[str, dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """The children's check results as the zero-argument callables :func:`check` takes:
    a saved result is loaded (and its file removed), a child's exception is re-raised."""
    impls: dict[str, dict[str, Any]] = {}
    for key in (*IMPLEMENTATIONS, *(k for k in replies if k not in IMPLEMENTATIONS)):
        variants = replies.get(key)
        if not variants:
            continue
        impls[key] = {}
        for label, result in variants.items():
            if "path" in result:
                value = np.load(result["path"])
                os.remove(result["path"])
                impls[key][label] = lambda value=value: value
            else:

                def fail(message: str = result.get("error", "failed")) -> None:
                    raise RuntimeError(message)

                impls[key][label] = fail
    return impls


def _time_in_children(
    workers: dict[str, Worker], row: Row, timing: TimingConfig, settle_s: float
) -> None:
    """Calibrate each child's variants, then ``timing.repeats`` rounds alternating between
    the children (A B C A B C ...); each variant keeps its fastest batch."""
    best: dict[str, dict[str, float]] = {}
    for key, worker in workers.items():
        best[key] = dict(worker.call("calibrate")["seconds"])
    for _ in range(timing.repeats - 1):
        for key, worker in workers.items():
            if settle_s > 0:
                time.sleep(settle_s)
            for label, sec in worker.call("round")["seconds"].items():
                best[key][label] = min(best[key][label], sec)
    for key in (*IMPLEMENTATIONS, *(k for k in best if k not in IMPLEMENTATIONS)):
        per_variant = {label: sec * 1e6 for label, sec in best.get(key, {}).items()}
        if not per_variant:
            row.time_us[key] = None
            continue
        best_label = min(per_variant, key=per_variant.__getitem__)
        row.time_us[key] = per_variant[best_label]
        if best_label:
            row.variant[key] = best_label
            row.variants_us[key] = per_variant


def _run_case(
    case: Case,
    n: int,
    workers: dict[str, Worker],
    timing: TimingConfig,
    limits: Limits,
    settle_s: float,
) -> Row:
    row = Row(
        family=case.family,
        case=case.name,
        threads=n,
        limit_kind=case.limit,
        work=float(case.work),
        work_unit=case.work_unit,
        rate_unit=case.rate_unit,
        note=case.note,
    )
    row.pid = {key: w.pid for key, w in workers.items()}
    replies: dict[str, dict[str, dict[str, str]]] = {}
    notes: list[str] = []
    try:
        for key, worker in workers.items():
            try:
                replies[key] = worker.call("setup", family=case.family, name=case.name)["variants"]
            except WorkerError as exc:
                if key != "torch":
                    row.status, row.detail = ERROR, f"setup failed: {exc}"
                    return row
                notes.append(f"torch dropped: setup failed: {exc}")
        missing = [k for k in ("pyfastopt", "numpy") if not replies.get(k)]
        if missing:
            row.status = ERROR
            row.detail = f"setup failed: no {' / '.join(missing)} implementation"
            return row
        impls = _loaded_impls(replies)
        row.status, row.detail = check(case, Prepared({}), impls)
        row.detail = "; ".join(filter(None, [row.detail, *notes]))
        if row.status == OK:
            timed = {k: w for k, w in workers.items() if impls.get(k)}
            _time_in_children(timed, row, timing, settle_s)
            _finish_row(row, limits)
    except WorkerError as exc:
        row.status, row.detail = ERROR, str(exc)
    finally:
        for worker in workers.values():
            if worker.proc.poll() is None:
                with contextlib.suppress(WorkerError):
                    worker.call("drop")
    return row


def _start_peers(case: Case, n: int, outdir: str, quick: bool) -> dict[str, Worker]:
    """The row's extra libraries (``case.peers``), each in its own child; a library that
    is not installed or whose child fails to start is left out."""
    peers: dict[str, Worker] = {}
    for lib in case.peers:
        if importlib.util.find_spec(lib) is None:
            continue
        with contextlib.suppress(WorkerError):
            peers[lib] = Worker(lib, n, outdir, quick=quick)
    return peers


def _peer_detail(row: Row, peers: dict[str, Worker]) -> None:
    """The peers' times in the row's detail: ``onnxruntime <variant>: T us (own process,
    pyfastopt R x faster)``."""
    t_pf = row.time_us.get("pyfastopt")
    parts = []
    for lib in peers:
        t = row.time_us.get(lib)
        if t is None or row.status != OK:
            continue
        label = row.variant.get(lib, "")
        ratio = f", x {lib} {t / t_pf:.2f}" if t_pf else ""
        parts.append(f"{lib}{' ' + label if label else ''}: {_fmt_us(t)} us (own process{ratio})")
    if parts:
        row.detail = "; ".join(filter(None, [*parts, row.detail]))


def _start_workers(
    n: int, outdir: str, quick: bool, use_torch: bool, out: TextIO
) -> dict[str, Worker]:
    workers = {
        "pyfastopt": Worker("pyfastopt", n, outdir, quick=quick),
        "numpy": Worker("numpy", n, outdir, quick=quick),
    }
    if use_torch:
        try:
            workers["torch"] = Worker("torch", n, outdir, quick=quick)
        except WorkerError as exc:
            print(f"torch left out on {n} thread(s): {exc}", file=out)
    return workers


def run(
    cases: Sequence[Case],
    thread_counts: Sequence[int],
    *,
    quick: bool = False,
    use_torch: bool = True,
    runtime_family: bool = False,
    out: TextIO = sys.stdout,
    settle_s: float | None = None,
) -> Report:
    """Measure the limits, then check and time every case at every thread count.

    Every library runs in its own child process per thread count
    (:mod:`pyfastopt.bench.isolation`); this process only orchestrates and prints.
    ``runtime_family`` adds the runtime family's rows (:mod:`pyfastopt.bench.runtime`).
    """
    from .. import __version__
    from .._config import config_dict

    torch_status = torch_available(use_torch)
    use_torch = torch_status == "ok"
    timing = QUICK if quick else FULL
    settle = (0.0 if quick else SETTLE_S) if settle_s is None else settle_s

    cfg = config_dict()
    with tempfile.TemporaryDirectory(prefix="pyfastopt-bench-") as outdir:
        limits: dict[int, Limits] = {}
        pids: dict[str, list[int]] = {}
        for n in thread_counts if cases else ():  # the runtime family needs none
            with Worker("limits", n, outdir, quick=quick) as probe:
                limits[n] = Limits(**probe.call("limits")["limits"])
                pids.setdefault("limits", []).append(probe.pid)
        torch_version = None
        rows: list[Row] = []
        runtime_rows: list[RuntimeRow] = []
        header_done = False
        table = _Table(cases, out)
        for n in thread_counts:
            if not cases:
                break
            workers = _start_workers(n, outdir, quick, use_torch, out)
            try:
                if "torch" in workers:
                    torch_version = workers["torch"].versions.get("torch", torch_version)
                elif use_torch:
                    torch_status = "child failed to start"
                if not header_done:
                    _print_header(
                        out,
                        __version__,
                        cfg,
                        quick,
                        torch_version or torch_status,
                        thread_counts,
                        list(limits.values()),
                    )
                    table.header()
                    header_done = True
                for key, worker in workers.items():
                    pids.setdefault(key, []).append(worker.pid)
                for case in cases:
                    peers = _start_peers(case, n, outdir, quick)
                    try:
                        row = _run_case(case, n, {**workers, **peers}, timing, limits[n], settle)
                    finally:
                        for peer in peers.values():
                            peer.close()
                    _peer_detail(row, peers)
                    rows.append(row)
                    table.row(row)
                    # a dead child (crash in a case) is replaced for the next case
                    for key, worker in list(workers.items()):
                        if worker.proc.poll() is not None:
                            worker.close()
                            workers[key] = Worker(key, n, outdir, quick=quick)
            finally:
                for worker in workers.values():
                    worker.close()
        if not header_done:
            torch_text = "installed" if torch_status == "ok" else torch_status
            _print_header(
                out, __version__, cfg, quick, torch_text, thread_counts, list(limits.values())
            )
        if rows:
            print(
                "\nx NumPy / x torch = their time / pyfastopt's (> 1: pyfastopt faster); "
                f"best of {timing.repeats} batches of >= {timing.min_batch_s * 1e3:g} ms,\n"
                "each library in its own process, rounds alternating between them; "
                "NumPy and torch count their fastest\nvariant (see --json). "
                "'of machine limit': pyfastopt's rate vs the probe above at the same "
                "thread count\n(in-cache sizes can beat the DRAM stream).",
                file=out,
            )
        if runtime_family:
            runtime_rows = run_runtime(thread_counts, outdir, quick=quick, out=out)
    return Report(
        limits=list(limits.values()),
        rows=rows,
        torch_version=torch_version,
        torch_status=torch_status,
        timing=timing,
        quick=quick,
        runtime=runtime_rows,
        pids=pids,
    )


def _print_header(
    out: TextIO,
    version: str,
    cfg: dict[str, Any],
    quick: bool,
    torch_text: str,
    thread_counts: Sequence[int],
    limits: list[Limits],
) -> None:
    print(
        f"pyfastopt {version} bench{' --quick' if quick else ''}: SIMD {cfg['simd']['level']}, "
        f"NumPy {np.__version__}, torch {torch_text}, "
        f"threads {','.join(map(str, thread_counts))}",
        file=out,
    )
    print(format_limits(limits), file=out)
    print(file=out)


# ----------------------------------------------------------------------------- runtime


def run_runtime(
    thread_counts: Sequence[int], outdir: str, *, quick: bool = False, out: TextIO = sys.stdout
) -> list[RuntimeRow]:
    """The runtime family: each measurement in a fresh child with every pool at ``n``."""
    import importlib.util

    from . import runtime

    rows: list[RuntimeRow] = []
    have = {
        "numpy": True,
        "adam+numpy": True,
        "torch": importlib.util.find_spec("torch") is not None,
        "onnxruntime": all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")),
    }
    print(
        "\nruntime: pyfastopt and a peer in ONE process (mixed loops; x sum = the loop / the "
        "sum of its two\nparts timed alone in that process), and per-call latency alone and "
        "next to a busy process",
        file=out,
    )
    print(
        f"{'family':<8}  {'case':<44}  {'thr':>3}  {'mixed ms':>9}  {'ours ms':>8}  "
        f"{'peer ms':>8}  {'x sum':>6}",
        file=out,
    )
    for n in thread_counts:
        for name in runtime.MIXED:
            if not have[name]:
                print(f"{'runtime':<8}  mixed {name:<38}  {n:>3}  skipped: not installed", file=out)
                continue
            row = _runtime_row("mixed", name, n, outdir, quick, competitor=False)
            rows.append(row)
            v = row.values
            if row.status == OK:
                print(
                    f"{'runtime':<8}  {row.case:<44}  {n:>3}  {v['ms_mixed']:>9.3f}  "
                    f"{v['ms_pyfastopt']:>8.3f}  {v['ms_peer']:>8.3f}  {v['ratio']:>5.2f}x",
                    file=out,
                )
            else:
                print(
                    f"{'runtime':<8}  {row.case:<44}  {n:>3}  {row.status}: {row.detail}", file=out
                )
    print(
        f"\n{'family':<8}  {'case':<44}  {'thr':>3}  {'p50 us':>9}  {'p99 us':>9}  "
        f"{'max us':>9}  {'p99/p50':>7}",
        file=out,
    )
    for n in thread_counts:
        for name in runtime.TAIL:
            for competitor in (False, True):
                row = _runtime_row("tail", name, n, outdir, quick, competitor=competitor)
                rows.append(row)
                v = row.values
                if row.status == OK:
                    print(
                        f"{'runtime':<8}  {row.case:<44}  {n:>3}  {v['p50_us']:>9.1f}  "
                        f"{v['p99_us']:>9.1f}  {v['max_us']:>9.1f}  {v['p99_over_p50']:>6.2f}x",
                        file=out,
                    )
                else:
                    print(
                        f"{'runtime':<8}  {row.case:<44}  {n:>3}  {row.status}: {row.detail}",
                        file=out,
                    )
    out.flush()
    return rows


def _runtime_row(
    kind: str, name: str, n: int, outdir: str, quick: bool, *, competitor: bool
) -> RuntimeRow:
    from . import runtime

    if kind == "mixed":
        case = f"mixed {name}"
        description = runtime.MIXED[name]
    else:
        case = f"tail {name}{' + busy process' if competitor else ''}"
        description = runtime.TAIL[name]
    row = RuntimeRow(
        case=case, kind=kind, name=name, threads=n, competitor=competitor, note=description
    )
    try:
        with Worker("runtime", n, outdir, quick=quick) as worker:
            row.pid = worker.pid
            busy = busy_process() if competitor else contextlib.nullcontext()
            with busy:
                row.values = worker.call("runtime", kind=kind, name=name)["values"]
    except WorkerError as exc:
        row.status, row.detail = ERROR, str(exc)
    return row


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
