"""Checks every config shares: numeric bounds with one-line messages, and values shown short in messages."""

from __future__ import annotations

import math
from typing import Any

from pycpilot.errors import PycpilotError

Range = tuple[float | None, float | None]  # inclusive; None: unbounded on that side


def short(value: Any, limit: int = 40) -> str:
    """A value for an error message: its type and a prefix, never the whole of a huge or nested value."""
    if isinstance(value, (bool, int, float)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value):,} characters)"
    if isinstance(value, (list, tuple, dict, set)):
        return f"a {type(value).__name__} of {len(value):,} items"
    return f"a {type(value).__name__}"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_ranges(config: Any, ranges: dict[str, Range], name_of: Any = flag) -> None:
    """Each named attribute (None = not set, skipped) is a number within its inclusive range."""
    for name, (low, high) in ranges.items():
        value = getattr(config, name)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        if number and (low is None or value >= low) and (high is None or value <= high):
            continue
        if low is not None and high is not None:
            wanted = f"between {_number(low)} and {_number(high)}"
        else:
            wanted = f"at least {_number(low)}" if low is not None else f"at most {_number(high)}"
        raise PycpilotError(f"{name_of(name)} must be {wanted}, not {short(value)}")


def _number(x: float | None) -> str:
    return f"{int(x):,}" if x is not None and float(x).is_integer() else f"{x:g}"
