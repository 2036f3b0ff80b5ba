"""When a stage of a run can be skipped: a fingerprint of its settings, its inputs and the stages before it.

The run's manifest keeps each finished stage's fingerprint and settings; a stage is redone when they differ,
and `why` says which setting, input or earlier stage changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

from pycpilot import __version__
from pycpilot.checks import short
from pycpilot.errors import PycpilotError
from pycpilot.executors import ENGINE_FIELDS

# Settings that change how a stage runs, not what it writes.
NOT_OUTPUT = {"out", "overwrite", "quiet", "resume", "num_proc", "threads", "log_every"}
# The engine: datatrove gives the same output as one machine (tested), so a switch redoes nothing.
NOT_OUTPUT |= ENGINE_FIELDS


def source_signature(sources: list[str]) -> list[str]:
    """What the data stage reads, cheaply: for a folder, every file's path, size and modification time."""
    from pycpilot.data import installed  # imported here: it loads the data stage

    signature = []
    for spec in sources:
        if spec == "stdlib":
            signature.append(f"stdlib {sys.version.split()[0]} {sysconfig.get_paths()['stdlib']}")
            continue
        if installed.is_spec(spec):  # what is installed: each distribution's name, version and place
            try:
                signature.append(installed.signature(spec))
            except PycpilotError:
                signature.append(spec)  # a missing PATH: the data stage says so
            continue
        path = Path(spec)
        if not path.exists():
            signature.append(spec)  # a hub name, or missing: the data stage says so
            continue
        digest = hashlib.sha256()
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            digest.update(f"{f.relative_to(path) if f != path else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        signature.append(f"{os.path.abspath(spec)} {digest.hexdigest()[:16]}")
    return signature


def settings_of(config: Any) -> dict[str, Any]:
    """A stage config's settings as JSON-able values, without those that do not change its output."""
    values = config if isinstance(config, dict) else vars(config)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items() if k not in NOT_OUTPUT}
    if "sample" in settings and settings["sample"] is None:  # the tokenizer's draw: absent unless drawn
        settings.pop("sample")
        settings.pop("sample_seed", None)
    if settings.get("parquet") is False:  # the data stage's Parquet copy: absent unless asked for
        settings.pop("parquet")
    if "preset" in settings:  # a preset's values can change between releases (tiny's vocabulary did): they count
        from pycpilot.presets import PRESETS

        preset = PRESETS.get(settings["preset"] or "tiny")  # no preset: the stage takes tiny's defaults
        settings["preset_values"] = dataclasses.asdict(preset) if preset else None
    return settings


def fingerprint(stage: str, settings: dict[str, Any], inputs: list[str]) -> str:
    blob = json.dumps({"stage": stage, "settings": settings, "inputs": inputs, "pycpilot": __version__},
                      sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()


def why(before: dict[str, Any] | None, settings: dict[str, Any], inputs: list[str]) -> str:
    """Why a stage must run: never run, which setting changed, or which input changed."""
    if not before:
        return "not run yet"
    old = before.get("settings", {})
    for key in sorted(set(old) | set(settings)):
        if key == "preset_values" and old.get(key) != settings.get(key):
            return f"the {settings.get('preset') or 'tiny'} preset's values changed"
        if old.get(key) != settings.get(key):
            return f"{key} changed ({short(old.get(key))} -> {short(settings.get(key))})"
    if before.get("inputs") != inputs:
        changed = [i for i in inputs if i not in before.get("inputs", [])]
        if changed and changed[0].startswith("stage "):
            return f"the {changed[0].split()[1]} stage before it was redone"
        return f"its input changed ({changed[0] if changed else 'an input went away'})"
    return "PYCPilot's version changed"
