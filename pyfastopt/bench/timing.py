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

__all__ = ["TimingConfig", "best_time"]


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


def best_time(fn: Callable[[], Any], cfg: TimingConfig = FULL) -> float:
    """Seconds per call of ``fn``: the best of ``cfg.repeats`` batches."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        fn()  # warm up (first-touch pages, lazy initialisation, caches)
        number = 1
        while True:
            elapsed = _batch(fn, number)
            if elapsed >= cfg.min_batch_s or number >= cfg.max_number:
                break
            # aim straight for the target, at least doubling and at most x100 per step
            scale = cfg.min_batch_s / elapsed * 1.2 if elapsed > 0 else 100.0
            number = min(cfg.max_number, max(number * 2, int(number * min(scale, 100.0))))
        best = elapsed / number
        for _ in range(cfg.repeats - 1):
            best = min(best, _batch(fn, number) / number)
        return best
    finally:
        if gc_was_enabled:
            gc.enable()
