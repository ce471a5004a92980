"""Reading an ONNX file without copying its weights.

``onnx``'s protobuf parser copies every initializer's ``raw_data`` into a bytes object
and ``numpy_helper.to_array`` copies it again. :func:`split` walks the protobuf wire
format of the ``ModelProto`` -> ``GraphProto`` -> ``TensorProto`` path by hand instead,
takes each initializer's ``raw_data`` as a NumPy view of the file's bytes (a memory map),
and hands protobuf a copy of the model with those payloads cut out: only the graph's
structure is parsed, which is small.

Anything unexpected (a field encoded twice, a wire type the path does not use, a length
past the end) makes :func:`split` return None, and the caller parses the whole file
with protobuf as before, which reports what is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# TensorProto.DataType -> little-endian NumPy dtype (the types raw_data may hold here)
_DTYPES = {
    1: "<f4",
    2: "u1",
    3: "i1",
    4: "<u2",
    5: "<i2",
    6: "<i4",
    7: "<i8",
    9: "?",
    10: "<f2",
    11: "<f8",
    12: "<u4",
    13: "<u8",
}

#: initializers smaller than this are copied (they do not pin the file's mapping)
_VIEW_MIN_BYTES = 1 << 16


class _Bad(Exception):
    pass


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Bad
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: Any, pos: int, end: int):  # type: ignore[no-untyped-def]
    """(field, wire type, start of the field, start of the payload, end) of each field."""
    while pos < end:
        start = pos
        tag, pos = _varint(buf, pos, end)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
            yield field, wire, start, pos, pos
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Bad
            yield field, wire, start, pos, pos + n
            pos += n
        elif wire == 1:
            pos += 8
            yield field, wire, start, pos - 8, pos
        elif wire == 5:
            pos += 4
            yield field, wire, start, pos - 4, pos
        else:
            raise _Bad
        if pos > end:
            raise _Bad


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tensor(buf: Any, pos: int, end: int) -> tuple[bytes, str, np.ndarray] | None:
    """An initializer: (its bytes without raw_data, name, the data as a view), or None
    when it has no raw_data (kept for protobuf)."""
    dims: list[int] = []
    dtype = 1
    name = b""
    raw: tuple[int, int] | None = None
    kept = []
    for field, wire, start, a, b in _fields(buf, pos, end):
        if field == 9 and wire == 2:
            if raw is not None:
                raise _Bad
            raw = (a, b)
            continue
        kept.append(bytes(buf[start:b]))
        if field == 1:
            if wire == 0:
                dims.append(_last_varint(buf, start, b))
            elif wire == 2:
                p = a
                while p < b:
                    d, p = _varint(buf, p, b)
                    dims.append(d)
            else:
                raise _Bad
        elif field == 2 and wire == 0:
            dtype = _last_varint(buf, start, b)
        elif field == 8 and wire == 2:
            name = bytes(buf[a:b])
        elif field in (13, 14):  # external data: protobuf and the caller handle it
            return None
    if raw is None:
        return None
    np_dtype = _DTYPES.get(dtype)
    if np_dtype is None:
        return None
    dt = np.dtype(np_dtype)
    nbytes = raw[1] - raw[0]
    count = 1
    for d in dims:
        if d >= 1 << 62:  # negative in int64
            raise _Bad
        count *= d
    if count * dt.itemsize != nbytes:
        raise _Bad  # protobuf's parse will say what is wrong
    arr = np.frombuffer(buf, dtype=dt, count=count, offset=raw[0]).reshape(dims)
    if nbytes < _VIEW_MIN_BYTES:
        arr = arr.copy()
    if dt.byteorder == ">" or (dt.byteorder == "<" and np.little_endian is False):
        arr = arr.astype(dt.newbyteorder("="))
    return b"".join(kept), name.decode("utf-8", "replace"), arr


def _last_varint(buf: Any, start: int, end: int) -> int:
    """The value of a varint field spanning [start, end) (tag included)."""
    _, pos = _varint(buf, start, end)
    return _varint(buf, pos, end)[0]


def split(buf: Any) -> tuple[bytes, dict[str, np.ndarray]] | None:
    """(the model's bytes without the graph initializers' raw_data, {name: array}) of an
    ONNX file's bytes ``buf`` (bytes or a memory map), or None (parse it whole)."""
    try:
        return _split(buf)
    except (_Bad, IndexError, ValueError):
        return None


def _split(buf: Any) -> tuple[bytes, dict[str, np.ndarray]] | None:
    end = len(buf)
    graph = None
    for field, wire, start, a, b in _fields(buf, 0, end):
        if field == 7:
            if wire != 2 or graph is not None:
                return None
            graph = (start, a, b)
    if graph is None:
        return None
    g_start, g_a, g_b = graph
    pieces: list[bytes] = []
    arrays: dict[str, np.ndarray] = {}
    tag5 = _encode_varint((5 << 3) | 2)
    for field, wire, start, a, b in _fields(buf, g_a, g_b):
        if field == 5 and wire == 2:
            t = _tensor(buf, a, b)
            if t is not None:
                body, name, arr = t
                if name in arrays:
                    return None
                arrays[name] = arr
                pieces.append(tag5 + _encode_varint(len(body)) + body)
                continue
        pieces.append(bytes(buf[start:b]))
    if not arrays:
        return None
    g_body = b"".join(pieces)
    model = (
        bytes(buf[:g_start])
        + _encode_varint((7 << 3) | 2)
        + _encode_varint(len(g_body))
        + g_body
        + bytes(buf[g_b:end])
    )
    return model, arrays
