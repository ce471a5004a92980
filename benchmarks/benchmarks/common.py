"""Shared pieces of the asv benchmarks: seeded cached datasets, the models the benchmarks
run, and the two ``Benchmark`` bases.

Datasets are generated from fixed seeds (the same bits on every run and machine) and
cached per process, read-only: a benchmark that updates in place copies its input in
``setup``. Only NumPy, threadpoolctl, pyfastopt's *public* API and the peers' public APIs
(torch, onnx, onnxruntime) are used here, never ``pyfastopt.bench``: the baselines are
owned by the benchmarks, so they do not change with the commit being measured, and the
benchmarks also run against older commits.

Isolation: asv runs every benchmark (method x parameters) in a process of its own. A
class that times pyfastopt derives from :class:`Benchmark`; a class that times a peer
library (NumPy, PyTorch, ONNX Runtime) derives from :class:`PeerBenchmark`, and its
module-level code and ``setup`` never import pyfastopt -- so a peer's timed calls never
share a process with pyfastopt's thread pool, nor pyfastopt's with a peer's
(``tests/test_benchmarks.py`` checks both). pyfastopt is imported lazily, inside the
functions that need it, never at module level.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

DTYPES = ["float32", "float64"]
SIZES = [10_000, 1_000_000, 10_000_000]
THREADS = [1, 2]
SEED = 1234


@functools.lru_cache(maxsize=8)
def get_vector(size: int, dtype: str, seed: int = SEED) -> np.ndarray:
    """A read-only standard normal vector of ``size`` elements."""
    x = np.random.default_rng(seed).standard_normal(size, dtype=np.dtype(dtype))
    x.flags.writeable = False
    return x


def grad_shapes(ntensors: int, total: int, seed: int = SEED) -> list[tuple[int, ...]]:
    """Shapes of a gradient-like list: (h, w) weights and (h,) biases in pairs, sizes
    spread over two orders of magnitude, about ``total`` elements in all."""
    rng = np.random.default_rng(seed)
    pairs = max(1, ntensors // 2)
    share = rng.lognormal(0.0, 0.8, pairs)
    share = share / share.sum() * total
    shapes: list[tuple[int, ...]] = []
    for s in share:
        h = int(rng.integers(16, 257))
        shapes.append((h, max(1, round(float(s) / h) - 1)))
        shapes.append((h,))
    return shapes[:ntensors]


@functools.lru_cache(maxsize=4)
def get_grads(ntensors: int, total: int, dtype: str, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """A read-only tuple of ``ntensors`` arrays, about ``total`` elements in all.

    The shapes depend on ``ntensors`` and ``total`` only; ``seed`` picks the values.
    """
    rng = np.random.default_rng(seed + 1)
    out = []
    for shape in grad_shapes(ntensors, total):
        g = rng.standard_normal(shape, dtype=np.dtype(dtype))
        g.flags.writeable = False
        out.append(g)
    return tuple(out)


def best_seconds(fn, min_batch_s: float = 0.005, repeats: int = 3) -> float:
    """Seconds per call of ``fn()``: timeit-style, best of ``repeats`` batches."""
    fn()
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_batch_s or number >= 1 << 20:
            break
        number *= 4
    best = elapsed / number
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


class Benchmark:
    """Base of the classes that time pyfastopt: pins the thread count in ``setup`` and
    restores it in ``teardown``.

    Subclasses whose ``param_names`` include ``threads`` call ``self.set_threads(n)``
    from ``setup``: pyfastopt runs on ``n`` threads; NumPy's BLAS (used here for data
    preparation only) is held at 1 thread, so no peer pool lives in this process.
    """

    timeout = 120.0
    _limits: Any = None
    _previous_threads: int | None = None

    def set_threads(self, n: int) -> None:
        from threadpoolctl import threadpool_limits

        import pyfastopt

        self._previous_threads = pyfastopt.get_num_threads()
        self._limits = threadpool_limits(limits=1, user_api="blas")
        pyfastopt.set_num_threads(n)

    def teardown(self, *params: Any) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
        if self._previous_threads is not None:
            import pyfastopt

            pyfastopt.set_num_threads(self._previous_threads)
            self._previous_threads = None


class PeerBenchmark:
    """Base of the classes that time a peer library (NumPy, PyTorch, ONNX Runtime).

    ``set_threads(n)`` limits every BLAS/OpenMP pool threadpoolctl knows and, when torch
    is imported, ``torch.set_num_threads``. Never imports pyfastopt: these classes run in
    processes of their own, without pyfastopt's threads.
    """

    timeout = 120.0
    _limits: Any = None
    _previous_torch: int | None = None

    def set_threads(self, n: int) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=n)
        torch = sys.modules.get("torch")
        if torch is not None:
            self._previous_torch = torch.get_num_threads()
            torch.set_num_threads(n)

    def teardown(self, *params: Any) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
        torch = sys.modules.get("torch")
        if torch is not None and self._previous_torch is not None:
            torch.set_num_threads(self._previous_torch)
            self._previous_torch = None


def optional_import(name: str) -> Any:
    """``import name``, or asv's skip (NotImplementedError) when it is not installed."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise NotImplementedError(f"{name} is not installed") from exc


# ----------------------------------------------------------------------------- matrices


def get_matrix(rows: int, cols: int, seed: int) -> np.ndarray:
    """A read-only float32 (rows, cols) standard normal matrix (cached per process)."""
    return get_vector(rows * cols, "float32", seed).reshape(rows, cols)


# ----------------------------------------------------------------------------- the int8 MLP

#: layer sizes of the inference MLP (int8 GEMM and whole-model benchmarks)
MLP_DIMS = (784, 512, 256, 10)


def mlp_weights(
    seed: int, dims: tuple[int, ...] = MLP_DIMS
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """float32 weights ``(out, in)`` scaled by ``1/sqrt(in)`` and biases ``N(0, 0.1^2)``."""
    rng = np.random.default_rng(seed)
    ws, bs = [], []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        ws.append((rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)).astype(np.float32))
        bs.append((rng.standard_normal(fan_out) * 0.1).astype(np.float32))
    return ws, bs


def pyfastopt_quantized_mlp(ws: list[np.ndarray], bs: list[np.ndarray]) -> Any:
    """pyfastopt's int8 stack (public API): relu between layers, per-channel weights,
    dynamic per-tensor activations."""
    from pyfastopt.quant import QuantizedLinear, QuantizedSequential

    last = len(ws) - 1
    return QuantizedSequential(
        [
            QuantizedLinear.from_float(w, b, activation=None if i == last else "relu")
            for i, (w, b) in enumerate(zip(ws, bs))
        ]
    )


def pyfastopt_saved_mlp(ws: list[np.ndarray], bs: list[np.ndarray], path: str) -> None:
    """The MLP as a ``pyfastopt.nn`` model through ``quantize_model`` (dynamic,
    per-channel), saved to ``path`` -- what a user ships."""
    from pyfastopt import nn
    from pyfastopt.quant import quantize_model

    layers: list[Any] = []
    for i, (w, b) in enumerate(zip(ws, bs)):
        lin = nn.Linear(w.shape[1], w.shape[0])
        lin.weight[...] = w
        lin.bias[...] = b
        layers.append(lin)
        if i + 1 < len(ws):
            layers.append(nn.ReLU())
    model = quantize_model(nn.Sequential(*layers).eval(), mode="dynamic", per_channel=True)
    model.save(path)


def torch_mlp(torch: Any, ws: list[np.ndarray], bs: list[np.ndarray]) -> Any:
    """The float MLP as a ``torch.nn.Sequential`` (eval mode)."""
    layers = []
    for i, (w, b) in enumerate(zip(ws, bs)):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i + 1 < len(ws):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval()


def torch_dynamic_mlp(torch: Any, ws: list[np.ndarray], bs: list[np.ndarray]) -> Any:
    """``torch.ao.quantization.quantize_dynamic`` of :func:`torch_mlp` (int8 Linear)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates its quantized tensor types
        return torch.ao.quantization.quantize_dynamic(
            torch_mlp(torch, ws, bs), {torch.nn.Linear}, dtype=torch.qint8
        )


def onnx_mlp(ws: list[np.ndarray], bs: list[np.ndarray], relu_last: bool = False) -> Any:
    """The float MLP as an in-memory ONNX model: input "x" (N, in), MatMul + Add (+ Relu)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(zip(ws, bs)):
        inits += [
            numpy_helper.from_array(np.ascontiguousarray(w.T), f"W{i}"),
            numpy_helper.from_array(b, f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
        ]
        prev = f"a{i}"
        if i + 1 < len(ws) or relu_last:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", ws[0].shape[1]])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", ws[-1].shape[0]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save_onnx_int8_mlp(ws: list[np.ndarray], bs: list[np.ndarray], path: str) -> None:
    """The ONNX MLP after ``onnxruntime.quantization.quantize_dynamic`` (int8 weights)."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        float_path = os.path.join(d, "mlp.onnx")
        onnx.save(onnx_mlp(ws, bs), float_path)
        logging.getLogger().setLevel(logging.ERROR)  # its "run pre-processing" advice
        quantize_dynamic(float_path, path, weight_type=QuantType.QInt8)


def ort_session(model_or_path: Any, threads: int) -> Any:
    """An ONNX Runtime CPU session on ``threads`` intra-op threads (one inter-op)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


def onnx_int8_session(ws: list[np.ndarray], bs: list[np.ndarray], threads: int) -> Any:
    """An ONNX Runtime session of :func:`save_onnx_int8_mlp`. Run: ``s.run(None, {"x": x})``."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mlp_int8.onnx")
        save_onnx_int8_mlp(ws, bs, path)
        return ort_session(path, threads)


# ----------------------------------------------------------------------------- the training MLP

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 1e-2
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
P_DROP = 0.2


def parse_model(model: str) -> tuple[tuple[int, ...], int]:
    """``"784-1024-10 b256" -> ((784, 1024, 10), 256)``."""
    sizes, _, batch = model.partition(" b")
    return tuple(int(s) for s in sizes.split("-")), int(batch)


def gemm_flops(sizes: tuple[int, ...], batch: int) -> int:
    """FLOPs of a training step's GEMMs: forward and dW for every layer, dx for all but
    the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    per_layer = [2 * batch * i * o for i, o in pairs]
    return 3 * sum(per_layer) - per_layer[0]


def pyfastopt_mlp(sizes: tuple[int, ...], p: float = P_DROP, seed: int = 0) -> Any:
    """``pyfastopt.nn``: [Linear, BatchNorm1d, ReLU(inplace), Dropout(p)] blocks and a
    final Linear (public API)."""
    from pyfastopt import nn

    layers: list[Any] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-2], sizes[1:-1])):
        layers += [
            nn.Linear(fan_in, fan_out, seed=seed + i),
            nn.BatchNorm1d(fan_out, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Dropout(p, seed=1000 + i),
        ]
    layers.append(nn.Linear(sizes[-2], sizes[-1], seed=seed + len(sizes)))
    return nn.Sequential(*layers)


def mlp_init(sizes: tuple[int, ...], seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """NumPy initial state of the same MLP: params ``[W, b, gamma, beta] * blocks + [W, b]``
    (PyTorch's uniform +-1/sqrt(fan_in) init), running ``[mean, var] * blocks``."""
    rng = np.random.default_rng(seed)
    params: list[np.ndarray] = []
    running: list[np.ndarray] = []
    pairs = list(zip(sizes[:-1], sizes[1:]))
    for i, (fan_in, fan_out) in enumerate(pairs):
        bound = 1.0 / math.sqrt(fan_in)
        params.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32))
        params.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
        if i + 1 < len(pairs):
            params += [np.ones(fan_out, np.float32), np.zeros(fan_out, np.float32)]
            running += [np.zeros(fan_out, np.float32), np.ones(fan_out, np.float32)]
    return params, running


def scratch_views(params: list[np.ndarray]) -> list[np.ndarray]:
    """One scratch buffer as big as the largest parameter, viewed in each one's shape."""
    scratch = np.empty(max(p.size for p in params), dtype=params[0].dtype)
    return [scratch[: p.size].reshape(p.shape) for p in params]


class NumpyAdamW:
    """AdamW (decoupled weight decay) in NumPy with in-place ufuncs and the constants
    folded: ``p -= (lr / bc1 * c) * m / (sqrt(v) + eps * c)``, c = sqrt(bc2)."""

    def __init__(self, params: list[np.ndarray], weight_decay: float = WEIGHT_DECAY) -> None:
        self.params = params
        self.decay = 1.0 - LR * weight_decay if weight_decay else None
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.tmp = scratch_views(params)
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2 = BETAS
        c = math.sqrt(1.0 - b2**self.t)
        scale = -LR / (1.0 - b1**self.t) * c
        eps_c = EPS * c
        decay = self.decay
        multiply, add, divide, sqrt = np.multiply, np.add, np.divide, np.sqrt
        for p, g, m, v, tmp in zip(self.params, grads, self.m, self.v, self.tmp):
            if decay is not None:
                multiply(p, decay, out=p)
            multiply(m, b1, out=m)
            multiply(g, 1.0 - b1, out=tmp)
            add(m, tmp, out=m)
            multiply(v, b2, out=v)
            multiply(g, g, out=tmp)
            multiply(tmp, 1.0 - b2, out=tmp)
            add(v, tmp, out=v)
            sqrt(v, out=tmp)
            add(tmp, eps_c, out=tmp)
            divide(m, tmp, out=tmp)
            multiply(tmp, scale, out=tmp)
            add(p, tmp, out=p)


class NumpyMLP:
    """One training step of the MLP in NumPy with preallocated buffers: forward
    (Linear, BatchNorm1d in training mode, ReLU, inverted dropout), softmax
    cross-entropy, backward (no input gradient) and an AdamW step.

    ``params`` is the flat list of :func:`mlp_init` (updated in place); ``running`` the
    running statistics.
    """

    def __init__(
        self, params: list[np.ndarray], running: list[np.ndarray], batch: int, p: float, seed: int
    ) -> None:
        self.params = params
        self.running = running
        self.grads = [np.zeros_like(q) for q in params]
        self.nblocks = (len(params) - 2) // 4
        self.batch, self.p, self.scale = batch, p, np.float32(1.0 / (1.0 - p))
        self.rng = np.random.default_rng(seed)
        self.opt = NumpyAdamW(params)
        f32 = np.float32
        widths = [params[4 * i].shape[0] for i in range(self.nblocks)]
        n = batch
        self.h = [np.empty((n, c), f32) for c in widths]
        self.xhat = [np.empty((n, c), f32) for c in widths]
        self.y = [np.empty((n, c), f32) for c in widths]
        self.a = [np.empty((n, c), f32) for c in widths]
        self.keep = [np.empty((n, c), bool) for c in widths]
        self.pos = [np.empty((n, c), bool) for c in widths]
        self.u = [np.empty((n, c), f32) for c in widths]
        self.invstd = [np.empty(c, f32) for c in widths]
        self.tmp = [np.empty((n, c), f32) for c in widths]
        self.dh = [np.empty((n, c), f32) for c in widths]
        self.da = [np.empty((n, c), f32) for c in widths]
        self.logits = np.empty((n, params[-1].shape[0]), f32)

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        P, G, nb = self.params, self.grads, self.nblocks
        matmul, multiply, add, subtract = np.matmul, np.multiply, np.add, np.subtract
        reduce = np.add.reduce
        n = self.batch
        inp = x
        for i in range(nb):
            w, b, gamma, beta = P[4 * i : 4 * i + 4]
            h, xhat, y, a = self.h[i], self.xhat[i], self.y[i], self.a[i]
            matmul(inp, w.T, out=h)
            add(h, b, out=h)
            mean = reduce(h, axis=0) / n
            subtract(h, mean, out=xhat)
            multiply(xhat, xhat, out=self.tmp[i])
            var = reduce(self.tmp[i], axis=0) / n
            invstd = self.invstd[i]
            np.divide(1.0, np.sqrt(var + BN_EPS), out=invstd)
            multiply(xhat, invstd, out=xhat)
            multiply(xhat, gamma, out=y)
            add(y, beta, out=y)
            rm, rv = self.running[2 * i : 2 * i + 2]
            rm *= 1 - BN_MOMENTUM
            rm += BN_MOMENTUM * mean
            rv *= 1 - BN_MOMENTUM
            rv += (BN_MOMENTUM * n / (n - 1)) * var
            np.maximum(y, 0, out=y)
            self.rng.random(dtype=np.float32, out=self.u[i])
            np.greater_equal(self.u[i], self.p, out=self.keep[i])
            multiply(y, self.keep[i], out=a)
            multiply(a, self.scale, out=a)
            inp = a
        w, b = P[-2:]
        logits = matmul(inp, w.T, out=self.logits)
        add(logits, b, out=logits)
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        loss = float(-(z[rows, labels] - np.log(s[:, 0])).mean())
        d = e / s
        d[rows, labels] -= 1.0
        d *= np.float32(1.0 / n)
        matmul(d.T, inp, out=G[-2])
        reduce(d, axis=0, out=G[-1])
        matmul(d, w, out=self.da[-1])
        for i in range(nb - 1, -1, -1):
            gamma = P[4 * i + 2]
            da, dh, xhat, tmp = self.da[i], self.dh[i], self.xhat[i], self.tmp[i]
            pos = self.pos[i]
            np.greater(self.y[i], 0, out=pos)
            np.logical_and(pos, self.keep[i], out=pos)
            multiply(da, pos, out=da)
            multiply(da, self.scale, out=da)
            dbeta = reduce(da, axis=0, out=G[4 * i + 3])
            multiply(da, xhat, out=tmp)
            dgamma = reduce(tmp, axis=0, out=G[4 * i + 2])
            multiply(xhat, dgamma / n, out=tmp)
            add(tmp, dbeta / n, out=tmp)
            subtract(da, tmp, out=dh)
            multiply(dh, gamma * self.invstd[i], out=dh)
            inp_i = x if i == 0 else self.a[i - 1]
            matmul(dh.T, inp_i, out=G[4 * i])
            reduce(dh, axis=0, out=G[4 * i + 1])
            if i > 0:
                matmul(dh, P[4 * i], out=self.da[i - 1])
        self.opt.step(G)
        return loss


# ----------------------------------------------------------------------------- start-up

#: child programs of the start-up benchmarks: import + load + one batch-1 inference
STARTUP_PROGRAMS = {
    "pyfastopt": (
        "import numpy as np, pyfastopt.quant as q\n"
        "y = q.load({path!r})(np.zeros((1, {k}), np.float32))\n"
        "assert y.shape == (1, {n})"
    ),
    "onnxruntime": (
        "import numpy as np, onnxruntime as ort\n"
        "s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
        "y = s.run(None, {{'x': np.zeros((1, {k}), np.float32)}})[0]\n"
        "assert y.shape == (1, {n})"
    ),
    "import numpy": "import numpy",
}


def startup_program(runtime: str, tmpdir: str) -> str:
    """Save the int8 MLP for ``runtime`` under ``tmpdir``; the program that loads it."""
    ws, bs = mlp_weights(0)
    k, n = MLP_DIMS[0], MLP_DIMS[-1]
    if runtime == "pyfastopt":
        path = os.path.join(tmpdir, "mlp_int8.pfq")
        pyfastopt_saved_mlp(ws, bs, path)
    elif runtime == "onnxruntime":
        path = os.path.join(tmpdir, "mlp_int8.onnx")
        save_onnx_int8_mlp(ws, bs, path)
    else:
        return STARTUP_PROGRAMS[runtime]
    return STARTUP_PROGRAMS[runtime].format(path=path, k=k, n=n)


# ----------------------------------------------------------------------------- runtime

#: (batch, in_features, out_features) of the layer in the mixed-process loops
LINEAR_SHAPE = (64, 784, 256)


def linear_layer(
    shape: tuple[int, int, int] = LINEAR_SHAPE, seed: int = 20240611
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (batch, in), W (out, in) scaled by 1/sqrt(in), b (out,): float32, seeded."""
    batch, k, n = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, k), dtype=np.float32)
    w = (rng.standard_normal((n, k), dtype=np.float32) / np.float32(math.sqrt(k))).astype(
        np.float32
    )
    return x, w, rng.standard_normal(n, dtype=np.float32)


def peer_linear_relu(peer: str, threads: int, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> Any:
    """``relu(x @ W.T + b)`` by a peer library, as a zero-argument callable:
    ``"numpy"`` (``np.maximum(x @ W.T + b, 0)``), ``"torch"``
    (``torch.relu(F.linear(x, W, b))``) or ``"onnxruntime"`` (a session of the layer built
    in memory with ``onnx.helper``). Raises NotImplementedError when it is not installed."""
    if peer == "numpy":
        wt, matmul, maximum = w.T, np.matmul, np.maximum
        return lambda: maximum(matmul(x, wt) + b, 0)
    if peer == "torch":
        torch = optional_import("torch")
        torch.set_num_threads(threads)
        xt, wt_, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        linear, relu, mode = torch.nn.functional.linear, torch.relu, torch.inference_mode

        def torch_layer() -> Any:
            with mode():
                return relu(linear(xt, wt_, bt))

        return torch_layer
    if peer == "onnxruntime":
        optional_import("onnx")
        optional_import("onnxruntime")
        session = ort_session(onnx_mlp([w], [b], relu_last=True), threads)
        feed = {"x": x}
        return lambda: session.run(None, feed)
    raise ValueError(f"unknown peer {peer!r}")


def loop_seconds(fn: Any, iters: int) -> float:
    """Seconds per iteration of ``iters`` back-to-back calls of ``fn()``."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def mixed_ratio(ours: Any, peer: Any, iters: int = 50, rounds: int = 5) -> float:
    """(one iteration of ``ours(); peer()``) / (``ours`` alone + ``peer`` alone), medians of
    ``rounds`` interleaved loops in this process: 1 when the two do not interfere."""
    import statistics

    def both() -> None:
        ours()
        peer()

    for fn in (ours, peer, both):
        loop_seconds(fn, max(2, iters // 10))
    parts: list[float] = []
    mixed: list[float] = []
    for _ in range(rounds):
        a = loop_seconds(ours, iters)
        p = loop_seconds(peer, iters)
        parts.append(a + p)
        mixed.append(loop_seconds(both, iters))
    return statistics.median(mixed) / statistics.median(parts)


def latencies_us(fn: Any, calls: int) -> np.ndarray:
    """Per-call wall times (µs) of ``calls`` back-to-back calls of ``fn()`` after a warm-up."""
    for _ in range(max(5, calls // 20)):
        fn()
    clock = time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out.astype(np.float64) / 1e3


class BusyProcess:
    """A competing busy process (``python -c "while True: pass"``) from :meth:`start` until
    :meth:`stop`: the other core is not free, as on a shared machine."""

    def __init__(self) -> None:
        self.proc: Any = None

    def start(self, settle_s: float = 0.2) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(settle_s)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
