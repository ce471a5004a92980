"""Pure-NumPy reference for ``pyfastopt.dropout``: Philox4x32-10 and the dropout mask.

Written from the definitions, independent of pyfastopt's C++ kernels:

* Philox4x32-R (J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random
  numbers: as easy as 1, 2, 3", SC'11). One round maps the counter (c0, c1, c2, c3) with
  key (k0, k1) to::

      hi0, lo0 = hi(M0 * c0), lo(M0 * c0)        M0 = 0xD2511F53
      hi1, lo1 = hi(M1 * c2), lo(M1 * c2)        M1 = 0xCD9E8D57
      (c0, c1, c2, c3) <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)

  and the key is bumped by the Weyl constants (W0, W1) = (0x9E3779B9, 0xBB67AE85),
  modulo 2**32, between rounds (round r uses k + (r - 1) * W). Products are taken in
  uint64, which holds any 32 x 32-bit product exactly.

* The dropout mask (pyfastopt's contract). Element i (flat C-order index) uses
  ``g, r = divmod(i, 64); j, l = divmod(r, 16); block = 16 * g + l``; it is kept iff
  word j of ``philox4x32_10((block & 0xFFFFFFFF, block >> 32, offset & 0xFFFFFFFF,
  offset >> 32), (seed & 0xFFFFFFFF, seed >> 32))`` is ``>= t``, with
  ``t = round_half_even(p * 2**32)``. Kept elements are multiplied by
  ``scale = 1 / (1 - p)`` (float64, then rounded to x's dtype), dropped ones by 0.

Known-answer vectors
--------------------
:data:`KAT_PHILOX4X32` holds the ``philox4x32`` lines (7 and 10 rounds) of the
Random123 distribution's ``kat_vectors`` file, as reproduced verbatim, with the comment
"The KAT vectors are cut-and-pasted from the kat_vectors file in the original Random123
distribution", in D. E. Shaw Research's own repository
https://github.com/DEShawResearch/Random123-Boost, file
``libs/random/test/test_philox.cpp`` (commit 916db91ae4c6fd8324ef054a518851321ab41f91,
test case ``test_kat_philox4x32``). Columns: counter (4 words), key (2 words), expected
output (4 words), all hex uint32. The 10-round lines are the all-zero, all-ones and
pi-digits (counter = 243f6a88 85a308d3 13198a2e 03707344, key = a4093822 299f31d0, the
hex digits of pi) vectors. Running this module as a script checks them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "KAT_PHILOX4X32",
    "KAT_PHILOX4X32_10",
    "M0",
    "M1",
    "W0",
    "W1",
    "dropout",
    "dropout_mask",
    "keep_probability",
    "mask_words",
    "packed_mask",
    "philox4x32",
    "philox4x32_10",
    "scale_for",
    "threshold",
]

M0, M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, sqrt(3) - 1)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


#: The ``philox4x32`` lines of Random123's ``kat_vectors``, verbatim (see the docstring):
#: name, rounds, counter (4 words), key (2 words), expected output (4 words).
_KAT_TEXT = """
philox4x32 7 00000000 00000000 00000000 00000000 00000000 00000000   5f6fb709 0d893f64 4f121f81 4f730a48
philox4x32 7 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   5207ddc2 45165e59 4d8ee751 8c52f662
philox4x32 7 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0   4dfccaba 190a87f0 c47362ba b6b5242a
philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000   6627e8d5 e169c58d bc57ac4c 9b00dbd8
philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   408f276d 41c83b0e a20bc7c6 6d5451fd
philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0   d16cfe09 94fdcceb 5001e420 24126ea1
"""


def _parse_kat(text: str) -> list[tuple[int, tuple[int, ...], tuple[int, int], tuple[int, ...]]]:
    vectors = []
    for line in text.strip().splitlines():
        name, rounds, *hexwords = line.split()
        assert name == "philox4x32" and len(hexwords) == 10, line
        w = [int(h, 16) for h in hexwords]
        vectors.append((int(rounds), tuple(w[0:4]), (w[4], w[5]), tuple(w[6:10])))
    return vectors


#: (rounds, counter, key, expected) from Random123's kat_vectors (see the module docstring).
KAT_PHILOX4X32 = _parse_kat(_KAT_TEXT)

#: The 10-round vectors only: (counter, key, expected).
KAT_PHILOX4X32_10 = [(c, k, e) for rounds, c, k, e in KAT_PHILOX4X32 if rounds == 10]


# ----------------------------------------------------------------------------- Philox


def philox4x32(counters, key, rounds: int = 10) -> np.ndarray:
    """Philox4x32-``rounds`` of each row of ``counters`` ((n, 4) uint32) under ``key``.

    ``key`` is a pair of uint32 (shared by all rows) or an (n, 2) array (one per row).
    Returns an (n, 4) uint32 array.
    """
    ctr = np.asarray(counters, dtype=np.uint64).reshape(-1, 4)
    if ctr.size and int(ctr.max()) > 0xFFFFFFFF:
        raise ValueError("counter words must be uint32")
    k = np.asarray(key, dtype=np.uint64)
    if k.ndim == 1:
        k = np.broadcast_to(k.reshape(1, 2), (ctr.shape[0], 2))
    k0, k1 = k[:, 0].copy(), k[:, 1].copy()
    c0, c1, c2, c3 = (ctr[:, i].copy() for i in range(4))
    m0, m1 = np.uint64(M0), np.uint64(M1)
    w0, w1 = np.uint64(W0), np.uint64(W1)
    for r in range(rounds):
        if r:  # bump the key between rounds
            k0 = (k0 + w0) & _MASK32
            k1 = (k1 + w1) & _MASK32
        p0 = c0 * m0  # exact: < 2**64
        p1 = c2 * m1
        hi0, lo0 = p0 >> _SHIFT32, p0 & _MASK32
        hi1, lo1 = p1 >> _SHIFT32, p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def philox4x32_10(counters, key) -> np.ndarray:
    """Philox4x32 with the standard 10 rounds."""
    return philox4x32(counters, key, rounds=10)


# ----------------------------------------------------------------------------- dropout


def _check_word64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{name} must be in [0, 2**64)")
    return value


def threshold(p: float) -> int:
    """t = round-half-to-even(p * 2**32); an element is dropped iff its word is < t."""
    p = float(p)
    if not (0.0 <= p < 1.0):
        raise ValueError("p must be in [0, 1)")
    return round(p * 2.0**32)  # exact product in float64; round() is half-to-even


def keep_probability(p: float) -> float:
    """The exact probability that an element is kept: 1 - t / 2**32."""
    return 1.0 - threshold(p) / 2.0**32


def scale_for(p: float, dtype) -> np.generic:
    """1 / (1 - p) in float64, rounded to ``dtype``."""
    return np.dtype(dtype).type(1.0 / (1.0 - float(p)))


def mask_words(n: int, seed: int, offset: int = 0) -> np.ndarray:
    """The uint32 random word of each of the first ``n`` elements (flat C order)."""
    _check_word64("seed", seed)
    _check_word64("offset", offset)
    groups = -(-n // 64)
    blocks = np.arange(groups * 16, dtype=np.uint64)
    ctr = np.empty((blocks.size, 4), dtype=np.uint64)
    ctr[:, 0] = blocks & _MASK32
    ctr[:, 1] = blocks >> _SHIFT32
    ctr[:, 2] = offset & 0xFFFFFFFF
    ctr[:, 3] = offset >> 32
    out = philox4x32_10(ctr, (seed & 0xFFFFFFFF, seed >> 32))  # (groups * 16, 4)
    # row (g*16 + l), word j  ->  element g*64 + j*16 + l
    words = out.reshape(groups, 16, 4).transpose(0, 2, 1).reshape(-1)
    return words[:n]


def dropout_mask(shape, p: float, seed: int, offset: int = 0) -> np.ndarray:
    """Boolean keep-mask of ``shape`` (True = kept)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = math.prod(shape)
    return (mask_words(n, seed, offset) >= np.uint64(threshold(p))).reshape(shape)


def packed_mask(mask: np.ndarray) -> np.ndarray:
    """The ``return_mask=True`` bits: little bit order, ceil(n / 8) bytes."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel(), bitorder="little")


def dropout(x, p: float, seed: int, offset: int = 0) -> np.ndarray:
    """y = x * m in x's dtype, m = scale where kept and 0 where dropped (IEEE: a NaN or
    inf in a dropped position gives NaN, and a negative x gives -0.0)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError("x must be float32 or float64")
    mask = dropout_mask(x.shape, p, seed, offset)
    m = np.where(mask, scale_for(p, x.dtype), x.dtype.type(0))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.multiply(x, m, dtype=x.dtype)


# ----------------------------------------------------------------------------- self-check


def _self_check() -> None:
    for rounds, ctr, key, expected in KAT_PHILOX4X32:
        got = tuple(int(v) for v in philox4x32([ctr], key, rounds=rounds)[0])
        status = "ok" if got == expected else "MISMATCH"
        print(
            f"philox4x32-{rounds} ctr={' '.join(f'{w:08x}' for w in ctr)} "
            f"key={' '.join(f'{w:08x}' for w in key)} -> {' '.join(f'{w:08x}' for w in got)} "
            f"[{status}]"
        )
        if got != expected:
            raise SystemExit(f"expected {' '.join(f'{w:08x}' for w in expected)}")


if __name__ == "__main__":
    _self_check()
