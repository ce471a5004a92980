"""The ``runtime`` family of ``pyfastopt bench``: pyfastopt sharing a process and a machine.

Two kinds of measurement, each run in a fresh child process whose thread counts
(pyfastopt, OpenMP, BLAS, torch, ONNX Runtime) are all set to the row's ``threads``:

* **mixed loops** (:func:`mixed`): per iteration one pyfastopt call, then the peer's
  equivalent in the *same* process, as a NumPy training script does:

  - ``numpy``: ``pyfastopt.linear(x, W, b, activation="relu")`` for x (64, 784),
    W (256, 784), then ``np.maximum(x @ W.T + b, 0)`` (a BLAS GEMM);
  - ``torch``: the same layer, then ``torch.relu(F.linear(x, W, b))``;
  - ``onnxruntime``: the same layer, then an ONNX Runtime session of it (Gemm + Relu,
    built in memory with ``onnx.helper``);
  - ``adam+numpy``: an Adam step on 2e5 float32 values (``pyfastopt.optim.Adam``), then
    the NumPy layer.

  The loop's ms/iteration is compared with the sum of its two parts, each timed alone in
  the same process (medians of interleaved rounds): ``x sum`` near 1 means the two
  runtimes do not get in each other's way.
* **tail latency** (:func:`tail`): per-call times of 2000 calls of
  ``pyfastopt.ops.axpby_`` on 1e6 float32 values and of the linear layer above; p50, p99
  and max. The parent runs it once alone and once next to a competing busy process
  (``python -c "while True: pass"``, started before and killed after).

Nothing here is imported by ``import pyfastopt``; torch/onnx/onnxruntime are imported
only by the measurement that needs them.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Callable

import numpy as np

__all__ = ["LINEAR_SHAPE", "MIXED", "TAIL", "Sizes", "mixed", "onnx_linear_session", "tail"]

#: (batch, in_features, out_features) of the linear layer in the mixed loops
LINEAR_SHAPE = (64, 784, 256)
ADAM_N = 200_000
AXPBY_N = 1_000_000

#: mixed-loop peers, in report order: name -> description
MIXED = {
    "numpy": "linear+relu (64,784,256) then NumPy np.maximum(x @ W.T + b, 0)",
    "torch": "linear+relu (64,784,256) then torch.relu(F.linear(x, W, b))",
    "onnxruntime": "linear+relu (64,784,256) then an ONNX Runtime Gemm+Relu session",
    "adam+numpy": "Adam step on 2e5 float32 then NumPy np.maximum(x @ W.T + b, 0)",
}

#: tail-latency kernels: name -> description
TAIL = {
    "axpby_": "pyfastopt.ops.axpby_ on 1e6 float32",
    "linear": "pyfastopt.linear (64,784,256) + relu",
}


class Sizes:
    """Iteration counts: the full run and ``--quick``'s smoke run."""

    def __init__(self, quick: bool) -> None:
        self.iters = 10 if quick else 200  # iterations per timed loop
        self.rounds = 2 if quick else 7  # interleaved rounds; medians reported
        self.calls = 50 if quick else 2000  # tail-latency calls


def _layer(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch, k, n = LINEAR_SHAPE
    x = rng.standard_normal((batch, k), dtype=np.float32)
    w = (rng.standard_normal((n, k), dtype=np.float32) / np.float32(np.sqrt(k))).astype(np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    return x, w, b


def onnx_linear_session(w: np.ndarray, b: np.ndarray, threads: int) -> Any:
    """An ONNX Runtime session of ``relu(x @ w.T + b)`` (input ``"x"``), built in memory."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W", "b"], ["g"], transB=1),
            helper.make_node("Relu", ["g"], ["y"]),
        ],
        "linear_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[0]])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _peer(
    name: str, threads: int, x: np.ndarray, w: np.ndarray, b: np.ndarray
) -> Callable[[], Any]:
    """The peer's layer as a zero-argument callable (returns an array or a tensor)."""
    if name in ("numpy", "adam+numpy"):
        wt = w.T  # a view: NumPy hands the transposed operand to BLAS without a copy
        matmul, maximum = np.matmul, np.maximum
        return lambda: maximum(matmul(x, wt) + b, 0)
    if name == "torch":
        import torch

        torch.set_num_threads(threads)
        xt, wt_, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        linear, relu = torch.nn.functional.linear, torch.relu

        def torch_layer() -> Any:
            with torch.inference_mode():
                return relu(linear(xt, wt_, bt))

        return torch_layer  # a tensor: the check converts it, the timed loop does not
    if name == "onnxruntime":
        session = onnx_linear_session(w, b, threads)
        feed = {"x": x}
        return lambda: session.run(None, feed)[0]
    raise ValueError(f"unknown mixed-loop peer {name!r}; expected one of {sorted(MIXED)}")


def _loop(fn: Callable[[], Any], iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def mixed(name: str, threads: int, quick: bool = False) -> dict[str, Any]:
    """One mixed loop (see the module docstring); times in ms per iteration."""
    import pyfastopt

    sizes = Sizes(quick)
    rng = np.random.default_rng(20240611)
    x, w, b = _layer(rng)
    peer = _peer(name, threads, x, w, b)
    reference = np.maximum(x.astype(np.float64) @ w.T.astype(np.float64) + b, 0)
    returned = peer()
    got = returned.numpy() if hasattr(returned, "numpy") else np.asarray(returned)
    if not np.allclose(got, reference, rtol=1e-4, atol=1e-4):
        raise AssertionError(f"the {name} layer disagrees with float64 NumPy")

    linear = pyfastopt.linear
    if name == "adam+numpy":
        p = rng.standard_normal(ADAM_N, dtype=np.float32)
        g = (rng.standard_normal(ADAM_N, dtype=np.float32) * np.float32(1e-3)).astype(np.float32)
        opt = pyfastopt.optim.Adam([p], lr=1e-4)
        grads = [g]

        def ours() -> Any:
            opt.step(grads)

    else:
        if not np.allclose(linear(x, w, b, activation="relu"), reference, rtol=1e-4, atol=1e-4):
            raise AssertionError("pyfastopt.linear disagrees with float64 NumPy")

        def ours() -> Any:
            return linear(x, w, b, activation="relu")

    def both() -> None:
        ours()
        peer()

    for fn in (ours, peer, both):
        _loop(fn, max(2, sizes.iters // 10))  # warm up: pools started, pages touched
    t_ours: list[float] = []
    t_peer: list[float] = []
    t_both: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(sizes.rounds):
            t_ours.append(_loop(ours, sizes.iters))
            t_peer.append(_loop(peer, sizes.iters))
            t_both.append(_loop(both, sizes.iters))
    finally:
        if gc_was_enabled:
            gc.enable()
    ms_ours = 1e3 * statistics.median(t_ours)
    ms_peer = 1e3 * statistics.median(t_peer)
    ms_both = 1e3 * statistics.median(t_both)
    return {
        "ms_mixed": ms_both,
        "ms_pyfastopt": ms_ours,
        "ms_peer": ms_peer,
        "ratio": ms_both / (ms_ours + ms_peer),
        "iters": sizes.iters,
        "rounds": sizes.rounds,
    }


def tail(name: str, threads: int, quick: bool = False) -> dict[str, Any]:
    """Per-call latency percentiles (µs) of ``calls`` back-to-back calls of one kernel."""
    import pyfastopt

    sizes = Sizes(quick)
    rng = np.random.default_rng(20240611)
    if name == "axpby_":
        xv = rng.standard_normal(AXPBY_N, dtype=np.float32)
        yv = rng.standard_normal(AXPBY_N, dtype=np.float32)
        axpby_ = pyfastopt.ops.axpby_

        def call() -> None:
            axpby_(yv, xv, 0.1, 0.9)  # y stays bounded however often it runs

    elif name == "linear":
        x, w, b = _layer(rng)
        out = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        linear = pyfastopt.linear

        def call() -> None:
            linear(x, w, b, activation="relu", out=out)

    else:
        raise ValueError(f"unknown tail-latency kernel {name!r}; expected one of {sorted(TAIL)}")
    for _ in range(max(5, sizes.calls // 20)):
        call()
    times = np.empty(sizes.calls, dtype=np.int64)
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(sizes.calls):
            t0 = clock()
            call()
            times[i] = clock() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    us = times.astype(np.float64) / 1e3
    p50, p99 = np.percentile(us, [50, 99])
    return {
        "p50_us": float(p50),
        "p99_us": float(p99),
        "max_us": float(us.max()),
        "p99_over_p50": float(p99 / p50) if p50 > 0 else float("inf"),
        "calls": sizes.calls,
    }
