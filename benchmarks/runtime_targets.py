"""Issue 14's runtime targets table, for one or several pyfastopt builds in one run.

Usage (from anywhere; only the standard library is needed in this process)::

    python benchmarks/runtime_targets.py                      # this interpreter's pyfastopt
    python benchmarks/runtime_targets.py --quick              # a short run
    python benchmarks/runtime_targets.py \\
        --build before=/work/venvs/me/bin/python:/work/baseline \\
        --build after=/work/venvs/me/bin/python

``--build NAME=PYTHON[:PYTHONPATH]`` names an interpreter and the PYTHONPATH its children
get (none: PYTHONPATH is removed from their environment); repeat it to compare builds in
the same run. Every measurement runs in a fresh child process of that interpreter
(``PYTHON runtime_targets.py --child NAME``), with every thread pool at ``--threads``
(default 2) set through the environment before import; the children of all builds and
measurements are interleaved (round 1 of everything, then round 2, ...) and each cell is
the median over the rounds. The children use only the public API that every pyfastopt
of this series has (``linear``, ``matmul``, ``batch_norm_train``, ``ops.axpby_``,
``optim.Adam``), so an old build can be measured as well.

Rows (issue 14's targets): the mixed loops' ratio to the sum of their parts (pyfastopt
``linear`` (64,784,256)+relu then NumPy ``np.maximum(x @ W.T + b, 0)``, or then
``torch.relu(F.linear(...))``, one process), small calls (linear (64,784,256), Adam on
1e5 float32, ``axpby_`` on 1e4), large ones (matmul 1024^3, Adam on 1e7, ``batch_norm_train``
32x64x56x56), per-call p50/p99/max over 2000 calls of ``axpby_`` 1e6 and of the linear
layer, alone and next to a competing busy process (``while True: pass``, started by this
script around the child and killed after), and the first kernel of a child created by
``os.fork()`` after parallel work in the parent (a hang is reported as such: the child
is killed after ``--fork-timeout`` seconds).

These are timings on whatever machine runs them: state its load with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

THREAD_VARS = (
    "PYFASTOPT_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)

# --------------------------------------------------------------------------- the children
# Everything below up to the parent section runs in the measured interpreter.


def _layer(np: Any) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(20240611)
    x = rng.standard_normal((64, 784), dtype=np.float32)
    w = (rng.standard_normal((256, 784), dtype=np.float32) / np.float32(28.0)).astype(np.float32)
    return x, w, rng.standard_normal(256, dtype=np.float32)


def _loop(fn: Callable[[], Any], iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def _best(fn: Callable[[], Any], min_batch_s: float, repeats: int = 5) -> float:
    """Seconds per call: timeit-style, the best of ``repeats`` batches."""
    fn()
    number = 1
    while True:
        t = _loop(fn, number)
        if t * number >= min_batch_s or number >= 1 << 20:
            break
        number *= 4
    return min([t] + [_loop(fn, number) for _ in range(repeats - 1)])


def _mixed(peer_name: str, quick: bool) -> dict[str, float]:
    import numpy as np

    import pyfastopt

    threads = pyfastopt.get_num_threads()
    x, w, b = _layer(np)
    linear = pyfastopt.linear
    if peer_name == "numpy":
        wt = w.T

        def peer() -> Any:
            return np.maximum(x @ wt + b, 0)

    else:
        import torch

        torch.set_num_threads(threads)
        xt, wt_, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        F = torch.nn.functional

        def peer() -> Any:
            with torch.inference_mode():
                return torch.relu(F.linear(xt, wt_, bt))

    def ours() -> Any:
        return linear(x, w, b, activation="relu")

    def both() -> None:
        ours()
        peer()

    iters, rounds = (20, 3) if quick else (200, 7)
    for fn in (ours, peer, both):
        _loop(fn, max(2, iters // 10))
    a, p, m = [], [], []
    for _ in range(rounds):
        a.append(_loop(ours, iters))
        p.append(_loop(peer, iters))
        m.append(_loop(both, iters))
    ms = 1e3 * statistics.median(m)
    parts = 1e3 * (statistics.median(a) + statistics.median(p))
    return {"ratio": ms / parts, "mixed_ms": ms, "parts_ms": parts}


def _small(kind: str, quick: bool) -> dict[str, float]:
    import numpy as np

    import pyfastopt

    rng = np.random.default_rng(3)
    if kind == "linear":
        x, w, b = _layer(np)
        fn: Callable[[], Any] = lambda: pyfastopt.linear(x, w, b, activation="relu")  # noqa: E731
    elif kind.startswith("adam"):
        n = int(float(kind[4:]))
        p = rng.standard_normal(n, dtype=np.float32)
        grads = [rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3)]
        opt = pyfastopt.optim.Adam([p], lr=1e-4)
        fn = lambda: opt.step(grads)  # noqa: E731
    elif kind.startswith("axpby"):
        n = int(float(kind[5:]))
        xv = rng.standard_normal(n, dtype=np.float32)
        yv = rng.standard_normal(n, dtype=np.float32)
        axpby_ = pyfastopt.ops.axpby_
        fn = lambda: axpby_(yv, xv, 0.1, 0.9)  # noqa: E731
    elif kind == "matmul1024":
        a = rng.standard_normal((1024, 1024), dtype=np.float32)
        bm = rng.standard_normal((1024, 1024), dtype=np.float32)
        out = np.empty_like(a)
        fn = lambda: pyfastopt.matmul(a, bm, out=out)  # noqa: E731
    elif kind == "batchnorm":
        xb = rng.standard_normal((32, 64, 56, 56), dtype=np.float32)
        g, be = np.ones(64, np.float32), np.zeros(64, np.float32)
        rm, rv = np.zeros(64, np.float32), np.ones(64, np.float32)
        fn = lambda: pyfastopt.batch_norm_train(xb, g, be, rm, rv)  # noqa: E731
    else:
        raise ValueError(kind)
    seconds = _best(fn, 0.005 if quick else 0.05, 3 if quick else 7)
    return {"us": 1e6 * seconds}


def _tail(kernel: str, quick: bool) -> dict[str, float]:
    import numpy as np

    import pyfastopt

    rng = np.random.default_rng(5)
    if kernel == "axpby_":
        xv = rng.standard_normal(1_000_000, dtype=np.float32)
        yv = rng.standard_normal(1_000_000, dtype=np.float32)
        axpby_ = pyfastopt.ops.axpby_
        fn: Callable[[], Any] = lambda: axpby_(yv, xv, 0.1, 0.9)  # noqa: E731
    else:
        x, w, b = _layer(np)
        out = np.empty((64, 256), np.float32)
        fn = lambda: pyfastopt.linear(x, w, b, activation="relu", out=out)  # noqa: E731
    calls = 300 if quick else 2000
    for _ in range(max(5, calls // 20)):
        fn()
    clock = time.perf_counter_ns
    times = []
    for _ in range(calls):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    us = np.asarray(times, dtype=np.float64) / 1e3
    p50, p99 = np.percentile(us, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(us.max())}


def _fork(quick: bool, timeout_s: float) -> dict[str, float]:
    import select

    import numpy as np

    import pyfastopt

    xv = np.ones(1_000_000, np.float32)
    yv = np.ones(1_000_000, np.float32)
    for _ in range(20):  # parallel work in the parent first: its pool is up
        pyfastopt.ops.axpby_(yv, xv, 0.5, 0.5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first kernel
        os.close(r)
        t0 = time.perf_counter()
        pyfastopt.ops.axpby_(yv, xv, 0.5, 0.5)
        os.write(w, f"{time.perf_counter() - t0!r}\n".encode())
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], timeout_s)
    if not ready:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(r)
        return {"s": float("inf"), "hung": 1.0}
    text = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return {"s": float(text), "hung": 0.0}


def child_main(name: str, quick: bool, fork_timeout: float) -> int:
    if name in ("mixed_numpy", "mixed_torch"):
        values = _mixed(name.split("_")[1], quick)
    elif name.startswith("tail_"):
        values = _tail(name[len("tail_") :], quick)
    elif name == "fork":
        values = _fork(quick, fork_timeout)
    else:
        values = _small(name, quick)
    print(json.dumps(values))
    return 0


# --------------------------------------------------------------------------- the parent

#: (row label, child name, value key, unit, the issue's target)
ROWS: list[tuple[str, str, str, str, str]] = [
    ("mixed loop: linear+relu, then NumPy", "mixed_numpy", "ratio", "x sum", "<= 1.2x"),
    ("mixed loop: linear+relu, then PyTorch", "mixed_torch", "ratio", "x sum", "<= 1.2x"),
    ("linear (64,784,256)+relu", "linear", "us", "us", "~150 us, no slower"),
    ("Adam step, 1e5 float32", "adam1e5", "us", "us", "~28 us, no slower"),
    ("axpby_, 1e4 float32", "axpby1e4", "us", "us", "~1.4 us, no slower"),
    ("matmul 1024^3", "matmul1024", "us", "ms", "within 3%"),
    ("Adam step, 1e7 float32", "adam1e7", "us", "ms", "within 3%"),
    ("batch_norm_train 32x64x56x56", "batchnorm", "us", "ms", "within 3%"),
    ("axpby_ 1e6 p50, alone", "tail_axpby_", "p50", "us", ""),
    ("axpby_ 1e6 p99, alone", "tail_axpby_", "p99", "us", ""),
    ("axpby_ 1e6 max, alone", "tail_axpby_", "max", "us", ""),
    ("axpby_ 1e6 p50, busy neighbour", "tail_axpby__busy", "p50", "us", ""),
    ("axpby_ 1e6 p99, busy neighbour", "tail_axpby__busy", "p99", "us", "<= 3x p50"),
    ("axpby_ 1e6 max, busy neighbour", "tail_axpby__busy", "max", "us", ""),
    ("linear p50, alone", "tail_linear", "p50", "us", ""),
    ("linear p99, alone", "tail_linear", "p99", "us", ""),
    ("linear max, alone", "tail_linear", "max", "us", ""),
    ("linear p50, busy neighbour", "tail_linear_busy", "p50", "us", ""),
    ("linear p99, busy neighbour", "tail_linear_busy", "p99", "us", "<= 3x p50"),
    ("linear max, busy neighbour", "tail_linear_busy", "max", "us", ""),
    ("forked child's first kernel", "fork", "s", "ms", "< 1 s"),
]


def _children() -> list[str]:
    return list(dict.fromkeys(child for _, child, _, _, _ in ROWS))


def _env(pythonpath: str | None, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def _run_child(
    python: str, pythonpath: str | None, name: str, args: argparse.Namespace, cwd: str
) -> dict[str, float] | str:
    busy = name.endswith("_busy")
    child = name[: -len("_busy")] if busy else name
    argv = [python, os.path.abspath(__file__), "--child", child]
    argv += ["--fork-timeout", str(args.fork_timeout)] + (["--quick"] if args.quick else [])
    competitor = None
    if busy:
        competitor = subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.2)
    try:
        proc = subprocess.run(
            argv,
            env=_env(pythonpath, args.threads),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=args.fork_timeout + 600,
        )
    except subprocess.TimeoutExpired:
        return "timed out"
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed: {last[:120]}"
    values: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return values


def _fmt(value: float, unit: str) -> str:
    if value == float("inf"):
        return "hang"
    if unit == "ms":
        value /= 1e3
    if unit == "x sum":
        return f"{value:.2f}x"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _parse_build(text: str) -> tuple[str, str, str | None]:
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError("expected NAME=PYTHON[:PYTHONPATH]")
    python, _, pythonpath = rest.partition(":")
    return name, python, pythonpath or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--build",
        action="append",
        type=_parse_build,
        metavar="NAME=PYTHON[:PYTHONPATH]",
        help="a build to measure (repeatable); default: this interpreter, its PYTHONPATH",
    )
    parser.add_argument("--threads", type=int, default=2, help="every pool's size (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 5; quick 2)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and iterations")
    parser.add_argument("--fork-timeout", type=float, default=10.0, metavar="S")
    parser.add_argument("--json", metavar="PATH", help="also write every child's values")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.quick, args.fork_timeout)

    builds = args.build or [("current", sys.executable, os.environ.get("PYTHONPATH"))]
    repeats = args.repeats or (2 if args.quick else 5)
    results: dict[str, dict[str, list[Any]]] = {b[0]: {c: [] for c in _children()} for b in builds}
    print(
        f"runtime targets: {args.threads} threads, {repeats} interleaved rounds"
        f"{' (--quick)' if args.quick else ''}; builds: "
        + "; ".join(f"{n} = {p}{' PYTHONPATH=' + pp if pp else ''}" for n, p, pp in builds),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="runtime-targets-") as cwd:
        for r in range(repeats):
            for child in _children():
                for name, python, pythonpath in builds:
                    results[name][child].append(_run_child(python, pythonpath, child, args, cwd))
            print(f"  round {r + 1}/{repeats} done", file=sys.stderr, flush=True)

    width = max(len(label) for label, *_ in ROWS)
    head = f"{'target':<{width}}  {'unit':>5}  " + "  ".join(f"{n:>12}" for n, _, _ in builds)
    print(head + "  issue 14 target")
    print("-" * (len(head) + 18))
    for label, child, key, unit, target in ROWS:
        cells = []
        for name, _, _ in builds:
            runs = results[name][child]
            errors = [v for v in runs if isinstance(v, str)]
            if errors:
                cells.append(f"{errors[0][:12]:>12}")
                continue
            value = statistics.median(v[key] for v in runs)
            if child == "fork":
                value = value * 1e6  # seconds -> us, shown in ms
                if any(v.get("hung") for v in runs):
                    value = float("inf")
            cells.append(f"{_fmt(value, unit):>12}")
        shown_unit = "x" if unit == "x sum" else unit
        line = f"{label:<{width}}  {shown_unit:>5}  " + "  ".join(cells) + f"  {target}"
        print(line.rstrip())
    print(
        "\nmedians over the rounds; each cell from fresh processes of that build; the mixed "
        "loops are\nthe loop's time over the sum of its two parts timed alone in the same "
        "process."
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"threads": args.threads, "repeats": repeats, "results": results}, f, indent=1
            )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
