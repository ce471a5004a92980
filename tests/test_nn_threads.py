"""One nn model shared by threads (issue 16 point 4).

Eval-mode forward is thread-safe (per-thread output buffers): every thread gets exactly
the single-threaded result. Training mode reuses one set of buffers; Sequential refuses a
second thread with RuntimeError instead of computing garbage.
"""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

from pyfastopt import nn


def _model():
    # wide enough that each kernel call releases the GIL for a while (races show up)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(48, 384, seed=0),
        nn.BatchNorm1d(384),
        nn.ReLU(),
        nn.Dropout(0.3, seed=1),
        nn.Linear(384, 256, activation="gelu", seed=2),
        nn.ReLU(inplace=True),
        nn.Linear(256, 10, seed=3),
    )


def _trained_model():
    model = _model()
    rng = np.random.default_rng(0)
    for _ in range(3):  # move the running statistics off their defaults
        model(rng.standard_normal((16, 3, 4, 4)).astype(np.float32))
    return model.eval()


def _run_threads(fn, n):
    errors = []
    start = threading.Barrier(n)

    def body(i):
        try:
            start.wait()
            fn(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("n_threads", [2, 4])
def test_eval_forward_from_many_threads_is_exact(n_threads):
    model = _trained_model()
    rng = np.random.default_rng(1)
    # batches of different sizes: threads use different buffer shapes too
    xs = [rng.standard_normal((b, 3, 4, 4)).astype(np.float32) for b in (1, 7, 32, 64, 64, 64)]
    refs = [model(x).copy() for x in xs]
    wrong = []

    def work(i):
        for r in range(100):
            j = (i + r) % len(xs)
            y = model(xs[j])
            if not np.array_equal(y, refs[j]):
                wrong.append((i, r, j))

    assert _run_threads(work, n_threads) == []
    assert wrong == []


def test_a_threads_result_is_its_own_until_its_next_call():
    """Per-thread buffers: another thread's calls never overwrite this thread's output."""
    model = _trained_model()
    x = np.random.default_rng(2).standard_normal((8, 48)).astype(np.float32)
    mine = model(x)
    keep = mine.copy()
    _run_threads(lambda i: [model(x * 2) for _ in range(20)], 3)
    np.testing.assert_array_equal(mine, keep)
    again = model(x * 3)
    assert again is mine  # ... and is reused by this thread's next call (the buffer rule)


def test_layers_alone_are_thread_safe_in_eval():
    lin = nn.Linear(32, 16, activation="relu", seed=4).eval()
    bn = nn.BatchNorm1d(16).eval()
    xs = [np.random.default_rng(k).standard_normal((64, 32)).astype(np.float32) for k in range(4)]
    refs = [bn(lin(x)).copy() for x in xs]
    bad = []

    def work(i):
        for _ in range(200):
            if not np.array_equal(bn(lin(xs[i])), refs[i]):
                bad.append(i)

    assert _run_threads(work, 4) == [] and bad == []


class _Gate(nn.Module):
    """Holds a forward open until released (to make two calls overlap for sure)."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, x):
        self.entered.set()
        assert self.release.wait(30)
        return x

    def backward(self, dy, need_dx=True):
        return dy


def test_training_from_two_threads_raises():
    gate = _Gate()
    model = nn.Sequential(nn.Linear(4, 4, seed=0), gate)
    x = np.ones((2, 4), np.float32)
    t = threading.Thread(target=model, args=(x,))
    t.start()
    try:
        assert gate.entered.wait(30)
        with pytest.raises(RuntimeError, match="another thread"):
            model(x)
        with pytest.raises(RuntimeError, match="another thread"):
            model.backward(np.ones((2, 4), np.float32))
    finally:
        gate.release.set()
        t.join()
    model(x)  # free again
    model.backward(np.ones((2, 4), np.float32))
    gate.release.set()
    model.eval()
    gate.entered.clear()
    t = threading.Thread(target=model, args=(x,))
    t.start()
    assert gate.entered.wait(30)
    model(x)  # eval: no guard
    t.join()


def test_copies_after_threaded_use():
    model = _trained_model()
    x = np.ones((3, 48), np.float32)
    _run_threads(lambda i: model(x), 2)
    want = model(x).copy()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(clone(x), want)
        clone.train()
        clone(x)
