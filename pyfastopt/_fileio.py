"""Files you can trust: crash-safe writers and bounded readers, shared by every format.

Every pyfastopt writer goes through :func:`atomic_write` and every reader of a zip/npz
container through :class:`ZipReader` (other containers use :func:`byte_limit` and
:func:`read_capped`); JSON headers are parsed by :func:`parse_json` and checked with
:mod:`pyfastopt._schema`. New formats (ONNX export, nn state files, torch/safetensors
readers) should use the same helpers, so the rules below hold for all of them.

Writers -- :func:`atomic_write`
    The data goes to a uniquely named temporary file in the target's folder
    (``<name>.<8 hex digits>.pyfastopt-tmp``), is flushed and ``fsync``-ed, then renamed
    over the target with :func:`os.replace` (atomic on POSIX and Windows) and the folder
    is ``fsync``-ed. Readers of ``path`` therefore see the old file or the new one, never
    a mixture; a crash, an exception or a ``KeyboardInterrupt`` during the write leaves
    the previous file untouched, and the temporary file is removed on any failure the
    process survives. Concurrent writers to one path (threads or processes) never
    collide: the last rename wins and the file is always complete.

    ``kill -9`` (or a power cut) cannot run any cleanup: the temporary file stays
    behind, complete or not, never under the target's name. Each writer holds an
    exclusive ``flock`` on its temporary file while it writes, and the next
    :func:`atomic_write` to the same target removes the temporary files of that target
    that no live writer holds (:func:`remove_stale_temps`).

    The new file gets the permission bits of the file it replaces, or ``0o666`` minus
    the umask when there is none (what ``open(path, "wb")`` gives). A target that is a
    symbolic link is written through: the link stays, the file it points to is replaced.

Readers -- :func:`byte_limit`, :class:`ZipReader`
    A reader never allocates more than ``max(256 MiB, 100 x the file's size)`` unless the
    caller passes a larger ``max_bytes=`` (:data:`MIN_LIMIT`, :data:`SIZE_RATIO`), like
    Pillow's decompression-bomb limit. The declared sizes (the zip directory's, then each
    ``.npy`` header's shape x itemsize) are checked against the limit *before* anything
    large is allocated or decompressed, and members are then read by streaming with a cap
    (a member that inflates to more, or less, than it declares is refused), so refusing a
    bomb costs milliseconds and no memory. Every failure is a ``ValueError``
    (:class:`FileTooLargeError` for the limit); ``FileNotFoundError`` and the other
    ``OSError``\\ s of opening the file pass through.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

try:  # POSIX advisory locks guard temporary files against the stale-file cleanup
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, no cleanup of stale temps
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MIN_LIMIT",
    "SIZE_RATIO",
    "TEMP_SUFFIX",
    "FileTooLargeError",
    "ZipReader",
    "atomic_write",
    "atomic_write_bytes",
    "byte_limit",
    "check_max_bytes",
    "open_regular",
    "parse_json",
    "read_capped",
    "remove_stale_temps",
]

#: readers may always allocate this much (bytes), whatever the file's size
MIN_LIMIT = 256 << 20
#: ... or this many times the file's size, whichever is larger
SIZE_RATIO = 100
#: the suffix of every temporary file atomic_write creates
TEMP_SUFFIX = ".pyfastopt-tmp"

_CHUNK = 1 << 20
_TOKEN_HEX = 8
# temporary files this process is writing right now (cleanup never touches them, even
# on file systems whose flock is emulated per process, e.g. NFS)
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


# ----------------------------------------------------------------------------- writers
def _resolve_target(path: Any) -> str:
    """``path`` as a str; a symbolic link is followed to the file it names."""
    target = os.fspath(path)
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if not isinstance(target, str) or not target:
        raise ValueError(f"path must be a non-empty file name, got {path!r}")
    if os.path.islink(target):
        target = os.path.realpath(target)
    return target


def _temp_prefix(target: str) -> tuple[str, str]:
    """(folder, name prefix) of the temporary files for ``target``."""
    folder, base = os.path.split(target)
    # keep the temporary name within the usual 255-byte limit of a file name
    keep = 255 - len(TEMP_SUFFIX) - _TOKEN_HEX - 1
    while len(os.fsencode(base)) > keep:
        base = base[:-1]
    return folder or ".", base + "."


def _is_temp_name(name: str, prefix: str) -> bool:
    if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
        return False
    token = name[len(prefix) : len(name) - len(TEMP_SUFFIX)]
    return len(token) == _TOKEN_HEX and all(c in "0123456789abcdef" for c in token)


def _try_lock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        if exc.errno in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
            return True  # no locks on this file system: the in-process set still guards
        raise
    return True


def remove_stale_temps(path: Any) -> list[str]:
    """Remove the temporary files a killed :func:`atomic_write` to ``path`` left behind.

    A temporary file is stale when no process holds its lock (its writer died) and this
    process is not writing it. Called by every :func:`atomic_write`; call it yourself to
    clean a folder without saving. Returns the removed paths. Errors (permissions, a
    vanished folder) are ignored: cleanup never fails a save. Without ``fcntl`` (Windows)
    it does nothing.
    """
    if fcntl is None:  # pragma: no cover
        return []
    folder, prefix = _temp_prefix(_resolve_target(path))
    removed: list[str] = []
    try:
        entries = [e.name for e in os.scandir(folder) if _is_temp_name(e.name, prefix)]
    except OSError:
        return removed
    for name in entries:
        full = os.path.join(folder, name)
        with _ACTIVE_LOCK:
            if full in _ACTIVE:
                continue
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not _try_lock(fd):
                continue  # a live writer
            st = os.fstat(fd)
            now = os.stat(full, follow_symlinks=False)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino) and stat.S_ISREG(st.st_mode):
                os.unlink(full)
                removed.append(full)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _create_temp(target: str) -> tuple[int, str]:
    """A new, locked, empty temporary file beside ``target``: (fd, path)."""
    folder, prefix = _temp_prefix(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{os.urandom(_TOKEN_HEX // 2).hex()}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for open(path, "wb")
        except FileExistsError:
            continue
        with _ACTIVE_LOCK:
            _ACTIVE.add(tmp)
        # A concurrent cleanup may have locked and unlinked the file between our create
        # and our lock: then the name no longer links to our file, and we start over.
        try:
            ours = _try_lock(fd) and os.fstat(fd).st_nlink > 0
            if ours and mode is not None:
                with contextlib.suppress(OSError):
                    os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with _ACTIVE_LOCK:
                _ACTIVE.discard(tmp)
            raise
        if ours:
            return fd, tmp
        os.close(fd)
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)
    raise FileExistsError(f"could not create a temporary file beside {target}")


def _fsync_folder(folder: str) -> None:
    """Make the rename durable. Some file systems cannot fsync a folder: best effort."""
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Any) -> Iterator[IO[bytes]]:
    """Write a file crash-safely: ``with atomic_write(path) as f: f.write(...)``.

    Yields a binary, seekable file object on a new temporary file beside ``path``; when
    the ``with`` block ends normally the file is flushed, ``fsync``-ed and renamed over
    ``path`` (see the module docstring for the guarantees). If the block raises
    (``KeyboardInterrupt`` included) the temporary file is removed and ``path`` is left
    as it was. Stale temporary files of earlier, killed writes to ``path`` are removed
    first (:func:`remove_stale_temps`).

    Raises:
        ValueError: ``path`` is empty.
        OSError: as ``open(path, "wb")`` would (missing folder, permissions, disk full).
    """
    target = _resolve_target(path)
    remove_stale_temps(target)
    fd, tmp = _create_temp(target)
    try:
        fh = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)
        raise
    try:
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            fh.close()  # releases the lock, after the rename
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)
    _fsync_folder(os.path.dirname(target) or ".")


def atomic_write_bytes(path: Any, data: bytes) -> int:
    """Write ``data`` to ``path`` with :func:`atomic_write`; returns the number of bytes."""
    with atomic_write(path) as fh:
        fh.write(data)
    return len(data)


# ----------------------------------------------------------------------------- readers
class FileTooLargeError(ValueError):
    """A file declares more data than the reader's byte limit allows (a ValueError)."""


def check_max_bytes(max_bytes: Any) -> int | None:
    """Validate a reader's ``max_bytes=`` argument: None or an int >= 0."""
    if max_bytes is None:
        return None
    if isinstance(max_bytes, (bool, np.bool_)) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"max_bytes must be an int or None, got {type(max_bytes).__name__}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    return int(max_bytes)


def byte_limit(file_size: int, max_bytes: Any = None) -> int:
    """The most bytes a reader may allocate for a file of ``file_size`` bytes.

    ``max(MIN_LIMIT, SIZE_RATIO * file_size)`` (256 MiB, or 100x the file), or
    ``max_bytes`` when the caller gives one (it replaces the default, larger or smaller).
    """
    limit = check_max_bytes(max_bytes)
    if limit is None:
        limit = max(MIN_LIMIT, SIZE_RATIO * int(file_size))
    return limit


def _too_large(what: str, need: int, limit: int) -> FileTooLargeError:
    return FileTooLargeError(
        f"{what} declares {need} bytes of data, more than this reader's limit of {limit} "
        f"bytes (max(256 MiB, 100 x the file's size)); if you trust the file, pass a "
        f"larger max_bytes= (at least {need})"
    )


def read_capped(fh: IO[bytes], size: int, what: str) -> bytes:
    """Exactly ``size`` bytes from ``fh``, read in chunks (never more is requested):
    ValueError when the stream ends first."""
    parts, left = [], size
    while left:
        chunk = fh.read(min(left, _CHUNK))
        if not chunk:
            raise ValueError(f"{what} is truncated: {size - left} of {size} bytes")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def parse_json(data: bytes, what: str, max_depth: int = 32) -> Any:
    """UTF-8 JSON text -> Python objects, or ValueError (bad UTF-8 or JSON, nesting deeper
    than ``max_depth``). NaN and +-Infinity literals are accepted (Python's ``json``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 text ({exc})") from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} is nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, over-long integers
        raise ValueError(f"{what} is not valid JSON ({exc})") from None
    # depth check without recursion
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"{what} is nested deeper than {max_depth} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return obj


def open_regular(path: Any, what: str = "file") -> IO[bytes]:
    """``open(path, "rb")`` for a regular file; a FIFO, device or socket is refused with
    ValueError without blocking (opening a FIFO for reading waits for a writer)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            raise ValueError(f"{os.fspath(path)!s} is not a regular file, so not a valid {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_HEADER = 10000  # numpy's own default limit for a .npy header


class ZipReader:
    """A zip/npz container opened for bounded reading.

    ``ZipReader(path, max_bytes=None, what="file")``: opens ``path``, reads the zip
    directory and refuses, before reading any member, a container whose members declare
    more than :func:`byte_limit` bytes in total, that is encrypted, uses a compression
    other than stored/deflated, or repeats a member name. Use it as a context manager.

    Methods: :meth:`names`, :meth:`read_bytes` (a whole member, e.g. a JSON header),
    :meth:`read_npy` (a ``.npy`` member, checked against its header before allocation;
    never unpickles), :meth:`read_raw` (a raw member of known dtype and shape). Every
    read streams the member with a cap and verifies its CRC.

    Attributes: ``path``, ``file_size``, ``limit`` (bytes), ``allocated`` (bytes handed
    out so far; never above ``limit``).
    """

    def __init__(self, path: Any, max_bytes: Any = None, what: str = "file") -> None:
        check_max_bytes(max_bytes)
        self.path = os.fspath(path)
        self.what = what
        self._fh = open_regular(self.path, self.what)
        try:
            self.file_size = os.fstat(self._fh.fileno()).st_size
            self.limit = byte_limit(self.file_size, max_bytes)
            self.allocated = 0
            try:
                self._zf = zipfile.ZipFile(self._fh)
            except Exception as exc:  # BadZipFile, NotImplementedError, bad names, ...
                raise self.error(f"not a zip/npz archive ({type(exc).__name__}: {exc})") from None
            infos = self._zf.infolist()
            self._infos: dict[str, zipfile.ZipInfo] = {}
            total = 0
            for info in infos:
                if info.filename in self._infos:
                    raise self.error(f"member {info.filename!r} appears twice")
                if info.flag_bits & 0x1:
                    raise self.error(f"member {info.filename!r} is encrypted")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise self.error(
                        f"member {info.filename!r} uses compression method "
                        f"{info.compress_type} (only stored and deflated are read)"
                    )
                self._infos[info.filename] = info
                total += info.file_size
            if total > self.limit:
                raise _too_large(f"{self.path} ({self.what})", total, self.limit)
        except BaseException:
            self.close()
            raise

    # -- plumbing -----------------------------------------------------------------------
    def error(self, why: str) -> ValueError:
        """The ValueError this reader raises for a bad file (override for a subclass)."""
        return ValueError(f"{self.path} is not a valid {self.what}: {why}")

    def close(self) -> None:
        zf = getattr(self, "_zf", None)
        if zf is not None:
            zf.close()
        self._fh.close()

    def __enter__(self) -> ZipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> list[str]:
        """Member names, in directory order."""
        return list(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def declared_size(self, name: str) -> int:
        """The uncompressed size the zip directory declares for ``name``."""
        return self._info(name).file_size

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = self._infos.get(name)
        if info is None:
            raise self.error(f"no member {name!r}")
        return info

    def _take(self, nbytes: int, name: str) -> None:
        if self.allocated + nbytes > self.limit:
            raise _too_large(f"{self.path} ({self.what})", self.allocated + nbytes, self.limit)
        self.allocated += nbytes

    @contextlib.contextmanager
    def _member(self, name: str) -> Iterator[IO[bytes]]:
        try:
            with self._zf.open(self._info(name)) as fh:
                yield fh
        except ValueError:
            raise
        except Exception as exc:  # zlib.error, BadZipFile (CRC), EOFError, OSError...
            raise self.error(f"member {name!r}: {type(exc).__name__}: {exc}") from None

    def _finish(self, fh: IO[bytes], name: str) -> None:
        """The member must end here (reading its end also checks its CRC)."""
        if fh.read(1):
            raise self.error(f"member {name!r} holds more data than it declares")

    # -- reads --------------------------------------------------------------------------
    def read_bytes(self, name: str, max_size: int | None = None) -> bytes:
        """The whole member ``name`` (at most ``max_size`` bytes, else ValueError)."""
        size = self.declared_size(name)
        if max_size is not None and size > max_size:
            raise self.error(f"member {name!r} is {size} bytes, more than the {max_size} allowed")
        self._take(size, name)
        with self._member(name) as fh:
            data = read_capped(fh, size, f"member {name!r}")
            self._finish(fh, name)
        return data

    def read_raw(self, name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        """A member holding exactly the raw bytes of a C-order array of ``dtype``/``shape``."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if self.declared_size(name) != nbytes:
            raise self.error(
                f"member {name!r} is {self.declared_size(name)} bytes, "
                f"{dtype}{tuple(shape)} needs {nbytes}"
            )
        self._take(nbytes, name)
        out = np.empty(shape, dtype)
        with self._member(name) as fh:
            self._fill(fh, out, name)
            self._finish(fh, name)
        return out

    def read_npy(self, name: str, dtypes: Any = None) -> np.ndarray:
        """A ``.npy`` member as a C-contiguous array (never unpickled).

        The ``.npy`` header is parsed first; its dtype must be plain numbers (no objects,
        no records; one of ``dtypes`` when given), and ``shape x itemsize`` must be
        exactly what the member holds after the header -- all before the array is
        allocated.
        """
        size = self.declared_size(name)
        with self._member(name) as fh:
            shape, fortran, dtype, consumed = self._npy_header(fh, name)
            if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
                raise self.error(
                    f"member {name!r} has dtype {dtype}, which is not plain numeric data "
                    "(it could need pickle)"
                )
            if dtypes is not None and dtype not in [np.dtype(d) for d in dtypes]:
                raise self.error(f"member {name!r} has dtype {dtype}")
            nbytes = math.prod(shape) * dtype.itemsize
            if consumed + nbytes != size:
                raise self.error(
                    f"member {name!r}: its .npy header declares {dtype}{shape} ({nbytes} "
                    f"bytes) but the member holds {size - consumed} bytes of data"
                )
            self._take(nbytes, name)
            out = np.empty(shape[::-1] if fortran else shape, dtype)
            self._fill(fh, out, name)
            self._finish(fh, name)
        if fortran:
            out = np.ascontiguousarray(out.T)
        return out

    def _npy_header(self, fh: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, Any, int]:
        """(shape, fortran_order, dtype, header bytes) of a .npy stream, read capped."""
        what = f"member {name!r}"
        head = read_capped(fh, len(_NPY_MAGIC) + 2, what)
        if not head.startswith(_NPY_MAGIC):
            raise self.error(f"{what} is not a .npy array")
        version = (head[6], head[7])
        if version == (1, 0):
            length_bytes = read_capped(fh, 2, what)
            length = int.from_bytes(length_bytes, "little")
        elif version in ((2, 0), (3, 0)):
            length_bytes = read_capped(fh, 4, what)
            length = int.from_bytes(length_bytes, "little")
        else:
            raise self.error(f"{what} has an unsupported .npy version {version}")
        if length > _NPY_MAX_HEADER:
            raise self.error(f"{what} has a .npy header of {length} bytes")
        text = read_capped(fh, length, what)
        # numpy parses the header dict (ast.literal_eval, never pickle); version 3 only
        # differs by allowing UTF-8 field names, and records are refused below anyway.
        blob = io.BytesIO(_NPY_MAGIC + b"\x02\x00" + len(text).to_bytes(4, "little") + text)
        try:
            np.lib.format.read_magic(blob)
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(blob)
        except Exception as exc:  # ValueError, SyntaxError, RecursionError, TypeError...
            raise self.error(f"{what}: bad .npy header ({type(exc).__name__}: {exc})") from None
        return tuple(shape), bool(fortran), dtype, len(head) + len(length_bytes) + length

    def _fill(self, fh: IO[bytes], out: np.ndarray, name: str) -> None:
        view = out.reshape(-1).view(np.uint8).data
        pos, n = 0, len(view)
        while pos < n:
            chunk = fh.read(min(n - pos, _CHUNK))
            if not chunk:
                raise self.error(f"member {name!r} is truncated ({pos} of {n} bytes)")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
