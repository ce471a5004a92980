"""A small schema checker for the JSON headers of pyfastopt's files.

A schema is built from the classes below and applied with ``schema.check(value, where)``,
which returns the value (unchanged) or raises ``ValueError`` naming the offending place
(``where`` plus the path, e.g. ``header['param_groups'][0]['lr']``) and what was expected.
Use it on the output of :func:`pyfastopt._fileio.parse_json` *before* using any part of
a header, so that a crafted file can only ever produce ``ValueError``.

Example::

    GROUP = Dict(required={"params": List(Int(0), max_len=1 << 24)}, extra=Real())
    GROUP.check({"params": [0, 1], "lr": 0.1}, "param_groups[0]")
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "Bool",
    "Choice",
    "Dict",
    "Int",
    "IntKey",
    "List",
    "Null",
    "OneOf",
    "Real",
    "Schema",
    "Str",
    "Tuple",
]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class Schema:
    """Base class: ``check(value, where)`` returns ``value`` or raises ValueError."""

    expected = "a value"

    def ok(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, value: Any, where: str) -> Any:
        if not self.ok(value):
            raise ValueError(f"{where}: expected {self.expected}, got {_short(value)}")
        return value


def _short(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_kind(value)} {text}"


class Null(Schema):
    expected = "null"

    def ok(self, value: Any) -> bool:
        return value is None


class Bool(Schema):
    expected = "true or false"

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool)


class Int(Schema):
    """An integer (not a bool, not a float) in ``[lo, hi]``."""

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        lo_s = "" if lo is None else f" >= {lo}"
        hi_s = "" if hi is None else f" <= {hi}"
        self.expected = "an integer" + (lo_s + ("," if lo_s and hi_s else "") + hi_s)

    def ok(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (self.lo is None or value >= self.lo)
            and (self.hi is None or value <= self.hi)
        )


class Real(Schema):
    """A JSON number (int or float, not bool); ``finite`` excludes NaN and +-inf;
    ``lo``/``hi`` bound it (NaN then fails)."""

    def __init__(
        self,
        lo: float | None = None,
        hi: float | None = None,
        finite: bool = True,
        lo_open: bool = False,
    ) -> None:
        self.lo, self.hi, self.finite, self.lo_open = lo, hi, finite, lo_open
        parts = ["a finite number" if finite else "a number"]
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo}")
        if hi is not None:
            parts.append(f"<= {hi}")
        self.expected = " ".join(parts)

    def ok(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        if isinstance(value, int):
            value = float(value) if abs(value) < 2**1023 else (math.inf if value > 0 else -math.inf)
        if self.finite and not math.isfinite(value):
            return False
        if self.lo is not None and not (value > self.lo if self.lo_open else value >= self.lo):
            return False
        return self.hi is None or value <= self.hi


class Str(Schema):
    """A string of at most ``max_len`` characters."""

    def __init__(self, max_len: int = 256) -> None:
        self.max_len = max_len
        self.expected = f"a string of at most {max_len} characters"

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) and len(value) <= self.max_len


class IntKey(Schema):
    """A string holding a decimal integer in ``[0, hi]`` (JSON object keys are strings),
    written canonically: no sign, no leading zeros, no spaces."""

    def __init__(self, hi: int = 2**62) -> None:
        self.hi = hi
        self.expected = f"a decimal integer string in [0, {hi}]"

    def ok(self, value: Any) -> bool:
        return (
            isinstance(value, str)
            and 0 < len(value) <= 20
            and value.isascii()
            and value.isdigit()
            and (value == "0" or value[0] != "0")
            and int(value) <= self.hi
        )


class Choice(Schema):
    """One of a few literal values (compared with ==, types included)."""

    def __init__(self, *choices: Any) -> None:
        self.choices = choices
        self.expected = "one of " + ", ".join(repr(c) for c in choices)

    def ok(self, value: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)


class OneOf(Schema):
    """The first of ``options`` the value satisfies (their checks recurse)."""

    def __init__(self, *options: Schema) -> None:
        self.options = options
        self.expected = " or ".join(o.expected for o in options)

    def ok(self, value: Any) -> bool:
        return any(o.ok(value) for o in self.options)

    def check(self, value: Any, where: str) -> Any:
        errors = []
        for option in self.options:
            try:
                return option.check(value, where)
            except ValueError as exc:
                errors.append(str(exc))
        # report the most specific complaint: the one that went deepest
        raise ValueError(max(errors, key=lambda e: len(e.split(":", 1)[0])))


class List(Schema):
    """A list of ``item``, with ``min_len <= len <= max_len``."""

    def __init__(self, item: Schema, max_len: int, min_len: int = 0) -> None:
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.expected = f"a list of {min_len} to {max_len} items"

    def ok(self, value: Any) -> bool:
        return (
            isinstance(value, list)
            and self.min_len <= len(value) <= self.max_len
            and all(self.item.ok(v) for v in value)
        )

    def check(self, value: Any, where: str) -> Any:
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            raise ValueError(f"{where}: expected {self.expected}, got {_short(value)}")
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")
        return value


class Tuple(Schema):
    """A list of fixed length whose items have one schema each (JSON has no tuples)."""

    def __init__(self, *items: Schema) -> None:
        self.items = items
        self.expected = "a list [" + ", ".join(i.expected for i in items) + "]"

    def ok(self, value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) == len(self.items)
            and all(s.ok(v) for s, v in zip(self.items, value))
        )

    def check(self, value: Any, where: str) -> Any:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise ValueError(f"{where}: expected {self.expected}, got {_short(value)}")
        for i, (s, v) in enumerate(zip(self.items, value)):
            s.check(v, f"{where}[{i}]")
        return value


class Dict(Schema):
    """An object with ``required`` and ``optional`` keys, each with its own schema; other
    keys must satisfy ``keys`` (a Schema for the key string) with values ``extra``, or
    are refused when ``extra`` is None. At most ``max_keys`` keys."""

    def __init__(
        self,
        required: dict[str, Schema] | None = None,
        optional: dict[str, Schema] | None = None,
        extra: Schema | None = None,
        keys: Schema | None = None,
        max_keys: int = 1 << 20,
    ) -> None:
        self.required = required or {}
        self.optional = optional or {}
        self.extra = extra
        self.keys = keys or Str(256)
        self.max_keys = max_keys
        self.expected = "an object"

    def ok(self, value: Any) -> bool:
        try:
            self.check(value, "")
        except ValueError:
            return False
        return True

    def check(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_short(value)}")
        if len(value) > self.max_keys:
            raise ValueError(f"{where}: more than {self.max_keys} entries")
        for key in self.required:
            if key not in value:
                raise ValueError(f"{where}: missing entry {key!r}")
        for key, item in value.items():
            schema = self.required.get(key) or self.optional.get(key)
            if schema is None:
                if self.extra is None:
                    raise ValueError(f"{where}: unexpected entry {_short(key)}")
                if not self.keys.ok(key):
                    raise ValueError(
                        f"{where}: entry name {_short(key)} is not {self.keys.expected}"
                    )
                schema = self.extra
            schema.check(item, f"{where}[{key!r}]")
        return value
