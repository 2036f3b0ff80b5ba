"""Everything a training run is set up with, decided before the first step: `setup(cfg, rt) -> Run`.

Inputs (the pack and the tokenizer it was made with), the model's size (given, or sized to the budget),
the memory check, the output folder (fresh, or the checkpoint to resume), the model, its wrapper, the
optimiser and the schedule's length. Every refusal happens here, before any step runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pycpilot.errors import PycpilotError
from pycpilot.pack.reader import PackedDataset, PackInfo
from pycpilot.tokenizer.load import load_tokenizer, tokenizer_hash
from pycpilot.train import sharding
from pycpilot.train.budget import size_to_budget
from pycpilot.train.config import TrainConfig
from pycpilot.train.init_from import check_tokenizers, fine_tuning_config, grow_vocabulary, load_source
from pycpilot.train.loss import FusedLossLM, default_chunk
from pycpilot.train.model import attention_saved_gib, available_memory_gib, build_model, estimate_memory, gpt2_config
from pycpilot.train.optim import OptimizerSet, make_optimizer
from pycpilot.train.order import BatchOrder
from pycpilot.train.resume import State, check_same_run, prepare_out, resume_state, resume_weights, run_key
from pycpilot.train.runtime import Runtime, compute_dtype, grad_scaler, keep_freed_memory
from pycpilot.train.sharding import use_fsdp


@dataclass
class Run:
    """One training run as set up: what the loop, the hooks and the saves share."""

    cfg: TrainConfig
    rt: Runtime
    out: Path
    log: Callable[..., None]
    pack: PackInfo
    train_ds: PackedDataset
    valid_ds: PackedDataset
    tokenizer: Any
    block: int  # tokens per packed block: the pack decides it
    sizing: dict[str, Any] | None  # how the model was sized to the budget, if it was
    model: Any
    model_config: Any
    params: int
    lossy: FusedLossLM  # the model with its fused output layer + loss
    step_fn: Any  # lossy wrapped for DDP/FSDP (and compiled)
    fsdp: bool
    order: BatchOrder
    optimizer: OptimizerSet
    scaler: Any
    run_key: dict[str, Any]
    state: State
    resumed: bool
    budget: float | None  # seconds
    total_steps: int | None
    tokens_per_step: int
    tokens_per_byte: float  # of the valid split: loss in nats per token -> bits per byte
    estimate_gib: float
    init: dict[str, Any] | None = None  # --init-from: what the run started from (source, rows added)

    @property
    def batch(self) -> int:
        return self.cfg.resolved("batch_size")


def read_inputs(cfg: TrainConfig) -> tuple[PackInfo, PackedDataset, PackedDataset, Any]:
    pack = PackInfo.read(cfg.packed)
    train_ds, valid_ds = PackedDataset(cfg.packed, "train"), PackedDataset(cfg.packed, "valid")
    tok_dir = Path(cfg.tokenizer or pack.tokenizer_path or "")
    tokenizer = load_tokenizer(tok_dir)
    packed_with = pack.tokenizer_sha256
    if packed_with and tokenizer_hash(tok_dir) != packed_with:
        raise PycpilotError(f"tokenizer {tok_dir} is not the one {cfg.packed} was packed with (hashes differ)")
    return pack, train_ds, valid_ds, tokenizer


def setup(cfg: TrainConfig, rt: Runtime) -> Run:
    out = Path(cfg.out).resolve()
    pack, train_ds, valid_ds, tokenizer = read_inputs(cfg)
    rt.dtype = compute_dtype(cfg.precision, rt.device)
    rt.malloc_tuned = keep_freed_memory()
    block = pack.context_length
    log = (lambda *a: None) if (cfg.quiet or not rt.main) else (lambda *a: print(*a, flush=True))
    sizing, source, init = None, None, None
    if cfg.init_from:
        source = load_source(cfg.init_from)
        check_tokenizers(source.tokenizer, tokenizer, cfg.init_from, cfg.packed)
        cfg = fine_tuning_config(cfg, source.model.config, block)
        added = grow_vocabulary(source.model, len(tokenizer))
        init = {"source": str(cfg.init_from), "folder": str(source.path), "added_rows": added}
        grown = f", {added} token rows added for the pack's new tokens" if added else ""
        log(f"train: starting from {source.note}{grown}")
    if cfg.auto_size():
        cfg, sizing = size_to_budget(cfg, out, tokenizer, block, rt, pack.splits["train"].tokens)
        log(f"train: sized for {cfg.max_time}: {sizing['line']}")
        if sizing.get("data_note"):
            log(f"train: note: {sizing['data_note']}")
    model_config = source.model.config if source else gpt2_config(cfg, tokenizer, block)
    tokenizer.model_max_length = model_config.n_positions  # the saved model's tokenizer tells its context
    batch = cfg.resolved("batch_size")
    order = BatchOrder(len(train_ds), batch, cfg.grad_accum, rt.world, rt.rank, cfg.seed)
    if order.steps_per_epoch < 1:
        raise PycpilotError(
            f"{cfg.packed} has {len(train_ds)} train blocks, fewer than one global batch of {order.global_batch}"
        )
    chunk = cfg.loss_chunk or default_chunk(model_config.vocab_size)
    recompute = cfg.recompute_attention == "on" or (
        cfg.recompute_attention == "auto"
        and rt.device.type == "cpu"
        and model_config.attn_pdrop > 0
        and not cfg.grad_checkpointing
        and attention_saved_gib(model_config, batch, block) > 1.0
    )
    fsdp = use_fsdp(cfg.fsdp, cfg.preset_name, rt)
    if cfg.resolved("optimizer") == "muon" and fsdp:  # Newton-Schulz needs whole matrices, which FSDP shards
        if cfg.optimizer == "muon":
            raise PycpilotError("--optimizer muon needs whole weight matrices: use --fsdp off (DDP) or adamw")
        cfg = replace(cfg, optimizer="adamw")  # the manifest says what ran
        log("train: AdamW for every weight (the preset's Muon needs whole matrices, which FSDP shards)")
    estimate_gib = _check_memory(cfg, rt, model_config, batch, block, chunk, recompute, fsdp)
    resume_from = prepare_out(cfg, out, rt)

    torch.manual_seed(cfg.seed)
    model = build_model(
        model_config, cfg.grad_checkpointing, recompute, cfg.resolved("zero_init"), source.model if source else None
    ).to(rt.device)
    model_config = model.config  # the model's own copy, which knows its attention
    params = sum(p.numel() for p in model.parameters())  # before FSDP shards them
    rt.sharding = "fsdp" if fsdp else ("ddp" if rt.world > 1 else "none")
    saved = resume_weights(resume_from, model, model_config, log) if resume_from else None  # before sharding
    if saved is not None and source is not None:
        log(f"train: --resume: the weights come from the checkpoint; {cfg.init_from} gave the architecture only")
    key = run_key(cfg, order, pack, block)
    if saved is not None:
        check_same_run(saved.get("run"), key)
    lossy = FusedLossLM(model, chunk)
    step_fn = sharding.wrap(lossy, rt, fsdp)  # DDP, or FSDP sharding `lossy` in place
    if cfg.compile:
        step_fn = torch.compile(step_fn)
    optimizer = make_optimizer(
        model,
        name=cfg.resolved("optimizer"),
        lr=cfg.resolved("lr"),
        weight_decay=cfg.resolved("weight_decay"),
        betas=(cfg.beta1, cfg.resolved("beta2")),
        device=rt.device,
        muon_lr=cfg.resolved("muon_lr"),
        muon_weight_decay=cfg.muon_weight_decay,
    )
    scaler = grad_scaler(rt.device, rt.dtype)
    budget = cfg.budget_seconds()
    epochs = cfg.epochs
    if epochs is None:
        epochs = None if budget and not cfg.max_steps else cfg.preset_values().epochs
    total_steps = cfg.max_steps or (math.ceil(epochs * order.steps_per_epoch) if epochs else None)
    return Run(
        cfg=cfg, rt=rt, out=out, log=log, pack=pack, train_ds=train_ds, valid_ds=valid_ds, tokenizer=tokenizer,
        block=block, sizing=sizing, model=model, model_config=model_config,
        params=params, lossy=lossy, step_fn=step_fn, fsdp=fsdp, order=order,
        optimizer=optimizer, scaler=scaler, run_key=key,
        state=State() if saved is None else resume_state(saved, lossy, optimizer, scaler), resumed=saved is not None,
        budget=budget, total_steps=total_steps, tokens_per_step=order.global_batch * block,
        tokens_per_byte=pack.tokens_per_byte("valid"), estimate_gib=estimate_gib, init=init,
    )  # fmt: skip


def _check_memory(
    cfg: TrainConfig, rt: Runtime, model_config: Any, batch: int, block: int, chunk: int, recompute: bool, fsdp: bool
) -> float:
    """The estimated memory of the run (GiB); refused when it passes 90% of what is free."""
    keeps_scores = rt.device.type == "cpu" and model_config.attn_pdrop > 0 and not recompute  # SDPA's math kernel
    estimate = estimate_memory(
        model_config, batch, block, chunk, cfg.grad_checkpointing, not keeps_scores, 2 if rt.dtype else 4,
        shards=rt.world if fsdp else 1,
    )  # fmt: skip
    free = available_memory_gib(rt.device)
    if free is not None and rt.device.type == "cpu":
        free /= rt.local_world  # the processes of one machine share its memory
    if cfg.memory_check and free is not None and estimate.total_gib > 0.9 * free:
        raise PycpilotError(
            f"preset {cfg.preset_name} at batch {batch} x {block} needs about {estimate.total_gib:.1f} GiB "
            f"({estimate.params / 1e6:.0f}M parameters) but {free:.1f} GiB is free: lower --batch-size "
            f"(and raise --grad-accum) or add --grad-checkpointing (--no-memory-check skips this estimate)"
        )
    return estimate.total_gib
