"""Edge start-up: import + load + first inference of a saved int8 model, in a fresh process.

``pyfastopt bench --startup`` saves the same MLP (784-512-256-10, ReLU, seeded random
weights, int8 dynamic quantization with per-channel weights) three ways and times a fresh
Python process that imports the runtime, loads the file and runs one batch-1 inference:

* pyfastopt: ``import pyfastopt.quant; load(path)(x)`` (the model file of
  :meth:`pyfastopt.quant.QuantizedModel.save`);
* ONNX Runtime (when ``onnx`` and ``onnxruntime`` are installed):
  ``onnxruntime.quantization.quantize_dynamic`` of the float ONNX graph, then
  ``InferenceSession(path).run``;
* PyTorch (when installed): ``torch.ao.quantization.quantize_dynamic`` of the float
  ``nn.Sequential``, scripted with ``torch.jit.script`` and saved; ``torch.jit.load``.

Two floors are timed in the same run: ``python -c pass`` and ``python -c "import numpy"``
(every runtime above imports NumPy). Each process is started ``repeats`` times,
alternating between runtimes so that machine noise hits all alike; the table gives the
minimum and the median wall time (``subprocess.run``, including interpreter start-up).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from .mlp_models import DIMS, mlp_weights, save_onnx_int8_mlp, torch_dynamic_mlp


def _pyfastopt_model(ws: list[np.ndarray], bs: list[np.ndarray]) -> Any:
    """The MLP as a pyfastopt.nn model through quantize_model (what a user saves)."""
    from .. import nn
    from ..quant import quantize_model

    layers: list[Any] = []
    for i, (w, b) in enumerate(zip(ws, bs)):
        lin = nn.Linear(w.shape[1], w.shape[0])
        assert lin.bias is not None
        lin.weight[...] = w
        lin.bias[...] = b
        layers.append(lin)
        if i + 1 < len(ws):
            layers.append(nn.ReLU())
    return quantize_model(nn.Sequential(*layers).eval(), mode="dynamic", per_channel=True)


_CHILD = {
    "python -c pass": "pass",
    "python -c 'import numpy'": "import numpy",
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
    "torch": (
        "import torch\n"
        "m = torch.jit.load({path!r})\n"
        "with torch.no_grad():\n"
        "    y = m(torch.zeros(1, {k}))\n"
        "assert tuple(y.shape) == (1, {n})"
    ),
}


def prepare(tmpdir: str, use_torch: bool = True) -> dict[str, tuple[str, int]]:
    """Save the model for every runtime present; returns ``{runtime: (code, file bytes)}``."""
    import importlib.util

    ws, bs = mlp_weights(np.random.default_rng(0))
    k, n = DIMS[0], DIMS[-1]
    out: dict[str, tuple[str, int]] = {
        "python -c pass": (_CHILD["python -c pass"], 0),
        "python -c 'import numpy'": (_CHILD["python -c 'import numpy'"], 0),
    }
    path = os.path.join(tmpdir, "mlp_int8.pfq")
    _pyfastopt_model(ws, bs).save(path)
    out["pyfastopt"] = (_CHILD["pyfastopt"].format(path=path, k=k, n=n), os.path.getsize(path))
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        path = os.path.join(tmpdir, "mlp_int8.onnx")
        save_onnx_int8_mlp(ws, bs, path)
        out["onnxruntime"] = (
            _CHILD["onnxruntime"].format(path=path, k=k, n=n),
            os.path.getsize(path),
        )
    if use_torch and importlib.util.find_spec("torch"):
        import torch

        qmodel = torch_dynamic_mlp(torch, ws, bs)
        path = os.path.join(tmpdir, "mlp_int8.pt")
        torch.jit.save(torch.jit.script(qmodel), path)
        out["torch"] = (_CHILD["torch"].format(path=path, k=k, n=n), os.path.getsize(path))
    return out


def measure(repeats: int = 7, use_torch: bool = True) -> list[dict[str, Any]]:
    """Time each runtime's fresh-process start-up ``repeats`` times (interleaved)."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="pyfastopt-startup-") as tmpdir:
        runs = prepare(tmpdir, use_torch)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):
            for name, (code, _size) in runs.items():
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    cwd=tmpdir,
                    capture_output=True,
                    text=True,
                )
                elapsed = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} start-up run failed:\n{proc.stderr[-2000:]}")
                times[name].append(elapsed)
    return [
        {
            "runtime": name,
            "bytes": runs[name][1],
            "min_ms": 1e3 * min(t),
            "median_ms": 1e3 * statistics.median(t),
            "runs": len(t),
        }
        for name, t in times.items()
    ]


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'runtime':<26} {'model file':>11} {'min ms':>8} {'median ms':>10}"]
    for r in rows:
        size = f"{r['bytes']:,}" if r["bytes"] else ""
        lines.append(f"{r['runtime']:<26} {size:>11} {r['min_ms']:8.1f} {r['median_ms']:10.1f}")
    return "\n".join(lines)


def run_startup(repeats: int = 7, use_torch: bool = True) -> int:
    print(
        f"edge start-up: fresh process = import + load + first batch-1 inference of an int8 "
        f"MLP {'-'.join(map(str, DIMS))}; {repeats} runs each, interleaved"
    )
    rows = measure(repeats, use_torch)
    print(format_rows(rows))
    return 0
