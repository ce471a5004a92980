"""Thread count API, its defaults from the environment, and threadpoolctl control."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TIMEOUT_SCALE

import pyfastopt


def child_threads(env_updates, tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYFASTOPT_NUM_THREADS", "OMP_NUM_THREADS")
    }
    env.update(env_updates)
    r = subprocess.run(
        [sys.executable, "-c", "import pyfastopt; print(pyfastopt.get_num_threads())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60 * TIMEOUT_SCALE,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


def test_set_get():
    pyfastopt.set_num_threads(1)
    assert pyfastopt.get_num_threads() == 1
    pyfastopt.set_num_threads(3)
    assert pyfastopt.get_num_threads() == 3


@pytest.mark.parametrize("bad", [0, -1])
def test_set_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="n must be >= 1"):
        pyfastopt.set_num_threads(bad)


@pytest.mark.parametrize("bad", [1.5, "2", None, True])
def test_set_rejects_non_int(bad):
    with pytest.raises(TypeError, match="n must be an int"):
        pyfastopt.set_num_threads(bad)


def test_set_accepts_numpy_int():
    pyfastopt.set_num_threads(np.int64(2))
    assert pyfastopt.get_num_threads() == 2


def test_context_manager_restores_even_on_error():
    pyfastopt.set_num_threads(2)
    with pyfastopt.threads(1) as n:
        assert n == 1
        assert pyfastopt.get_num_threads() == 1
    assert pyfastopt.get_num_threads() == 2
    with pytest.raises(RuntimeError), pyfastopt.threads(1):
        raise RuntimeError("boom")
    assert pyfastopt.get_num_threads() == 2
    with pytest.raises(ValueError), pyfastopt.threads(0):
        pass
    assert pyfastopt.get_num_threads() == 2


def test_default_is_usable_cpus(tmp_path):
    expected = len(os.sched_getaffinity(0))
    got = child_threads({}, tmp_path)
    # a cgroup quota may cap it further
    assert 1 <= got <= expected


def test_env_defaults(tmp_path):
    assert child_threads({"OMP_NUM_THREADS": "3"}, tmp_path) == 3
    assert child_threads({"OMP_NUM_THREADS": "3,1"}, tmp_path) == 3
    assert child_threads({"PYFASTOPT_NUM_THREADS": "5", "OMP_NUM_THREADS": "3"}, tmp_path) == 5
    # invalid values are ignored, like OpenMP runtimes do
    cpus = child_threads({}, tmp_path)
    assert child_threads({"PYFASTOPT_NUM_THREADS": "lots"}, tmp_path) == cpus
    assert child_threads({"OMP_NUM_THREADS": "0"}, tmp_path) == cpus


def test_threadpoolctl_controls_pyfastopt():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pyfastopt.set_num_threads(2)
    info = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "pyfastopt"]
    assert len(info) == 1
    assert info[0]["num_threads"] == 2
    assert info[0]["user_api"] == "openmp"
    with threadpoolctl.threadpool_limits(limits=1):
        assert pyfastopt.get_num_threads() == 1
    assert pyfastopt.get_num_threads() == 2
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert pyfastopt.get_num_threads() == 1
    assert pyfastopt.get_num_threads() == 2
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert pyfastopt.get_num_threads() == 2
