"""What the data stage tells: the filter table on the terminal and the manifest on disk."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycpilot.manifest import base_manifest
from pycpilot.tables import table

if TYPE_CHECKING:
    from pycpilot.data.build import Builder
    from pycpilot.data.config import DataConfig

# Reasons in the order the pipeline applies them: the filter table lists them this way.
REASONS = [
    "pycpilot itself",
    "no file list",
    "unreadable",
    "symlink loop",
    "binary (NUL bytes)",
    "not UTF-8",
    "empty",
    "over size limit",
    "malformed record",
    "license",
    "keywords",
    "exact duplicate",
    "auto-generated",
    "max line length",
    "mean line length",
    "alphanumeric fraction",
    "config or test file",
    "no def/class/for/while",
    "few assignments",
    "syntax error",
    "HumanEval contamination",
    "near duplicate",
]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _split_stats(builder: Builder, rows: list[int]) -> dict[str, Any]:
    """Counts and a content hash of one split, in row order."""
    digest = hashlib.sha256()
    for i in rows:
        digest.update(builder.row_digests[i] + str(builder.copies[i]).encode())
    return {"files": len(rows), "repositories": len({builder.repos[i] for i in rows}), "sha256": digest.hexdigest()}


def build_manifest(
    cfg: DataConfig, b: Builder, split: Any, seen: int, timings: dict[str, float], engine: dict[str, Any]
) -> dict[str, Any]:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    manifest = base_manifest("data", config)
    splits = {"train": _split_stats(b, split.train), "valid": _split_stats(b, split.valid)}
    kept_bytes = sum(s.kept.bytes for s in b.sources)
    manifest.update(
        {
            "sources": [
                {
                    "spec": s.spec,
                    "kind": s.kind,
                    "files": s.seen.files,
                    "bytes": s.seen.bytes,
                    "kept_files": s.kept.files,
                    "kept_bytes": s.kept.bytes,
                    "vendored_folders_skipped": s.skipped_folders,
                    "removed": {r: asdict(t) for r, t in s.removed.items()},
                    "input_sha256": s.digest.hexdigest(),
                }
                for s in b.sources
            ],
            "filters": [
                {"filter": r, "files": b.removed[r].files, "bytes": b.removed[r].bytes}
                for r in REASONS
                if r in b.removed
            ],
            "seen": {"files": seen, "bytes": sum(s.seen.bytes for s in b.sources)},
            "kept": {"files": len(b.copies), "bytes": kept_bytes},
            "contamination": dict(sorted(b.contaminated.items())),
            "split": {"mode": split.mode, "note": split.note},
            "splits": splits,
            "content_sha256": hashlib.sha256(
                (splits["train"]["sha256"] + splits["valid"]["sha256"]).encode()
            ).hexdigest(),
            "engine": engine,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "throughput_mb_s": round(sum(s.seen.bytes for s in b.sources) / 1e6 / max(timings["total_s"], 1e-9), 2),
        }
    )
    return manifest


def filter_table(b: Builder, seen: int) -> str:
    total_bytes = sum(s.seen.bytes for s in b.sources)
    rows: list[list[object]] = [["read", seen, human_bytes(total_bytes), ""]]
    for reason in REASONS:
        if reason in b.removed:
            t = b.removed[reason]
            rows.append([f"- {reason}", t.files, human_bytes(t.bytes), f"{100 * t.bytes / max(total_bytes, 1):.1f}%"])
    kept = sum(s.kept.bytes for s in b.sources)
    rows.append(["= kept", len(b.copies), human_bytes(kept), f"{100 * kept / max(total_bytes, 1):.1f}%"])
    return table(["step", "files", "bytes", "% bytes"], rows)
