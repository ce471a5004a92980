#!/usr/bin/env python3
"""Measure pyfastopt's thread runtime in a shared process (issue 14): small-call latency
and the cost of alternating pyfastopt with a NumPy (OpenBLAS) matmul, 2 threads.

    python tools/runtime_mix.py [--spin 0,20,50,...] [--rounds 5] [--threads 2]

Prints one JSON line per round: {spin: {metric: value}}. With --spin (needs a pyfastopt
that has set_spin_time), the spin values are interleaved within each round. Every
metric is timed call by call; "<name>" is the median call, "<name>_p10" the 10th
percentile (on a machine loaded by other processes, the p10 approximates the time of a
call that got its CPUs). Metrics: linear_us (pyfastopt.linear (64,784)x(256,784)^T +
relu), adam_us (Adam step, 1e5 floats), axpby_us (axpby_ 1e4), numpy_us (the NumPy
layer alone), mixed_us (one pyfastopt layer then the NumPy layer), mixed_ratio =
mixed / (linear + numpy), cpu_mixed_us (process CPU time, all threads, per mixed
iteration: time spent spinning shows here).
Not a timed test: compare only numbers from one run (or from alternating runs).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

import pyfastopt
from pyfastopt.optim import Adam


def samples(fn: Any, n: int) -> list[float]:
    fn()
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return sorted(out)


def cpu_per_call(fn: Any, n: int) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


def measure(n: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 784), dtype=np.float32)
    w = rng.standard_normal((256, 784), dtype=np.float32)
    b = rng.standard_normal(256, dtype=np.float32)
    out = np.empty((64, 256), np.float32)

    def pf() -> None:
        pyfastopt.linear(x, w, b, activation="relu", out=out)

    def npl() -> None:
        np.maximum(x @ w.T + b, 0)

    def mixed() -> None:
        pf()
        npl()

    p = rng.standard_normal(100_000).astype(np.float32)
    g = rng.standard_normal(100_000).astype(np.float32)
    opt = Adam([p], lr=1e-4)
    y = rng.standard_normal(10_000).astype(np.float32)
    xv = rng.standard_normal(10_000).astype(np.float32)
    cases = {
        "linear_us": (pf, n),
        "adam_us": (lambda: opt.step([g]), n),
        "axpby_us": (lambda: pyfastopt.ops.axpby_(y, xv, 0.999, 1e-3), 4 * n),
        "numpy_us": (npl, n),
        "mixed_us": (mixed, n),
    }
    r: dict[str, float] = {}
    for name, (fn, count) in cases.items():
        s = samples(fn, count)
        r[name] = s[len(s) // 2] * 1e6
        r[name + "_p10"] = s[len(s) // 10] * 1e6
    r["mixed_ratio"] = r["mixed_us"] / (r["linear_us"] + r["numpy_us"])
    r["mixed_ratio_p10"] = r["mixed_us_p10"] / (r["linear_us_p10"] + r["numpy_us_p10"])
    r["cpu_mixed_us"] = cpu_per_call(mixed, n) * 1e6
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spin", default="")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=400)
    a = ap.parse_args()
    pyfastopt.set_num_threads(a.threads)
    spins = [int(s) for s in a.spin.split(",")] if a.spin else [None]
    for _ in range(a.rounds):
        row = {}
        for s in spins:
            if s is not None:
                pyfastopt.set_spin_time(s)
            row[str(s)] = measure(a.calls)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
