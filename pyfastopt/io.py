"""Weights in: PyTorch ``torch.save`` state_dicts and ``.safetensors`` files, without torch.

:func:`load_torch` reads the zip format that ``torch.save`` writes (the default since
PyTorch 1.6) with an unpickler that understands only what a state_dict needs and
executes nothing else; :func:`load_safetensors` parses a ``.safetensors`` file. Both
return ``{name: numpy.ndarray}``, which ``model.load_state_dict(...)`` of a
:mod:`pyfastopt.nn` model accepts with PyTorch's key names (``"0.weight"``,
``"1.running_mean"``, ...).

The dtypes
    float32, float64, float16, int8, uint8, int16, int32, int64, bool (and uint16,
    uint32, uint64) keep their dtype. **bfloat16 becomes float32** (exact: a bfloat16 is
    the upper half of a float32), since NumPy has no bfloat16 and ``load_state_dict``
    would otherwise copy the bit patterns as integers. Anything else (complex, float8,
    quantized tensors) is a ``ValueError`` naming what the file asks for.

Safety
    The pickle of a torch file may only name ``collections.OrderedDict``, the tensor and
    parameter rebuild functions (``torch._utils._rebuild_tensor_v2``/``_v3``,
    ``_rebuild_parameter``), the storage types (``torch.FloatStorage``, ...,
    ``torch.storage.UntypedStorage``) and the plain dtypes; these names resolve to this
    module's own functions, never to torch (which need not be installed). Any other
    global (``os.system``, ``builtins.eval``, ...) is a ``ValueError`` before anything
    is called, so a hostile file runs no code. Sizes are checked against the file before
    anything is allocated (see :mod:`pyfastopt._fileio`: at most ``max(256 MiB, 100 x
    the file's size)`` unless ``max_bytes=`` says otherwise); a truncated or corrupt file
    is a ``ValueError``.

Memory mapping
    With ``mmap=True`` (the default) a tensor of at least 1 MiB that the file stores
    uncompressed and aligned is a copy-on-write memory map of the file (writable; writes
    stay private to the process) instead of a copy: loading costs almost nothing until
    the data is touched. Its zip CRC is then not verified (the bounds are); pass
    ``mmap=False`` to read and verify everything.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from typing import IO, Any

import numpy as np

from . import _fileio
from ._validate import boolean

__all__ = ["load_safetensors", "load_torch"]

#: tensors at least this large are memory-mapped when ``mmap=True``
MMAP_MIN_BYTES = 1 << 20

_BF16 = "bfloat16"  # marker dtype name: read as uint16, widened to float32

# torch's legacy (typed) storage classes, as the pickle names them: torch.<Name>
_STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": _BF16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "ShortStorage": np.int16,
    "IntStorage": np.int32,
    "LongStorage": np.int64,
    "BoolStorage": np.bool_,
}
# dtype objects (torch.<name>) that _rebuild_tensor_v3 takes with an UntypedStorage
_TORCH_DTYPES: dict[str, Any] = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "bfloat16": _BF16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
}


# ----------------------------------------------------------------------------- helpers
def _np_dtype(dtype: Any) -> np.dtype:
    """The storage dtype (bfloat16 is stored as its uint16 bit patterns)."""
    return np.dtype(np.uint16) if dtype == _BF16 else np.dtype(dtype)


def _widen_bf16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _file_size(fh: IO[bytes]) -> int:
    return os.fstat(fh.fileno()).st_size


def _mmap(path: str, offset: int, nbytes: int, dtype: np.dtype) -> np.ndarray:
    """A copy-on-write map of ``nbytes`` at ``offset`` as a 1-D plain ndarray."""
    count = nbytes // dtype.itemsize
    m = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=(count,))
    return m.view(np.ndarray)


_READ_CHUNK = 1 << 22  # CRC each 4 MiB while it is still in the cache


def _read_at(
    fh: Any, offset: int, nbytes: int, dtype: np.dtype, what: str, crc: int | None = None
) -> np.ndarray:
    """``nbytes`` at ``offset`` read straight into a new array (no intermediate copies);
    with ``crc``, the zip CRC-32 the bytes must have (ValueError otherwise)."""
    out = np.empty(nbytes // dtype.itemsize, dtype)
    buf = out.reshape(-1).view(np.uint8).data
    fh.seek(offset)
    pos, check = 0, 0
    while pos < nbytes:
        n = fh.readinto(buf[pos : min(nbytes, pos + _READ_CHUNK)])
        if not n:
            raise ValueError(f"{what} is truncated: {pos} of {nbytes} bytes")
        if crc is not None:
            check = zlib.crc32(buf[pos : pos + n], check)
        pos += n
    if crc is not None and check != crc:
        raise ValueError(f"{what}: CRC mismatch (the file is corrupt)")
    return out


# ----------------------------------------------------------------------------- torch
class _Refused(ValueError):
    pass


class _StorageType:
    """What the pickle's ``torch.FloatStorage`` (etc.) resolves to: a dtype marker."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: Any) -> None:
        self.name = name
        self.dtype = dtype  # None: UntypedStorage (bytes; the dtype comes with the tensor)


class _DType:
    """What the pickle's ``torch.float32`` (etc.) resolves to."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: Any) -> None:
        self.name = name
        self.dtype = dtype


class _Storage:
    """A storage of the archive: ``data`` is its flat array (dtype of the storage)."""

    __slots__ = ("archive", "data", "dtype", "key")

    def __init__(self, key: str, dtype: Any, data: np.ndarray, archive: _TorchArchive) -> None:
        self.key = key
        self.dtype = dtype
        self.data = data
        self.archive = archive  # charges the float32 copies of bfloat16 tensors


class _Tensor:
    """A rebuilt tensor, converted to an ndarray once the whole pickle is read (it is not
    an ndarray meanwhile, so the pickle cannot call ndarray methods on it)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __setstate__(self, state: Any) -> None:
        raise _Refused("a tensor's state cannot be set by the pickle")


class _OrderedDict(dict):
    """``collections.OrderedDict`` as the pickle builds it (a plain dict: insertion order
    is kept). The ``_metadata`` attribute PyTorch attaches to a state_dict is ignored."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or any(not isinstance(k, str) for k in state):
            raise _Refused("collections.OrderedDict: unexpected state in the pickle")


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise _Refused(f"{what} must be a tuple of non-negative ints, got {value!r}")
    return tuple(value)


def _view(storage: Any, offset: Any, size: Any, stride: Any, dtype: Any) -> _Tensor:
    """The tensor ``storage[offset:]`` viewed with ``size``/``stride`` (elements), checked
    to lie inside the storage."""
    if not isinstance(storage, _Storage):
        raise _Refused(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    if type(offset) is not int or offset < 0:
        raise _Refused(f"storage offset must be a non-negative int, got {offset!r}")
    size = _int_tuple(size, "a tensor's size")
    stride = _int_tuple(stride, "a tensor's stride")
    if len(size) != len(stride):
        raise _Refused(f"size {size} and stride {stride} differ in length")
    data = storage.data
    if dtype is not None and storage.dtype is None:  # _rebuild_tensor_v3: untyped bytes
        npd = _np_dtype(dtype)
        if data.nbytes % npd.itemsize:
            raise _Refused(f"a storage of {data.nbytes} bytes does not hold whole {npd}")
        if data.ctypes.data % npd.itemsize:
            data = data.copy()  # unaligned: copy once
        data = data.view(npd)
    elif dtype is not None and dtype != storage.dtype:
        raise _Refused("a tensor's dtype differs from its typed storage's")
    else:
        dtype = storage.dtype
    numel = math.prod(size)
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= data.size:
            raise _Refused(
                f"a tensor of size {size}, stride {stride} at offset {offset} reaches "
                f"element {last} of a storage of {data.size}"
            )
        itemsize = data.itemsize
        arr = np.lib.stride_tricks.as_strided(
            data[offset:],
            shape=size,
            strides=tuple(s * itemsize for s in stride),
            writeable=data.flags.writeable
            and not any(s == 0 and n > 1 for n, s in zip(size, stride)),
        )
    else:
        arr = np.empty(size, data.dtype)
    if dtype == _BF16:
        storage.archive._take(4 * numel, storage.key)
        arr = _widen_bf16(arr)
    return _Tensor(arr)


def _check_hooks(requires_grad: Any, hooks: Any) -> None:
    if type(requires_grad) is not bool:
        raise _Refused(f"requires_grad must be a bool, got {requires_grad!r}")
    if not isinstance(hooks, dict) or hooks:
        raise _Refused("a tensor with backward hooks cannot be loaded")


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    hooks: Any,
    metadata: Any = None,
) -> _Tensor:
    _check_hooks(requires_grad, hooks)
    return _view(storage, offset, size, stride, None)


def _rebuild_tensor_v3(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> _Tensor:
    _check_hooks(requires_grad, hooks)
    if not isinstance(dtype, _DType):
        raise _Refused(f"_rebuild_tensor_v3: dtype is {type(dtype).__name__}, not a torch dtype")
    return _view(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> _Tensor:
    if not isinstance(data, _Tensor):
        raise _Refused("_rebuild_parameter: data is not a tensor")
    _check_hooks(requires_grad, hooks)
    return data


def _allowed(module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
        return _OrderedDict
    if module == "torch._utils":
        fn = {
            "_rebuild_tensor_v2": _rebuild_tensor_v2,
            "_rebuild_tensor_v3": _rebuild_tensor_v3,
            "_rebuild_parameter": _rebuild_parameter,
        }.get(name)
        if fn is not None:
            return fn
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(name, _STORAGE_DTYPES[name])
    if (module, name) == ("torch.storage", "UntypedStorage"):
        return _StorageType(name, None)
    if module == "torch" and name in _TORCH_DTYPES:
        return _DType(name, _TORCH_DTYPES[name])
    return None


_ALLOWED_TEXT = (
    "collections.OrderedDict, torch._utils._rebuild_tensor_v2/_v3, "
    "torch._utils._rebuild_parameter, torch.<Float|Double|Half|BFloat16|Char|Byte|Short|"
    "Int|Long|Bool>Storage, torch.storage.UntypedStorage and the dtypes "
    + ", ".join(f"torch.{n}" for n in _TORCH_DTYPES)
)


class _StateUnpickler(pickle.Unpickler):
    """Resolves only the names a state_dict needs, to this module's own functions."""

    def __init__(self, fh: IO[bytes], archive: _TorchArchive) -> None:
        super().__init__(fh)
        self._archive = archive

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is None:
            raise _Refused(
                f"the pickle asks for {module}.{name}, which a state_dict does not need "
                f"(this reader allows only {_ALLOWED_TEXT}); nothing was executed"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused(f"unexpected persistent id {pid!r:.200}")
        _, stype, key, location, numel = pid
        if not isinstance(stype, _StorageType):
            raise _Refused(f"persistent id names {stype!r:.100}, not a storage type")
        if not isinstance(key, str) or not isinstance(location, str):
            raise _Refused(f"bad storage key/location {key!r:.100}/{location!r:.100}")
        if type(numel) is not int or numel < 0:
            raise _Refused(f"bad storage size {numel!r:.100}")
        return self._archive.storage(key, stype.dtype, numel)


class _TorchArchive(_fileio.ZipReader):
    """The zip container of ``torch.save``: ``<root>/data.pkl``, ``<root>/data/<key>``."""

    def __init__(self, path: Any, max_bytes: Any, mmap: bool) -> None:
        super().__init__(path, max_bytes, "PyTorch state_dict file (torch.save zip format)")
        self.mmap = mmap
        self.storages: dict[str, _Storage] = {}
        try:
            pkls = [n for n in self.names() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise self.error(f"expected one <name>/data.pkl member, found {len(pkls)}")
            self.root = pkls[0][: -len("data.pkl")]
            order = b"little"
            if self.root + "byteorder" in self:
                order = self.read_bytes(self.root + "byteorder", max_size=16).strip()
            if order not in (b"little", b"big"):
                raise self.error(f"byteorder is {order!r}")
            self.order = "<" if order == b"little" else ">"
        except BaseException:
            self.close()
            raise

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where a member's data starts in the file (after its local header)."""
        self._fh.seek(info.header_offset)
        head = self._fh.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise self.error(f"member {info.filename!r}: bad local header")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.compress_size > self.file_size:
            raise self.error(f"member {info.filename!r} is truncated")
        return start

    def storage(self, key: str, dtype: Any, numel: int) -> _Storage:
        found = self.storages.get(key)
        if found is not None:
            if found.dtype != dtype:
                raise _Refused(f"storage {key!r} is named with two dtypes")
            return found
        name = f"{self.root}data/{key}"
        if name not in self:
            raise self.error(f"no member {name!r} for storage {key!r}")
        npd = np.dtype(np.uint8) if dtype is None else _np_dtype(dtype)
        nbytes = numel * npd.itemsize  # UntypedStorage: numel is in bytes
        info = self._info(name)
        if info.file_size != nbytes:
            raise self.error(
                f"member {name!r} is {info.file_size} bytes, its storage declares {nbytes}"
            )
        data = self._storage_array(info, nbytes, npd)
        if npd.itemsize > 1 and self.order != _native():
            self._take(nbytes, name)
            data = data.view(npd.newbyteorder(">" if self.order == ">" else "<")).astype(npd)
        st = _Storage(key, dtype, data, self)
        self.storages[key] = st
        return st

    def _storage_array(self, info: zipfile.ZipInfo, nbytes: int, npd: np.dtype) -> np.ndarray:
        name = info.filename
        if info.compress_type == zipfile.ZIP_STORED:
            start = self._data_offset(info)
            if self.mmap and nbytes >= MMAP_MIN_BYTES and start % npd.itemsize == 0:
                return _mmap(self.path, start, nbytes, npd)
            self._take(nbytes, name)
            try:
                return _read_at(self._fh, start, nbytes, npd, f"member {name!r}", info.CRC)
            except ValueError as exc:
                raise self.error(str(exc)) from None
        return self.read_raw(name, npd, (nbytes // npd.itemsize,))


def _is_legacy(path: Any) -> bool:
    """A legacy torch.save file starts with a pickled magic number (protocol 2 long)."""
    try:
        with _fileio.open_regular(path) as fh:
            return fh.read(4) == b"\x80\x02\x8a\x0a"
    except OSError:
        return False


def _native() -> str:
    return "<" if np.little_endian else ">"


def _flatten(
    obj: Any, prefix: str, out: dict[str, np.ndarray], what: str, budget: list[int]
) -> None:
    budget[0] -= 1
    if budget[0] < 0:  # shared sub-dicts can describe exponentially many entries
        raise ValueError(f"{what}: the pickle describes more entries than its size allows")
    if isinstance(obj, _Tensor):
        out[prefix] = obj.array
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(f"{what}: a key is a {type(key).__name__}, not a str")
            if value is obj:
                raise ValueError(f"{what}: {key!r} contains itself")
            _flatten(value, f"{prefix}.{key}" if prefix else key, out, what, budget)
        return
    if type(obj) in (int, float, bool) and prefix:
        # numbers stored beside tensors in a checkpoint (an epoch count, ...)
        try:
            out[prefix] = np.asarray(obj)
        except OverflowError:
            raise ValueError(f"{what}: {prefix!r} is an integer too large for int64") from None
        return
    raise ValueError(
        f"{what}: {prefix or 'the top-level object'!r} is a {type(obj).__name__}; a state_dict "
        "file holds a dict of tensors (nested dicts and numbers are accepted too)"
    )


def load_torch(
    path: str | os.PathLike, *, max_bytes: int | None = None, mmap: bool = True
) -> dict[str, np.ndarray]:
    """Read a state_dict that ``torch.save`` wrote (zip format) without torch or pickle's
    code execution.

    Args:
        path: the file (``torch.save(model.state_dict(), path)``).
        max_bytes: the most bytes the reader may allocate (default ``max(256 MiB, 100 x
            the file's size)``; see :mod:`pyfastopt._fileio`).
        mmap: memory-map (copy-on-write) the tensors of at least 1 MiB that are stored
            uncompressed and aligned, instead of reading them (see the module docstring).

    Returns:
        ``{name: ndarray}`` in the file's order. Tensors that share a storage share
        memory, as in PyTorch (views, tied weights); non-contiguous tensors are strided
        views. A checkpoint of nested dicts is flattened with dotted names
        (``{"model": {"w": t}, "epoch": 3}`` -> ``{"model.w": ..., "epoch": array(3)}``).
        bfloat16 tensors become float32 (exactly); other dtypes are kept.

    Raises:
        ValueError: not a torch zip file (the legacy, pre-1.6 format included), a
            truncated or corrupt file, a global other than the state_dict's (naming it;
            nothing is executed), an unsupported dtype, a tensor outside its storage,
            or more data than ``max_bytes`` (:class:`pyfastopt._fileio.FileTooLargeError`).
        FileNotFoundError, PermissionError: as ``open`` raises them.
    """
    mmap = boolean("mmap", mmap)
    try:
        archive = _TorchArchive(path, max_bytes, mmap)
    except ValueError as exc:
        if isinstance(exc, _fileio.FileTooLargeError) or not _is_legacy(path):
            raise
        raise ValueError(
            f"{os.fspath(path)} is in torch.save's legacy format (before PyTorch 1.6, or "
            "_use_new_zipfile_serialization=False), which this reader does not read; "
            "re-save it with a current torch.save"
        ) from None
    with archive:
        pkl = archive.read_bytes(archive.root + "data.pkl")
        try:
            obj = _StateUnpickler(io.BytesIO(pkl), archive).load()
        except _Refused as exc:
            raise archive.error(str(exc)) from None
        except ValueError:
            raise
        except Exception as exc:  # UnpicklingError, EOFError, TypeError of a bad REDUCE...
            raise archive.error(f"bad pickle ({type(exc).__name__}: {exc})") from None
        out: dict[str, np.ndarray] = {}
        try:
            _flatten(obj, "", out, f"{archive.path} (PyTorch state_dict file)", [len(pkl)])
        except RecursionError:
            raise archive.error("its dicts are nested too deeply (or contain themselves)") from None
    return out


# ----------------------------------------------------------------------------- safetensors
_ST_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": _BF16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
#: safetensors' own limit on the JSON header
_ST_MAX_HEADER = 100_000_000


def load_safetensors(
    path: str | os.PathLike, *, max_bytes: int | None = None, mmap: bool = True
) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file: ``{name: ndarray}`` in the order of the data.

    The format: an 8-byte little-endian header length, a JSON header ``{name: {"dtype",
    "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the data.
    Every entry is checked before anything is read: a known dtype (``F64 F32 F16 BF16
    I64 I32 I16 I8 U64 U32 U16 U8 BOOL``; bfloat16 becomes float32), non-negative int
    shape, ``end - begin == prod(shape) x itemsize``, and the entries tile the data
    exactly (no overlap, no gap, nothing past the end), as the safetensors package
    requires. ``mmap`` and ``max_bytes`` as in :func:`load_torch`.

    Raises:
        ValueError: any violation of the above, a truncated file, more data than
            ``max_bytes`` (:class:`pyfastopt._fileio.FileTooLargeError`).
    """
    mmap = boolean("mmap", mmap)
    _fileio.check_max_bytes(max_bytes)
    where = os.fspath(path)

    def bad(why: str) -> ValueError:
        return ValueError(f"{where} is not a valid safetensors file: {why}")

    with _fileio.open_regular(path, "safetensors file") as fh:
        size = _file_size(fh)
        limit = _fileio.byte_limit(size, max_bytes)
        head = fh.read(8)
        if len(head) != 8:
            raise bad(f"it is {size} bytes, shorter than the 8-byte header length")
        (hlen,) = struct.unpack("<Q", head)
        if hlen > min(size - 8, _ST_MAX_HEADER):
            raise bad(f"the header declares {hlen} bytes, the file has {size - 8} after it")
        header = _fileio.parse_json(_fileio.read_capped(fh, hlen, "header"), "its header")
        if not isinstance(header, dict):
            raise bad("the header is not a JSON object")
        base = 8 + hlen
        buffer_len = size - base
        entries = []
        for name, spec in header.items():
            if name == "__metadata__":
                if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
                    raise bad("__metadata__ must map strings to strings")
                continue
            if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
                raise bad(f"tensor {name!r}: expected keys dtype, shape, data_offsets")
            code = spec["dtype"]
            if code not in _ST_DTYPES:
                raise bad(
                    f"tensor {name!r} has dtype {code!r}; this reader supports "
                    + ", ".join(_ST_DTYPES)
                )
            shape = spec["shape"]
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                raise bad(f"tensor {name!r}: shape must be a list of ints >= 0, got {shape!r}")
            offs = spec["data_offsets"]
            if (
                not isinstance(offs, list)
                or len(offs) != 2
                or not all(type(o) is int for o in offs)
                or not 0 <= offs[0] <= offs[1]
            ):
                raise bad(f"tensor {name!r}: bad data_offsets {offs!r}")
            npd = _np_dtype(_ST_DTYPES[code])
            nbytes = math.prod(shape) * npd.itemsize
            if offs[1] - offs[0] != nbytes:
                raise bad(
                    f"tensor {name!r}: {code}{tuple(shape)} needs {nbytes} bytes, its "
                    f"data_offsets span {offs[1] - offs[0]}"
                )
            entries.append((offs[0], offs[1], name, code, tuple(shape), npd))
        entries.sort(key=lambda e: (e[0], e[1]))
        pos = 0
        for begin, end, name, *_ in entries:
            if begin != pos:
                raise bad(
                    f"tensor {name!r} starts at byte {begin} of the data, expected {pos} "
                    "(the tensors must tile the data without gaps or overlaps)"
                )
            pos = end
        if pos != buffer_len:
            raise bad(f"the tensors cover {pos} bytes of data, the file holds {buffer_len}")
        total = sum(e[1] - e[0] for e in entries)
        if total > limit:
            raise _fileio.FileTooLargeError(
                f"{where} declares {total} bytes of data, more than this reader's limit of "
                f"{limit} bytes; if you trust the file, pass a larger max_bytes="
            )
        out: dict[str, np.ndarray] = {}
        for begin, end, name, code, shape, npd in sorted(entries, key=lambda e: e[0]):
            nbytes = end - begin
            start = base + begin
            if mmap and nbytes >= MMAP_MIN_BYTES and start % npd.itemsize == 0:
                flat = _mmap(where, start, nbytes, npd)
            else:
                flat = _read_at(fh, start, nbytes, npd, f"tensor {name!r}")
            if not np.little_endian:  # pragma: no cover - big-endian hosts
                flat = flat.view(npd.newbyteorder("<")).astype(npd)
            arr = flat.reshape(shape)
            out[name] = _widen_bf16(arr) if code == "BF16" else arr
    return out
