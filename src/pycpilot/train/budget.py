"""`--max-time` alone: measure candidate shapes with the real training step, choose one (sizing.py), and
hand back a TrainConfig that names it, so the rest of training runs as if the user had passed the sizes.

A resumed run reuses the choice its manifest recorded: measuring again could pick another shape, which no
checkpoint would fit.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pycpilot.errors import PycpilotError
from pycpilot.manifest import MANIFEST
from pycpilot.train.config import TrainConfig
from pycpilot.train.loss import FusedLossLM, default_chunk
from pycpilot.train.model import available_memory_gib, build_model, estimate_memory, gpt2_config
from pycpilot.train.optim import make_optimizer
from pycpilot.train.runtime import Runtime, autocast, grad_scaler
from pycpilot.train.sizing import Shape, choose_size, probe_rows, probe_tokens_per_s

# Passes over the train split beyond which repeating data costs more than fresh data would (Muennighoff et
# al. 2023: up to ~4 epochs are almost as good as new tokens).
MAX_GOOD_EPOCHS = 4.0


def size_to_budget(
    cfg: TrainConfig, out: Path, tokenizer: Any, block: int, rt: Runtime, train_tokens: int
) -> tuple[TrainConfig, dict]:
    """(the config with n_layer/n_head/n_embd/batch_size set, what the manifest records under "sizing")."""
    if cfg.resume:
        saved = _recorded(out)
        if saved is not None:
            return _apply(cfg, saved), saved
    budget = cfg.budget_seconds()
    assert budget is not None
    chunk = cfg.loss_chunk or default_chunk(len(tokenizer))
    free = available_memory_gib(rt.device)
    if free is not None and rt.device.type == "cpu":
        free /= rt.local_world

    def shaped(shape: Shape) -> TrainConfig:
        return replace(cfg, n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd)

    def fits(shape: Shape) -> bool:
        config = gpt2_config(shaped(shape), tokenizer, block)
        rows = cfg.batch_size or 16
        estimate = estimate_memory(config, rows, block, chunk, False, True, 2 if rt.dtype else 4)
        return not cfg.memory_check or free is None or estimate.total_gib <= 0.9 * free

    def measure(shape: Shape) -> float:
        return _measure(shaped(shape), tokenizer, block, rt, chunk, probe_rows(shape, cfg.batch_size)) * rt.world

    choice = choose_size(budget, measure=measure, fits=fits, block=block, batch_rows=cfg.batch_size)
    rows = choice.batch_rows if cfg.batch_size else max(1, choice.batch_rows // (rt.world * cfg.grad_accum))
    step_s = rows * rt.world * cfg.grad_accum * block / choice.tokens_per_s
    if step_s > budget:
        raise PycpilotError(
            f"--max-time {cfg.max_time} is too short for one step even of the smallest model ({choice.shape}: "
            f"about {step_s:.1f} s a step here); give at least {math.ceil(step_s * 20)} s"
        )
    record = choice.as_manifest() | {"batch_size": rows}
    record["line"] = (
        f"GPT-2 {choice.shape} ({choice.shape.non_embedding / 1e6:.2f}M non-embedding parameters), batch {rows}: "
        f"~{choice.tokens_per_s:,.0f} tokens/s measured, ~{choice.expected_tokens / 1e6:.1f}M tokens in the budget; "
        f"{choice.reason} (measured in {choice.probe_seconds:.1f} s; --preset or --n-layer/--n-embd choose yourself)"
    )
    epochs = choice.expected_tokens / max(train_tokens, 1)
    record["epochs"] = round(epochs, 1)
    if epochs > MAX_GOOD_EPOCHS:
        record["data_note"] = (
            f"this budget passes over the {train_tokens / 1e6:.1f}M train tokens about {epochs:.0f} times (more "
            f"than {MAX_GOOD_EPOCHS:g} repeats teach less than new code would): add data, e.g. `pycpilot data "
            f"--source stdlib --source site-packages` (every installed package)"
        )
    record = _agree(record, rt)
    return _apply(cfg, record), record


def _apply(cfg: TrainConfig, record: dict) -> TrainConfig:
    shape = record["shape"]
    return replace(
        cfg,
        n_layer=int(shape["n_layer"]),
        n_head=int(shape["n_head"]),
        n_embd=int(shape["n_embd"]),
        batch_size=cfg.batch_size or int(record["batch_size"]),
    )


def _recorded(out: Path) -> dict | None:
    try:
        sizing = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("sizing")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(sizing, dict) and isinstance(sizing.get("shape"), dict) and "batch_size" in sizing:
        return sizing
    return None


def _agree(record: dict, rt: Runtime) -> dict:
    """Every process measures; rank 0's choice is everyone's (one model, one batch)."""
    if rt.world == 1:
        return record
    import torch.distributed as dist

    box = [record]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _measure(cfg: TrainConfig, tokenizer: Any, block: int, rt: Runtime, chunk: int, rows: int) -> float:
    """Tokens/s of this process's training step (forward, backward, clip, optimiser) at `rows` x `block`."""
    torch.manual_seed(cfg.seed)
    model = build_model(gpt2_config(cfg, tokenizer, block), False, False, cfg.resolved("zero_init")).to(rt.device)
    lossy = FusedLossLM(model, chunk)
    optimizer = make_optimizer(
        model,
        name=cfg.resolved("optimizer"),
        lr=1e-6,  # the weights are thrown away; a tiny step keeps them finite
        weight_decay=cfg.resolved("weight_decay"),
        betas=(cfg.beta1, cfg.resolved("beta2")),
        device=rt.device,
        muon_lr=1e-6,
    )
    optimizer.set_lr(1.0)
    scaler = grad_scaler(rt.device, rt.dtype)

    def step(x: torch.Tensor) -> None:
        with autocast(rt.device, rt.dtype):
            loss = lossy(x.to(rt.device))
        scaler.scale(loss).backward()
        optimizer.unscale_(scaler)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or 1.0)
        optimizer.step(scaler)
        optimizer.zero_grad()
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)

    return probe_tokens_per_s(step, len(tokenizer), rows, block)
