"""Shared by the fuzz tests: the memory layouts an input array is drawn in."""

from __future__ import annotations

import numpy as np

LAYOUTS = ("plain", "strided", "fortran", "readonly")


def in_layout(a: np.ndarray, kind: str) -> np.ndarray:
    """``a`` as a strided view (every other last-axis element), Fortran order, read-only,
    or unchanged; a layout the shape cannot take leaves ``a`` as it is."""
    if kind == "strided" and a.ndim and a.shape[-1] > 1:
        return a[..., ::2]
    if kind == "fortran" and a.ndim >= 2:
        return np.asfortranarray(a)
    if kind == "readonly":
        a.setflags(write=False)
    return a
