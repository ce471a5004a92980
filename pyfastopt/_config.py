"""Configuration: build and CPU report, SIMD level, and the thread count."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from . import _core
from ._validate import positive_int

_cfg = _core.config


def get_num_threads() -> int:
    """Number of threads pyfastopt kernels use.

    Defaults to ``PYFASTOPT_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the number of
    CPUs this process may use (its affinity mask, capped by a cgroup CPU quota).
    ``threadpoolctl.threadpool_limits`` changes it too. Results never depend on it:
    work is split into fixed blocks and reductions combine them in a fixed order.
    """
    return _cfg.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads pyfastopt kernels use (process-wide).

    ``1 <= n <= max_num_threads()`` (the cap, ``min(1024, 4 x usable CPUs)``); beyond it
    ``ValueError``. Small inputs stay on one thread whatever this says (below ~64K
    elements a parallel region costs more than it saves).
    """
    _cfg.set_num_threads(positive_int("n", n))


def max_num_threads() -> int:
    """The cap on :func:`set_num_threads`: ``min(1024, 4 x usable CPUs)``."""
    return _cfg.max_num_threads()


def get_spin_time() -> int:
    """Microseconds an idle pool worker spins (yielding the CPU) before it sleeps.

    Default: ``PYFASTOPT_SPIN_US``, else 50. Spinning makes back-to-back small calls
    cheap (the workers are awake); sleeping hands the cores to other libraries' threads
    (a NumPy/BLAS or PyTorch call between two pyfastopt calls).
    """
    return _cfg.get_spin_time()


def set_spin_time(us: int) -> None:
    """Set how long idle pool workers spin before sleeping, in microseconds (0..1000000).

    ``0`` sends them to sleep as soon as a region ends (best when pyfastopt shares the
    process with other threaded libraries and calls are large); larger values favour
    streams of small back-to-back pyfastopt calls.
    """
    if isinstance(us, bool) or not isinstance(us, int):
        raise TypeError(f"us must be an int, got {type(us).__name__}")
    _cfg.set_spin_time(us)


def release_threads() -> None:
    """Put spinning pool workers to sleep now (they wake on the next parallel region).

    Call it before handing the CPU to other threaded code (a BLAS call, a PyTorch op)
    when the spin time is long.
    """
    _cfg.release_threads()


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Context manager: run the body with ``n`` threads, then restore the previous count.

    >>> import pyfastopt
    >>> with pyfastopt.threads(1):
    ...     pyfastopt.get_num_threads()
    1
    """
    n = positive_int("n", n)
    previous = _cfg.get_num_threads()
    _cfg.set_num_threads(n)
    try:
        yield n
    finally:
        _cfg.set_num_threads(previous)


def config_dict() -> dict[str, Any]:
    """The data :func:`show_config` prints."""
    threads_default, source, usable = _cfg.default_num_threads()
    features = _cfg.cpu_features()
    flags = [k for k, v in features.items() if v is True]
    level = _cfg.get_simd_level()
    return {
        # the contract's items, flat (API.md: version, SIMD level, threads runtime,
        # compiler, build options such as CUDA on/off) ...
        "version": _cfg.version,
        "simd_level": level,
        "num_threads": _cfg.get_num_threads(),
        "runtime": _cfg.threading_runtime,
        # kept for scripts written against the first contract ("OpenMP threads"): always
        # False now, the threads are pyfastopt's own pool ("runtime")
        "openmp": False,
        "compiler": _cfg.compiler,
        "cuda": _cfg.cuda_build,
        # ... and the detail
        "simd": {
            "level": level,
            "forced_by_env": os.environ.get("PYFASTOPT_SIMD") or None,
            "supported": _cfg.supported_levels(),
            "compiled": _cfg.compiled_levels(),
            # compiled levels this machine cannot run, with the features it lacks
            "unavailable": {
                lvl: _cfg.missing_features(lvl)
                for lvl in _cfg.compiled_levels()
                if lvl not in _cfg.supported_levels()
            },
        },
        "kernels": dict(_cfg.kernel_choices()),
        "threads": {
            "num_threads": _cfg.get_num_threads(),
            "default": threads_default,
            "default_source": source,
            "usable_cpus": usable,
            "max_num_threads": _cfg.max_num_threads(),
            "runtime": _cfg.threading_runtime,
            "spin_us": _cfg.get_spin_time(),
            "pool_workers": _cfg.pool_size(),
            "min_parallel_elements": _cfg.min_parallel_work,
        },
        "cpu": {"arch": features["arch"], "vendor": features["vendor"], "features": flags},
        "build": {
            "compiler": _cfg.compiler,
            "build_type": _cfg.build_type,
            "cuda": _cfg.cuda_build,
            "sanitizers": _cfg.sanitize_build,
        },
    }


def format_config(cfg: dict[str, Any]) -> str:
    t = cfg["threads"]
    s = cfg["simd"]
    lines = [
        f"pyfastopt {cfg['version']}",
        f"  SIMD level     : {s['level']}"
        + (f"  (forced by PYFASTOPT_SIMD={s['forced_by_env']})" if s["forced_by_env"] else "")
        + f"   supported: {', '.join(s['supported'])}   compiled: {', '.join(s['compiled'])}",
        *(
            f"  not here       : {lvl} (this CPU lacks {why})"
            for lvl, why in s.get("unavailable", {}).items()
        ),
        f"  threads        : {t['num_threads']}  (default {t['default']} from "
        f"{t['default_source']}; usable CPUs {t['usable_cpus']}; "
        f"cap {t['max_num_threads']}; {t['runtime']}, spin {t['spin_us']} us)",
        "  kernels        : " + ", ".join(f"{k}={v}" for k, v in cfg["kernels"].items()),
        f"  CPU            : {cfg['cpu']['arch']} {cfg['cpu']['vendor']}: "
        + " ".join(cfg["cpu"]["features"]),
        f"  build          : {cfg['build']['compiler']}, {cfg['build']['build_type']}, "
        f"CUDA {'on' if cfg['build']['cuda'] else 'off'}"
        + (", ASan+UBSan" if cfg["build"]["sanitizers"] else ""),
    ]
    return "\n".join(lines)


def show_config() -> dict[str, Any]:
    """Print the configuration and return it as a dict.

    Keys: ``version``, ``simd_level`` (the level in force), ``num_threads``, ``runtime``
    (the threading runtime: ``"pyfastopt pool"``),
    ``compiler``, ``cuda`` (built with CUDA), and in detail: ``simd`` (level, supported,
    compiled, forced by ``PYFASTOPT_SIMD``), ``kernels`` (variant chosen per kernel
    family), ``threads`` (count, default and its source, usable CPUs, cap, runtime, spin
    time, workers alive), ``cpu``
    (architecture, vendor, features), ``build`` (compiler, build type, CUDA, sanitizers).
    """
    cfg = config_dict()
    print(format_config(cfg))
    return cfg
