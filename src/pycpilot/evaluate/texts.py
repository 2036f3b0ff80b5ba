"""Held-out files for `eval perplexity` and `eval lines`: a `pycpilot data` folder's split, or a folder of .py files."""

from __future__ import annotations

import os
from pathlib import Path

from pycpilot.errors import PycpilotError


def read_texts(path: Path, split: str) -> tuple[list[tuple[str, str]], int]:
    """(name, text) of every file, and how many were skipped (unreadable, not UTF-8, empty)."""
    path = Path(path)
    if not path.exists():
        raise PycpilotError(f"--data {path} does not exist")
    if (path / "dataset_dict.json").is_file():  # the data stage's output
        from pycpilot.data.load import load_data_dir

        dsd = load_data_dir(path, splits=(split,))
        ds = dsd[split]
        names = ds["path"] if "path" in ds.column_names else [f"{split}[{i}]" for i in range(len(ds))]
        texts = [(str(n), t) for n, t in zip(names, ds["content"], strict=True) if t and t.strip()]
        return texts, len(ds) - len(texts)
    files = [path] if path.is_file() else sorted(_python_files(path))
    texts, skipped = [], 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            skipped += 1
            continue
        if text.strip() and "\x00" not in text:
            texts.append((str(f.relative_to(path) if f != path else f.name), text))
        else:
            skipped += 1
    if not texts:
        raise PycpilotError(f"--data {path} holds no readable, non-empty Python files ({skipped} skipped)")
    return texts, skipped


def _python_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root, onerror=lambda e: None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return found
