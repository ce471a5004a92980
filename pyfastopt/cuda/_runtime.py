"""The CUDA module's loading, availability, streams and result kinds.

Nothing here imports a GPU library: the compiled module ``pyfastopt._core_cuda`` (built
only with ``PYFASTOPT_CUDA=1``) is imported on first use, and CuPy / PyTorch are only
looked up in ``sys.modules`` when an array of theirs is passed in.
"""

from __future__ import annotations

import glob
import numbers
import os
import sys
from types import ModuleType
from typing import Any

from .._validate import integer

__all__ = [
    "CudaUnavailableError",
    "available",
    "built",
    "device_count",
    "info",
    "require",
    "synchronize",
    "unavailable_reason",
]

_BUILD_HINT = (
    "this pyfastopt was built without its CUDA module; rebuild it with "
    "`PYFASTOPT_CUDA=1 pip install .` on a machine with nvcc (CUDA 12 or 13)"
)


class CudaUnavailableError(RuntimeError):
    """pyfastopt.cuda cannot run here; the message says why (no CUDA module, no GPU)."""


_module: ModuleType | None = None
_import_error: str | None = None
_loaded = False


def _load() -> ModuleType | None:
    global _module, _import_error, _loaded
    if not _loaded:
        _loaded = True
        try:
            from .. import _core_cuda as mod
        except ImportError as exc:
            _import_error = str(exc)
        else:
            _module = mod
            for d in _cublas_dirs():
                mod.cublaslt_add_search_path(d)
    return _module


def _cublas_dirs() -> list[str]:
    """Folders of pip's nvidia-cublas wheel (where PyTorch/CuPy wheels put libcublasLt)."""
    dirs: list[str] = []
    for base in sys.path:
        if not base or not os.path.isdir(os.path.join(base, "nvidia")):
            continue
        for lib in glob.glob(os.path.join(base, "nvidia", "*", "lib")):
            if glob.glob(os.path.join(lib, "libcublasLt.so*")) and lib not in dirs:
                dirs.append(lib)
    return dirs


def built() -> bool:
    """True when this installation includes the CUDA module (a ``PYFASTOPT_CUDA=1`` build)."""
    return _load() is not None


def device_count() -> int:
    """Number of visible CUDA devices (0 without the CUDA module, a driver or a GPU)."""
    mod = _load()
    return 0 if mod is None else int(mod.device_count()[0])


def unavailable_reason() -> str | None:
    """Why pyfastopt.cuda cannot run here, or None when it can."""
    mod = _load()
    if mod is None:
        detail = f" (import error: {_import_error})" if _import_error else ""
        return _BUILD_HINT + detail
    n, why = mod.device_count()
    if n == 0:
        return f"the CUDA module is built, but no GPU is visible: {why}"
    return None


def available() -> bool:
    """True when the CUDA module is built and at least one GPU is visible."""
    return unavailable_reason() is None


def require() -> ModuleType:
    """The compiled module, or :class:`CudaUnavailableError` saying why it cannot be used."""
    why = unavailable_reason()
    if why is not None:
        raise CudaUnavailableError(f"pyfastopt.cuda is unavailable: {why}")
    assert _module is not None
    return _module


def info() -> dict[str, Any]:
    """What this build and machine offer: ``built``, ``available``, ``reason`` (None when
    available), ``versions`` (CUDA runtime/driver, compiled architectures), ``devices``
    (name, compute capability, memory, multiprocessors, theoretical bandwidth) and
    ``cublaslt`` (whether matmul/linear can run, and why not)."""
    mod = _load()
    out: dict[str, Any] = {"built": mod is not None, "reason": unavailable_reason()}
    out["available"] = out["reason"] is None
    if mod is None:
        return out
    out["versions"] = dict(mod.versions())
    out["devices"] = [dict(mod.device_info(i)) for i in range(device_count())]
    lt = dict(mod.cublaslt_status()) if out["available"] else {"available": False}
    out["cublaslt"] = lt
    return out


def synchronize(stream: Any = None) -> None:
    """Wait for the work queued on ``stream`` (default: the legacy default stream)."""
    require().synchronize(stream_handle(stream) if stream is not None else 0)


# ---------------------------------------------------------------------------- streams
def stream_handle(stream: Any) -> int:
    """A stream argument as a raw ``cudaStream_t`` integer (0: the legacy default stream).

    Accepts an int, ``torch.cuda.Stream`` (``.cuda_stream``), ``cupy.cuda.Stream``
    (``.ptr``) or any object with the ``__cuda_stream__`` protocol.
    """
    if isinstance(stream, (bool,)) or stream is None:
        raise TypeError(f"stream must be an int or a CUDA stream object, got {stream!r}")
    if isinstance(stream, numbers.Integral):
        return integer("stream", stream, lo=0)  # a cudaStream_t handle
    proto = getattr(stream, "__cuda_stream__", None)
    if proto is not None:
        v = proto() if callable(proto) else proto
        return int(v[1])
    for attr in ("cuda_stream", "ptr"):
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    raise TypeError(
        "stream must be None, an int (a cudaStream_t), a torch.cuda.Stream or a "
        f"cupy.cuda.Stream, got {type(stream).__name__}"
    )


def _top_module(x: Any) -> str:
    return (type(x).__module__ or "").split(".")[0]


def producer_stream(x: Any) -> int:
    """The stream the producer of ``x`` is working on now: PyTorch's and CuPy's current
    stream for their arrays, the ``__cuda_array_interface__`` v3 stream, a DeviceArray's
    own stream, else the legacy default stream (0)."""
    mod = _top_module(x)
    if mod == "torch":
        torch = sys.modules.get("torch")
        if torch is not None and getattr(x, "is_cuda", False):
            return int(torch.cuda.current_stream(x.device).cuda_stream)
    elif mod == "cupy":
        cupy = sys.modules.get("cupy")
        if cupy is not None:
            return int(cupy.cuda.get_current_stream().ptr)
    m = _load()
    if m is not None and isinstance(x, m.DeviceArray):
        return int(x.stream)
    cai = getattr(type(x), "__cuda_array_interface__", None)
    if cai is not None:
        try:
            s = x.__cuda_array_interface__.get("stream")
        except Exception:  # a broken interface is reported by the parser, not here
            s = None
        if isinstance(s, int) and s > 0:
            return 0 if s == 1 else s
    return 0


def resolve_stream(stream: Any, first: Any) -> int:
    """The call's stream: the explicit ``stream=``, else ``first``'s producer's stream."""
    if stream is not None:
        return stream_handle(stream)
    return producer_stream(first) if first is not None else 0


# ---------------------------------------------------------------------------- results
def as_kind(result: Any, like: Any) -> Any:
    """A DeviceArray result as the kind of ``like``.

    The rule: if the top-level package of ``type(like)`` has a ``from_dlpack`` (PyTorch:
    ``torch.from_dlpack``, CuPy: ``cupy.from_dlpack``, JAX, ...), the result goes through
    it (no copy; the consumer's stream waits for ours); otherwise the
    :class:`~pyfastopt.cuda.DeviceArray` itself comes back (it exports DLPack and
    ``__cuda_array_interface__``).
    """
    if result is None:
        return None
    mod = _load()
    if mod is not None and isinstance(like, mod.DeviceArray):
        return result
    pkg = sys.modules.get(_top_module(like))
    fn = getattr(pkg, "from_dlpack", None) if pkg is not None else None
    return fn(result) if fn is not None else result


def is_device_array(x: Any) -> bool:
    """True when ``x`` exports CUDA device memory (never raises; needs no GPU)."""
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            if int(dev()[0]) in (2, 13):  # kDLCUDA, kDLCUDAManaged
                return True
        except Exception:
            pass
    if hasattr(type(x), "__cuda_array_interface__"):
        try:  # PyTorch defines the property on every tensor; CPU ones raise
            x.__cuda_array_interface__  # noqa: B018
        except Exception:
            return False
        return True
    return False
