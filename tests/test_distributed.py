"""pyfastopt.distributed: collectives, data-parallel training and faults on 2 MPI ranks.

The MPI checks run in worker jobs (``mpiexec -n 2 python distributed_worker.py
<scenario>``, see that file), each grouping many checks, so the whole file takes a few
seconds. They are skipped, with the reason, when mpi4py or mpiexec is missing. The
environment (PYTHONPATH included) is passed through to the ranks.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TIMEOUT_SCALE

WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT = 60  # seconds per MPI job; a hang fails the test instead of blocking the suite


def _mpiexec() -> str | None:
    """PYFASTOPT_MPIEXEC, else the mpiexec next to this Python (the mpich wheel's,
    matching mpi4py), else the one on PATH."""
    explicit = os.environ.get("PYFASTOPT_MPIEXEC")
    if explicit:
        return shutil.which(explicit)
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


def _requirements() -> str:
    """mpiexec's path, or skip saying what is missing."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip('mpi4py is not installed (pip install "pyfastopt[mpi]")')
    exe = _mpiexec()
    if exe is None:
        pytest.skip(
            "no mpiexec found (PYFASTOPT_MPIEXEC, next to the Python executable, or on PATH)"
        )
    return exe


def run_job(args, tmp_path: Path, env_set=None, env_drop=(), timeout=TIMEOUT, what="job"):
    """Run ``mpiexec *args``; (returncode, stdout + stderr, seconds). On a timeout the
    whole process group (mpiexec, its proxies, the ranks) is killed and the test fails."""
    exe = _requirements()
    env = dict(os.environ)
    for key in env_drop:
        env.pop(key, None)
    env.update(env_set or {})
    start = time.perf_counter()
    proc = subprocess.Popen(
        [exe, *args],
        cwd=tmp_path,  # never the repository root (its pyfastopt/ has no compiled core)
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"MPI {what} hung for {timeout} s; output:\n{out}")
    return proc.returncode, out, time.perf_counter() - start


def run_mpi(scenario: str, tmp_path: Path, **kwargs):
    """Run a worker scenario on 2 ranks."""
    args = ["-n", "2", sys.executable, str(WORKER), scenario]
    return run_job(args, tmp_path, what=f"job {scenario!r}", **kwargs)


THREAD_VARS = ("PYFASTOPT_NUM_THREADS", "OMP_NUM_THREADS", "PYFASTOPT_MPI_ABORT_ON_ERROR")


def test_collectives(tmp_path):
    """allreduce_ (sum and mean, both dtypes, sizes 0/1/odd/larger than a bucket,
    mixed lists, bucket reuse), argument errors raised on both ranks, broadcast_
    (any dtype, either root, mismatches on both ranks), threads per rank, the hook."""
    rc, out, _ = run_mpi("collectives", tmp_path, env_drop=THREAD_VARS)
    assert rc == 0, out
    assert "COLLECTIVES-OK rank 0" in out and "COLLECTIVES-OK rank 1" in out, out


def test_training_matches_single_process(tmp_path):
    """2 ranks x batch B through DistributedOptimizer == 1 process x batch 2B (SGD with
    momentum, Adam; float32 and float64; a NumPy MLP, and a pyfastopt.nn MLP fed by
    DataLoader(rank=, world_size=) when those modules exist), plus the start-up
    broadcasts of parameters and optimizer state."""
    env = {"PYFASTOPT_NUM_THREADS": "2", "PYFASTOPT_MPI_ABORT_ON_ERROR": "0"}
    rc, out, _ = run_mpi("train", tmp_path, env_set=env)
    assert rc == 0, out
    assert "TRAIN-OK rank 0" in out and "TRAIN-OK rank 1" in out, out
    if all(importlib.util.find_spec(m) for m in ("pyfastopt.nn", "pyfastopt.data")):
        # the same check through pyfastopt.nn layers and DataLoader sharding
        assert "NN-OK rank 0" in out and "NN-OK rank 1" in out, out


def test_exception_on_one_rank_aborts_the_job(tmp_path):
    """Rank 1 raises while rank 0 waits in allreduce_: the job ends quickly, non-zero,
    naming the rank and the exception."""
    rc, out, seconds = run_mpi("fault", tmp_path, env_drop=THREAD_VARS, timeout=20)
    assert rc != 0, out
    assert "rank 1 of 2 failed with RuntimeError: injected failure on rank 1" in out, out
    assert "UNREACHABLE" not in out and "FAULT-OK" not in out, out
    assert seconds < 15, f"took {seconds:.1f} s to abort"


def test_thread_setup_with_different_environments_per_rank(tmp_path):
    """One rank with PYFASTOPT_NUM_THREADS=1 (kept), one without (gets its share): the
    set-up's collective must run on both, or the job would hang. No init() here: the
    first collective (barrier) runs it."""
    code = (
        "import pyfastopt, pyfastopt.distributed as d; d.barrier(); "
        "print(f'THREADS rank {d.rank()}: {pyfastopt.get_num_threads()}', flush=True)"
    )
    args = ["-n", "1", "env", "PYFASTOPT_NUM_THREADS=1", sys.executable, "-c", code]
    args += [":", "-n", "1", sys.executable, "-c", code]
    rc, out, _ = run_job(args, tmp_path, env_drop=THREAD_VARS, timeout=20, what="import")
    assert rc == 0, out
    assert "THREADS rank 0: 1" in out, out
    assert "THREADS rank 1:" in out, out


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60 * TIMEOUT_SCALE,
        cwd="/",
    )


def test_import_pyfastopt_does_not_import_mpi4py():
    r = _python(
        "import sys, pyfastopt, pyfastopt.optim, pyfastopt.ops\n"
        "assert 'mpi4py' not in sys.modules, 'mpi4py imported'\n"
        "assert 'pyfastopt.distributed' not in sys.modules\n"
        "print('clean')"
    )
    assert r.returncode == 0 and "clean" in r.stdout, r.stderr


def test_import_sets_nothing_up_and_init_does():
    """Importing pyfastopt.distributed neither starts MPI (mpi4py is not imported) nor
    changes the process (threads, excepthook); init() does all of it, once."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip('mpi4py is not installed (pip install "pyfastopt[mpi]")')
    r = _python(
        "import sys, pyfastopt\n"
        "threads, hook = pyfastopt.get_num_threads(), sys.excepthook\n"
        "import pyfastopt.distributed as d\n"
        "assert 'mpi4py' not in sys.modules, 'the import started MPI'\n"
        "assert not d.is_initialized()\n"
        "assert sys.excepthook is hook and pyfastopt.get_num_threads() == threads\n"
        "d.init()\n"
        "assert d.is_initialized() and 'mpi4py' in sys.modules\n"
        "assert sys.excepthook is d._abort_hook\n"
        "d.init(abort_on_error=False)  # a second call does nothing\n"
        "assert sys.excepthook is d._abort_hook\n"
        "print('init ok')\n"
    )
    assert r.returncode == 0 and "init ok" in r.stdout, r.stdout + r.stderr
    r = _python(
        "import sys, pyfastopt.distributed as d\n"
        "hook = sys.excepthook\n"
        "d.init(abort_on_error=False)\n"
        "assert sys.excepthook is hook\n"
        "try:\n"
        "    d.init(abort_on_error='no')\n"
        "except TypeError as exc:\n"
        "    assert 'abort_on_error' in str(exc)\n"
        "print('options ok')\n"
    )
    assert r.returncode == 0 and "options ok" in r.stdout, r.stdout + r.stderr


def test_missing_mpi4py_gives_install_hint():
    r = _python(
        "import sys\n"
        "sys.modules['mpi4py'] = None  # as if not installed\n"
        "try:\n"
        "    import pyfastopt.distributed\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    assert r.returncode == 0, r.stderr
    assert "ImportError: pyfastopt.distributed needs mpi4py" in r.stdout, r.stdout
    assert 'pip install "pyfastopt[mpi]"' in r.stdout, r.stdout


def test_single_process_without_mpiexec():
    """Imported in a plain process (an MPI singleton), used without init() (the first call
    runs it): size 1, collectives are no-ops that still validate, the optimizer wrapper
    just steps, and the abort hook stays quiet."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip('mpi4py is not installed (pip install "pyfastopt[mpi]")')
    r = _python(
        "import numpy as np\n"
        "import pyfastopt.distributed as d\n"
        "from pyfastopt import optim\n"
        "assert (d.rank(), d.size()) == (0, 1)\n"
        "x = [np.arange(5.0), np.ones(3, np.float32)]\n"
        "d.allreduce_(x)\n"
        "assert np.array_equal(x[0], np.arange(5.0)) and np.array_equal(x[1], np.ones(3))\n"
        "try:\n"
        "    d.allreduce_([np.ones((4, 4))[:, 0]])\n"
        "except ValueError as exc:\n"
        "    assert 'arrays[0]' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('a strided view was accepted')\n"
        "w = np.ones(3)\n"
        "opt = d.DistributedOptimizer(optim.SGD([w], lr=0.5))\n"
        "opt.step([np.ones(3)])\n"
        "assert np.array_equal(w, np.full(3, 0.5)) and opt.param_groups[0]['lr'] == 0.5\n"
        "d.broadcast_parameters([w])\n"
        "d.broadcast_optimizer_state(opt)\n"
        "print('single ok')\n"
    )
    assert r.returncode == 0 and "single ok" in r.stdout, r.stdout + r.stderr
