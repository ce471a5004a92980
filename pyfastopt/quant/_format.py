"""The int8 model file: a versioned npz (zip of ``.npy`` members) with a JSON header.

Layout (format version 1)::

    header.json          UTF-8 JSON: {"format": "pyfastopt.int8-model", "version": 1,
                                      "arrays": {name: {"dtype": str, "shape": [int]}},
                                      "model": {...}}   (the layer graph, see model.py)
    <name>.npy           one member per entry of "arrays", NumPy format 1.0/2.0/3.0

``numpy.load`` opens such a file (its arrays by name; ``header.json`` comes back as
raw bytes). Nothing is ever unpickled: object arrays are refused before any data is read,
every member's dtype and shape must match the header, and sizes are bounded by the header
before decompression, so a corrupt, truncated, hostile or foreign file raises
``ValueError`` and nothing else.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from .. import _fileio

FORMAT_NAME = "pyfastopt.int8-model"
FORMAT_VERSION = 1
HEADER = "header.json"
_MAX_HEADER_BYTES = 1 << 20
# dtypes a model file may hold; anything else (object, void, strings...) is refused.
_DTYPES = {"int8", "uint8", "int32", "float32", "float64"}


class ModelFileError(ValueError):
    """Raised for a file that is not a valid pyfastopt int8 model (a ValueError)."""


def write(path: str | os.PathLike, model: dict[str, Any], arrays: dict[str, np.ndarray]) -> int:
    """Write ``arrays`` and the JSON-able ``model`` description to ``path``; returns bytes.

    Written with :func:`pyfastopt._fileio.atomic_write` (a uniquely named temporary file
    beside ``path``, fsync, rename): a crash while saving never leaves a truncated model
    under the final name, the previous file stays intact, and concurrent saves to one
    path do not collide.
    """
    meta = {}
    for name, arr in arrays.items():
        if not name.isidentifier() or arr.dtype.name not in _DTYPES:
            raise ValueError(f"cannot store array {name!r} of dtype {arr.dtype}")
        meta[name] = {"dtype": arr.dtype.name, "shape": list(arr.shape)}
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "arrays": meta, "model": model}
    blob = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False).encode(
        "utf-8"
    )
    if len(blob) > _MAX_HEADER_BYTES:
        raise ValueError(f"the model description is {len(blob)} bytes of JSON, over 1 MiB")
    with _fileio.atomic_write(path) as fh:
        # Deflated: pruned (sparse) int8 weights shrink by the sparsity; inflating is
        # fast next to the rest of a start-up (about 1 ms per MB).
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(HEADER, blob)
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                zf.writestr(f"{name}.npy", buf.getvalue())
        size = fh.tell()
    return size


def _fail(path: Any, why: str) -> ModelFileError:
    return ModelFileError(f"{os.fspath(path)!s} is not a valid pyfastopt int8 model file: {why}")


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a model file; returns ``(model description, arrays)``.

    Raises:
        ValueError (:class:`ModelFileError`): not a zip, no or bad header, another format
            or a newer version, a member missing, extra, of the wrong size, dtype or shape,
            or any array that would need unpickling.
        FileNotFoundError / PermissionError / IsADirectoryError: as ``open`` does.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()  # one read; model files are small (int8 weights)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # BadZipFile, NotImplementedError (odd versions), bad names...
        raise _fail(path, f"not a zip/npz archive ({type(exc).__name__}: {exc})") from None
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
        if HEADER not in infos:
            raise _fail(path, f"no {HEADER} member (a plain npz, or another program's file?)")
        if infos[HEADER].file_size > _MAX_HEADER_BYTES:
            raise _fail(path, "header too large")
        try:
            header = json.loads(zf.read(HEADER).decode("utf-8"))
        except Exception as exc:  # zlib/CRC errors, bad UTF-8, bad JSON
            raise _fail(path, f"unreadable header ({type(exc).__name__}: {exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise _fail(path, f"header format is not {FORMAT_NAME!r}")
        version = header.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise _fail(path, "header has no integer version")
        if version > FORMAT_VERSION:
            raise _fail(
                path,
                f"format version {version} is newer than this pyfastopt "
                f"reads ({FORMAT_VERSION}); upgrade pyfastopt",
            )
        if version < 1:
            raise _fail(path, f"bad format version {version}")
        meta, model = header.get("arrays"), header.get("model")
        if not isinstance(meta, dict) or not isinstance(model, dict):
            raise _fail(path, "header lacks 'arrays' or 'model'")
        expected = {f"{name}.npy" for name in meta} | {HEADER}
        if set(infos) != expected:
            extra = sorted(set(infos) - expected)
            missing = sorted(expected - set(infos))
            raise _fail(
                path, f"members do not match the header (missing {missing}, unexpected {extra})"
            )
        arrays = {
            name: _read_member(path, zf, infos[f"{name}.npy"], name, spec)
            for name, spec in meta.items()
        }
    return model, arrays


def _read_member(
    path: Any, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, spec: Any
) -> np.ndarray:
    if not (
        isinstance(spec, dict)
        and spec.get("dtype") in _DTYPES
        and isinstance(spec.get("shape"), list)
        and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in spec["shape"]
        )
    ):
        raise _fail(path, f"array {name!r}: bad dtype/shape entry {spec!r}")
    dtype = np.dtype(spec["dtype"])
    shape = tuple(spec["shape"])
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    # A .npy header is at most a few KiB; refuse members whose declared size does not
    # fit the header's shape before decompressing anything (no zip bombs).
    if not nbytes <= info.file_size <= nbytes + 65536:
        raise _fail(
            path,
            f"array {name!r}: member size {info.file_size} does not match shape {shape} of {dtype}",
        )
    try:
        with zf.open(info) as fh:
            raw = fh.read()
        arr = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # CRC mismatch, truncated, bad npy header, pickle refused
        raise _fail(path, f"array {name!r}: {type(exc).__name__}: {exc}") from None
    if arr.dtype != dtype or arr.shape != shape:
        raise _fail(path, f"array {name!r} is {arr.dtype}{arr.shape}, header says {dtype}{shape}")
    return np.ascontiguousarray(arr)
