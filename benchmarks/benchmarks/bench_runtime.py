"""asv benchmarks of pyfastopt's thread runtime in a shared process and a shared machine.

* ``MixedLoop``: one iteration is a pyfastopt call then the peer's equivalent in the SAME
  process, as a NumPy training script does: ``pyfastopt.linear(x, W, b,
  activation="relu")`` for (64, 784, 256) then NumPy ``np.maximum(x @ W.T + b, 0)``,
  ``torch.relu(F.linear(x, W, b))`` or an ONNX Runtime session of the layer; and
  (``adam+numpy``) an Adam step on 2e5 float32 then the NumPy layer. ``time_mixed`` is
  one iteration; ``track_ratio_to_parts`` is that iteration over the sum of its two parts
  timed alone in the same process (medians of interleaved loops): about 1 when the two
  runtimes leave each other alone, far above when one's spinning workers deschedule the
  other's. This class deliberately puts pyfastopt and a peer in one process.
* ``TailLatency``: p50 / p99 / max per-call latency (µs) over 2000 calls of
  ``pyfastopt.ops.axpby_`` on 1e6 float32 and of the linear layer, alone and next to a
  competing busy process (``while True: pass``, started in ``setup``, killed in
  ``teardown``).

Only pyfastopt's public API and ``common.py`` are used.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .common import (
    THREADS,
    Benchmark,
    BusyProcess,
    latencies_us,
    linear_layer,
    mixed_ratio,
    peer_linear_relu,
)

PEERS = ["numpy", "torch", "onnxruntime", "adam+numpy"]
ADAM_N = 200_000
AXPBY_N = 1_000_000


class MixedLoop(Benchmark):
    """pyfastopt then a peer library, per iteration, in one process."""

    params: ClassVar[list] = [PEERS, THREADS]
    param_names: ClassVar[list[str]] = ["peer", "threads"]
    smoke_params: ClassVar[list] = [PEERS, [2]]
    # the test suite's run-once check (tests/test_benchmarks.py) only needs each method to
    # run: it sets these instead, which keeps it to seconds under emulation (.ci/aarch64)
    smoke_attrs: ClassVar[dict] = {"iters": 4, "rounds": 2}
    iters = 50
    rounds = 5

    def setup(self, peer, threads):
        from threadpoolctl import threadpool_limits

        import pyfastopt

        # both libraries on `threads` threads, in one process: that is what is measured
        self._previous_threads = pyfastopt.get_num_threads()
        self._limits = threadpool_limits(limits=threads, user_api="blas")
        pyfastopt.set_num_threads(threads)
        x, w, b = linear_layer()
        self.peer = peer_linear_relu(peer.split("+")[-1], threads, x, w, b)
        if peer == "adam+numpy":
            rng = np.random.default_rng(7)
            p = rng.standard_normal(ADAM_N, dtype=np.float32)
            grads = [rng.standard_normal(ADAM_N, dtype=np.float32) * np.float32(1e-3)]
            opt = pyfastopt.optim.Adam([p], lr=1e-4)
            self.ours: Any = lambda: opt.step(grads)
        else:
            linear = pyfastopt.linear
            self.ours = lambda: linear(x, w, b, activation="relu")
        self.ours()
        self.peer()

    def time_mixed(self, peer, threads):
        self.ours()
        self.peer()

    def time_pyfastopt_part(self, peer, threads):
        self.ours()

    def time_peer_part(self, peer, threads):
        self.peer()

    def track_ratio_to_parts(self, peer, threads):
        return mixed_ratio(self.ours, self.peer, self.iters, self.rounds)

    track_ratio_to_parts.unit = "x sum of parts"


class TailLatency(Benchmark):
    """Per-call latency percentiles of a small kernel, alone or next to a busy process."""

    params: ClassVar[list] = [["axpby_", "linear"], ["alone", "busy"], THREADS]
    param_names: ClassVar[list[str]] = ["kernel", "neighbour", "threads"]
    smoke_params: ClassVar[list] = [["axpby_", "linear"], ["alone", "busy"], [2]]
    smoke_attrs: ClassVar[dict] = {"calls": 40}
    calls = 2000
    timeout = 300.0

    def setup(self, kernel, neighbour, threads):
        import pyfastopt

        self.set_threads(threads)
        if kernel == "axpby_":
            rng = np.random.default_rng(3)
            x = rng.standard_normal(AXPBY_N, dtype=np.float32)
            y = rng.standard_normal(AXPBY_N, dtype=np.float32)
            axpby_ = pyfastopt.ops.axpby_
            self.call: Any = lambda: axpby_(y, x, 0.1, 0.9)
        else:
            x, w, b = linear_layer()
            out = np.empty((x.shape[0], w.shape[0]), np.float32)
            linear = pyfastopt.linear
            self.call = lambda: linear(x, w, b, activation="relu", out=out)
        self.busy = BusyProcess()
        if neighbour == "busy":
            self.busy.start()

    def teardown(self, *params):
        self.busy.stop()
        super().teardown(*params)

    def _percentile(self, q: float) -> float:
        return float(np.percentile(latencies_us(self.call, self.calls), q))

    def time_call(self, kernel, neighbour, threads):
        self.call()

    def track_p50_us(self, kernel, neighbour, threads):
        return self._percentile(50)

    track_p50_us.unit = "us"

    def track_p99_us(self, kernel, neighbour, threads):
        return self._percentile(99)

    track_p99_us.unit = "us"

    def track_max_us(self, kernel, neighbour, threads):
        return float(latencies_us(self.call, self.calls).max())

    track_max_us.unit = "us"
