"""Write tests/golden/golden.npz: the cross-architecture golden results (issue 20).

Run on x86-64 with the installed package (``python -P tools/golden.py``); the values come
from tests/golden_cases.py at the scalar reference level, and are checked at every other
level before they are written (the contract says every level gives the same bits).
``--check`` compares instead of writing (exit 1 on a difference).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from golden_cases import compute  # type: ignore[import-not-found]  # noqa: E402

from pyfastopt import _core  # noqa: E402

PATH = os.path.join(HERE, "..", "tests", "golden", "golden.npz")


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the file, do not write")
    args = parser.parse_args()
    previous = _core.config.get_simd_level()
    try:
        _core.config.set_simd_level("scalar")
        ref = compute()
        for level in _core.config.supported_levels():
            _core.config.set_simd_level(level)
            got = compute()
            bad = [k for k in ref if not _same_bits(ref[k], got[k])]
            if bad:
                print(f"level {level} differs from scalar on: {bad}", file=sys.stderr)
                return 1
    finally:
        _core.config.set_simd_level(previous)
    if args.check:
        with np.load(PATH) as f:
            bad = [k for k in ref if k not in f or not _same_bits(ref[k], f[k])]
        print("differs: " + ", ".join(bad) if bad else f"{len(ref)} arrays identical")
        return 1 if bad else 0
    os.makedirs(os.path.dirname(PATH), exist_ok=True)
    np.savez_compressed(PATH, **ref)
    print(f"wrote {len(ref)} arrays, {os.path.getsize(PATH)} bytes, to {os.path.normpath(PATH)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
