"""``pyfastopt bench --model MODEL``: one model, pyfastopt against ONNX Runtime.

The parent prepares the inputs (random float32 samples of the model's input shape, one
``.npy`` per batch size) and the ONNX file ONNX Runtime runs: ``MODEL`` itself when it
is ONNX, :func:`pyfastopt.onnx.save`'s QDQ export when it is a pyfastopt int8 model
(``.pfq``). Each library then runs in its own child (:class:`~.isolation.Worker`, the
``model`` command of :mod:`._worker`) per thread count; the parent checks that both
gave the same outputs (the largest difference is reported), calibrates each, and
alternates timed rounds between them (A B A B ...), keeping each one's fastest.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import numpy as np

__all__ = ["load_model_variant", "run_model_bench"]

LIBRARIES = ("pyfastopt", "onnxruntime")


def load_model_variant(library: str, path: str, kind: str, x_path: str, threads: int) -> Any:
    """In a child: the zero-argument callable that runs the model on the saved input."""
    x = np.load(x_path, allow_pickle=False)
    if library == "pyfastopt":
        if kind == "pfq":
            from ..quant import load

            model = load(path)
        else:
            from .. import onnx as pf_onnx

            model = pf_onnx.load(path)
            if hasattr(model, "eval"):  # nn models (an int8 graph has no training mode)
                model.eval()
        return lambda: model(x)
    if library == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        feed = {name: x}
        return lambda: sess.run(None, feed)[0]
    raise ValueError(f"no model runner for library {library!r}")


def _sample_shape(onnx_path: str) -> tuple[int, ...]:
    import onnx

    proto = onnx.load(onnx_path, load_external_data=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if not shape:
        raise ValueError(f"model {onnx_path}: its input has no shape")
    rest = [d for d in shape[1:] if d is not None and d > 0]
    if len(rest) != len(shape) - 1:
        raise ValueError(
            f"model {onnx_path}: input shape {shape} has dynamic dimensions beyond the batch"
        )
    return tuple(int(d) for d in rest)


def _rounds(quick: bool) -> int:
    return 3 if quick else 7


def run_model_bench(
    path: str, batches: list[int], threads_list: list[int], quick: bool, out: Any = None
) -> int:
    """Time ``path`` in pyfastopt and ONNX Runtime; print a table; return the exit code."""
    from .._cli_models import CliError, load_any, model_kind
    from .isolation import Worker, WorkerError

    out = out or sys.stdout
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise CliError("--model needs onnxruntime (pip install onnxruntime)") from None
    kind = model_kind(path)
    model, _ = load_any(path)  # the clear error for a bad file, before any child starts
    with tempfile.TemporaryDirectory(prefix="pyfastopt-bench-model-") as tmp:
        onnx_path = os.path.abspath(path)
        if kind == "pfq":
            from .. import onnx as pf_onnx

            onnx_path = os.path.join(tmp, "model.onnx")
            try:
                pf_onnx.save(model, onnx_path)
            except (ValueError, TypeError) as exc:
                raise CliError(
                    f"model {path}: cannot be written as ONNX for ONNX Runtime: {exc}"
                ) from None
        try:
            sample = _sample_shape(onnx_path)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        rng = np.random.default_rng(0)
        inputs = {}
        for b in batches:
            x = rng.standard_normal((b, *sample)).astype(np.float32)
            inputs[b] = os.path.join(tmp, f"x{b}.npy")
            np.save(inputs[b], x)
        print(
            f"pyfastopt bench --model {path} ({kind}, input (batch, "
            f"{', '.join(map(str, sample))})): seconds per call, best of "
            f"{_rounds(quick)} alternating rounds",
            file=out,
        )
        header = (
            f"{'batch':>5} {'threads':>7} {'pyfastopt ms':>13} {'onnxruntime ms':>15} "
            f"{'speed-up':>9} {'max |diff|':>11}"
        )
        print(header, file=out)
        model_path = os.path.abspath(path)
        for threads in threads_list:
            workers: dict[str, Worker] = {}
            try:
                for lib in LIBRARIES:
                    workers[lib] = Worker(lib, threads, tmp, quick=quick)
                for b in batches:
                    outs: dict[str, np.ndarray] = {}
                    for lib, w in workers.items():
                        reply = w.call(
                            "model",
                            path=model_path if lib == "pyfastopt" else onnx_path,
                            kind=kind if lib == "pyfastopt" else "onnx",
                            input=inputs[b],
                        )
                        outs[lib] = np.load(reply["output"], allow_pickle=False)
                    best = {
                        lib: w.call("calibrate")["seconds"]["model"] for lib, w in workers.items()
                    }
                    for _ in range(_rounds(quick)):
                        for lib, w in workers.items():
                            best[lib] = min(best[lib], w.call("round")["seconds"]["model"])
                    a, o = outs["pyfastopt"], outs["onnxruntime"]
                    diff = (
                        float(np.max(np.abs(a.astype(np.float64) - o.astype(np.float64))))
                        if a.shape == o.shape and a.size
                        else float("nan")
                    )
                    print(
                        f"{b:>5} {threads:>7} {best['pyfastopt'] * 1e3:>13.4f} "
                        f"{best['onnxruntime'] * 1e3:>15.4f} "
                        f"{best['onnxruntime'] / best['pyfastopt']:>8.2f}x {diff:>11.3g}",
                        file=out,
                    )
                    for w in workers.values():
                        w.call("drop")
            except WorkerError as exc:
                raise CliError(f"model {path}: {' '.join(str(exc).split())}") from None
            finally:
                for w in workers.values():
                    w.close()
        if kind == "pfq":
            print(
                "ONNX Runtime runs pyfastopt.onnx.save's QDQ export at its default "
                "optimization level: fused QGemm, whose u8 x s8 kernel saturates int16 "
                "pairs on x86 without VNNI, so outputs may differ visibly there "
                "(ORT_ENABLE_BASIC reproduces pyfastopt's outputs)",
                file=out,
            )
    return 0
