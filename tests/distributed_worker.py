"""Worker for tests/test_distributed.py, run as ``mpiexec -n 2 python distributed_worker.py
<scenario>``. Each scenario groups many checks into one MPI job (mpiexec start-up is the
slow part). A failed check raises, which pyfastopt.distributed turns into MPI_Abort, so
the job exits non-zero; success prints ``<SCENARIO>-OK rank <r>`` on every rank.

Every rank can regenerate every rank's inputs (seeded by rank), so each one checks its
own results against exact expectations, with no MPI in the reference.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

import pyfastopt
from pyfastopt import distributed as dist
from pyfastopt import optim
from pyfastopt.optim import lr_scheduler

assert not dist.is_initialized()  # importing the module set nothing up
dist.init()  # the documented start-up (collective; the abort hook as the environment says)
R, N = dist.rank(), dist.size()
assert N == 2, f"run with 2 ranks, got {N}"


def expect_error(cls, call, *fragments):
    """``call()`` must raise ``cls`` whose message contains every fragment."""
    try:
        call()
    except cls as exc:
        msg = str(exc)
        for f in fragments:
            assert f in msg, f"rank {R}: {f!r} not in {msg!r}"
        return msg
    raise AssertionError(f"rank {R}: expected {cls.__name__} containing {fragments}")


def same_on_all_ranks(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    digests = dist._WORLD.allgather(h.hexdigest())
    assert len(set(digests)) == 1, f"ranks differ: {digests}"


# ---------------------------------------------------------------------------- collectives
SHAPES = [(0,), (1,), (), (2,), (7,), (3, 11), (1000,), (4099,), (50, 401), (0, 5)]


def make(r, salt=0):
    """Rank r's input list: every shape in float32 and float64, interleaved."""
    rng = np.random.default_rng(1000 * salt + r)
    out = []
    for k, shape in enumerate(SHAPES):
        for dt in (np.float32, np.float64) if k % 2 else (np.float64, np.float32):
            out.append(rng.standard_normal(shape).astype(dt))
    return out


def check_allreduce():
    cases = [(4096, 0), (dist.DEFAULT_BUCKET_BYTES, 1), (0, 2), (4096, 3), (100_000, 4)]
    for bucket_bytes, salt in cases:
        for average in (False, True):
            mine = make(R, salt)
            ids = [id(a) for a in mine]
            out = dist.allreduce_(tuple(mine), average=average, bucket_bytes=bucket_bytes)
            assert [id(a) for a in out] == ids and [id(a) for a in mine] == ids
            a0, a1 = make(0, salt), make(1, salt)
            for i, (got, x, y) in enumerate(zip(mine, a0, a1)):
                want = x + y  # one rounding, the same in either order
                if average:
                    want = want / 2
                assert got.dtype == x.dtype and got.shape == x.shape
                assert np.array_equal(got, want), (
                    f"rank {R}: allreduce_ arrays[{i}] {x.dtype}{x.shape} wrong "
                    f"(bucket_bytes={bucket_bytes}, average={average})"
                )
            same_on_all_ranks(mine)
    # the packing buffers are kept between calls
    b32 = dist._buckets[np.dtype(np.float32)]
    dist.allreduce_(make(R, 9), bucket_bytes=4096)
    assert dist._buckets[np.dtype(np.float32)] is b32
    # no MPI with a single array list of nothing
    assert dist.allreduce_([]) == []


def check_allreduce_errors():
    good = [np.ones(5, np.float32), np.ones(3)]
    # rank 1 passes a strided view at index 2: both ranks raise, nobody hangs
    base = np.arange(20.0).reshape(4, 5)
    third = base[:, 1] if R == 1 else np.ascontiguousarray(base[:, 1])
    arrays = [good[0].copy(), good[1].copy(), third]
    if R == 1:
        expect_error(ValueError, lambda: dist.allreduce_(arrays), "arrays[2]", "C-contiguous")
    else:
        expect_error(ValueError, lambda: dist.allreduce_(arrays), "rank 1", "arrays[2]")
    assert np.array_equal(arrays[0], good[0]) and np.array_equal(arrays[1], good[1])
    # read-only, wrong dtype, not a list, shared memory: on every rank
    ro = np.ones(4)
    ro.flags.writeable = False
    expect_error(ValueError, lambda: dist.allreduce_([np.ones(2), ro]), "arrays[1]", "read-only")
    msg = expect_error(TypeError, lambda: dist.allreduce_([np.ones(3, np.int32)]), "arrays[0]")
    assert "float32 or float64" in msg
    expect_error(ValueError, lambda: dist.allreduce_([np.ones(3, np.int64)]), "arrays[0]")
    expect_error(TypeError, lambda: dist.allreduce_(np.ones(3)), "list")
    expect_error(TypeError, lambda: dist.allreduce_([np.ones(3), [1.0, 2.0]]), "arrays[1]")
    s = np.ones(10)
    expect_error(ValueError, lambda: dist.allreduce_([s[:6], s[4:]]), "share memory")
    # ranks disagree on a shape / a dtype / the count
    shapes = [np.ones(3), np.ones((2, 3 + R))]
    expect_error(ValueError, lambda: dist.allreduce_(shapes), "arrays[1]", "(2, 3)", "(2, 4)")
    dts = [np.ones(3, np.float64 if R == 0 else np.float32)]
    expect_error(ValueError, lambda: dist.allreduce_(dts), "arrays[0]", "float32", "float64")
    count = [np.ones(3)] * 1 + [np.ones(2)] * R
    expect_error(ValueError, lambda: dist.allreduce_(count), "rank 1 passes 2 arrays")
    expect_error(ValueError, lambda: dist.allreduce_([np.ones(2)], bucket_bytes=-1), "bucket")
    # after all that, the ranks are still in step
    x = [np.full(6, R + 1.0)]
    dist.allreduce_(x, average=False)
    assert np.array_equal(x[0], np.full(6, 3.0))
    # equal arguments but different digests (e.g. ranks on different Python builds): the
    # detailed comparison finds nothing wrong and the reduction goes ahead
    digest = dist._array_digest
    if R == 1:
        dist._array_digest = lambda arrays, *extra: digest(arrays, *extra) ^ 1
    try:
        x = [np.full(6, R + 1.0)]
        dist.allreduce_(x, average=False)
        assert np.array_equal(x[0], np.full(6, 3.0))
    finally:
        dist._array_digest = digest


def make_b(r):
    rng = np.random.default_rng(77 + r)
    return [
        rng.standard_normal((3, 5)).astype(np.float32),
        rng.integers(0, 1000, 17),
        np.zeros(0),
        rng.standard_normal(5000),
        rng.random(9) < 0.5,
        np.array(float(r)),
        rng.integers(0, 100, 4).astype(np.uint16),
    ]


def check_broadcast():
    for root in (0, 1):
        for bucket_bytes in (64, dist.DEFAULT_BUCKET_BYTES, 0):
            mine = make_b(R)
            dist.broadcast_(mine, root=root, bucket_bytes=bucket_bytes)
            for i, (got, want) in enumerate(zip(mine, make_b(root))):
                assert got.dtype == want.dtype and np.array_equal(got, want), (
                    f"rank {R}: broadcast_ arrays[{i}] differs from root {root}"
                )
    # mismatches raise ValueError on both ranks, naming the index and both shapes
    arrays = [np.zeros(4), np.zeros((3, 2 + R), np.float32)]
    before = [a.copy() for a in arrays]
    expect_error(ValueError, lambda: dist.broadcast_(arrays), "arrays[1]", "(3, 2)", "(3, 3)")
    assert all(np.array_equal(a, b) for a, b in zip(arrays, before))
    dts = [np.zeros(4, np.int32 if R else np.int64)]
    expect_error(ValueError, lambda: dist.broadcast_(dts), "arrays[0]", "int32", "int64")
    expect_error(ValueError, lambda: dist.broadcast_([np.zeros(2)] * (R + 1)), "arrays")
    expect_error(ValueError, lambda: dist.broadcast_([np.zeros(2)], root=R), "root")
    expect_error(ValueError, lambda: dist.broadcast_([np.zeros(2)], root=2), "root")
    strided = np.zeros((4, 4))[:, :2] if R == 0 else np.zeros((4, 2))
    expect_error(ValueError, lambda: dist.broadcast_([strided]), "arrays[0]")
    expect_error(TypeError, lambda: dist.broadcast_([np.array(["a"], dtype=object)]), "dtype")
    # dict parameters (keys in any order)
    d = {"b": np.full(3, float(R)), "a": np.full((2, 2), 10.0 + R)}
    if R == 1:
        d = dict(reversed(list(d.items())))
    dist.broadcast_parameters(d, root=1)
    assert np.array_equal(d["b"], np.full(3, 1.0)) and np.array_equal(d["a"], np.full((2, 2), 11))
    bad = {"w": np.zeros(2)} if R == 0 else {"v": np.zeros(2)}
    expect_error(ValueError, lambda: dist.broadcast_parameters(bad), "key")


def check_setup():
    assert dist.local_size() == 2 and dist.local_rank() == R
    dist.barrier()
    # threads: the environment chose none, so the cores are split between the 2 ranks
    _, source, usable = pyfastopt._core.config.default_num_threads()
    assert source == "usable CPUs", source
    assert pyfastopt.get_num_threads() == max(1, usable // 2), (
        pyfastopt.get_num_threads(),
        usable,
    )
    # the abort hook is installed, chained, and can be removed and re-installed
    assert sys.excepthook is dist._abort_hook
    previous = dist._previous_hook
    dist.abort_on_exception(False)
    assert sys.excepthook is previous
    dist.abort_on_exception(True)
    assert sys.excepthook is dist._abort_hook and dist._previous_hook is previous


def collectives():
    check_setup()
    check_allreduce()
    check_allreduce_errors()
    check_broadcast()


# ---------------------------------------------------------------------------- training
D_IN, HIDDEN, CLASSES, B, STEPS = 12, 16, 5, 8, 12


def data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2 * B * STEPS, D_IN))
    y = rng.integers(0, CLASSES, len(x))
    order = rng.permutation(len(x))
    return x, y, order


def init(seed, dtype):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((HIDDEN, D_IN)) / np.sqrt(D_IN)).astype(dtype),
        (0.1 * rng.standard_normal(HIDDEN)).astype(dtype),
        (rng.standard_normal((CLASSES, HIDDEN)) / np.sqrt(HIDDEN)).astype(dtype),
        (0.1 * rng.standard_normal(CLASSES)).astype(dtype),
    ]


def mlp_grads(params, x, labels):
    """Linear-ReLU-Linear, mean cross-entropy over the batch: (loss, grads)."""
    w1, b1, w2, b2 = params
    x = x.astype(w1.dtype)
    pre = x @ w1.T + b1
    h = np.maximum(pre, 0)
    logits = h @ w2.T + b2
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(x)
    loss = -np.log(p[np.arange(n), labels]).mean()
    d = p.copy()
    d[np.arange(n), labels] -= 1
    d /= n
    dh = (d @ w2) * (pre > 0)
    return loss, [dh.T @ x, dh.sum(0), d.T @ h, d.sum(0)]


def make_opt(kind, params):
    if kind == "sgd":
        return optim.SGD(params, lr=0.2, momentum=0.9, weight_decay=1e-3)
    return optim.Adam(params, lr=0.02)


def train_case(kind, dtype, tol):
    x, y, order = data()
    params = init(100 + R, dtype)  # different on every rank ...
    dist.broadcast_parameters(params)  # ... until rank 0's are broadcast
    for got, want in zip(params, init(100, dtype)):
        assert np.array_equal(got, want)
    opt = dist.DistributedOptimizer(make_opt(kind, params))
    ref = [p.copy() for p in params]
    ref_opt = make_opt(kind, ref)
    for t in range(STEPS):
        glob = order[t * 2 * B : (t + 1) * 2 * B]  # the global batch of 2B samples
        local = glob[R * B : (R + 1) * B]  # this rank's half
        _, grads = mlp_grads(params, x[local], y[local])
        opt.step(grads)
        _, ref_grads = mlp_grads(ref, x[glob], y[glob])  # 1 process, batch 2B
        ref_opt.step(ref_grads)
    same_on_all_ranks(params)
    moved = max(np.abs(p - q).max() for p, q in zip(params, init(100, dtype)))
    assert moved > 0.05, f"training barely moved the parameters ({moved})"
    for i, (p, q) in enumerate(zip(params, ref)):
        err = np.abs(p - q).max()
        assert err <= tol, (
            f"rank {R}: {kind} {np.dtype(dtype)} param {i}: 2 ranks vs 1 off by {err}"
        )
    return opt


def check_optimizer_wrapper(opt):
    inner = opt.optimizer
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert inner.param_groups[0]["lr"] == 0.01
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == STEPS
    opt.load_state_dict(sd)
    # broadcast_optimizer_state: rank 1 starts from a fresh optimizer with another lr
    params = [p.copy() for p in inner.param_groups[0]["params"]]
    fresh = optim.Adam(params, lr=0.5) if R == 1 else inner
    dist.broadcast_optimizer_state(fresh)
    if R == 1:
        got = fresh.state_dict()
        assert got["param_groups"][0]["lr"] == 0.01
        for i, st in sd["state"].items():
            assert got["state"][i]["step"] == st["step"]
            for k, v in st.items():
                if isinstance(v, np.ndarray):
                    assert np.array_equal(got["state"][i][k], v), (i, k)


def check_nn_if_available():
    """The same equivalence through pyfastopt.nn and pyfastopt.data, when merged."""
    try:
        from pyfastopt import data as pdata
        from pyfastopt import nn
    except ImportError:
        print(f"NN-SKIPPED rank {R}")
        return

    def model(seed):
        return nn.Sequential(
            nn.Linear(D_IN, HIDDEN, activation="relu", seed=seed),
            nn.Linear(HIDDEN, CLASSES, seed=seed + 1),
        )

    x, y, _ = data()
    x = x.astype(np.float32)
    net, ref = model(10 + R), model(10)
    dist.broadcast_parameters(net)
    opt = dist.DistributedOptimizer(optim.SGD(net.parameters(), lr=0.2, momentum=0.9))
    ref_opt = optim.SGD(ref.parameters(), lr=0.2, momentum=0.9)
    mine = pdata.DataLoader(x, y, batch_size=B, seed=3, rank=R, world_size=N)
    full = pdata.DataLoader(x, y, batch_size=2 * B, seed=3)
    for epoch in range(2):
        mine.set_epoch(epoch)
        full.set_epoch(epoch)
        for (xb, yb), (xf, yf) in zip(mine, full):
            _, dl = nn.cross_entropy(net(xb), yb)
            net.backward(dl)
            opt.step(net.gradients())
            _, dl = nn.cross_entropy(ref(xf), yf)
            ref.backward(dl)
            ref_opt.step(ref.gradients())
    same_on_all_ranks(net.parameters())
    for p, q in zip(net.parameters(), ref.parameters()):
        assert np.abs(p - q).max() <= 2e-5, np.abs(p - q).max()
    print(f"NN-OK rank {R}")


def train():
    assert pyfastopt.get_num_threads() == 2  # PYFASTOPT_NUM_THREADS=2 wins
    assert sys.excepthook is not dist._abort_hook  # PYFASTOPT_MPI_ABORT_ON_ERROR=0
    dist.abort_on_exception(True)  # a failed check below must still end the job
    train_case("sgd", np.float64, 1e-12)
    train_case("sgd", np.float32, 2e-5)
    train_case("adam", np.float32, 2e-5)
    opt = train_case("adam", np.float64, 1e-12)
    check_optimizer_wrapper(opt)
    check_nn_if_available()


# ---------------------------------------------------------------------------- faults
def fault():
    dist.barrier()
    if R == 1:
        raise RuntimeError("injected failure on rank 1")
    dist.allreduce_([np.ones(3)])  # rank 1 never joins: without the hook, a hang
    print("UNREACHABLE")


if __name__ == "__main__":
    scenario = sys.argv[1]
    {"collectives": collectives, "train": train, "fault": fault}[scenario]()
    sys.stdout.flush()
    dist.barrier()
    print(f"{scenario.upper()}-OK rank {R}", flush=True)
