"""asv: loading weights -- ``pyfastopt.io.load_torch``, ``load_safetensors`` and
``pyfastopt.onnx.load`` -- against reading the same file's bytes.

A file of ``size_mb`` MB of float32 matrices (1024 x 1024 and their biases, like an MLP's
state_dict) is written once per parameter combination: ``torch.save`` (skipped without
torch), a hand-written ``.safetensors``, and ``pyfastopt.onnx.save`` of a Linear stack
(skipped without onnx). ``time_load`` times the loader, ``time_read_bytes`` reads the
file with ``open().read()``, and ``track_ratio_to_read`` is their quotient measured in
the same run (the number the issue's speed target is about: <= 1.5x). With ``mmap=True``
large tensors are memory-mapped, so the load does not touch the data. ``pyfastopt.onnx.load``
always maps a file over 1 MiB and takes the initializers as views of the map (protobuf
parses only the graph), then the layers copy their weights once.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from typing import ClassVar

import numpy as np

from .common import SEED, Benchmark, best_seconds

_MB = 1 << 20


def _tensors(size_mb: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    n = max(1, round(size_mb * _MB / (4 * 1025 * 1024)))
    side = 1024 if size_mb >= 4 else 64
    out = {}
    for i in range(n):
        out[f"{i}.weight"] = rng.standard_normal((side, side), dtype=np.float32)
        out[f"{i}.bias"] = rng.standard_normal(side, dtype=np.float32)
    return out


def _write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    header, pos = {}, 0
    for name, t in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [pos, pos + t.nbytes],
        }
        pos += t.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for t in tensors.values():
            f.write(t.tobytes())


class WeightsLoad(Benchmark):
    params: ClassVar[list] = [["torch", "safetensors", "onnx"], [True, False], [1, 100]]
    param_names: ClassVar[list[str]] = ["format", "mmap", "size_mb"]
    timeout = 300.0

    def setup(self, fmt, mmap, size_mb):
        self.tmp = tempfile.mkdtemp(prefix="pyfastopt-asv-io-")
        tensors = _tensors(size_mb)
        if fmt == "torch":
            try:
                import torch
            except ImportError:
                raise NotImplementedError("torch is not installed") from None
            from pyfastopt.io import load_torch

            self.path = os.path.join(self.tmp, "sd.pt")
            torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, self.path)
            self.load = lambda: load_torch(self.path, mmap=mmap)
        elif fmt == "safetensors":
            from pyfastopt.io import load_safetensors

            self.path = os.path.join(self.tmp, "sd.safetensors")
            _write_safetensors(self.path, tensors)
            self.load = lambda: load_safetensors(self.path, mmap=mmap)
        else:
            if not mmap:
                raise NotImplementedError("onnx.load has no mmap option")
            try:
                import onnx  # noqa: F401
            except ImportError:
                raise NotImplementedError("onnx is not installed") from None
            import pyfastopt.onnx as pfo
            from pyfastopt import nn

            layers = []
            for i in range(len(tensors) // 2):
                w, b = tensors[f"{i}.weight"], tensors[f"{i}.bias"]
                layers.append(nn.Linear.from_weights(w.copy(), b.copy(), activation="relu"))
            self.path = os.path.join(self.tmp, "mlp.onnx")
            pfo.save(nn.Sequential(*layers), self.path)
            self.load = lambda: pfo.load(self.path)

    def teardown(self, fmt, mmap, size_mb):
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().teardown(fmt, mmap, size_mb)

    def _read(self):
        with open(self.path, "rb") as f:
            return f.read()

    def time_load(self, fmt, mmap, size_mb):
        self.load()

    def time_read_bytes(self, fmt, mmap, size_mb):
        self._read()

    def track_ratio_to_read(self, fmt, mmap, size_mb):
        return best_seconds(self.load, repeats=3) / best_seconds(self._read, repeats=3)

    track_ratio_to_read.unit = "x read time"
