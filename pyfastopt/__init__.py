"""pyfastopt: fast CPU kernels for deep-learning training steps and int8 inference.

Hot loops are C++ kernels (one variant per SIMD level, picked at run time, threads from
pyfastopt's own pool) under a NumPy-compatible API. See ``show_config()`` for what this
machine runs.
"""

from __future__ import annotations

import importlib as _importlib
from types import ModuleType as _ModuleType


def _no_core() -> ImportError:  # pragma: no cover - only without a build
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    return ImportError(
        f"pyfastopt's compiled core is missing from {here}. If this is the source "
        "tree, install the package (pip install .) and run from another directory, "
        "or use the `pyfastopt` / `pytest` console scripts, which do not put the "
        "current directory on sys.path."
    )


try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only without a build
    import importlib.machinery as _machinery
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    if not any(
        name.startswith("_core.") and name.endswith(tuple(_machinery.EXTENSION_SUFFIXES))
        for name in _os.listdir(_here)
    ):
        raise _no_core() from exc
    raise
if getattr(_core, "__file__", None) is None:  # pragma: no cover
    # the folder of _core's type stubs (_core/*.pyi), imported as a namespace package
    raise _no_core()

# Resolve PYFASTOPT_SIMD now, so a bad value fails at import with a clear message.
_core.config.init()

from . import _threadpool, data, nn, ops, prune, random  # noqa: E402
from ._batchnorm import (  # noqa: E402
    batch_norm_backward,
    batch_norm_infer,
    batch_norm_train,
)
from ._config import (  # noqa: E402
    get_num_threads,
    get_spin_time,
    max_num_threads,
    release_threads,
    set_num_threads,
    set_spin_time,
    show_config,
    threads,
)
from ._conv import (  # noqa: E402
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    global_avg_pool2d,
    max_pool2d,
    max_pool2d_backward,
)
from ._dropout import dropout, dropout_backward, dropout_mask  # noqa: E402
from ._gemm import gelu, linear, linear_backward, matmul  # noqa: E402

__version__: str = _core.config.version
DTypeError = _core.DTypeError

_threadpool.register()

# Submodules imported on first use (``pyfastopt.quant.load(...)`` after ``import
# pyfastopt`` works). ``pyfastopt.distributed`` is deliberately not among them: it imports
# mpi4py and installs an MPI abort hook, so it must be imported explicitly. ``cuda`` loads
# the optional CUDA module only when first touched; ``onnx`` imports the onnx package
# only when its load/save run.
_LAZY_SUBMODULES = ("cuda", "io", "onnx", "optim", "quant")


def __getattr__(name: str) -> _ModuleType:
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DTypeError",
    "__version__",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "batch_norm_backward",
    "batch_norm_infer",
    "batch_norm_train",
    "conv2d",
    "conv2d_backward",
    "data",
    "dropout",
    "dropout_backward",
    "dropout_mask",
    "gelu",
    "get_num_threads",
    "get_spin_time",
    "global_avg_pool2d",
    "io",
    "linear",
    "linear_backward",
    "matmul",
    "max_num_threads",
    "max_pool2d",
    "max_pool2d_backward",
    "nn",
    "onnx",
    "ops",
    "optim",
    "prune",
    "quant",
    "random",
    "release_threads",
    "set_num_threads",
    "set_spin_time",
    "show_config",
    "threads",
]
