"""The int8 model file: a versioned npz (zip of ``.npy`` members) with a JSON header.

Layout (format version 2; version 1 files, MLPs only, still load)::

    header.json          UTF-8 JSON: {"format": "pyfastopt.int8-model", "version": 2,
                                      "arrays": {name: {"dtype": str, "shape": [int]}},
                                      "model": {...}}   (the layer graph, see model.py)
    <name>.npy           one member per entry of "arrays", NumPy format 1.0/2.0/3.0

Version 2 adds the model kind ``"graph"`` (convolutional models: conv, pooling, flatten,
linear and residual nodes, see :mod:`pyfastopt.quant.cnn`); ``"sequential"`` (the MLP
chain) is unchanged from version 1.

``numpy.load`` opens such a file (its arrays by name; ``header.json`` comes back as
raw bytes). Nothing is ever unpickled: object arrays are refused before any data is read,
every member's dtype and shape must match the header, and sizes are bounded by the header
before decompression, so a corrupt, truncated, hostile or foreign file raises
``ValueError`` and nothing else.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import Any

import numpy as np

from .. import _fileio, _schema

FORMAT_NAME = "pyfastopt.int8-model"
FORMAT_VERSION = 2
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


class _ModelZip(_fileio.ZipReader):
    def error(self, why: str) -> ValueError:
        return _fail(self.path, why)


class _AnyJson(_schema.Schema):
    """Any JSON value (the model description is checked by its reader, model.load)."""

    expected = "JSON"

    def ok(self, value: Any) -> bool:
        return True


_SHAPE = _schema.List(_schema.Int(0, 2**31 - 1), max_len=32)
_ARRAY_SPEC = _schema.Dict(
    required={"dtype": _schema.Choice(*sorted(_DTYPES)), "shape": _SHAPE}, max_keys=2
)
_HEADER_SCHEMA = _schema.Dict(
    required={
        "format": _schema.Choice(FORMAT_NAME),
        "version": _schema.Int(1, FORMAT_VERSION),
        "arrays": _schema.Dict(extra=_ARRAY_SPEC, keys=_schema.Str(128), max_keys=1 << 16),
        "model": _schema.Dict(extra=_AnyJson(), max_keys=4096),
    }
)


def read(
    path: str | os.PathLike, max_bytes: int | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a model file; returns ``(model description, arrays)``.

    ``max_bytes``: the most bytes the arrays may take once read (default
    ``max(256 MiB, 100 x the file's size)``, see :mod:`pyfastopt._fileio`); a file that
    declares more is refused before anything large is allocated or decompressed.

    Raises:
        ValueError (:class:`ModelFileError`, or :class:`pyfastopt._fileio.FileTooLargeError`
            over the limit): not a zip, no or bad header, another format or a newer
            version, a member missing, extra, of the wrong size, dtype or shape, or any
            array that would need unpickling.
        FileNotFoundError / PermissionError / IsADirectoryError: as ``open`` does.
    """
    with _ModelZip(path, max_bytes, "pyfastopt int8 model file") as zf:
        path = zf.path
        if HEADER not in zf:
            raise _fail(path, f"no {HEADER} member (a plain npz, or another program's file?)")
        if zf.declared_size(HEADER) > _MAX_HEADER_BYTES:
            raise _fail(path, "header too large")
        blob = zf.read_bytes(HEADER)
        try:
            header = _fileio.parse_json(blob, "its header")
        except ValueError as exc:
            raise _fail(path, f"unreadable header ({exc})") from None
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
        try:
            _HEADER_SCHEMA.check(header, "header")
        except ValueError as exc:
            raise _fail(path, str(exc)) from None
        meta, model = header["arrays"], header["model"]
        expected = {f"{name}.npy" for name in meta} | {HEADER}
        if set(zf.names()) != expected:
            extra = sorted(set(zf.names()) - expected)
            missing = sorted(expected - set(zf.names()))
            raise _fail(
                path, f"members do not match the header (missing {missing}, unexpected {extra})"
            )
        # the declared total, from the header's shapes, against the limit first
        need = sum(
            math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize for spec in meta.values()
        )
        if need > zf.limit:
            raise _fileio.FileTooLargeError(
                f"{path} declares {need} bytes of arrays, more than this reader's limit of "
                f"{zf.limit} bytes (max(256 MiB, 100 x the file's size)); if you trust the "
                f"file, pass a larger max_bytes= (at least {need})"
            )
        arrays = {}
        for name, spec in meta.items():
            dtype = np.dtype(spec["dtype"])
            shape = tuple(spec["shape"])
            arr = zf.read_npy(f"{name}.npy", dtypes=[dtype])
            if arr.shape != shape:
                raise _fail(
                    path, f"array {name!r} is {arr.dtype}{arr.shape}, header says {dtype}{shape}"
                )
            arrays[name] = arr
    return model, arrays
