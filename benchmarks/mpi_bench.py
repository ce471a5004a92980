"""pyfastopt.distributed timings: allreduce_ bandwidth and data-parallel step throughput.

Run on the ranks you want to compare (this is not an asv benchmark: asv cannot launch
mpiexec)::

    mpiexec -n 2 python benchmarks/mpi_bench.py allreduce
    python benchmarks/mpi_bench.py train              # 1 rank, batch G
    mpiexec -n 2 python benchmarks/mpi_bench.py train # 2 ranks, batch G/2 each

``allreduce``: seconds per call (median and best of ``--reps``) for float32 messages of
1e6..1e8 bytes: one array (reduced in place, no copy), the same bytes as 1000 small
arrays (packed into one bucket, then unpacked) and 1000 arrays with ``bucket_bytes=0``
(one message each), next to a bare mpi4py ``Allreduce(IN_PLACE)``. Bandwidth is
``bytes / seconds`` ("algbw") and ``2 (n-1)/n * bytes / seconds`` ("busbw", the data
each rank must send and receive in a ring, NCCL's convention).

``train``: one optimizer step of an MLP (pyfastopt.nn Linear+ReLU, AdamW through
DistributedOptimizer) on a global batch of ``--batch`` samples split over the ranks;
samples per second = global batch / step time (the slowest rank's; ranks synchronise
before and after each timed window).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import pyfastopt
from pyfastopt import distributed as dist
from pyfastopt import nn, optim

dist.init()
R, N = dist.rank(), dist.size()


def timed(fn, reps):
    """Median and best seconds of ``reps`` calls (after one warm-up); each window ends
    with a barrier, so it includes waiting for the slowest rank."""
    fn()
    times = []
    for _ in range(reps):
        dist.barrier()
        t = time.perf_counter()
        fn()
        dist.barrier()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def bench_allreduce(reps):
    rows = []
    for nbytes in (10**6, 10**7, 10**8):
        n = nbytes // 4
        one = [np.ones(n, np.float32)]
        many = [np.ones(n // 1000, np.float32) for _ in range(1000)]
        cases = {
            "mpi4py Allreduce (1 array)": lambda a=one[0]: dist._WORLD.Allreduce(
                dist.MPI.IN_PLACE, [a, dist.MPI.FLOAT]
            ),
            "allreduce_ (1 array)": lambda a=one: dist.allreduce_(a),
            "allreduce_ (1000 arrays, bucketed)": lambda a=many: dist.allreduce_(a),
            "allreduce_ (1000 arrays, bucket_bytes=0)": lambda a=many: dist.allreduce_(
                a, bucket_bytes=0
            ),
        }
        for name, fn in cases.items():
            r = reps if nbytes < 10**8 else max(3, reps // 3)
            med, best = timed(fn, r)
            rows.append(
                {
                    "bytes": nbytes,
                    "case": name,
                    "median_s": med,
                    "best_s": best,
                    "algbw_GBps": nbytes / med / 1e9,
                    "busbw_GBps": 2 * (N - 1) / N * nbytes / med / 1e9,
                }
            )
    if R == 0:
        print(f"allreduce_ on {N} ranks, float32, average=True (median of {reps} reps)")
        print(f"{'bytes':>11}  {'case':42s} {'median ms':>10} {'best ms':>9} {'algbw GB/s':>11}")
        for row in rows:
            print(
                f"{row['bytes']:>11,}  {row['case']:42s} {row['median_s'] * 1e3:10.3f} "
                f"{row['best_s'] * 1e3:9.3f} {row['algbw_GBps']:11.2f}"
            )
    return rows


def bench_train(reps, global_batch, sizes):
    if global_batch % N:
        raise SystemExit(f"--batch {global_batch} is not divisible by {N} ranks")
    b = global_batch // N
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(nn.Linear(fan_in, fan_out, activation=None if last else "relu", seed=i))
    model = nn.Sequential(*layers)
    dist.broadcast_parameters(model)
    opt = dist.DistributedOptimizer(optim.AdamW(model.parameters(), lr=1e-4))
    rng = np.random.default_rng(R)
    x = rng.standard_normal((b, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], b)
    grads = model.gradients()

    def step():
        _, dlogits = nn.cross_entropy(model(x), y)
        model.backward(dlogits)
        opt.step(grads)

    def reduce_only():
        dist.allreduce_(grads)

    steps = 10
    med, best = timed(lambda: [step() for _ in range(steps)], reps)
    red, _ = timed(lambda: [reduce_only() for _ in range(steps)], reps)
    n_params = sum(p.size for p in model.parameters())
    row = {
        "ranks": N,
        "threads_per_rank": pyfastopt.get_num_threads(),
        "model": "-".join(map(str, sizes)),
        "params": n_params,
        "global_batch": global_batch,
        "step_ms_median": med / steps * 1e3,
        "step_ms_best": best / steps * 1e3,
        "samples_per_s": global_batch / (med / steps),
        "allreduce_ms": red / steps * 1e3,
    }
    if R == 0:
        print(
            f"train {row['model']} ({n_params:,} params), global batch {global_batch}: "
            f"{N} rank(s) x {row['threads_per_rank']} thread(s): "
            f"{row['step_ms_median']:.3f} ms/step (best {row['step_ms_best']:.3f}), "
            f"{row['samples_per_s']:,.0f} samples/s; allreduce_ of the grads alone "
            f"{row['allreduce_ms']:.3f} ms"
        )
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["allreduce", "train"])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--batch", type=int, default=256, help="global batch (train)")
    parser.add_argument(
        "--sizes", default="784,1024,1024,10", help="layer widths (train), comma-separated"
    )
    parser.add_argument("--json", help="write the rows here (rank 0)")
    args = parser.parse_args()
    if args.what == "allreduce":
        rows = bench_allreduce(args.reps)
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        rows = [bench_train(args.reps, args.batch, sizes)]
    if args.json and R == 0:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
