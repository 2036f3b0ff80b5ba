"""Starting a run's output folder, or picking up where a checkpoint left off, exactly.

A resumed run must see what the checkpoint's run would have seen: the same global batch, seed, blocks and
packed data (`run_key`), the same weights, optimiser and scaler state, RNG states and data position.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pycpilot.errors import PycpilotError
from pycpilot.manifest import check_output_dir
from pycpilot.pack.reader import PackInfo
from pycpilot.train import checkpoint as ckpt
from pycpilot.train import sharding
from pycpilot.train.config import TrainConfig
from pycpilot.train.loss import FusedLossLM
from pycpilot.train.optim import OptimizerSet
from pycpilot.train.order import BatchOrder, Position
from pycpilot.train.runtime import Runtime


@dataclass
class State:
    """Where training stands: what a checkpoint records and a resume restores."""

    step: int = 0
    position: Position = field(default_factory=Position)
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training before this process started (resume)


def prepare_out(cfg: TrainConfig, out: Path, rt: Runtime) -> tuple[Path, dict] | None:
    """Clear or check `out`; for --resume, the newest whole checkpoint (newer damaged ones are set aside)."""
    has_checkpoints = bool(ckpt.sealed_checkpoints(out / "checkpoints"))
    if cfg.resume:
        return resume_point(out, rt)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            hint = " (--resume continues it)" if has_checkpoints else ""
            raise PycpilotError(f"output {out} already exists{hint}; pass --overwrite to start over")
        check_output_dir(out, True, "train", (Path(cfg.packed),))
    rt.barrier()
    if rt.main:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    rt.barrier()


def resume_point(out: Path, rt: Runtime) -> tuple[Path, dict]:
    """The newest whole checkpoint, chosen by rank 0 alone (the ranks must agree, and hashing once is enough):
    newer damaged ones are set aside, out of the step-* names, or keep-last could delete the new saves."""
    folder, step, why = out / "checkpoints", -1, ""
    if rt.main:
        start, damaged = ckpt.newest_whole(folder)
        # Set aside only when a whole one is left to resume from; otherwise all stay as they are, for a look.
        for path, reason in damaged if start else []:
            try:
                reason += f"; moved to {ckpt.set_aside(path).name}"
            except OSError as exc:
                reason += f"; could not be moved aside ({exc.strerror})"
            print(f"train: warning: {reason}", file=sys.stderr, flush=True)
        step = ckpt.step_of(start[0]) if start else -1
        why = f" ({damaged[0][1]})" if damaged and not start else ""
        # what a killed save left half-written (its process id differs from ours)
        for leftover in [*out.glob(".final.tmp-*"), *folder.glob(".step-*.tmp-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
    step = int(rt.all_sum(torch.tensor([step if rt.main else 0], dtype=torch.int64, device=rt.device)).item())
    if step < 0:
        raise PycpilotError(f"--resume: {out} has no complete checkpoint to continue from{why}")
    path = folder / f"{ckpt.PREFIX}{step:07d}"
    return path, ckpt.read_seal(path)


def resume_weights(start: tuple[Path, dict], model: Any, model_config: Any, log: Any) -> dict[str, Any]:
    """Load a whole checkpoint's weights into the (not yet sharded) model; its training state for later."""
    from safetensors.torch import load_file

    path, seal = start
    ckpt.check_fits(path, seal, model_config)
    saved = ckpt.load_state(path)
    weights = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise PycpilotError(
            f"checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    log(f"train: resuming from {path.name} (step {saved['step']})")
    return saved


def run_key(cfg: TrainConfig, order: BatchOrder, pack: PackInfo, block: int) -> dict[str, Any]:
    """What decides which blocks each step sees: a resumed run must agree on all of it (the number of
    processes may change, the global batch may not)."""
    return {
        "global_batch": order.global_batch,
        "seed": cfg.seed,
        "block": block,
        "train_blocks": pack.splits["train"].blocks,
        "data_sha256": pack.data_sha256,
        "init_from": cfg.init_from,
    }


def check_same_run(saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    if not saved:  # a checkpoint from before this check was recorded
        return
    names = {"global_batch": "global batch (processes x --batch-size x --grad-accum)", "seed": "--seed",
             "block": "block length", "train_blocks": "train blocks", "data_sha256": "packed data",
             "init_from": "--init-from"}  # fmt: skip
    diff = [f"{names.get(k, k)} {saved.get(k)} -> {v}" for k, v in now.items() if k in saved and saved[k] != v]
    if diff:
        raise PycpilotError(
            "--resume: this run would see other data than the checkpoint's: "
            + "; ".join(diff)
            + " (resume with the same settings, or start over with --overwrite)"
        )


def resume_state(saved: dict[str, Any], lossy: FusedLossLM, optimizer: OptimizerSet, scaler: Any) -> State:
    try:
        sharding.load_optimizer_state(lossy, optimizer, saved["optimizer"])
        if saved.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(saved["scaler"])
    except (KeyError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise PycpilotError(f"the checkpoint's optimizer state does not fit this run: {first}") from None
    ckpt.set_rng_state(saved["rng"])
    epoch, in_epoch = saved["position"]
    return State(
        step=saved["step"], position=Position(epoch, in_epoch), tokens=saved["tokens"], elapsed=saved["elapsed"]
    )
