"""Access to the optional CUDA module (``PYFASTOPT_CUDA=1 pip install .``).

``available()`` says whether it was built and a GPU is visible; ``require()`` returns the
module or raises a RuntimeError that says how to get it. The CPU package never needs it.
"""

from __future__ import annotations

from types import ModuleType

try:
    from . import _core_cuda as _module  # type: ignore[attr-defined]
except ImportError as exc:  # the default, CPU-only build
    _module = None
    _import_error: ImportError | None = exc
else:
    _import_error = None


def built() -> bool:
    """True when this installation includes the CUDA module."""
    return _module is not None


def available() -> bool:
    """True when the CUDA module is built and at least one GPU is visible."""
    return _module is not None and _module.device_count() > 0


def require() -> ModuleType:
    """The CUDA module, or RuntimeError saying why it cannot be used."""
    if _module is None:
        raise RuntimeError(
            "pyfastopt was not compiled with CUDA support; rebuild it with "
            "`PYFASTOPT_CUDA=1 pip install .` on a machine with nvcc"
        ) from _import_error
    if _module.device_count() == 0:
        raise RuntimeError("pyfastopt's CUDA module is built, but no CUDA device is visible")
    return _module
