"""Find and load a model folder for completion and evaluation, with one-line errors.

Accepted: a final model (`pycpilot train --out` after the run), one of its checkpoints, the `--out` of a run that
is still training (its newest sealed checkpoint is used, as the seed tries its epoch checkpoints early), or any
local Hugging Face causal-LM folder with a tokenizer.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass
class Loaded:
    path: Path  # the folder the weights came from
    model: Any  # transformers causal LM, eval mode, on the CPU
    tokenizer: Any
    note: str  # what was picked, for the user


def resolve_model_dir(path: Path) -> tuple[Path, str]:
    """The folder holding weights: `path` itself or, for a training run, its newest whole checkpoint."""
    from pycpilot.train.checkpoint import newest_whole

    path = Path(path)
    if not path.is_dir():
        raise PycpilotError(f"model folder {path} does not exist")
    if (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHTS):
        return path, f"model {path}"
    found, damaged = newest_whole(path / "checkpoints")
    for _, why in damaged:
        _warn(f"{why}; skipped")
    if found:
        return found[0], f"newest checkpoint {found[0].name} of {path} (training has not finished)"
    raise PycpilotError(f"{path} holds no model: no config.json with weights and no whole checkpoint in checkpoints/")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _reason(exc: Exception) -> str:
    """An exception's whole message on one line (transformers puts the reason on the second)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


def _model_config(folder: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # transformers' validation and json errors alike
        raise PycpilotError(f"{folder}/config.json is not a valid model configuration: {_reason(exc)}") from None


def _check_shapes(folder: Path, config: Any) -> None:
    """Weights whose shapes differ from what config.json describes, named before transformers fails on them."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    weights = folder / "model.safetensors"
    if not weights.is_file():
        return
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
        with torch.device("meta"):
            expected = {k: list(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    except Exception:  # a header safetensors cannot read: from_pretrained names it below
        return
    for name, shape in stored.items():
        if name in expected and expected[name] != shape:
            raise PycpilotError(
                f"{weights} does not fit {folder}/config.json: {name} is {shape} in the weights but {expected[name]} "
                "by the config (was config.json edited, or copied from another model?)"
            )


def _stat_key(folder: Path) -> tuple:
    """What changes when any file of the folder does (so a folder loaded again is hashed once)."""
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


@functools.lru_cache(maxsize=16)
def _checked_seal(folder: Path, key: tuple) -> str | None:
    return seal_problems(folder)


def seal_problems(folder: Path) -> str | None:
    """How the model's files differ from what training recorded (its manifest, or a checkpoint's seal)."""
    from pycpilot.manifest import MANIFEST
    from pycpilot.seal import broken_files
    from pycpilot.train.checkpoint import SEAL, DamagedCheckpoint, check_whole

    if (folder / SEAL).is_file():
        try:
            check_whole(folder)
        except DamagedCheckpoint as exc:
            return str(exc)
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        recorded = manifest.get("files") if manifest.get("stage") == "train" else None
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None  # not a PYCPilot model (or no manifest): nothing recorded to check against
    problems = broken_files(folder, recorded) if recorded else []
    if problems:
        return f"the model in {folder} differs from what training wrote ({'; '.join(problems[:3])})"
    return None


def load_model(path: Path | str, dtype: Any = None) -> Loaded:
    """Model and tokenizer from `path` (see the module docstring); never touches the network."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from pycpilot.tokenizer.load import load_tokenizer

    folder, note = resolve_model_dir(Path(path))
    changed = _checked_seal(folder, _stat_key(folder))
    if changed:
        _warn(changed)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise PycpilotError(f"{folder}/config.json is not readable JSON (truncated or corrupt?)") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise PycpilotError(f"{folder}/config.json does not describe a model (no model_type)")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model_config = _model_config(folder)  # before the tokenizer, which reads config.json too (and would be blamed)
    _check_shapes(folder, model_config)
    tokenizer = load_tokenizer(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype or torch.float32, local_files_only=True, attn_implementation="sdpa"
        )
    except Exception as exc:  # safetensors, torch and json errors alike: a damaged or foreign folder
        raise PycpilotError(f"cannot load the model in {folder}: {_reason(exc)}") from None
    model.eval()
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:  # its ids past the model's embeddings would crash the first forward pass
        raise PycpilotError(
            f"the tokenizer in {folder} has {len(tokenizer):,} tokens but the model only {rows:,}: they do not belong "
            "together"
        )
    return Loaded(folder, model, tokenizer, note)
