"""Seals: each file's size and SHA-256, recorded when a folder is written and checked when it is read.

A seal catches what a size check cannot: a flipped byte inside a same-sized file. Hashing reads the files
once (about 1 GB/s), which is small beside writing them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal_files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """{name: {"size", "sha256"}} for every plain file directly in `folder`, except `skip`."""
    return {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in skip
    }


def broken_files(folder: Path, recorded: Any) -> list[str]:
    """What no longer matches the seal, one phrase per file (empty when all is whole).

    An entry may be a bare size (seals written before hashes were recorded): then only the size is checked."""
    if not isinstance(recorded, dict):
        return ["its seal lists no files"]
    problems = []
    for name, entry in recorded.items():
        path = folder / str(name)
        size, digest = (entry.get("size"), entry.get("sha256")) if isinstance(entry, dict) else (entry, None)
        try:
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif path.stat().st_size != size:
                problems.append(f"{name} has {path.stat().st_size} of {size} bytes")
            elif digest is not None and sha256_file(path) != digest:
                problems.append(f"{name} does not match its recorded SHA-256")
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc.strerror or type(exc).__name__})")
    return problems
