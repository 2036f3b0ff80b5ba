"""Checkpoints: a `save_pretrained` model + tokenizer folder, the full training state, and a seal.

`checkpoints/step-0000123/` holds the model (loadable with AutoModelForCausalLM), the tokenizer,
`trainer_state.pt` (optimizer, scheduler position, RNG states, data position) and, written last,
`checkpoint.json` with every file's size and the state's hash. A folder is built under a temporary name and
renamed, so a crash at any moment leaves either a complete, sealed checkpoint or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pycpilot.errors import PycpilotError

SEAL = "checkpoint.json"
STATE = "trainer_state.pt"
PREFIX = "step-"


def fingerprint(model_config: Any) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this model."""
    keys = ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd")
    return {k: getattr(model_config, k) for k in keys}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    """Every generator a step may draw from, in plain types so that torch.load(weights_only=True) reads it."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    state: dict[str, Any],
    keep_last: int,
    weights: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoints/step-N atomically, then delete all but the newest `keep_last` sealed ones.

    `weights`: the full state dict when the model itself holds only a shard (FSDP)."""
    final = folder / f"{PREFIX}{step:07d}"
    tmp = folder / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(str(tmp), state_dict=weights)
        tokenizer.save_pretrained(str(tmp))
        torch.save(state, tmp / STATE)
        files = {p.name: p.stat().st_size for p in tmp.iterdir()}
        seal = {
            "step": step,
            "files": files,
            "state_sha256": _sha256(tmp / STATE),
            "fingerprint": fingerprint(model.config),
        }
        (tmp / SEAL).write_text(json.dumps(seal, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sealed_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def step_of(path: Path) -> int:
    return int(path.name.removeprefix(PREFIX))


def sealed_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (unsealed leftovers of a crash are ignored)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / SEAL).is_file()]
    return sorted(found, key=lambda p: p.name)


def verify(path: Path, model_config: Any) -> dict[str, Any]:
    """The checkpoint's seal, after checking it is whole and belongs to this model; one-line errors."""
    try:
        seal = json.loads((path / SEAL).read_text())
        files, recorded = seal["files"], seal["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PycpilotError(f"checkpoint {path} has no readable {SEAL}: it is incomplete or not a checkpoint") from None
    for name, size in files.items():
        actual = (path / name).stat().st_size if (path / name).is_file() else -1
        if actual != size:
            raise PycpilotError(f"checkpoint {path} is truncated: {name} has {max(actual, 0)} of {size} bytes")
    if _sha256(path / STATE) != seal.get("state_sha256"):
        raise PycpilotError(f"checkpoint {path} is corrupt: {STATE} does not match its recorded hash")
    mine = fingerprint(model_config)
    if recorded != mine:
        diff = ", ".join(f"{k} {recorded.get(k)} vs {v}" for k, v in mine.items() if recorded.get(k) != v)
        raise PycpilotError(f"checkpoint {path} is from another model ({diff}): use a fresh --out")
    return seal


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path / STATE, map_location="cpu", weights_only=True)  # no code runs from the file
    except Exception as exc:  # pickle and zip errors alike mean a damaged file
        raise PycpilotError(f"checkpoint {path} cannot be read ({type(exc).__name__}): it is damaged") from None
