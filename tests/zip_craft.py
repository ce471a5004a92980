"""Hand-built zip archives for hostile-file tests: any declared size, CRC or content.

``zip_bytes(members)`` lays out local headers, data, the central directory and the end
record with ``struct``, so a test can declare sizes the data does not have. Decompression
bombs are built in milliseconds: a deflate stream of N zero bytes is one compressed
1 MiB block (full-flushed, so every copy is identical) repeated N / 1 MiB times.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

_MIB = 1 << 20


@dataclass
class Member:
    name: str
    data: bytes  # as stored (compressed when method == 8)
    size: int  # declared uncompressed size
    crc: int
    method: int = 0  # 0 stored, 8 deflated


def stored(name: str, data: bytes) -> Member:
    return Member(name, data, len(data), zlib.crc32(data), 0)


def deflated(name: str, data: bytes) -> Member:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return Member(name, c.compress(data) + c.flush(), len(data), zlib.crc32(data), 8)


def _zeros_stream(n: int) -> bytes:
    """Raw deflate of ``n`` zero bytes, without compressing ``n`` bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(_MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(n, _MIB)
    return block * full + c.compress(bytes(rest)) + c.flush()


def zeros_bomb(name: str, head: bytes, zeros: int) -> Member:
    """``head`` then ``zeros`` zero bytes, deflated (a few hundred KB per 512 MiB). The CRC
    is right up to 64 MiB of zeros; beyond, it is left 0 (computing it would read every
    byte, and readers must refuse such members before their CRC matters)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH) + _zeros_stream(zeros)
    crc = zlib.crc32(bytes(zeros), zlib.crc32(head)) if zeros <= 64 * _MIB else 0
    return Member(name, data, len(head) + zeros, crc, 8)


def zip_bytes(members: list[Member]) -> bytes:
    out, central = bytearray(), bytearray()
    for m in members:
        name = m.name.encode()
        offset = len(out)
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, m.method, 0, 0x21, m.crc, len(m.data), m.size,
            len(name), 0,
        )  # fmt: skip
        out += name + m.data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, m.method, 0, 0x21, m.crc, len(m.data),
            m.size, len(name), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += name
    out += central
    out += struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
        len(out) - len(central), 0,
    )  # fmt: skip
    return bytes(out)


def npy_header(dtype, shape) -> bytes:
    """The bytes of a .npy header (version 1.0) for ``dtype`` and ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": tuple(shape),
        },
    )
    return buf.getvalue()


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def checkpoint_header(header) -> bytes:
    """An optimizer checkpoint's ``__header__.npy`` member holding ``header`` (any JSON
    value, or raw bytes/str used as the JSON text)."""
    if isinstance(header, str):
        text = header.encode()
    elif isinstance(header, bytes):
        text = header
    else:
        text = json.dumps(header).encode()
    return npy_bytes(np.frombuffer(text, np.uint8))
