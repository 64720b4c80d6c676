"""Building and checking the engine's config dataclasses from plain values.

One place for the checks every config and parameter set repeats: a dataclass built from a
dict (unknown keys refused by name), and integer / number / flag values checked in range, each
error naming the field and what was expected.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

# the bounds every mode's generation parameters are checked against
MAX_DURATION_S = 3600.0
MAX_SEED = 2**63 - 1


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any], what: str | None = None) -> T:
    """``cls(**data)``; ValueError naming every key that is not a field of ``cls``.

    ``what`` names where ``data`` came from (default: the class name).
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{what or cls.__name__}: unknown keys {unknown} (unknown "
                         f"{cls.__name__} fields); expected a subset of {sorted(known)}")
    return cls(**data)


def check_range(name: str, value: float, low: float, high: float,
                low_open: bool = False) -> None:
    """ValueError unless ``value`` is a finite number in [low, high] ((low, high] if
    ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None, *,
              allow_none: bool = False, note: str = "") -> None:
    """ValueError unless ``value`` is an integer (not a bool) within the bounds given
    (``None`` too if ``allow_none``); ``note`` is added to the message's expectation."""
    if allow_none and value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, int)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if ok:
        return
    if low is not None and high is not None:
        expected = f"an integer in [{low}, {high}]"
    elif low is not None:
        expected = f"an integer >= {low}"
    elif high is not None:
        expected = f"an integer <= {high}"
    else:
        expected = "an integer"
    none = "None or " if allow_none else ""
    raise ValueError(f"{name} must be {none}{expected}{note}, got {value!r}")


Seed = int | tuple[int | None, ...] | None   # one seed for a batch, or one per row


def check_seed(value: Any) -> None:
    """ValueError unless ``value`` is a seed: None, an integer in [0, MAX_SEED], or a non-empty
    tuple of those (one per batch row)."""
    if isinstance(value, tuple) and value:
        for entry in value:
            check_int("each entry of seed", entry, 0, MAX_SEED, allow_none=True)
        return
    check_int("seed", value, 0, MAX_SEED, allow_none=True,
              note=" (or a non-empty tuple of them, one per batch row)")


def check_bool(name: str, value: Any) -> None:
    """ValueError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
