"""Open the data stage's output for later stages, with one-line errors for anything unexpected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError

SPLITS = ("train", "valid")


def load_data_dir(path: str | Path, splits: tuple[str, ...] = SPLITS) -> Any:
    """The DatasetDict that `pycpilot data` saved at `path`, checked for its splits and `content` column."""
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise PycpilotError(f"data folder {path} does not exist (make it with `pycpilot data --out {path}`)")
    if not (path / "dataset_dict.json").is_file():
        raise PycpilotError(f"{path} is not a saved DatasetDict (no dataset_dict.json); make it with `pycpilot data`")
    datasets.disable_progress_bars()
    try:
        dsd = datasets.load_from_disk(str(path))
    except Exception as exc:  # corrupt arrow files, bad JSON: all mean the same to the user
        raise PycpilotError(f"cannot load the dataset at {path}: {str(exc).splitlines()[0][:200]}") from None
    missing = [s for s in splits if s not in dsd]
    if missing:
        raise PycpilotError(f"{path} has no {' or '.join(missing)} split (it has: {', '.join(dsd) or 'none'})")
    for split in splits:
        if "content" not in dsd[split].column_names:
            raise PycpilotError(f"{path} split {split} has no 'content' column")
    return dsd


def data_hash(path: str | Path) -> str | None:
    """The content hash the data stage recorded, so later stages can say which corpus they saw."""
    try:
        return json.loads((Path(path) / "manifest.json").read_text())["content_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
