"""What a source yields: files to clean (`Item`) and what it rejected before reading (`Skip`)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Item:
    """One file to clean: either a path for a worker to read, or text that a dataset already holds."""

    source: str
    repo_name: str
    path: str
    license: str = "unknown"
    copies: int = 1
    fs_path: str | None = None
    content: str | None = None


@dataclass
class Skip:
    """A file or folder rejected before reading; counted under `reason`."""

    source: str
    path: str
    reason: str


def printable(name: str) -> str:
    """A file name as valid UTF-8 text: undecodable bytes (kept by Python as surrogates) become \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
