"""``pyfastopt bench``: side-by-side benchmarks against NumPy and PyTorch.

Every kernel family registers *cases* (see :mod:`pyfastopt.bench.registry` for how): the
same computation done by pyfastopt, by the best plain NumPy equivalent and, where torch
is installed, by idiomatic PyTorch. One run

1. measures this machine's limits with pyfastopt's own probes (in-place stream bandwidth
   for 1, 2 and 3 updated arrays -- plain, SGD-like and Adam-like --, fp32 FMA peak, int8
   VNNI peak) for each thread count (:mod:`pyfastopt.bench.limits`);
2. for each case and thread count checks that every implementation agrees with NumPy
   (a disagreement prints ``MISMATCH`` and makes the exit code 1), then times each one
   (timeit-style, best of several batches: :mod:`pyfastopt.bench.timing`);
3. prints one table: microseconds per call, ``x NumPy`` / ``x torch`` speed-ups (> 1:
   pyfastopt faster), pyfastopt's achieved GB/s or GFLOP/s, and how close it comes to
   the measured limit;
4. runs the ``runtime`` family (:mod:`pyfastopt.bench.runtime`): pyfastopt and a peer
   library alternating in one process, and per-call tail latency next to a busy process.

Isolation (:mod:`pyfastopt.bench.isolation`): this process only orchestrates and prints.
Each library -- pyfastopt, NumPy, PyTorch -- and the machine-limit probes run in their
own child process per thread count (:mod:`pyfastopt.bench._worker`, JSON over a pipe),
with the thread count fixed in the child's environment before anything is imported;
the timed batches alternate between the children (A B C A B C ...). One library's
spinning thread pool therefore never shares a process with another library's timed
calls. The runtime family's rows are the exception by design: they measure exactly that
sharing, each in a fresh process of its own.

torch is imported only by the torch child, never when pyfastopt is imported, and is optional.
Exit codes: 0 ok, 1 a mismatch or error in some case, 2 bad usage (unknown family,
``--plot`` without matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .registry import Case, Context, Prepared, cases, families, register

#: the family of :mod:`pyfastopt.bench.runtime` (not registry cases: whole-process loops)
RUNTIME_FAMILY = "runtime"

__all__ = [
    "RUNTIME_FAMILY",
    "Case",
    "Context",
    "Prepared",
    "add_arguments",
    "cases",
    "families",
    "register",
    "run_cli",
]


def _thread_list(text: str) -> list[int]:
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {part!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {n}")
        if n not in values:
            values.append(n)
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 1,2")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser`` (cheap: imports nothing heavy)."""
    from .cases_cuda import add_cuda_arguments

    add_cuda_arguments(parser)  # --device cuda: pyfastopt.cuda vs PyTorch CUDA
    parser.add_argument(
        "--only",
        action="append",
        metavar="FAMILY",
        help="run only these kernel families (repeatable, or a comma list; see --list)",
    )
    parser.add_argument(
        "--threads",
        type=_thread_list,
        metavar="N,M",
        help="thread counts to run (default: 1 and pyfastopt.get_num_threads())",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and few repeats: a smoke test that takes a few seconds",
    )
    parser.add_argument("--json", metavar="PATH", help="also write rows, limits and config as JSON")
    parser.add_argument(
        "--plot", metavar="PATH", help="also draw the speed-ups as a PNG bar chart (matplotlib)"
    )
    parser.add_argument("--list", action="store_true", help="list the registered cases and exit")
    parser.add_argument(
        "--startup",
        action="store_true",
        help="time import + load + first inference of a saved int8 model in fresh processes "
        "(pyfastopt vs ONNX Runtime and PyTorch where installed) and exit",
    )
    parser.add_argument(
        "--no-torch", action="store_true", help="leave PyTorch out even where installed"
    )
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="time this model (MODEL.onnx, or MODEL.pfq exported to ONNX for ONNX Runtime) "
        "in pyfastopt and in ONNX Runtime, each in its own process, and exit",
    )
    parser.add_argument(
        "--batch",
        type=_thread_list,
        metavar="N,M",
        help="with --model: the batch sizes (default: 1,32)",
    )


def _selected_families(only: list[str] | None) -> list[str] | None:
    if not only:
        return None
    names: list[str] = []
    for item in only:
        names += [s.strip() for s in item.split(",") if s.strip()]
    return names


def _fmt_work(work: float, unit: str) -> str:
    value = float(work)
    for prefix in ("", "k", "M", "G", "T"):
        if value < 1000 or prefix == "T":
            return f"{value:.3g} {prefix}{'B' if unit == 'bytes' else unit}"
        value /= 1000
    return ""  # pragma: no cover


def _list(selected: list[Case], quick: bool, out: TextIO | None = None) -> None:
    out = sys.stdout if out is None else out  # looked up per call (pytest's capsys swaps it)
    what = "--quick smoke set" if quick else "full set"
    print(f"{len(selected)} case(s) in the {what}:", file=out)
    wf = max([6, *(len(c.family) for c in selected)])
    wc = max([4, *(len(c.name) for c in selected)])
    wl = max([5] + [len(c.limit) for c in selected])
    print(f"  {'family':<{wf}}  {'case':<{wc}}  {'limit':<{wl}}  {'work/call':>10}  note", file=out)
    for c in selected:
        print(
            f"  {c.family:<{wf}}  {c.name:<{wc}}  {c.limit:<{wl}}  "
            f"{_fmt_work(c.work, c.work_unit):>10}  {c.note}",
            file=out,
        )


def _list_runtime(out: TextIO | None = None) -> None:
    from .runtime import MIXED, TAIL

    out = sys.stdout if out is None else out
    print(
        f"family {RUNTIME_FAMILY!r} (each row in a fresh process, every pool at N threads):",
        file=out,
    )
    for name, text in MIXED.items():
        print(f"  mixed {name:<12}  {text}", file=out)
    for name, text in TAIL.items():
        print(
            f"  tail  {name:<12}  {text}: p50/p99/max, alone and next to a busy process", file=out
        )


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``pyfastopt bench``; returns the exit code."""
    import importlib.util
    import json

    from .. import get_num_threads
    from .._fileio import atomic_write_bytes

    if getattr(args, "device", "cpu") == "cuda":
        from .cases_cuda import run_cuda_cli

        return run_cuda_cli(args)
    if getattr(args, "model", None):
        from .._cli_models import CliError
        from .model import run_model_bench

        try:
            return run_model_bench(
                args.model,
                args.batch or [1, 32],
                args.threads or sorted({1, get_num_threads()}),
                bool(getattr(args, "quick", False)),
            )
        except CliError as exc:
            print(f"pyfastopt bench: {exc}", file=sys.stderr)
            return 1
    if getattr(args, "startup", False):
        from .startup import run_startup

        return run_startup(
            repeats=3 if getattr(args, "quick", False) else 7,
            use_torch=not getattr(args, "no_torch", False),
        )
    known = [*families(), RUNTIME_FAMILY]
    only = _selected_families(getattr(args, "only", None))
    if only is not None:
        unknown = [name for name in only if name not in known]
        if unknown:
            print(
                f"pyfastopt bench: unknown kernel family {', '.join(map(repr, unknown))}; "
                f"registered families: {', '.join(known) or '(none)'}",
                file=sys.stderr,
            )
            return 2
    quick = bool(getattr(args, "quick", False))
    selected = cases(only, quick=quick)
    runtime_family = only is None or RUNTIME_FAMILY in only

    if getattr(args, "list", False):
        _list(selected, quick)
        if runtime_family:
            _list_runtime()
        return 0

    plot_path = getattr(args, "plot", None)
    if plot_path and importlib.util.find_spec("matplotlib") is None:
        print(
            "pyfastopt bench: --plot needs matplotlib, which is not installed "
            "(pip install matplotlib, or pip install 'pyfastopt[plot]'); nothing was run.",
            file=sys.stderr,
        )
        return 2
    if not selected and not runtime_family:
        print("pyfastopt bench: no cases selected", file=sys.stderr)
        return 2

    thread_counts = getattr(args, "threads", None)
    if not thread_counts:
        thread_counts = list(dict.fromkeys([1, get_num_threads()]))

    from .runner import plot, run

    report = run(
        selected,
        thread_counts,
        quick=quick,
        use_torch=not getattr(args, "no_torch", False),
        runtime_family=runtime_family,
    )

    json_path = getattr(args, "json", None)
    if json_path:
        text = json.dumps(report.as_dict(), indent=2) + "\n"
        atomic_write_bytes(json_path, text.encode("utf-8"))
        print(f"wrote {json_path}")
    if plot_path:
        try:
            plot(report, plot_path)
        except ImportError as exc:
            print(f"pyfastopt bench: --plot needs matplotlib: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {plot_path}")
    if report.failed:
        bad = [f"{r.case} [{r.threads}t]: {r.status}" for r in report.rows if r.status != "ok"]
        bad += [f"{r.case} [{r.threads}t]: {r.status}" for r in report.runtime if r.status != "ok"]
        print("pyfastopt bench: FAILED: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0
