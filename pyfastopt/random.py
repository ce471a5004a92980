"""Counter-based random numbers: Philox4x32-10 and seed management for dropout.

A dropout mask is a pure function of ``(seed, offset, element index)`` (see
:func:`pyfastopt.dropout`). To get a fresh, independent mask every step without storing
anything, either

* keep one seed per layer and pass the step number as ``offset``:
  ``dropout(x, p, seed=layer_seed, offset=step)`` -- the offset occupies the Philox
  counter's upper 64 bits, so different offsets never share a counter; or
* draw a new seed per call from a :class:`Generator`:
  ``dropout(x, p, seed=gen.next_seed())``.

Reusing the same (seed, offset) reproduces the same mask, which is how
:func:`pyfastopt.dropout_backward` regenerates it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._validate import integer, pair, u64

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    import numpy.typing as npt

__all__ = ["Generator", "philox4x32_10"]

_U64 = 1 << 64
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's odd increment


def _u32(name: str, value: Any) -> int:
    return integer(name, value, lo=0, hi=(1 << 32) - 1)


def philox4x32_10(counters: npt.ArrayLike, key: tuple[int, int]) -> npt.NDArray[np.uint32]:
    """Philox4x32 with 10 rounds (Salmon et al., SC'11) on each row of ``counters``.

    Args:
        counters: uint32 array of shape (n, 4).
        key: pair of uint32 key words (k0, k1).

    Returns:
        uint32 array of shape (n, 4).
    """
    k0, k1 = pair("key", key, _u32)
    return _core.dropout.philox4x32_10(np.ascontiguousarray(counters, dtype=np.uint32), k0, k1)


def _splitmix64(z: int) -> int:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 % _U64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB % _U64
    return z ^ (z >> 31)


class Generator:
    """Hands out dropout seeds: ``next_seed()`` returns a new 64-bit seed on every call.

    The n-th seed is ``splitmix64(seed + n * 0x9E3779B97F4A7C15 mod 2**64)``: the increment
    is odd and the mixer is a bijection, so a generator never returns the same seed twice
    within 2**64 calls, and generators with different seeds give unrelated sequences.

    >>> from pyfastopt.random import Generator
    >>> gen = Generator(42)
    >>> gen.next_seed() != gen.next_seed()
    True
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = u64("seed", seed)
        self.calls = 0

    def next_seed(self) -> int:
        z = (self.seed + self.calls * _GOLDEN) % _U64
        self.calls += 1
        return _splitmix64(z)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = u64("seed", state["seed"])
        self.calls = u64("calls", state["calls"])
