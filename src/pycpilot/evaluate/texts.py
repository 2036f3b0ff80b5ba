"""Held-out files for `eval perplexity` and `eval lines`: a `pycpilot data` folder's split, or a folder of .py files."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.manifest import MANIFEST, write_json_atomic
from pycpilot.settings import setting

MAX_FILE_BYTES = 10_000_000  # larger files are skipped (the data stage keeps files of at most 1 MB by default)


@dataclass
class HeldOut:
    """What `eval perplexity` and `eval lines` both read: a model and held-out files."""

    model: Path = setting(help="model folder, checkpoint or training --out")
    data: Path = setting(help="a `pycpilot data` folder or a folder of .py files")
    split: str = setting("valid", help="split of a data folder")


def read_texts(path: Path, split: str) -> tuple[list[tuple[str, str]], int]:
    """(name, text) of every file, and how many were skipped (unreadable, not UTF-8, binary, empty, too large)."""
    path = Path(path)
    if not path.exists():
        raise PycpilotError(f"--data {path} does not exist")
    if (path / "dataset_dict.json").is_file():  # the data stage's output
        from pycpilot.data.load import load_data_dir

        dsd = load_data_dir(path, splits=(split,))
        ds = dsd[split]
        names = ds["path"] if "path" in ds.column_names else [f"{split}[{i}]" for i in range(len(ds))]
        texts = [(str(n), t) for n, t in zip(names, ds["content"], strict=True) if isinstance(t, str) and t.strip()]
        if not texts:
            raise PycpilotError(f"--data {path} split {split} holds no non-empty files ({len(ds)} rows)")
        return texts, len(ds) - len(texts)
    files = [path] if path.is_file() else sorted(_python_files(path))
    texts, skipped = [], 0
    for f in files:
        text = _read(f)
        if text is not None:
            texts.append((str(f.relative_to(path) if f != path else f.name), text))
        else:
            skipped += 1
    if not texts:
        raise PycpilotError(f"--data {path} holds no readable, non-empty Python files ({skipped} skipped)")
    return texts, skipped


def _read(f: Path) -> str | None:
    """The text of a regular, UTF-8, non-binary, non-empty file of at most MAX_FILE_BYTES, else None."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer for ever.
        with open(os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # a FIFO or device would block or never end
                return None
            raw = handle.read(MAX_FILE_BYTES + 1)
        text = raw.decode("utf-8-sig")  # as the data stage reads files
    except (OSError, UnicodeDecodeError):
        return None
    if len(raw) > MAX_FILE_BYTES or b"\x00" in raw or not text.strip():
        return None
    return text


def _python_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root, onerror=lambda e: None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return found


def check_out(out: Path | None, stage: str) -> None:
    """Refuse, before any work, an --out that is a file, or a folder with files in it that is not an earlier output
    of this stage (a model or data folder, say, whose manifest.json writing would clobber)."""
    if out is None or not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise PycpilotError(f"--out {out} exists and is not a folder")
    try:
        found = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("stage")
    except (OSError, ValueError, AttributeError):
        found = None
    if found != stage and any(out.iterdir()):
        raise PycpilotError(
            f"refusing to write into {out}: it is not the output of an earlier {stage} (no matching {MANIFEST}); "
            "choose another --out"
        )


def write_out(out: Path, stage: str, files: dict[str, Any]) -> None:
    """Each file written beside its name, then renamed (manifest.json last)."""
    check_out(out, stage)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PycpilotError(f"cannot write {out}: {exc.strerror or exc}") from None
    for name, data in files.items():
        write_json_atomic(out / name, data)
