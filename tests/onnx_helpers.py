"""Helpers shared by the ONNX tests (test_onnx_io, test_onnx_cnn, test_onnx_int8).

Running a model in ONNX Runtime, the relative tolerance check, ``torch.onnx.export`` to
bytes, and the small torch CNN blocks the tests export. torch and onnxruntime are
imported by the functions that need them, so a test file that skips without them can
import this module first.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

RTOL = 1e-5


def ort_run(data: bytes, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """The first output of ONNX Runtime (CPU, ``threads`` intra-op threads) on ``x``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def close(got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> None:
    """|got - want| <= rtol * max|want| elementwise (relative to the output's scale)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol} x {scale:.3g}"


def torch_export(
    module: Any, example: Any, opset: int = 17, dynamic: tuple[str, ...] = ("x",)
) -> bytes:
    """``torch.onnx.export`` (the TorchScript exporter: the dynamo one needs onnxscript)
    of ``module`` in eval mode with input "x" and output "y"; the names in ``dynamic``
    get a dynamic batch axis."""
    import torch

    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={name: {0: "batch"} for name in dynamic},
        )
    return buf.getvalue()
