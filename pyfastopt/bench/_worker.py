"""One ``pyfastopt bench`` child process: one library, one thread count, JSON over stdio.

Started by :mod:`pyfastopt.bench.isolation` as::

    python -c "...; from pyfastopt.bench._worker import main; main()" \\
        --library numpy --threads 2 --outdir DIR [--quick]

with the thread-count environment variables already set (see
:func:`pyfastopt.bench.isolation.child_env`), so every pool the library starts has the
row's size from its first use. ``--library`` is one of ``pyfastopt``, ``numpy``,
``torch`` (cases: only that library's implementation is ever *run* here), ``limits``
(the machine-limit probes), ``runtime`` (one measurement of the runtime family) or
``onnxruntime`` (``bench --model``: ONNX Runtime's side of a model).

Protocol: the parent writes one JSON object per line on stdin, ``{"cmd": ..., ...}``;
the worker answers each with one JSON line on its *original* stdout (file descriptor 1
is redirected to stderr at start-up, so whatever a library prints cannot corrupt the
protocol). An answer with an ``"error"`` key reports an exception (with traceback).

Commands: ``hello`` (pid, library, threads in effect), ``setup`` (``family``, ``name``:
set the case up, run this library's variants once on reset inputs and save each result
as ``.npy`` in ``outdir`` for the parent's correctness check), ``calibrate`` (warm up,
choose each variant's batch size), ``round`` (one timed batch per variant, seconds per
call), ``drop`` (free the case), ``limits``, ``runtime`` (``kind``, ``name``), ``model``
(``path``, ``kind``, ``input``: load a model file in this library, run it once on the
saved input and save the output as ``.npy``; then ``calibrate``/``round`` time it),
``exit``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
from typing import Any, Callable, TextIO

LIBRARIES = ("pyfastopt", "numpy", "torch", "limits", "runtime", "onnxruntime")


class _State:
    def __init__(self, library: str, threads: int, outdir: str, quick: bool) -> None:
        self.library = library
        self.threads = threads
        self.outdir = outdir
        self.quick = quick
        self.torch: Any = None
        self.prepared: Any = None
        self.variants: dict[str, Callable[[], Any]] = {}
        self.numbers: dict[str, int] = {}
        self.seq = 0


def _threads_in_effect(state: _State) -> dict[str, Any]:
    import pyfastopt

    info: dict[str, Any] = {"pyfastopt": pyfastopt.get_num_threads()}
    if state.torch is not None:
        info["torch"] = state.torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_info

        blas = [p.get("num_threads") for p in threadpool_info() if p.get("user_api") == "blas"]
        if blas:
            info["blas"] = blas[0]
    except Exception:  # threadpoolctl missing or confused: only a report
        pass
    return info


def _hello(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import pyfastopt

    versions = {"pyfastopt": pyfastopt.__version__, "numpy": np.__version__}
    if state.torch is not None:
        versions["torch"] = state.torch.__version__
    return {
        "pid": os.getpid(),
        "library": state.library,
        "threads": _threads_in_effect(state),
        "versions": versions,
    }


def _find_case(family: str, name: str, quick: bool) -> Any:
    from .registry import cases

    for case in cases([family], quick=quick):
        if case.name == name:
            return case
    raise KeyError(f"no bench case {family} / {name} (quick={quick})")


def _setup(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from .registry import Context
    from .runner import _to_numpy, _variants

    _drop(state, msg)
    case = _find_case(msg["family"], msg["name"], state.quick)
    ctx = Context(torch=state.torch, quick=state.quick, threads=state.threads)
    prepared = case.setup(ctx)
    impl = prepared.impls.get(state.library)
    variants = _variants(impl) if impl else {}
    results: dict[str, dict[str, str]] = {}
    kept: dict[str, Callable[[], Any]] = {}
    for label, fn in variants.items():
        if prepared.reset is not None:
            prepared.reset()
        try:
            returned = fn()
            got = prepared.output(state.library, returned) if prepared.output else returned
            array = _to_numpy(got)
        except Exception as exc:
            results[label] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        state.seq += 1
        path = os.path.join(state.outdir, f"{state.library}-{os.getpid()}-{state.seq}.npy")
        np.save(path, array)
        results[label] = {"path": path}
        kept[label] = fn
    if prepared.reset is not None:
        prepared.reset()
    state.prepared, state.variants = prepared, kept
    return {"variants": results}


def _calibrate(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    from .timing import FULL, QUICK, calibrate

    cfg = QUICK if state.quick else FULL
    seconds: dict[str, float] = {}
    gc.disable()
    try:
        for label, fn in state.variants.items():
            state.numbers[label], seconds[label] = calibrate(fn, cfg)
    finally:
        gc.enable()
    return {"numbers": dict(state.numbers), "seconds": seconds}


def _round(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    from .timing import batch_seconds

    seconds: dict[str, float] = {}
    gc.disable()
    try:
        for label, fn in state.variants.items():
            seconds[label] = batch_seconds(fn, state.numbers[label])
    finally:
        gc.enable()
    return {"seconds": seconds}


def _drop(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    state.prepared, state.variants, state.numbers = None, {}, {}
    gc.collect()
    return {}


def _limits(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    from .limits import measure_limits

    return {"limits": measure_limits(state.threads, quick=state.quick).as_dict()}


def _runtime(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    from . import runtime

    measure = {"mixed": runtime.mixed, "tail": runtime.tail}[msg["kind"]]
    return {"values": measure(msg["name"], state.threads, quick=state.quick)}


def _model(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from .model import load_model_variant

    _drop(state, msg)
    fn = load_model_variant(state.library, msg["path"], msg["kind"], msg["input"], state.threads)
    y = np.asarray(fn())
    state.seq += 1
    path = os.path.join(state.outdir, f"{state.library}-{os.getpid()}-{state.seq}.npy")
    np.save(path, y)
    state.variants = {"model": fn}
    return {"output": path}


_COMMANDS: dict[str, Callable[[_State, dict[str, Any]], dict[str, Any]]] = {
    "hello": _hello,
    "setup": _setup,
    "calibrate": _calibrate,
    "round": _round,
    "drop": _drop,
    "limits": _limits,
    "runtime": _runtime,
    "model": _model,
}


def _serve(state: _State, inp: TextIO, out: TextIO) -> int:
    for line in inp:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "exit":
                return 0
            handler = _COMMANDS.get(cmd)
            if handler is None:
                raise ValueError(f"unknown command {cmd!r}")
            reply = handler(state, msg)
        except Exception as exc:
            reply = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyfastopt.bench._worker")
    parser.add_argument("--library", choices=LIBRARIES, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    # The protocol keeps the original stdout; anything printed from here on goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    state = _State(args.library, args.threads, args.outdir, args.quick)
    import pyfastopt

    if args.library in ("pyfastopt", "limits", "runtime"):
        pyfastopt.set_num_threads(args.threads)
    if args.library == "torch":
        import torch

        torch.set_num_threads(args.threads)
        state.torch = torch
    return _serve(state, sys.stdin, out)


if __name__ == "__main__":
    sys.exit(main())
