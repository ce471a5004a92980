"""timeit-style timing: auto-chosen inner loop count, best of several repeats.

``time.perf_counter`` around a plain ``for`` loop over zero-argument callables, with the
garbage collector off while timing (as ``timeit`` does). The loop itself costs a few tens
of nanoseconds per call, the same for every implementation.
"""

from __future__ import annotations

import gc
import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["TimingConfig", "batch_seconds", "best_time", "calibrate"]


@dataclass(frozen=True)
class TimingConfig:
    min_batch_s: float = 0.02  # grow the inner loop until one batch takes this long
    repeats: int = 5  # batches timed; the fastest one counts
    max_number: int = 1_000_000


FULL = TimingConfig()
QUICK = TimingConfig(min_batch_s=0.001, repeats=3)


def _batch(fn: Callable[[], Any], number: int) -> float:
    loop = itertools.repeat(None, number)
    perf_counter = time.perf_counter
    t0 = perf_counter()
    for _ in loop:
        fn()
    return perf_counter() - t0


def batch_seconds(fn: Callable[[], Any], number: int) -> float:
    """Seconds per call of ``fn`` over one batch of ``number`` calls (GC left as it is)."""
    return _batch(fn, number) / number


def calibrate(fn: Callable[[], Any], cfg: TimingConfig = FULL) -> tuple[int, float]:
    """Warm ``fn`` up and grow the batch until it takes ``cfg.min_batch_s``.

    Returns ``(number, seconds per call of the last batch)``; the caller disables the
    garbage collector around it (as :func:`best_time` does).
    """
    fn()  # warm up (first-touch pages, lazy initialisation, caches)
    number = 1
    while True:
        elapsed = _batch(fn, number)
        if elapsed >= cfg.min_batch_s or number >= cfg.max_number:
            return number, elapsed / number
        # aim straight for the target, at least doubling and at most x100 per step
        scale = cfg.min_batch_s / elapsed * 1.2 if elapsed > 0 else 100.0
        number = min(cfg.max_number, max(number * 2, int(number * min(scale, 100.0))))


def best_time(fn: Callable[[], Any], cfg: TimingConfig = FULL) -> float:
    """Seconds per call of ``fn``: the best of ``cfg.repeats`` batches."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        number, best = calibrate(fn, cfg)
        for _ in range(cfg.repeats - 1):
            best = min(best, _batch(fn, number) / number)
        return best
    finally:
        if gc_was_enabled:
            gc.enable()
