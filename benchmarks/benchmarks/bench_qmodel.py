"""asv: whole-model int8 inference -- edge start-up and a loaded model's forward.

* ``StartupSuite.timeraw_*``: a fresh interpreter imports the runtime, loads the saved int8
  MLP 784-512-256-10 and runs one batch-1 inference (asv runs the code a ``timeraw_``
  benchmark returns in a new process). ``StartupOnnxRuntimeSuite`` times ONNX Runtime's
  start-up on the same model when ``onnx`` and ``onnxruntime`` are installed (its
  ``setup_cache`` never imports pyfastopt). The model files and child programs come
  from ``common.startup_program``.
* ``ModelSuite.time_forward``: the loaded model's forward at batch 1, 32 and 256.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import ClassVar

import numpy as np

from .common import (
    THREADS,
    Benchmark,
    PeerBenchmark,
    mlp_weights,
    optional_import,
    pyfastopt_saved_mlp,
    startup_program,
)


def _startup_programs(*runtimes: str) -> dict[str, str]:
    tmpdir = tempfile.mkdtemp(prefix="pyfastopt-asv-startup-")  # lives until the run ends
    return {name: startup_program(name, tmpdir) for name in runtimes}


class StartupSuite(Benchmark):
    timeout = 300.0
    repeat = 7

    def setup_cache(self):
        return _startup_programs("pyfastopt", "import numpy")

    def timeraw_pyfastopt(self, programs):
        return programs["pyfastopt"]

    def timeraw_import_numpy_floor(self, programs):
        return programs["import numpy"]


class StartupOnnxRuntimeSuite(PeerBenchmark):
    timeout = 300.0
    repeat = 7

    def setup_cache(self):
        try:
            optional_import("onnx")
            optional_import("onnxruntime")
        except NotImplementedError:
            return {}
        return _startup_programs("onnxruntime")

    def setup(self, programs):
        if "onnxruntime" not in programs:
            raise NotImplementedError("onnx/onnxruntime not installed")

    def timeraw_onnxruntime(self, programs):
        return programs["onnxruntime"]


class ModelSuite(Benchmark):
    params: ClassVar[list] = [[1, 32, 256], THREADS]
    param_names: ClassVar[list[str]] = ["batch", "threads"]
    smoke_params: ClassVar[list] = [[1], THREADS]

    def setup(self, batch, threads):
        from pyfastopt import quant

        self.set_threads(threads)
        self.tmpdir = tempfile.mkdtemp(prefix="pyfastopt-asv-model-")
        path = f"{self.tmpdir}/m.pfq"
        pyfastopt_saved_mlp(*mlp_weights(0), path)
        self.model = quant.load(path)
        self.x = np.random.default_rng(0).random((batch, 784), dtype=np.float32)

    def teardown(self, *params):
        super().teardown(*params)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def time_forward(self, batch, threads):
        self.model(self.x)
