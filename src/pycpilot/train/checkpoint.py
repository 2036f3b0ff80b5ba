"""Checkpoints: a `save_pretrained` model + tokenizer folder, the full training state, and a seal.

`checkpoints/step-0000123/` holds the model (loadable with AutoModelForCausalLM), the tokenizer,
`trainer_state.pt` (optimizer, scheduler position, RNG states, data position) and, written last,
`checkpoint.json` with every file's size and SHA-256. A folder is built under a temporary name and renamed, so
a crash at any moment leaves either a complete, sealed checkpoint or none; a file changed afterwards (a flipped
byte, a truncated copy) fails `check_whole`, and resume moves such checkpoints aside and uses the newest whole one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pycpilot.errors import PycpilotError
from pycpilot.seal import broken_files, seal_files, sha256_file

SEAL = "checkpoint.json"
STATE = "trainer_state.pt"
PREFIX = "step-"
SET_ASIDE = "corrupt-"  # what resume moves a damaged checkpoint to (kept for inspection, never loaded)


class DamagedCheckpoint(PycpilotError):
    """A checkpoint whose files no longer match its seal (or that has none): skip it, never load it."""


def fingerprint(model_config: Any) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this model."""
    keys = ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd")
    return {k: getattr(model_config, k) for k in keys}


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
        seal = {"step": step, "files": seal_files(tmp), "fingerprint": fingerprint(model.config)}
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


def read_seal(path: Path) -> dict[str, Any]:
    """The checkpoint's seal as written (its files not checked: see check_whole)."""
    try:
        seal = json.loads((path / SEAL).read_text())
        seal["files"].items()
        seal["fingerprint"].items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DamagedCheckpoint(f"checkpoint {path} has no readable {SEAL}: incomplete or not a checkpoint") from None
    return seal


def check_whole(path: Path) -> dict[str, Any]:
    """The checkpoint's seal, after checking every file it lists (size and SHA-256); DamagedCheckpoint if not."""
    seal = read_seal(path)
    problems = broken_files(path, seal["files"])
    # Seals from before per-file hashes: sizes above, the training state's hash here.
    if not problems and "state_sha256" in seal:
        try:
            if sha256_file(path / STATE) != seal["state_sha256"]:
                problems.append(f"{STATE} does not match its recorded SHA-256")
        except OSError as exc:
            problems.append(f"{STATE} cannot be read ({exc.strerror or type(exc).__name__})")
    if problems:
        raise DamagedCheckpoint(f"checkpoint {path} is damaged: {'; '.join(problems[:3])}")
    return seal


def check_fits(path: Path, seal: dict[str, Any], model_config: Any) -> None:
    """Refuse a (whole) checkpoint of another model shape."""
    recorded, mine = seal["fingerprint"], fingerprint(model_config)
    if recorded != mine:
        diff = ", ".join(f"{k} {recorded.get(k)} vs {v}" for k, v in mine.items() if recorded.get(k) != v)
        raise PycpilotError(f"checkpoint {path} is from another model ({diff}): use a fresh --out")


def newest_whole(folder: Path) -> tuple[tuple[Path, dict[str, Any]] | None, list[tuple[Path, str]]]:
    """The newest sealed checkpoint whose files all match (with its seal), and the newer ones that did not."""
    damaged = []
    for path in reversed(sealed_checkpoints(folder)):
        try:
            return (path, check_whole(path)), damaged
        except DamagedCheckpoint as exc:
            damaged.append((path, str(exc)))
    return None, damaged


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint out of the `step-*` namespace, so neither resume nor keep-last sees it."""
    target, n = path.with_name(SET_ASIDE + path.name), 1
    while target.exists():  # an earlier one of the same step is kept too
        n += 1
        target = path.with_name(f"{SET_ASIDE}{path.name}.{n}")
    os.replace(path, target)
    return target


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path / STATE, map_location="cpu", weights_only=True)  # no code runs from the file
    except Exception as exc:  # pickle and zip errors alike mean a damaged file
        raise PycpilotError(f"checkpoint {path} cannot be read ({type(exc).__name__}): it is damaged") from None
