"""What the data stage writes per file and counts per source: the record schema, tallies and the result.

Shared by the one-machine pool (`build.py`) and the datatrove engine (`trove/`), so both write the same rows.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pycpilot.data.items import printable
from pycpilot.data.report import REASONS
from pycpilot.data.worker import Checked

# The codeparrot-ds schema (copies and size are strings there), then CodeParrot-clean's extra columns.
COLUMNS = [
    "repo_name",
    "path",
    "copies",
    "size",
    "content",
    "license",
    "hash",
    "line_mean",
    "line_max",
    "alpha_frac",
    "source",
]
SCHEMA = pa.schema(
    [
        ("repo_name", pa.string()),
        ("path", pa.string()),
        ("copies", pa.string()),
        ("size", pa.string()),
        ("content", pa.string()),
        ("license", pa.string()),
        ("hash", pa.string()),
        ("line_mean", pa.float64()),
        ("line_max", pa.int64()),
        ("alpha_frac", pa.float64()),
        ("source", pa.string()),
    ]
)
BEFORE_DEDUP = set(REASONS[: REASONS.index("exact duplicate")])  # read problems, license, keywords


@dataclass
class Tally:
    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size


@dataclass
class SourceStats:
    spec: str
    kind: str
    seen: Tally = field(default_factory=Tally)
    kept: Tally = field(default_factory=Tally)
    removed: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    skipped_folders: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


@dataclass
class DataResult:
    out: Path
    manifest: dict[str, Any]


def row_digest(c: Checked) -> bytes:
    """What a kept row contributes to the split's hash (with its copies): name, licence and raw bytes."""
    text = f"{c.item.repo_name}\0{c.item.path}\0{c.item.license}\0{c.raw_digest}"
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def record_values(c: Checked, spec: str, copies: str = "") -> list[Any]:
    """A kept file's row in COLUMNS order (copies are filled in once the duplicates are all known)."""
    return [
        c.item.repo_name,
        c.item.path,
        copies,
        str(c.size),
        c.content,
        c.item.license,
        c.hash,
        round(c.line_mean, 4),
        c.line_max,
        round(c.alpha_frac, 4),
        printable(spec),
    ]
