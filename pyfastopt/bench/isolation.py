"""Child processes of ``pyfastopt bench``: one per library and thread count.

The parent only orchestrates. Each library's implementations run in their own
interpreter (:mod:`pyfastopt.bench._worker`), so one library's thread pool (OpenMP
workers that busy-wait after a region, OpenBLAS threads that spin for new work) can
never deschedule another library's workers *inside the process being timed*; the
rounds of a case alternate between the processes (A B C A B C ...), so slow drifts of the
machine hit every library alike.

Thread counts are fixed through the environment before the child imports anything
(:func:`child_env`): the library being timed gets ``threads``; every other library in
that child (pyfastopt in a NumPy child, NumPy's BLAS in a pyfastopt child) gets 1, so it
starts no pool of its own even when a case's setup calls it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["Worker", "WorkerError", "busy_process", "child_env"]

#: thread-count variables read by the BLAS/OpenMP runtimes NumPy, torch and ORT bundle
PEER_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class WorkerError(RuntimeError):
    """A child reported an exception, or died."""


def child_env(library: str, threads: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``library`` child running on ``threads`` threads."""
    env = dict(os.environ if base is None else base)
    n = str(int(threads))
    own = library in ("pyfastopt", "limits", "runtime")
    peers = library in ("numpy", "torch", "runtime")
    env["PYFASTOPT_NUM_THREADS"] = n if own else "1"
    for var in PEER_THREAD_VARS:
        env[var] = n if peers else "1"
    if library in ("pyfastopt", "limits"):
        # pyfastopt reads PYFASTOPT_NUM_THREADS first; OMP_NUM_THREADS is its fallback
        env["OMP_NUM_THREADS"] = n
    return env


def _package_parent() -> str:
    """The sys.path entry this process imported pyfastopt from (the child uses it too)."""
    import pyfastopt

    return os.path.dirname(os.path.dirname(os.path.abspath(pyfastopt.__file__)))


_BOOT = (
    "import sys; sys.path.insert(0, {path!r}); "
    "from pyfastopt.bench._worker import main; sys.exit(main())"
)


class Worker:
    """A running :mod:`pyfastopt.bench._worker` child and its JSON-lines pipe."""

    def __init__(
        self,
        library: str,
        threads: int,
        outdir: str,
        *,
        quick: bool = False,
        python: str | None = None,
    ) -> None:
        self.library = library
        self.threads = threads
        argv = [
            python or sys.executable,
            "-c",
            _BOOT.format(path=_package_parent()),
            "--library",
            library,
            "--threads",
            str(threads),
            "--outdir",
            outdir,
        ]
        if quick:
            argv.append("--quick")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(library, threads),
            cwd=outdir,
            text=True,
            encoding="utf-8",
        )
        try:
            hello = self.call("hello")
        except BaseException:
            self.close()
            raise
        self.pid: int = int(hello["pid"])
        self.threads_in_effect: dict[str, Any] = hello.get("threads", {})
        self.versions: dict[str, str] = hello.get("versions", {})

    def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
            stdin.flush()
        except BrokenPipeError:
            pass  # the child died: readline() says so below
        line = stdout.readline()
        if not line:
            code = self.proc.wait()
            raise WorkerError(
                f"the {self.library} child ({self.threads} threads) exited with code {code} "
                f"during {cmd!r} (its stderr is above)"
            )
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"cmd": "exit"}\n')
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stdin):
            if f is not None and not f.closed:
                f.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class busy_process:
    """A context manager: a child spinning ``while True: pass`` (a competing busy process
    on the machine) for the duration of the block; killed at exit."""

    def __init__(self, python: str | None = None, settle_s: float = 0.2) -> None:
        self.python = python or sys.executable
        self.settle_s = settle_s
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> busy_process:
        import time

        self.proc = subprocess.Popen(
            [self.python, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(self.settle_s)  # let it start spinning
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
