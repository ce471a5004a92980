#!/usr/bin/env python3
"""Deterministic regression tier: instructions per call, counted by valgrind's callgrind.

Wall-clock benchmarks (asv, ``pyfastopt bench``) are the timing tier; on a shared or
noisy machine they cannot tell a 3% regression from a neighbour's compile job. This tier
counts the *instructions* one call executes, under ``valgrind --tool=callgrind``: the
count is the same whatever else runs on the machine, so a small threshold (3%) is safe.

How one call is counted
    A child process runs every case under callgrind with instrumentation and collection
    off (``--instr-atstart=no --collect-atstart=no``), so interpreter start-up, imports
    and each case's setup cost nothing. A tiny C helper (compiled on the fly from
    ``valgrind/callgrind.h``) switches collection on right before the call and off right
    after it, then dumps the counter with the case's name (``CALLGRIND_DUMP_STATS_AT``).
    Each case is called once unmeasured (warm-up: buffers, lazily built state), then
    measured ``--reps`` times; the median is kept. The same bracket around an empty
    call (the "noop" case) is subtracted, so a case's number is the instructions of its
    own call: Python's call overhead, argument checks, the binding and the kernel.

Reproducibility
    ``PYFASTOPT_NUM_THREADS=1`` (and 1 BLAS/OpenMP thread), ``PYTHONHASHSEED=0`` and a
    pinned SIMD level (``--simd``, default avx2: valgrind 3.19 masks AVX-512 in CPUID, so
    the library would pick avx2 anyway). The baseline file records the SIMD level, the
    compiler, the build type and the valgrind version: comparing against a baseline made
    with different ones is refused (exit status 2) with a message saying so, since the
    instruction mix of another compiler or level is not a regression. Python and NumPy
    versions are recorded and shown; they only move the small per-call overhead.

Usage (from the repository root, with pyfastopt installed and valgrind on PATH)::

    python benchmarks/instructions/icount.py              # compare with the baseline
    python benchmarks/instructions/icount.py --update     # measure and rewrite it
    python benchmarks/instructions/icount.py -k matmul    # only cases matching 'matmul'
    python benchmarks/instructions/icount.py --list       # list the cases

Your own pipeline: write a cases file (functions named ``case_<name>`` that do their
setup and return the zero-argument callable to count; see ``cases.py``) and point the
tool at it with its own baseline::

    python benchmarks/instructions/icount.py --cases my_cases.py --baseline my.json --update
    python benchmarks/instructions/icount.py --cases my_cases.py --baseline my.json

Exit status: 0 no case regressed; 1 a case exceeds the threshold (default +3%), or is in
the baseline but not measured; 2 refused or failed (environment differs from the
baseline's, valgrind or a C compiler missing, a case raised).
"""

from __future__ import annotations

import argparse
import ctypes
import fnmatch
import gc
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = HERE / "cases.py"
DEFAULT_BASELINE = HERE / "baseline.json"
NOOP = "noop"
FORMAT = "pyfastopt.instruction-baseline"
# Keys of the recorded environment that must match for a comparison to mean anything.
STRICT_KEYS = ("simd", "compiler", "build_type", "valgrind")
INFO_KEYS = ("python", "numpy", "pyfastopt", "kernels")

HELPER_C = r"""
#include <valgrind/callgrind.h>
void pf_icount_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void pf_icount_on(void) { CALLGRIND_TOGGLE_COLLECT; }
void pf_icount_off(const char* name) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(name); }
int pf_icount_running(void) { return RUNNING_ON_VALGRIND; }
"""


class ToolError(RuntimeError):
    """A refusal or a failure of the tool itself (exit status 2)."""


# ----------------------------------------------------------------------------- cases
def load_cases(path: Path) -> dict[str, tuple[Callable[[], Callable[[], Any]], str]]:
    """``{name: (setup, description)}`` of the ``case_<name>`` functions in ``path``,
    in definition order."""
    spec = importlib.util.spec_from_file_location(f"_icount_cases_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ToolError(f"cannot load cases from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    cases = {}
    for attr, fn in vars(module).items():
        if attr.startswith("case_") and callable(fn):
            doc = (fn.__doc__ or "").strip().splitlines()
            cases[attr[len("case_") :]] = (fn, doc[0] if doc else "")
    if not cases:
        raise ToolError(f"{path} defines no case_<name>() functions")
    return cases


def select(names: list[str], patterns: list[str] | None) -> list[str]:
    if not patterns:
        return names
    chosen = [n for n in names if any(p in n or fnmatch.fnmatch(n, p) for p in patterns)]
    if not chosen:
        raise ToolError(f"no case matches {patterns}; cases: {', '.join(names)}")
    return chosen


# ----------------------------------------------------------------------------- child
def _child(args: argparse.Namespace) -> int:
    """Runs under callgrind: set every case up, then count each one's calls."""
    helper = ctypes.CDLL(args.helper)
    helper.pf_icount_off.argtypes = [ctypes.c_char_p]
    if not helper.pf_icount_running():
        raise ToolError("the measuring child is not running under valgrind")
    import numpy as np

    import pyfastopt
    from pyfastopt import _core

    cases = load_cases(Path(args.cases))
    names = args.names.split(",")
    calls: dict[str, Callable[[], Any]] = {NOOP: lambda: None}
    for name in names:
        calls[name] = cases[name][0]()
    env = {
        "simd": _core.config.get_simd_level(),
        "compiler": _core.config.compiler,
        "build_type": _core.config.build_type,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyfastopt": pyfastopt.__version__,
        "kernels": dict(_core.config.kernel_choices()),
        "threads": pyfastopt.get_num_threads(),
    }
    gc.collect()
    gc.disable()  # a collection inside a measured call would be counted
    helper.pf_icount_start()
    for name, fn in calls.items():
        fn()  # warm-up, not collected
        for r in range(args.reps):
            tag = f"{name}#{r}".encode()
            helper.pf_icount_on()
            fn()
            helper.pf_icount_off(tag)
    Path(args.out).write_text(json.dumps(env))
    return 0


def _parse_dumps(folder: Path) -> dict[str, list[int]]:
    """``{case: [count per repetition]}`` from callgrind's dump files."""
    counts: dict[str, list[tuple[int, int]]] = {}
    trigger = re.compile(r"^desc: Trigger: Client Request: (.+)#(\d+)$", re.M)
    total = re.compile(r"^(?:totals|summary): (\d+)", re.M)
    for path in folder.glob("callgrind.out.*"):
        text = path.read_text(errors="replace")
        m, t = trigger.search(text), total.search(text)
        if m and t:
            counts.setdefault(m.group(1), []).append((int(m.group(2)), int(t.group(1))))
    return {name: [c for _, c in sorted(reps)] for name, reps in counts.items()}


def _compile_helper(folder: Path) -> Path:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ToolError("no C compiler (cc/gcc) to build the callgrind client-request helper")
    src, lib = folder / "icount_helper.c", folder / "libicount_helper.so"
    src.write_text(HELPER_C)
    proc = subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ToolError(
            "could not build the callgrind helper (needs valgrind's headers, "
            f"valgrind/callgrind.h: Debian package 'valgrind'):\n{proc.stderr}"
        )
    return lib


def valgrind_version(valgrind: str) -> str:
    out = subprocess.run([valgrind, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+\.\d+)", out)
    return m.group(1) if m else out.strip()


def measure(
    cases_path: Path, names: list[str], simd: str, reps: int, keep: Path | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Run the cases under callgrind; returns (environment, {case: result})."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ToolError("valgrind is not installed (Debian: apt-get install valgrind)")
    folder = Path(tempfile.mkdtemp(prefix="pyfastopt-icount-")) if keep is None else keep
    folder.mkdir(parents=True, exist_ok=True)
    try:
        helper = _compile_helper(folder)
        env_file = folder / "env.json"
        env = dict(os.environ)
        env.update(
            PYFASTOPT_SIMD=simd,
            PYFASTOPT_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONHASHSEED="0",
        )
        cmd = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            "--dump-line=no",
            "--dump-instr=no",
            f"--callgrind-out-file={folder}/callgrind.out.%p",
            sys.executable,
            str(Path(__file__).resolve()),
            "_child",
            "--cases",
            str(cases_path),
            "--names",
            ",".join(names),
            "--reps",
            str(reps),
            "--helper",
            str(helper),
            "--out",
            str(env_file),
        ]
        # from the cases' folder, never the repository root: the source tree's
        # pyfastopt/ (no compiled core) must not shadow the installed package
        proc = subprocess.run(cmd, env=env, cwd=folder, capture_output=True, text=True)
        if proc.returncode != 0 or not env_file.exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise ToolError(f"the measuring run failed (exit {proc.returncode}):\n{tail}")
        run_env = json.loads(env_file.read_text())
        run_env["valgrind"] = valgrind_version(valgrind)
        counts = _parse_dumps(folder)
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    if NOOP not in counts:
        raise ToolError("no counts were dumped (is this valgrind's callgrind?)")
    overhead = statistics.median(counts[NOOP])
    results = {}
    for name in names:
        reps_counts = counts.get(name)
        if not reps_counts:
            raise ToolError(f"no count was dumped for case {name!r}")
        med = statistics.median(reps_counts)
        results[name] = {
            "instructions": round(med - overhead),
            "spread": (max(reps_counts) - min(reps_counts)) / max(med - overhead, 1.0),
        }
    run_env["noop_overhead"] = int(overhead)
    return run_env, results


# ----------------------------------------------------------------------------- baseline
def read_baseline(path: Path, cases: Path | None = None) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolError(
            f"no baseline at {path}; create it with: {_command(path, True, cases)}"
        ) from None
    except json.JSONDecodeError as exc:
        raise ToolError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ToolError(f"{path} is not an instruction baseline (format {FORMAT!r})")
    return data


def write_baseline(
    path: Path, env: dict[str, Any], results: dict[str, dict[str, Any]], cases: dict, old: dict
) -> None:
    entries = dict(old.get("cases", {})) if old else {}
    for name, res in results.items():
        entries[name] = {"instructions": res["instructions"], "what": cases[name][1]}
    data = {
        "format": FORMAT,
        "version": 1,
        "note": "instructions per call under callgrind (median, minus an empty call); "
        "regenerate: python benchmarks/instructions/icount.py --update",
        "environment": env,
        "cases": {name: entries[name] for name in cases if name in entries},
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _command(baseline: Path, update: bool = False, cases: Path | None = None) -> str:
    parts = [f"python {_shown(Path(__file__))}"]
    if cases is not None and cases.resolve() != DEFAULT_CASES:
        parts.append(f"--cases {_shown(cases)}")
    if baseline.resolve() != DEFAULT_BASELINE:
        parts.append(f"--baseline {_shown(baseline)}")
    if update:
        parts.append("--update")
    return " ".join(parts)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_environment(
    base_env: dict[str, Any], env: dict[str, Any], baseline: Path, cases: Path | None = None
) -> list[str]:
    """Refuse (ToolError) when a strict key differs; return notes for informative ones."""
    diffs = [
        f"  {key}: baseline {base_env.get(key)!r}, this run {env.get(key)!r}"
        for key in STRICT_KEYS
        if base_env.get(key) != env.get(key)
    ]
    if diffs:
        raise ToolError(
            f"refusing to compare: {baseline} was recorded with a different "
            "SIMD level / compiler / build type / valgrind, whose instruction counts are "
            "not comparable:\n"
            + "\n".join(diffs)
            + f"\nRecord a baseline for this environment with: {_command(baseline, True, cases)}"
        )
    return [
        f"note: {key} differs from the baseline's ({base_env.get(key)!r} -> {env.get(key)!r})"
        for key in INFO_KEYS
        if key in base_env and base_env.get(key) != env.get(key)
    ]


def compare(
    base: dict[str, Any],
    results: dict[str, dict[str, Any]],
    cases: dict,
    threshold: float,
    selected: list[str],
) -> tuple[list[list[str]], int]:
    """Table rows and the number of failures."""
    rows = []
    failures = 0
    base_cases = base.get("cases", {})
    for name in selected:
        now = results[name]["instructions"]
        ref = base_cases.get(name, {}).get("instructions")
        noisy = " (noisy)" if results[name]["spread"] > threshold / 400 else ""
        if ref is None:
            rows.append([name, "-", f"{now:,}", "-", "new: not in the baseline" + noisy])
            continue
        change = 100.0 * (now - ref) / ref if ref else 0.0
        if change > threshold:
            status = f"REGRESSION (> +{threshold:g}%)"
            failures += 1
        elif change < -threshold:
            status = "improved: update the baseline"
        else:
            status = "ok"
        rows.append([name, f"{ref:,}", f"{now:,}", f"{change:+.2f}%", status + noisy])
    return rows, failures


def format_table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    align = ["<", ">", ">", ">", "<"]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icount.py",
        description="Instruction counts per call under callgrind, compared with a baseline.",
    )
    p.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="cases file (case_<name>)")
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="baseline JSON file")
    p.add_argument("-k", dest="patterns", action="append", help="only cases matching (repeat)")
    p.add_argument("--threshold", type=float, default=3.0, help="failing increase in %% (3)")
    p.add_argument("--reps", type=int, default=5, help="measured calls per case (median)")
    p.add_argument("--simd", default="avx2", help="PYFASTOPT_SIMD for the run (avx2)")
    p.add_argument("--update", action="store_true", help="measure and write the baseline")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--keep", type=Path, help="keep callgrind's files in this folder")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        c = argparse.ArgumentParser()
        for opt in ("--cases", "--names", "--helper", "--out"):
            c.add_argument(opt, required=True)
        c.add_argument("--reps", type=int, required=True)
        return _child(c.parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    # the measuring child runs in a scratch folder: relative paths are the caller's
    args.cases, args.baseline = args.cases.resolve(), args.baseline.resolve()
    try:
        cases = load_cases(args.cases)
        if args.list:
            for name, (_, what) in cases.items():
                print(f"{name:32s} {what}")
            return 0
        if args.reps < 1:
            raise ToolError("--reps must be >= 1")
        names = select(list(cases), args.patterns)
        partial = set(names) != set(cases)
        base = None
        if not args.update or (partial and args.baseline.exists()):
            base = read_baseline(args.baseline, args.cases)  # fail early, before the slow run
        start = time.perf_counter()
        env, results = measure(args.cases, names, args.simd, args.reps, args.keep)
        seconds = time.perf_counter() - start
        header = (
            f"instructions per call: callgrind, valgrind {env['valgrind']}, SIMD {env['simd']}, "
            f"{env['compiler']} ({env['build_type']}), 1 thread, Python {env['python']}, "
            f"NumPy {env['numpy']}; median of {args.reps} calls minus an empty call "
            f"({env['noop_overhead']:,}); {seconds:.0f} s"
        )
        if args.update:
            # a partial update merges into the baseline, which must then be this run's kind
            if base is not None:
                check_environment(base.get("environment", {}), env, args.baseline, args.cases)
            write_baseline(args.baseline, env, results, cases, base or {})
            rows = [[n, "", f"{results[n]['instructions']:,}", "", cases[n][1]] for n in names]
            print(header)
            print(format_table(rows, ["case", "", "instructions", "", "what"]))
            print(f"wrote {args.baseline}")
            return 0
        assert base is not None
        notes = check_environment(base.get("environment", {}), env, args.baseline, args.cases)
        rows, failures = compare(base, results, cases, args.threshold, names)
        print(header)
        for note in notes:
            print(note)
        print(format_table(rows, ["case", "baseline", "now", "change", "status"]))
        missing = [n for n in base.get("cases", {}) if n not in cases]
        if missing:
            print(f"in the baseline but not among the cases: {', '.join(missing)}")
            failures += len(missing)
        if failures:
            print(
                f"{failures} case(s) failed. If the change is intended, update the "
                f"baseline: {_command(args.baseline, True, args.cases)}"
            )
            return 1
        print(f"all {len(rows)} cases within +{args.threshold:g}% of the baseline")
        return 0
    except ToolError as exc:
        print(f"icount: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
