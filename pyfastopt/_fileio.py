"""Files you can trust: one crash-safe writer, shared by every format.

Every pyfastopt writer goes through :func:`atomic_write`. New formats (ONNX export, nn
state files) should use it too, so the rules below hold for all of them.

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
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Iterator
from typing import IO, Any

try:  # POSIX advisory locks guard temporary files against the stale-file cleanup
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, no cleanup of stale temps
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "atomic_write_bytes",
    "remove_stale_temps",
]

#: the suffix of every temporary file atomic_write creates
TEMP_SUFFIX = ".pyfastopt-tmp"

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
    removed = []
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
        if _try_lock(fd) and os.fstat(fd).st_nlink > 0:
            try:
                if mode is not None:
                    os.fchmod(fd, mode)
            except OSError:
                pass
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
