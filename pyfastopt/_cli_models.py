"""``pyfastopt quantize``, ``pyfastopt infer`` and ``pyfastopt bench --model``: models on
the command line.

* ``quantize MODEL.onnx [--calibration DATA.npy] [--mode dynamic|static] -o MODEL.pfq``:
  :func:`pyfastopt.onnx.load` the float model, :func:`pyfastopt.quant.quantize_model`
  it, save the int8 model file (:meth:`pyfastopt.quant.QuantizedModel.save`).
* ``infer MODEL.pfq|MODEL.onnx --input X.npy [-o Y.npy]``: run a model on an array.
* ``bench --model MODEL``: pyfastopt against ONNX Runtime on that model, each library in
  its own child process (:mod:`pyfastopt.bench.isolation`), rounds alternating.

Every failure the user can cause (a missing, unreadable or corrupt file, an input of the
wrong shape or dtype, an operator or layer pyfastopt does not support) ends the command
with exit code 1 and one line on stderr naming the file or argument: :class:`CliError`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Any

import numpy as np

__all__ = [
    "CliError",
    "add_infer_arguments",
    "add_quantize_arguments",
    "cmd_infer",
    "cmd_quantize",
    "load_any",
    "model_kind",
]

_ZIP_MAGIC = b"PK\x03\x04"


class CliError(Exception):
    """A user error: the command prints ``pyfastopt <command>: <message>`` and exits 1."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _regular_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise CliError(f"{what} {path}: no such file")
    if not os.path.isfile(path):
        raise CliError(f"{what} {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise CliError(f"{what} {path}: not readable (permission denied)")


def model_kind(path: str) -> str:
    """``"pfq"`` for a pyfastopt int8 model file (a zip), ``"onnx"`` otherwise (decided by
    the file's first bytes, not its name)."""
    _regular_file(path, "model")
    with open(path, "rb") as fh:
        head = fh.read(4)
    return "pfq" if head == _ZIP_MAGIC else "onnx"


def _onnx_input_shape(path: str) -> tuple[Any, ...] | None:
    """The ONNX graph input's shape, None for a symbolic (dynamic) dimension; None when
    the file has no readable shape."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        proto = onnx.load(path, load_external_data=False)
        dims = proto.graph.input[0].type.tensor_type.shape.dim
    except Exception:
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def load_any(path: str) -> tuple[Any, str]:
    """``(model, kind)``: a ``.pfq`` through :func:`pyfastopt.quant.load`, anything else
    through :func:`pyfastopt.onnx.load`; every failure a :class:`CliError` naming
    ``path``."""
    kind = model_kind(path)
    try:
        if kind == "pfq":
            from .quant import load

            return load(path), kind
        from . import onnx as pf_onnx

        return pf_onnx.load(path), kind
    except ImportError as exc:
        raise CliError(f"model {path}: {_one_line(exc)}") from None
    except (ValueError, OSError, TypeError) as exc:
        raise CliError(f"model {path}: {_one_line(exc)}") from None


def _read_npy(path: str, what: str) -> np.ndarray:
    """A float array from a ``.npy`` file (never unpickled); float16 is widened to float32."""
    _regular_file(path, what)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError, EOFError, OSError, UnpicklingError ...
        raise CliError(f"{what} {path}: not a readable .npy array ({_one_line(exc)})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise CliError(f"{what} {path}: an .npz archive; give one array saved with numpy.save")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.float32, np.float64):
        raise CliError(f"{what} {path}: dtype {arr.dtype}; expected float32 (or float64/float16)")
    if arr.ndim == 0:
        raise CliError(f"{what} {path}: a 0-d array; expected (batch, ...) samples")
    return arr


def _shape_str(shape: Any) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _check_input(x: np.ndarray, model: Any, kind: str, path: str, what: str, xpath: str) -> None:
    """The samples must fit the model: ``in_features`` values per sample (int8 MLP), or
    the ONNX input's rank and fixed dimensions (an int8 CNN checks its input when run)."""
    if kind == "pfq":
        if not hasattr(model, "in_features"):
            return  # a quantized CNN checks its input itself (ValueError -> one-line error)
        per = int(np.prod(x.shape[1:])) if x.ndim > 1 else -1
        if per != model.in_features:
            raise CliError(
                f"{what} {xpath}: shape {x.shape} does not fit model {path}, which takes "
                f"(batch, {model.in_features}) (in_features={model.in_features})"
            )
        return
    want = _onnx_input_shape(path)
    if want is None:
        return
    ok = len(want) == x.ndim and all(w is None or w == d for w, d in zip(want, x.shape))
    if not ok:
        raise CliError(
            f"{what} {xpath}: shape {x.shape} does not fit model {path}, whose input is "
            f"{_shape_str(want)}"
        )


def _run(model: Any, x: np.ndarray, path: str) -> np.ndarray:
    try:
        if hasattr(model, "eval"):
            model.eval()
        y = model(x)
    except (ValueError, TypeError) as exc:
        raise CliError(f"model {path} cannot run on this input: {_one_line(exc)}") from None
    return np.asarray(y)


def _save_npy(path: str, arr: np.ndarray, what: str) -> int:
    from ._fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    try:
        return atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise CliError(f"{what} {path}: cannot write ({_one_line(exc)})") from None


# ---- quantize ------------------------------------------------------------------------------


def add_quantize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.onnx", help="float ONNX model (an MLP)")
    p.add_argument(
        "--calibration",
        metavar="DATA.npy",
        help="float samples (batch, ...) that fix the activation ranges (required for "
        "--mode static; with --mode dynamic they only feed the accuracy report)",
    )
    p.add_argument(
        "--mode",
        choices=("dynamic", "static"),
        default="dynamic",
        help="dynamic: activations quantized per call from their own range (default); "
        "static: calibrated uint8 activations",
    )
    p.add_argument(
        "--per-tensor",
        action="store_true",
        help="one weight scale per layer instead of one per output channel",
    )
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pfq", help="int8 model file")


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quant import quantize_model

    if model_kind(args.model) == "pfq":
        raise CliError(
            f"model {args.model}: already a pyfastopt int8 model file; give a float ONNX"
        )
    model, _ = load_any(args.model)
    calib = None
    if args.calibration is not None:
        calib = _read_npy(args.calibration, "--calibration")
        _check_input_onnx(calib, args.model, "--calibration", args.calibration)
    elif args.mode == "static":
        raise CliError("--mode static needs --calibration DATA.npy (the activation ranges)")
    try:
        qm = quantize_model(model, calib, mode=args.mode, per_channel=not args.per_tensor)
    except (ValueError, TypeError) as exc:
        raise CliError(f"model {args.model} cannot be quantized: {_one_line(exc)}") from None
    size = qm.save(args.output) if not os.path.isdir(args.output) else None
    if size is None:
        raise CliError(f"-o {args.output}: is a directory")
    print(
        f"{args.model} -> {args.output}: {len(qm.layers)} int8 layers, {args.mode}, "
        f"{'per-tensor' if args.per_tensor else 'per-channel'} weights, {size} bytes"
    )
    if qm.report is not None:
        print(qm.format_report())
    return 0


def _check_input_onnx(x: np.ndarray, path: str, what: str, xpath: str) -> None:
    _check_input(x, None, "onnx", path, what, xpath)


# ---- infer ---------------------------------------------------------------------------------


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="MODEL.pfq (int8, pyfastopt) or MODEL.onnx")
    p.add_argument("--input", required=True, metavar="X.npy", help="float samples (batch, ...)")
    p.add_argument(
        "-o", "--output", metavar="Y.npy", help="write the outputs here (default: print them)"
    )
    p.add_argument("--threads", type=int, default=0, help="pyfastopt threads (0: the default)")


def cmd_infer(args: argparse.Namespace) -> int:
    from . import set_num_threads

    if args.threads < 0:
        raise CliError(f"--threads must be >= 0, got {args.threads}")
    model, kind = load_any(args.model)
    x = _read_npy(args.input, "--input")
    _check_input(x, model, kind, args.model, "--input", args.input)
    if args.threads:
        try:
            set_num_threads(args.threads)
        except ValueError as exc:
            raise CliError(f"--threads: {_one_line(exc)}") from None
    if kind == "onnx" and x.dtype != np.float32:
        x = x.astype(np.float32)  # the model's dtype (ONNX float inputs are float32)
    y = _run(model, x, args.model)
    if args.output:
        _save_npy(args.output, y, "-o")
        print(f"{args.output}: {y.dtype} {tuple(y.shape)}")
    else:
        with np.printoptions(threshold=200, edgeitems=3):
            print(f"output {y.dtype} {tuple(y.shape)}")
            print(y)
    return 0


def run(func: Any, args: argparse.Namespace, command: str) -> int:
    """Run a model command, turning :class:`CliError` into one line on stderr + exit 1."""
    try:
        return int(func(args) or 0)
    except CliError as exc:
        print(f"pyfastopt {command}: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"pyfastopt {command}: out of memory", file=sys.stderr)
        return 1
