"""What a run leaves on disk: checkpoints as it goes, and at the end the final model and the manifest."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pycpilot.manifest import MANIFEST, base_manifest, write_json_atomic
from pycpilot.seal import seal_files
from pycpilot.train import checkpoint as ckpt
from pycpilot.train import sharding
from pycpilot.train.setup import Run


def save(run: Run, seconds: float) -> None:
    """A checkpoint of the run's state now (`seconds` of training in this process); every rank takes part."""
    rt, state, out = run.rt, run.state, run.out
    sealed = ckpt.sealed_checkpoints(out / "checkpoints")
    # The end right after a save: never replace it. Rank 0 decides for all (what each rank sees on disk may
    # differ, and every rank must take part in the same collectives).
    if rt.any_true(rt.main and bool(sealed) and ckpt.step_of(sealed[-1]) == state.step):
        return
    weights = sharding.full_model_state(run.lossy, run.fsdp)  # collectives first, on every rank
    optimizer_state = sharding.full_optimizer_state(run.lossy, run.optimizer)
    if rt.main:
        trainer_state = {
            "step": state.step,
            "position": [state.position.epoch, state.position.step_in_epoch],
            "tokens": state.tokens,
            "elapsed": state.elapsed + seconds,
            "optimizer": optimizer_state,
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {},
            "rng": ckpt.rng_state(),
            "run": run.run_key,
        }
        ckpt.save_checkpoint(
            out / "checkpoints", state.step, run.lossy.model, run.tokenizer, trainer_state, run.cfg.keep_last, weights
        )
    rt.barrier()


def last_good(out: Path) -> str:
    last = ckpt.sealed_checkpoints(out / "checkpoints")
    return f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was saved yet"


def export_final(out: Path, model: Any, weights: dict | None, tokenizer: Any) -> dict[str, dict]:
    """The final model and tokenizer at the top of `out`, written aside and moved in file by file; their seal
    (sizes and hashes, for the manifest, which `load_model` checks them against)."""
    tmp = out / f".final.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), state_dict=weights)
    tokenizer.save_pretrained(str(tmp))
    files = seal_files(tmp)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()
    return files


def _recorded_files(out: Path) -> dict | None:
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return files if isinstance(files, dict) else None


def write_manifest(run: Run, status: str, extra: dict, files: dict | None = None) -> dict:
    cfg, rt, model_config = run.cfg, run.rt, run.model_config
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    if files is None:  # a resumed run: the final model of before is still at the top of `out`, still checked
        files = _recorded_files(run.out)
    manifest = base_manifest("train", config)
    manifest.update(
        {
            "status": status,
            "compute": {
                "device": rt.device.type,
                "processes": rt.world,
                "dtype": str(rt.dtype or torch.float32),
                "attention": model_config._attn_implementation,
                "malloc_tuned": rt.malloc_tuned,
                "sharding": rt.sharding,
            },
            "preset": asdict(cfg.preset_values()),
            "model": {
                k: getattr(model_config, k)
                for k in ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd", "resid_pdrop")
            }
            | {"parameters": run.params},
            "packed": {
                "path": str(cfg.packed),
                "context_length": run.pack.context_length,
                "tokenizer_sha256": run.pack.tokenizer_sha256,
                "data_sha256": run.pack.data_sha256,
            },
            "checkpoints": [p.name for p in ckpt.sealed_checkpoints(run.out / "checkpoints")],
            "result": extra,
        }
        | ({"sizing": run.sizing} if run.sizing else {})
        | ({"init_from": run.init} if run.init else {})
        | ({"files": files} if files else {})
    )
    write_json_atomic(run.out / MANIFEST, manifest)
    return manifest
