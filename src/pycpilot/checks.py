"""Values shown in error messages: short, whatever the user sent."""

from __future__ import annotations

from typing import Any


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
