"""pyfastopt on NVIDIA GPUs: the CPU API's functions for arrays that live on the device.

Only in builds made with ``PYFASTOPT_CUDA=1 pip install .``; ``import pyfastopt`` never
imports this package (``pyfastopt.cuda`` loads it on first access). Without the CUDA
module or without a visible GPU, importing still works: :func:`available` is False,
:func:`unavailable_reason` says why, and every device function raises
:class:`CudaUnavailableError` with that reason.

Arrays: anything that exports CUDA device memory through DLPack or
``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors, Numba device arrays,
:class:`DeviceArray`). Nothing is copied between host and device behind your back: a
NumPy array (or a CPU tensor) passed to a device function is a ``TypeError`` naming the
argument. Results come back as the input's kind (``torch.from_dlpack`` /
``cupy.from_dlpack``; see :func:`as_kind`); in-place functions update the given memory.

Streams: every function takes ``stream=`` (an int ``cudaStream_t``, a
``torch.cuda.Stream``, a ``cupy.cuda.Stream``); by default the work is queued on the
first array's producer's current stream (PyTorch's / CuPy's current stream, the CAI v3
stream), and nothing waits for the GPU unless a Python number must come back.

Bits: element-wise kernels give the CPU's bits (optimizer updates, dropout masks and
values for the same ``(seed, offset)``, quantize/dequantize, axpby); reductions (batch
norm statistics, gradient norms) are deterministic -- fixed chunks combined in a fixed
order, no atomics -- so identical from run to run, but summed in a different order than
on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import shape as check_shape
from ._ops import (
    axpby_,
    batch_norm_backward,
    batch_norm_infer,
    batch_norm_train,
    clip_grad_norm_,
    clip_grad_value_,
    dequantize,
    dropout,
    dropout_backward,
    linear,
    matmul,
    matmul_int8,
    quantize,
)
from ._runtime import (
    CudaUnavailableError,
    as_kind,
    available,
    built,
    device_count,
    info,
    is_device_array,
    require,
    resolve_stream,
    stream_handle,
    synchronize,
    unavailable_reason,
)

__all__ = [
    "CudaUnavailableError",
    "as_kind",
    "available",
    "axpby_",
    "batch_norm_backward",
    "batch_norm_infer",
    "batch_norm_train",
    "built",
    "clip_grad_norm_",
    "clip_grad_value_",
    "copy",
    "dequantize",
    "device_count",
    "dropout",
    "dropout_backward",
    "empty",
    "info",
    "is_device_array",
    "linear",
    "matmul",
    "matmul_int8",
    "quantize",
    "require",
    "stream_handle",
    "synchronize",
    "to_device",
    "to_host",
    "unavailable_reason",
    "zeros",
]


def __getattr__(name: str) -> Any:
    # DeviceArray is the compiled module's class: there only in a CUDA build.
    if name == "DeviceArray":
        mod = _runtime._load()
        if mod is None:
            raise CudaUnavailableError(f"pyfastopt.cuda is unavailable: {unavailable_reason()}")
        return mod.DeviceArray
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dtype_name(dtype: Any) -> str:
    name = str(dtype).replace("torch.", "")
    if name == "bfloat16":
        return name
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"unsupported dtype {dtype!r}") from None


def to_device(a: Any, device: int = -1, *, stream: Any = None) -> Any:
    """An explicit host-to-device copy of an array-like, as a :class:`DeviceArray`
    (``device=-1``: the current device)."""
    mod = require()
    arr = np.ascontiguousarray(a)
    return mod.from_host(arr, int(device), stream_handle(stream) if stream is not None else 0)


def to_host(x: Any, *, stream: Any = None) -> np.ndarray:
    """An explicit device-to-host copy (waits for the stream). bfloat16 arrays come back
    as their uint16 bit patterns (NumPy has no bfloat16)."""
    mod = require()
    return mod.to_host(x, resolve_stream(stream, x))


def empty(shape: Any, dtype: Any = np.float32, device: int = -1, *, stream: Any = None) -> Any:
    """An uninitialised :class:`DeviceArray` (stream-ordered allocation)."""
    mod = require()
    shape = check_shape("shape", shape)
    return mod.empty(
        shape, _dtype_name(dtype), int(device), stream_handle(stream) if stream is not None else 0
    )


def zeros(shape: Any, dtype: Any = np.float32, device: int = -1, *, stream: Any = None) -> Any:
    """A zero-filled :class:`DeviceArray` (stream-ordered allocation and memset)."""
    mod = require()
    shape = check_shape("shape", shape)
    return mod.zeros(
        shape, _dtype_name(dtype), int(device), stream_handle(stream) if stream is not None else 0
    )


def copy(x: Any, *, stream: Any = None) -> Any:
    """A device-to-device copy of ``x`` (C-contiguous), of ``x``'s kind."""
    mod = require()
    return as_kind(mod.copy(x, resolve_stream(stream, x)), x)


from . import _runtime  # noqa: E402  (for __getattr__)
