"""pyfastopt vs ONNX Runtime on the int8 ONNX models of ``bench_onnx_int8`` without asv:
every (library, threads) pair runs in a child process of its own, with the thread
variables of :func:`pyfastopt.bench.isolation.child_env` (the timed library gets
``threads``, every other pool 1), and prints a table of the best-of-N times.

Usage: ``python benchmarks/compare_onnx_int8.py [--repeats 7] [--json OUT] [--steps]``
(run from the repository root, with pyfastopt, onnx and onnxruntime installed).
``--steps`` also times pyfastopt's step plan (``QuantizedGraph._compile(native=False)``:
the graph run step by step from Python, as before the one-call native plan) in children
of its own, for a before/after comparison in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, sys, time
sys.path.append({root!r})  # after the installed pyfastopt
from benchmarks.benchmarks import bench_onnx_int8 as b
from benchmarks.benchmarks.common import best_seconds
lib, threads, repeats = {lib!r}, {threads}, {repeats}
out = {{}}
for model in b.MODELS:
    for batch in b.BATCHES:
        pfo = lib.startswith("pyfastopt")
        bench = b.PyfastoptOnnxInt8() if pfo else b.OnnxRuntimeInt8()
        bench.setup(model, batch, threads)
        if lib == "pyfastopt-steps":  # the step plan only (no one-call native plan)
            bench.model._compile(native=False)
        run = bench.time_pyfastopt_onnx_int8 if pfo else bench.time_onnxruntime_int8
        load = bench.time_load_pyfastopt if pfo else bench.time_load_onnxruntime
        t = best_seconds(lambda: run(model, batch, threads), repeats=repeats)
        tl = best_seconds(lambda: load(model, batch, threads), repeats=3) if batch == 1 else None
        bench.teardown(model, batch, threads)
        out[f"{{model}} b{{batch}}"] = [t, tl]
print("RESULT " + json.dumps(out))
"""


def run(lib: str, threads: int, repeats: int) -> dict:
    from pyfastopt.bench.isolation import child_env

    code = _CHILD.format(root=ROOT, lib=lib, threads=threads, repeats=repeats)
    pfo = lib.startswith("pyfastopt")
    env = child_env("pyfastopt" if pfo else "runtime_peer", threads)
    if not pfo:  # ORT takes its thread count from the session options
        env["PYFASTOPT_NUM_THREADS"] = "1"
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=os.path.dirname(ROOT),
        capture_output=True,
        text=True,
        check=False,
    )
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{lib} child failed:\n{r.stderr[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None)
    ap.add_argument("--steps", action="store_true", help="also time the step plan")
    args = ap.parse_args()
    libs = ["pyfastopt", "onnxruntime"] + (["pyfastopt-steps"] if args.steps else [])
    results = {}
    for threads in (1, 2):
        for lib in libs:
            results[f"{lib} t{threads}"] = run(lib, threads, args.repeats)
    head = f"{'case':<22}{'thr':>4}{'pyfastopt ms':>14}{'ORT ms':>10}{'ORT/pfo':>9}"
    print(head + (f"{'steps ms':>10}{'ORT/steps':>11}" if args.steps else ""))
    for threads in (1, 2):
        p, o = results[f"pyfastopt t{threads}"], results[f"onnxruntime t{threads}"]
        for case in p:
            tp, to = p[case][0], o[case][0]
            line = f"{case:<22}{threads:>4}{tp * 1e3:>14.3f}{to * 1e3:>10.3f}{to / tp:>9.2f}"
            if args.steps:
                ts = results[f"pyfastopt-steps t{threads}"][case][0]
                line += f"{ts * 1e3:>10.3f}{to / ts:>11.2f}"
            print(line)
    print("\nload (batch-1 rows): pyfastopt.onnx.load vs ort.InferenceSession, 1 thread")
    p, o = results["pyfastopt t1"], results["onnxruntime t1"]
    for case in p:
        if p[case][1] is not None:
            print(f"{case:<22}{p[case][1] * 1e3:>14.3f}{o[case][1] * 1e3:>10.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
