"""Argument checks for every Python-level argument of pyfastopt: one rule, one place.

Every public function, layer, optimizer, scheduler and reader checks its scalar and
small structured arguments with the functions below (arrays are checked at the C++
boundary, ``cpp/bindings/checks.h``). Write new checks here, not in the caller.

The rule
--------
* A wrong **type** raises ``TypeError``; a right type with a wrong **value** (out of
  range, NaN, negative, unknown name, wrong length) raises ``ValueError``.
* The message starts with the argument's name as the caller knows it (``"lr"``,
  ``"betas[1]"``, ``"param_groups[0]['eps']"``), says what is expected and what was
  given: ``"p must be in [0, 1), got 1.5"``, ``"seed must be an integer, got float"``.
* Checks return the normalised value (a Python ``float``, ``int``, ``bool``, ``str`` or
  tuple), so callers store and pass on plain Python objects.

Kinds of argument
-----------------
Real numbers (:func:`real` and its shorthands :func:`nonnegative`, :func:`positive`,
:func:`probability`, :func:`unit_interval`)
    Anything ``float()`` converts that is a real number: Python ``int``/``float``, NumPy
    integer and floating scalars, 0-d integer/floating arrays, and other 0-d numbers
    with ``__float__`` (a 0-d ``torch.Tensor``, ``fractions.Fraction``,
    ``decimal.Decimal``), as ``torch.optim`` accepts tensors for ``lr``. ``bool`` (also
    ``numpy.bool_`` and bool 0-d arrays), complex numbers, strings, ``None`` and arrays
    of more than one element are ``TypeError`` -- also where ``float()`` would convert
    them (``float("0.1")``, ``float(True)``). NaN is a ``ValueError`` unless the
    argument allows it; infinity only where the bounds allow it (``finite=True`` rules
    it out); an ``int`` too large for a float is a ``ValueError``.
Integers (:func:`integer`, :func:`positive_int`, :func:`nonnegative_int`, :func:`u64`)
    Anything with ``__index__``: ``int``, NumPy integers, 0-d integer arrays. ``bool``
    and floats -- even ``2.0`` -- are ``TypeError``.
Booleans (:func:`boolean`)
    ``True``/``False`` and ``numpy.bool_`` only: ``0``, ``1``, ``"yes"`` and ``None`` are
    ``TypeError`` (a flag given a number is almost always a misplaced argument).
Choices (:func:`choice`)
    One of a fixed set of strings (and possibly ``None``): anything that is not a string
    (or None, where allowed) is ``TypeError``, an unknown string ``ValueError``.
Shapes, axes, dtypes, pairs (:func:`shape`, :func:`axis`, :func:`float_dtype`,
:func:`pair`)
    See each function.

The checks are cheap (a few hundred nanoseconds; a Python float or int takes the first
branch), so they are called on every call, not cached.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "axis",
    "boolean",
    "choice",
    "float_dtype",
    "int_tuple",
    "integer",
    "nonnegative",
    "nonnegative_int",
    "optional",
    "pair",
    "positive",
    "positive_int",
    "probability",
    "real",
    "shape",
    "type_name",
    "u64",
    "unit_interval",
]

_U64 = 1 << 64
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
T = TypeVar("T")


def type_name(value: Any) -> str:
    """A short description of ``value``'s type for messages ("float", "ndarray of shape
    (3,)", "bool")."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and shape:
        return f"{type(value).__name__} of shape {shape}"
    return type(value).__name__


def _not_real(name: str, value: Any, what: str) -> TypeError:
    return TypeError(f"{name} must be {what}, got {type_name(value)}")


def _to_float(name: str, value: Any, what: str) -> float:
    """``value`` as a Python float by the real-number rule (TypeError otherwise)."""
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{name} is too large for a float: {value}") from None
    if isinstance(value, (bool, np.bool_, str, bytes, bytearray)) or value is None:
        raise _not_real(name, value, what)
    if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        raise _not_real(name, value, what)  # complex, numpy complex scalars
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        # arrays and array scalars (NumPy's, torch's): one element, real, not bool
        ndim = getattr(value, "ndim", 0)
        if ndim != 0:
            raise _not_real(name, value, what)
        kind = getattr(dtype, "kind", None)
        if kind is not None:
            if kind not in "iuf":
                raise _not_real(name, value, f"{what} (not dtype {dtype})")
        elif getattr(value, "is_complex", lambda: False)() or "bool" in str(dtype):
            raise _not_real(name, value, f"{what} (not dtype {dtype})")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large for a float: {value!r}") from None
    except (TypeError, ValueError):
        raise _not_real(name, value, what) from None


def real(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    finite: bool = False,
    allow_nan: bool = False,
) -> float:
    """``value`` as a float (the real-number rule), optionally within bounds.

    Args:
        lo, hi: bounds (None: unbounded); ``lo_open``/``hi_open`` exclude them.
        finite: infinity is a ValueError (otherwise it passes when the bounds allow).
        allow_nan: NaN passes (bounds are not applied to it).

    >>> real("lr", np.float32(0.5), lo=0.0)
    0.5
    """
    v = _to_float(name, value, "a real number")
    if v != v:
        if allow_nan:
            return v
        raise ValueError(f"{name} must not be NaN")
    if finite and not -math.inf < v < math.inf:
        raise ValueError(f"{name} must be finite, got {v}")
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if below or above:
        raise ValueError(f"{name} must be {_interval(lo, hi, lo_open, hi_open)}, got {v!r}")
    return v


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"{'<' if hi_open else '<='} {hi:g}"


def nonnegative(name: str, value: Any, *, finite: bool = False) -> float:
    """A real number ``>= 0`` (infinity allowed unless ``finite``)."""
    return real(name, value, lo=0.0, finite=finite)


def positive(name: str, value: Any, *, finite: bool = False) -> float:
    """A real number ``> 0`` (infinity allowed unless ``finite``)."""
    return real(name, value, lo=0.0, lo_open=True, finite=finite)


def probability(name: str, value: Any, *, one: bool = False) -> float:
    """A real number in ``[0, 1)``, or ``[0, 1]`` with ``one=True`` (a drop rate is
    ``[0, 1)``: dropping everything has no inverted scale)."""
    return real(name, value, lo=0.0, hi=1.0, hi_open=not one)


def unit_interval(name: str, value: Any) -> float:
    """A real number in ``[0, 1)`` (Adam's betas)."""
    return real(name, value, lo=0.0, hi=1.0, hi_open=True)


def integer(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a Python int (anything with ``__index__``; not bool, not float),
    optionally in ``[lo, hi]``."""
    if type(value) is int:
        v = value
    else:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be an integer, got bool")
        try:
            v = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {type_name(value)}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        if hi is None:
            want = f">= {lo}"
        elif lo is None:
            want = f"<= {hi}"
        elif hi == _U64 - 1:
            want = f"in [{lo}, 2**64)"
        else:
            want = f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {want}, got {v}")
    return v


def positive_int(name: str, value: Any) -> int:
    """An integer ``>= 1`` (sizes, counts, periods)."""
    return integer(name, value, lo=1)


def nonnegative_int(name: str, value: Any) -> int:
    """An integer ``>= 0``."""
    return integer(name, value, lo=0)


def u64(name: str, value: Any) -> int:
    """An integer in ``[0, 2**64)``: random seeds and counter offsets."""
    return integer(name, value, lo=0, hi=_U64 - 1)


def boolean(name: str, value: Any) -> bool:
    """``True``/``False`` or a ``numpy.bool_`` (as a Python bool); anything else,
    numbers included, is a TypeError."""
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type_name(value)}")


def choice(
    name: str, value: Any, choices: Collection[str | None], *, fold_case: bool = False
) -> Any:
    """One of ``choices`` (strings, and None if it is listed). A value that is not a
    string (nor an allowed None) is a TypeError, an unknown string a ValueError;
    ``fold_case`` compares lower-cased and returns the listed spelling."""
    allowed_none = None in choices
    if value is None and allowed_none:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be {_spell(choices)}, got {type_name(value)}"
            if len(choices) < 6
            else f"{name} must be a string, got {type_name(value)}"
        )
    for c in choices:
        if c is not None and (value == c or (fold_case and value.lower() == c.lower())):
            return c
    raise ValueError(f"{name} must be {_spell(choices)}, got {value!r}")


def _spell(choices: Collection[str | None]) -> str:
    names = [repr(c) if c is not None else "None" for c in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def optional(check: Callable[..., T], name: str, value: Any, **kwargs: Any) -> T | None:
    """``None``, or ``check(name, value, **kwargs)``."""
    return None if value is None else check(name, value, **kwargs)


def pair(name: str, value: Any, check: Callable[[str, Any], T]) -> tuple[T, T]:
    """A sequence of exactly two items, each checked as ``name[0]``/``name[1]`` (a non-
    sequence is a TypeError, another length a ValueError)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a pair (a tuple of 2), got {type_name(value)}")
    if len(value) != 2:
        raise ValueError(f"{name} must have 2 items, got {len(value)}")
    return check(f"{name}[0]", value[0]), check(f"{name}[1]", value[1])


def int_tuple(
    name: str, value: Any, lengths: Collection[int], *, lo: int | None = None, spread: int = 0
) -> tuple[int, ...]:
    """An integer (repeated ``spread`` times, when ``spread`` > 0) or a sequence of
    integers of one of the allowed ``lengths``, each checked as ``name[i]`` with
    :func:`integer` (and ``lo``): convolution strides, paddings, kernel sizes. A
    non-sequence is a TypeError, another length a ValueError."""
    if spread and isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        return (integer(name, value, lo=lo),) * spread
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        want = " or ".join(f"a tuple of {n}" for n in lengths)
        raise TypeError(
            f"{name} must be {'an int or ' if spread else ''}{want}, got {type_name(value)}"
        )
    if len(value) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise ValueError(f"{name} must have {want} items, got {len(value)}")
    return tuple(integer(f"{name}[{i}]", v, lo=lo) for i, v in enumerate(value))


def shape(name: str, value: Any) -> tuple[int, ...]:
    """An int or a sequence of ints, each ``>= 0``, as a tuple."""
    items: Sequence[Any] | np.ndarray
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        items = (value,)
    elif isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {type_name(value)}")
    else:
        items = value
    dims = tuple(integer(f"{name}[{i}]", d, lo=0) for i, d in enumerate(items))
    return dims


def axis(name: str, value: Any, ndim: int | None = None) -> int:
    """An integer axis; with ``ndim``, in ``[-ndim, ndim)`` and returned non-negative."""
    a = integer(name, value)
    if ndim is None:
        return a
    if not -ndim <= a < ndim:
        raise ValueError(f"{name} {a} is out of range for an array of ndim {ndim}")
    return a % ndim


def float_dtype(name: str, value: Any) -> np.dtype:
    """``numpy.float32`` or ``numpy.float64`` (any spelling NumPy understands); other
    dtypes, and things that are not dtypes, are a TypeError."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {value!r}") from None
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt
