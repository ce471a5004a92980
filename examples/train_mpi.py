"""Data-parallel training of an MLP on scikit-learn's digits, over MPI.

    pip install ".[mpi,demo]"
    mpiexec -n 2 python examples/train_mpi.py

Every rank holds the whole (small) data set and the whole model. Each step, the
DataLoader gives rank r its slice of one global batch of ``batch_size * size()`` samples;
each rank computes the gradient of the mean loss over its slice, DistributedOptimizer
averages the gradients over the ranks (one in-place, bucketed allreduce) and every rank
applies the same update, so the models stay identical. The result equals single-process
training with batch ``batch_size * size()`` (to rounding): ``python examples/train_mpi.py
--batch-size 64`` on one process follows the same trajectory as 2 ranks with 32.

``dist.init()`` starts MPI on every rank, gives each rank its share of the node's CPU
threads and installs an MPI_Abort hook, so an exception on any rank ends the whole job
instead of leaving the other ranks waiting. Rank 0 prints the loss and accuracies per
epoch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits

import pyfastopt
from pyfastopt import distributed as dist
from pyfastopt import nn, optim
from pyfastopt.data import DataLoader


def accuracy_counts(model: nn.Module, x: np.ndarray, y: np.ndarray, rank: int, world: int) -> float:
    """(correct, total) over this rank's shard of (x, y), summed over the ranks."""
    shard = slice(rank, None, world)
    logits = model(x[shard])
    counts = np.array([(logits.argmax(axis=1) == y[shard]).sum(), len(y[shard])], np.float64)
    dist.allreduce_([counts], average=False)
    return float(counts[0] / counts[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32, help="samples per rank per step")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dist.init()  # every rank, before anything else of pyfastopt.distributed
    rank, world = dist.rank(), dist.size()
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(args.seed).permutation(len(x))  # same split on every rank
    test, train = order[:360], order[360:]
    x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]

    # Different initial weights on every rank on purpose: broadcast_parameters makes
    # them rank 0's (parameters and any buffers, through state_dict/load_state_dict).
    model = nn.Sequential(
        nn.Linear(64, args.hidden, activation="relu", seed=1000 * rank + 1),
        nn.Linear(args.hidden, args.hidden, activation="relu", seed=1000 * rank + 2),
        nn.Linear(args.hidden, 10, seed=1000 * rank + 3),
    )
    dist.broadcast_parameters(model)
    opt = dist.DistributedOptimizer(optim.AdamW(model.parameters(), lr=args.lr))
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loader = DataLoader(
        x_train,
        y_train,
        batch_size=args.batch_size,
        seed=args.seed,
        drop_last=True,  # equal batches on every rank: the average is the global mean
        rank=rank,
        world_size=world,
    )
    if rank == 0:
        print(
            f"{world} rank(s) x {pyfastopt.get_num_threads()} thread(s); "
            f"global batch {args.batch_size * world}; {len(loader)} steps per epoch"
        )
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        model.train()
        stats = np.zeros(2)  # (sum of batch losses, steps) on this rank
        start = time.perf_counter()
        for xb, yb in loader:
            loss, dlogits = nn.cross_entropy(model(xb), yb)
            model.backward(dlogits)
            opt.step(model.gradients())  # gradients averaged over the ranks, then AdamW
            stats += (loss, 1)
        seconds = time.perf_counter() - start
        sched.step()
        dist.allreduce_([stats], average=False)
        model.eval()
        train_acc = accuracy_counts(model, x_train, y_train, rank, world)
        test_acc = accuracy_counts(model, x_test, y_test, rank, world)
        if rank == 0:
            samples = len(loader) * args.batch_size * world
            print(
                f"epoch {epoch + 1:2d}  loss {stats[0] / stats[1]:.4f}  "
                f"train acc {train_acc:.4f}  test acc {test_acc:.4f}  "
                f"({samples / seconds:,.0f} samples/s)"
            )


if __name__ == "__main__":
    main()
