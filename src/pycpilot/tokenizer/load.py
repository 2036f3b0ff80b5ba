"""Load a tokenizer folder made by `pycpilot tokenizer` (or any HF tokenizer) with one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError

REQUIRED = ("tokenizer.json", "tokenizer_config.json")


def tokenizer_hash(path: str | Path) -> str:
    return hashlib.sha256((Path(path) / "tokenizer.json").read_bytes()).hexdigest()


def load_tokenizer(path: str | Path) -> Any:
    """AutoTokenizer for a local tokenizer folder, checked before transformers sees it."""
    path = Path(path)
    if not path.is_dir():
        raise PycpilotError(f"tokenizer folder {path} does not exist (make it with `pycpilot tokenizer`)")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise PycpilotError(f"{path} is not a complete tokenizer folder: missing {', '.join(missing)}")
    try:
        spec = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise PycpilotError(f"{path}/tokenizer.json is not valid JSON (truncated or corrupt?)") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise PycpilotError(f"{path}/tokenizer.json does not describe a tokenizer (no 'model' section)")
    return load_any_tokenizer(str(path))


def load_any_tokenizer(name_or_dir: str) -> Any:
    """A hub name or local folder, as `--base` and `--compare` take; offline hub names fail in one line."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(name_or_dir)
    except Exception as exc:  # OSError offline, ValueError for odd configs, JSON errors: one line each
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise PycpilotError(f"cannot load tokenizer {name_or_dir}: {first}") from None
