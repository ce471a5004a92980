"""pyfastopt's thread pool: exceptions, concurrency, fork safety, caps and knobs.

Run also under PYFASTOPT_SIMD=scalar|avx2|avx512 and PYFASTOPT_NUM_THREADS=1|2|3: every
test sets the thread counts it needs itself, results are compared with one-thread runs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import TIMEOUT_SCALE

import pyfastopt
from pyfastopt import _core
from pyfastopt.optim import Adam
from pyfastopt.quant import quantize

cfg = _core.config

# fork() from a process with threads: Python >= 3.12 warns (the pool's workers are
# exactly what these tests are about).
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


def child_env(**updates):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYFASTOPT_NUM_THREADS", "OMP_NUM_THREADS", "PYFASTOPT_SPIN_US")
    }
    env.update(updates)
    return env


def run_child(code, tmp_path, timeout=120 * TIMEOUT_SCALE, **env):
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return r


# ---- workload shared by the fork and concurrency tests -----------------------------------


def workload(seed=0):
    """A few kernels that run parallel regions on 2+ threads; returns their outputs."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((192, 256), dtype=np.float32)
    b = rng.standard_normal((256, 320), dtype=np.float32)
    c = pyfastopt.matmul(a, b)
    p = rng.standard_normal(200_000).astype(np.float32)
    g = rng.standard_normal(200_000).astype(np.float32)
    opt = Adam([p], lr=1e-2)
    opt.step([g])
    opt.step([g * 0.5])
    x = rng.standard_normal(300_000).astype(np.float32)
    q = quantize(x, 0.05, 3, np.int8)
    s = pyfastopt.ops.sum_squares(x)
    return [c, p.copy(), q, np.float64(s)]


def same(xs, ys):
    return len(xs) == len(ys) and all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(xs, ys)
    )


def test_no_openmp_runtime_loaded(tmp_path):
    code = (
        "import numpy as np, pyfastopt\n"
        "pyfastopt.set_num_threads(2)\n"
        "a = np.ones((256, 256), np.float32)\n"
        "pyfastopt.matmul(a, a)\n"
        "import pyfastopt._core as c\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(c.__file__)\n"
        "print(any(k in maps for k in ('libgomp', 'libiomp', 'libomp')))\n"
    )
    r = run_child(code, tmp_path)
    assert r.returncode == 0, r.stderr
    so, loaded = r.stdout.split()
    assert loaded == "False"
    if sys.platform.startswith("linux"):
        ldd = subprocess.run(["ldd", so], capture_output=True, text=True, check=False)
        if ldd.returncode == 0:
            assert "gomp" not in ldd.stdout
            assert "omp.so" not in ldd.stdout


def test_config_names_runtime():
    c = pyfastopt._config.config_dict()
    assert c["runtime"] == "pyfastopt pool"
    assert c["threads"]["runtime"] == "pyfastopt pool"
    assert c["threads"]["max_num_threads"] == pyfastopt.max_num_threads()
    assert c["threads"]["spin_us"] == pyfastopt.get_spin_time()


# ---- results: any thread count, any claiming order -----------------------------------------


@pytest.mark.parametrize("spin", [0, 50, 1000])
def test_results_identical_for_thread_counts_and_spin(spin):
    previous = pyfastopt.get_spin_time()
    try:
        pyfastopt.set_spin_time(spin)
        with pyfastopt.threads(1):
            ref = workload(1)
        for n in (2, 3, 4, 7):
            with pyfastopt.threads(n):
                for _ in range(3):
                    assert same(workload(1), ref), n
    finally:
        pyfastopt.set_spin_time(previous)


def test_pool_grows_and_is_reused():
    with pyfastopt.threads(3):
        workload(2)
        n = cfg.pool_size()
        assert n >= 2
        workload(2)
        assert cfg.pool_size() == n


# ---- exceptions inside a region --------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("fail_at", [0, 1, 57, 99])
def test_task_exception_reaches_python(threads, fail_at):
    with pytest.raises(MemoryError):
        cfg._test_region(100, threads, fail_at, "memory")
    with pytest.raises(RuntimeError, match=f"task {fail_at} failed"):
        cfg._test_region(100, threads, fail_at, "runtime")
    # the pool is intact: every task runs when none fails
    assert cfg._test_region(100, threads, -1, "none") == 100
    with pyfastopt.threads(threads):
        assert same(workload(3), workload(3))


def test_nested_region_runs_serially():
    # a task that runs a region of its own: no deadlock, every inner task runs once
    assert cfg._test_region(8, 3, -1, "nested") == 8 + 8 * 16


no_rlimit_as = pytest.mark.skipif(
    cfg.sanitize_build, reason="ASan maps terabytes of shadow memory: RLIMIT_AS tests do not apply"
)

# qemu user mode (.ci/aarch64) accepts setrlimit(RLIMIT_AS) and ignores it, since the
# limit would bind the emulator itself: a test whose child finds that a 64 MiB
# allocation above the limit still succeeds prints this and is skipped, not failed.
RLIMIT_UNBOUND = "RLIMIT_AS-does-not-bind"
PROBE_RLIMIT = (
    "try:\n"
    "    _probe = bytearray(64 << 20)\n"
    "except MemoryError:\n"
    "    pass\n"
    "else:\n"
    "    del _probe\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
    f"    print({RLIMIT_UNBOUND!r}); raise SystemExit(0)\n"
)


def skip_if_rlimit_unbound(stdout: str) -> None:
    if stdout.strip() == RLIMIT_UNBOUND:
        pytest.skip("RLIMIT_AS does not bind here (qemu user mode ignores it)")


@no_rlimit_as
def test_allocation_failure_in_region_is_memory_error(tmp_path):
    # Batched products small enough to be spread one per thread, each packing into its
    # thread's scratch buffer allocated INSIDE the region, under an address-space limit:
    # either the buffers fit or MemoryError; never std::terminate, never a wrong result.
    code = (
        "import resource, numpy as np, pyfastopt\n"
        "pyfastopt.set_num_threads(3)\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((6, 64, 80), dtype=np.float32)\n"
        "b = rng.standard_normal((6, 80, 64), dtype=np.float32)\n"
        "ref = np.matmul(a.astype(np.float64), b.astype(np.float64))\n"
        "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 20), resource.RLIM_INFINITY))\n"
        "outcome = 'ok'\n"
        "try:\n"
        "    c = pyfastopt.matmul(a, b)\n"
        "    assert np.allclose(c, ref, rtol=1e-4, atol=1e-3)\n"
        "except MemoryError:\n"
        "    outcome = 'MemoryError'\n"
        "resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "c = pyfastopt.matmul(a, b)\n"
        "assert np.allclose(c, ref, rtol=1e-4, atol=1e-3)\n"
        "print(outcome)\n"
    )
    r = run_child(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("ok", "MemoryError")


@no_rlimit_as
def test_thread_creation_failure_falls_back(tmp_path):
    # No room for new thread stacks: the pool stays smaller (maybe empty) and kernels run
    # on the threads it has, with the same bits.
    code = (
        "import resource, numpy as np, pyfastopt\n"
        "from pyfastopt import _core\n"
        "x = np.arange(400_000, dtype=np.float32)\n"
        "with pyfastopt.threads(1):\n"
        "    y1 = np.ones_like(x); pyfastopt.ops.axpby_(y1, x, 0.5, 2.0)\n"
        "y = np.ones_like(x)\n"
        "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 20), resource.RLIM_INFINITY))\n"
        + PROBE_RLIMIT
        + "pyfastopt.set_num_threads(8)\n"
        "pyfastopt.ops.axpby_(y, x, 0.5, 2.0)\n"
        "n = _core.config.pool_size()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "assert y.tobytes() == y1.tobytes()\n"
        "print(n)\n"
    )
    r = run_child(code, tmp_path)
    assert r.returncode == 0, r.stderr
    skip_if_rlimit_unbound(r.stdout)
    assert int(r.stdout.strip()) < 7


# ---- several Python threads at once ------------------------------------------------------


def test_concurrent_python_threads():
    with pyfastopt.threads(1):
        refs = [workload(s) for s in range(4)]
    errors = []
    mismatches = []

    def run(k):
        try:
            for _ in range(12):
                if not same(workload(k), refs[k]):
                    mismatches.append(k)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    with pyfastopt.threads(2):
        ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=300 * TIMEOUT_SCALE)
        assert not any(t.is_alive() for t in ts), "deadlock"
    assert not errors
    assert not mismatches


# ---- fork ------------------------------------------------------------------------------------


def _fork_child(conn, depth):
    try:
        t0 = time.perf_counter()
        out = workload(5)
        first = time.perf_counter() - t0
        grandchild = None
        if depth > 0:
            ctx = mp.get_context("fork")
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_fork_child, args=(w, depth - 1))
            p.start()
            ok = r.poll(60)
            grandchild = r.recv() if ok else ("hang", None, None)
            p.join(30)
            if p.is_alive():  # pragma: no cover - a hang
                p.kill()
                grandchild = ("hang", None, None)
        conn.send(("ok", [np.asarray(o).tobytes() for o in out], first, grandchild))
    except BaseException as e:  # pragma: no cover - reported by the parent
        conn.send(("error", repr(e), None, None))
    finally:
        conn.close()


def _fork_and_check(ref, depth):
    ctx = mp.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_fork_child, args=(w, depth))
    p.start()
    try:
        assert r.poll(90 * TIMEOUT_SCALE), "the forked child hung"
        msg = r.recv()
    finally:
        p.join(30)
        if p.is_alive():  # pragma: no cover - a hang
            p.kill()
            p.join()
    assert msg[0] == "ok", msg
    _, blobs, first, grandchild = msg
    assert blobs == [np.asarray(o).tobytes() for o in ref]
    # a child waiting for its parent's (absent) workers would take seconds; the bound
    # scales with PF_TEST_TIMEOUT_SCALE (.ci/aarch64: the scalar level's kernels under
    # qemu on a loaded machine took 1.2-1.6 s themselves)
    assert first < 1.0 * TIMEOUT_SCALE, f"the child's first kernels took {first:.2f} s"
    assert p.exitcode == 0
    return grandchild


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("threads", [2, 3])
def test_fork_child_after_parallel_work(threads):
    with pyfastopt.threads(threads):
        ref = workload(5)  # parallel regions: the pool's workers exist now
        assert cfg.pool_size() >= 1
        for _ in range(2):
            _fork_and_check(ref, 0)
            assert same(workload(5), ref)  # the parent keeps working


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_grandchild():
    with pyfastopt.threads(2):
        ref = workload(5)
        grandchild = _fork_and_check(ref, 1)
        assert grandchild is not None
        assert grandchild[0] == "ok", grandchild
        assert grandchild[1] == [np.asarray(o).tobytes() for o in ref]
        assert grandchild[2] < 1.0
        assert same(workload(5), ref)


class _KernelDataset:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        a = rng.standard_normal((128, 256), dtype=np.float32)
        b = rng.standard_normal((256, 256), dtype=np.float32)
        c = pyfastopt.matmul(a, b)
        y = np.zeros(100_000, np.float32)
        pyfastopt.ops.axpby_(y, np.full(100_000, float(i), np.float32), 1.0, 0.0)
        return float(c.astype(np.float64).sum()), float(y[-1])


def test_torch_dataloader_workers_call_pyfastopt():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    ds = _KernelDataset(8)
    with pyfastopt.threads(2):
        expected = [ds[i] for i in range(len(ds))]  # the parent's pool is up
        loader = DataLoader(
            ds,
            batch_size=None,
            num_workers=2,
            multiprocessing_context="fork",
            timeout=120,
        )
        got = [(float(a), float(b)) for a, b in loader]
    assert got == expected
    del torch


# ---- thread cap, knobs -----------------------------------------------------------------------


def test_thread_cap():
    usable = cfg.default_num_threads()[2]
    cap = pyfastopt.max_num_threads()
    assert cap == min(1024, 4 * usable)
    pyfastopt.set_num_threads(cap)
    assert pyfastopt.get_num_threads() == cap
    for bad in (cap + 1, 100_000):
        with pytest.raises(ValueError, match=rf"\bn\b.*<= {cap}"):
            pyfastopt.set_num_threads(bad)
        with pytest.raises(ValueError, match=str(cap)), pyfastopt.threads(bad):
            pass  # pragma: no cover
    assert pyfastopt.get_num_threads() == cap


def test_thread_cap_env_is_clamped(tmp_path):
    code = "import pyfastopt; print(pyfastopt.get_num_threads(), pyfastopt.max_num_threads())"
    r = run_child(code, tmp_path, PYFASTOPT_NUM_THREADS="100000")
    assert r.returncode == 0, r.stderr
    n, cap = map(int, r.stdout.split())
    assert n == cap


def test_many_threads_run(tmp_path):
    # the cap's worth of threads on this machine: creates them, runs, same bits
    with pyfastopt.threads(1):
        ref = workload(7)
    with pyfastopt.threads(pyfastopt.max_num_threads()):
        assert same(workload(7), ref)


def test_spin_time_knob(tmp_path):
    previous = pyfastopt.get_spin_time()
    try:
        pyfastopt.set_spin_time(0)
        assert pyfastopt.get_spin_time() == 0
        pyfastopt.set_spin_time(1_000_000)
        assert pyfastopt.get_spin_time() == 1_000_000
        with pytest.raises(ValueError, match="us"):
            pyfastopt.set_spin_time(-1)
        with pytest.raises(ValueError, match="us"):
            pyfastopt.set_spin_time(1_000_001)
        with pytest.raises(TypeError, match="us"):
            pyfastopt.set_spin_time(1.5)  # type: ignore[arg-type]
        pyfastopt.set_spin_time(200)
        with pyfastopt.threads(2):
            ref = workload(8)
            pyfastopt.release_threads()
            assert same(workload(8), ref)
            pyfastopt.release_threads()
            time.sleep(0.01)
            assert same(workload(8), ref)
    finally:
        pyfastopt.set_spin_time(previous)
    r = run_child(
        "import pyfastopt; print(pyfastopt.get_spin_time())", tmp_path, PYFASTOPT_SPIN_US="123"
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == 123
    default = run_child("import pyfastopt; print(pyfastopt.get_spin_time())", tmp_path)
    assert default.returncode == 0, default.stderr
    for bad in ("x", "-5", "12us"):  # invalid values are ignored
        r = run_child(
            "import pyfastopt; print(pyfastopt.get_spin_time())", tmp_path, PYFASTOPT_SPIN_US=bad
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == default.stdout
