"""Former home of the CUDA module's access functions; kept as an alias of
:mod:`pyfastopt.cuda` (``built``, ``available``, ``require``) for existing callers."""

from __future__ import annotations

from .cuda._runtime import available, built, require

__all__ = ["available", "built", "require"]
