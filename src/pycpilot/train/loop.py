"""`pycpilot train`: GPT-2 from scratch on packed blocks (seed 7.4.4), top to bottom.

Setup (inputs, model, optimiser, resume) -> for each step: the step's blocks, forward/backward per
micro-batch, clip, step, schedule -> log / evaluate / checkpoint -> final model, plot, manifest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pycpilot.errors import Interrupted, PycpilotError
from pycpilot.manifest import MANIFEST, base_manifest, check_output_dir, write_json_atomic
from pycpilot.pack.reader import PackedDataset, read_pack_manifest
from pycpilot.seal import seal_files
from pycpilot.tokenizer.load import load_tokenizer, tokenizer_hash
from pycpilot.train import checkpoint as ckpt
from pycpilot.train import sharding
from pycpilot.train.budget import size_to_budget
from pycpilot.train.config import TrainConfig
from pycpilot.train.loss import FusedLossLM, default_chunk
from pycpilot.train.metrics import MetricsLog, plot_losses
from pycpilot.train.model import (
    attention_saved_gib,
    available_memory_gib,
    build_model,
    estimate_memory,
    gpt2_config,
)
from pycpilot.train.optim import OptimizerSet, lr_factor, make_optimizer, steps_progress
from pycpilot.train.order import BatchOrder, Position
from pycpilot.train.runtime import (
    Runtime,
    autocast,
    compute_dtype,
    flops_per_token,
    grad_scaler,
    keep_freed_memory,
    peak_flops,
)
from pycpilot.train.sharding import use_fsdp


@dataclass
class TrainResult:
    out: Path
    manifest: dict[str, Any]


INTERIM_EVAL_BLOCKS = 256  # valid blocks read by the evaluations during training, unless --eval-blocks


@dataclass
class _State:
    step: int = 0
    position: Position = field(default_factory=Position)
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training before this process started (resume)


class _StopFlag:
    """First Ctrl-C: finish the step, save, exit. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _prepare_out(cfg: TrainConfig, out: Path, rt: Runtime) -> tuple[Path, dict] | None:
    """Clear or check `out`; for --resume, the newest whole checkpoint (newer damaged ones are set aside)."""
    has_checkpoints = bool(ckpt.sealed_checkpoints(out / "checkpoints"))
    if cfg.resume:
        return _resume_point(out, rt)
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


def _resume_point(out: Path, rt: Runtime) -> tuple[Path, dict]:
    """The newest whole checkpoint, chosen by rank 0 alone (the ranks must agree, and hashing once is enough):
    newer damaged ones are set aside, out of the step-* names, or keep-last could delete the new saves."""
    folder, step, why = out / "checkpoints", -1, ""
    if rt.main:
        start, damaged = ckpt.newest_whole(folder)
        for path, reason in damaged:
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


def _inputs(cfg: TrainConfig) -> tuple[dict, PackedDataset, PackedDataset, Any]:
    pack = read_pack_manifest(cfg.packed)
    train_ds, valid_ds = PackedDataset(cfg.packed, "train"), PackedDataset(cfg.packed, "valid")
    tok_dir = Path(cfg.tokenizer or pack.get("tokenizer", {}).get("path", ""))
    tokenizer = load_tokenizer(tok_dir)
    packed_with = pack.get("tokenizer", {}).get("sha256")
    if packed_with and tokenizer_hash(tok_dir) != packed_with:
        raise PycpilotError(f"tokenizer {tok_dir} is not the one {cfg.packed} was packed with (hashes differ)")
    return pack, train_ds, valid_ds, tokenizer


def eval_indices(total: int, limit: int | None) -> range:
    """Which valid blocks an evaluation reads: all, or about `limit` spread evenly over the split (the blocks
    are in file order, so the first `limit` would be a few files only)."""
    if limit is None or limit >= total:
        return range(total)
    return range(0, total, -(-total // max(limit, 1)))


def _evaluate(model: FusedLossLM, valid: PackedDataset, batch: int, limit: int | None, rt: Runtime) -> float:
    """Mean next-token loss over the valid blocks (all, or an even sample of about `limit`), shared out across
    ranks."""
    mine = list(eval_indices(len(valid), limit))[rt.rank :: rt.world]
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=rt.device)
    with torch.no_grad(), autocast(rt.device, rt.dtype):
        for start in range(0, len(mine), batch):
            idx = mine[start : start + batch]
            x = torch.stack([valid[i] for i in idx]).to(rt.device)
            total += torch.tensor([model(x).double().item() * len(idx), len(idx)], device=rt.device)
    model.train()
    total = rt.all_sum(total)
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) into `cfg.out`; see the module docstring for the shape of it."""
    from transformers.utils import logging as hf_logging

    cfg.validate()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint
    hf_logging.set_verbosity_error()
    rt = Runtime.from_env()
    try:
        return _train(cfg, rt)
    finally:
        rt.close()


def _train(cfg: TrainConfig, rt: Runtime) -> TrainResult:
    out = Path(cfg.out).resolve()
    pack, train_ds, valid_ds, tokenizer = _inputs(cfg)
    rt.dtype = compute_dtype(cfg.precision, rt.device)
    rt.malloc_tuned = keep_freed_memory()
    block = int(pack["context_length"])
    log = (lambda *a: None) if (cfg.quiet or not rt.main) else (lambda *a: print(*a, flush=True))
    sizing = None
    if cfg.auto_size():
        cfg, sizing = size_to_budget(cfg, out, tokenizer, block, rt, int(pack["splits"]["train"]["tokens"]))
        log(f"train: sized for {cfg.max_time}: {sizing['line']}")
        if sizing.get("data_note"):
            log(f"train: note: {sizing['data_note']}")
    model_config = gpt2_config(cfg, tokenizer, block)
    batch, accum = cfg.resolved("batch_size"), cfg.grad_accum
    order = BatchOrder(len(train_ds), batch, accum, rt.world, rt.rank, cfg.seed)
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
    optimizer_name = cfg.resolved("optimizer")
    if optimizer_name == "muon" and fsdp:  # Newton-Schulz needs whole matrices, which FSDP shards
        if cfg.optimizer == "muon":
            raise PycpilotError("--optimizer muon needs whole weight matrices: use --fsdp off (DDP) or adamw")
        optimizer_name = "adamw"
        cfg = replace(cfg, optimizer="adamw")  # the manifest says what ran
        log("train: AdamW for every weight (the preset's Muon needs whole matrices, which FSDP shards)")
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
    resume_from = _prepare_out(cfg, out, rt)

    # Model, optimiser, budget.
    torch.manual_seed(cfg.seed)
    model = build_model(model_config, cfg.grad_checkpointing, recompute, cfg.resolved("zero_init")).to(rt.device)
    model_config = model.config  # the model's own copy, which knows its attention
    params = sum(p.numel() for p in model.parameters())
    rt.sharding = "fsdp" if fsdp else ("ddp" if rt.world > 1 else "none")
    saved = _resume_weights(resume_from, model, model_config, log) if resume_from else None  # before sharding
    run_key = _run_key(cfg, order, pack, block)
    if saved is not None:
        _check_same_run(saved.get("run"), run_key)
    lossy = FusedLossLM(model, chunk)
    step_fn = sharding.wrap(lossy, rt, fsdp)  # DDP, or FSDP sharding `lossy` in place
    if cfg.compile:
        step_fn = torch.compile(step_fn)
    peak_lr = cfg.resolved("lr")
    optimizer = make_optimizer(
        model,
        name=optimizer_name,
        lr=peak_lr,
        weight_decay=cfg.resolved("weight_decay"),
        betas=(cfg.beta1, cfg.resolved("beta2")),
        device=rt.device,
        muon_lr=cfg.resolved("muon_lr"),
        muon_weight_decay=cfg.muon_weight_decay,
    )
    schedule, decay = cfg.resolved("schedule"), cfg.resolved("decay")
    scaler = grad_scaler(rt.device, rt.dtype)
    budget = cfg.budget_seconds()
    epochs = (
        cfg.epochs if cfg.epochs is not None else (None if budget and not cfg.max_steps else cfg.preset_values().epochs)
    )
    total_steps = cfg.max_steps or (math.ceil(epochs * order.steps_per_epoch) if epochs else None)
    warmup, min_ratio = cfg.resolved("warmup_steps"), cfg.resolved("min_lr_ratio")
    tokens_per_step = order.global_batch * block
    tpb = pack["splits"]["valid"]["tokens"] / max(pack["splits"]["valid"]["bytes"], 1)

    state = _State() if saved is None else _resume_state(saved, lossy, optimizer, scaler)
    if rt.main:
        _write_manifest(out, cfg, pack, model_config, params, rt, status="running", extra={}, sizing=sizing)
    metrics = MetricsLog(out, enabled=rt.main, resume_step=None if saved is None else state.step)
    preset_positions = cfg.preset_values().context_length
    grown = cfg.n_positions is None and model_config.n_positions > preset_positions
    positions_note = f" (the preset's {preset_positions} raised to the packed block length)" if grown else ""
    log(
        f"train: GPT-2 {model_config.n_layer}x{model_config.n_embd}, {params / 1e6:.1f}M parameters, "
        f"{model_config.n_positions} positions{positions_note}, "
        f"{len(train_ds):,} blocks of {block}, global batch {order.global_batch} on {rt.world} x {rt.device.type} "
        f"({str(rt.dtype).removeprefix('torch.') if rt.dtype else 'fp32'}), "
        + ", ".join(
            x
            for x in (f"up to {total_steps:,} steps" if total_steps else "", f"within {cfg.max_time}" if budget else "")
            if x
        )
        + f"; about {estimate.total_gib:.1f} GiB"
    )

    flop_peak = peak_flops(rt.device)
    fpt = flops_per_token(params, model_config.n_layer, model_config.n_embd, block)
    bar = tqdm(
        total=total_steps,
        initial=state.step,
        desc="train",
        unit="step",
        disable=cfg.quiet or not rt.main,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    last_log = (start, state.tokens)
    valid_loss = math.nan
    evaluated_at = -1
    whole = len(eval_indices(len(valid_ds), cfg.eval_blocks))
    logged = metrics.eval_at(state.step, whole) if saved is not None else None
    if rt.any_true(logged is not None):  # a resume that ends at once does not evaluate the same step again
        evaluated_at, valid_loss = state.step, logged if logged is not None else math.nan
    stopped_by = "budget"
    with _StopFlag() as stop:
        while True:
            elapsed = state.elapsed + time.perf_counter() - start
            if total_steps is not None and state.step >= total_steps:
                break
            if rt.any_true(budget is not None and elapsed >= budget):
                break
            if rt.any_true(stop.requested):
                stopped_by = "interrupt"
                break
            # The schedule runs on steps, or on the clock when only a time budget is set.
            progress = steps_progress(state.step, warmup, total_steps) if total_steps else elapsed / budget
            factor = lr_factor(progress, state.step, warmup, min_ratio, schedule, decay)
            optimizer.set_lr(factor)
            lr = peak_lr * factor

            micro = order.micro_batches(state.position)
            frac = state.step / total_steps if total_steps else elapsed / budget
            length = short_block(block, frac, cfg.resolved("seq_warmup"))
            step_loss = torch.zeros((), device=rt.device)
            for i, idx in enumerate(micro):
                x = torch.stack([train_ds[int(j)] for j in idx]).to(rt.device, non_blocking=True)
                x = x.reshape(-1, length)  # sequence-length warmup: the same tokens as more, shorter rows
                sync = rt.world == 1 or i == len(micro) - 1
                with sharding.set_sync(step_fn, sync), autocast(rt.device, rt.dtype):  # none mid-accumulation
                    loss = step_fn(x) / len(micro)
                scaler.scale(loss).backward()
                step_loss += loss.detach()
            step_loss = rt.all_mean(step_loss)
            value = float(step_loss)
            if not math.isfinite(value):
                raise PycpilotError(
                    f"the loss became {value} at step {state.step + 1}: stopped; {_last_good(out)} "
                    f"(try a lower --lr or --grad-clip)"
                )
            if cfg.grad_clip > 0:
                optimizer.unscale_(scaler)
                norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                if not math.isfinite(norm) and not scaler.is_enabled():  # fp16's scaler skips such steps itself
                    raise PycpilotError(
                        f"the gradients became {norm} at step {state.step + 1} (the loss was {value:.4f}): "
                        f"stopped before they reach the weights; {_last_good(out)} (try a lower --lr)"
                    )
            optimizer.step(scaler)
            optimizer.zero_grad()
            state.step += 1
            state.position = order.advance(state.position)
            state.tokens += tokens_per_step

            if state.step % cfg.log_every == 0 or state.step == 1:
                now = time.perf_counter()
                tok_s = (state.tokens - last_log[1]) / max(now - last_log[0], 1e-9)
                last_log = (now, state.tokens)
                row = {
                    "loss": value,
                    "lr": lr,
                    "tokens": state.tokens,
                    "tokens_per_s": round(tok_s, 1),
                    "epoch": state.position.epoch + state.position.step_in_epoch / order.steps_per_epoch,
                }
                if flop_peak:
                    row["mfu"] = round(tok_s * fpt / flop_peak / rt.world, 4)
                metrics.write("train", state.step, **row)
                if total_steps is None and budget and state.step >= 5:  # the ETA of a time budget
                    spent = state.elapsed + now - start
                    bar.total = max(state.step, int(state.step / spent * budget))
                bar.set_postfix_str(
                    f"loss {value:.3f} lr {lr:.2e} {tok_s:,.0f} tok/s" + (f" mfu {row['mfu']:.0%}" if flop_peak else "")
                )
            bar.update(1)
            if state.step % cfg.eval_every == 0:
                interim = cfg.eval_blocks or INTERIM_EVAL_BLOCKS  # the final evaluation reads the whole split
                valid_loss = _log_eval(lossy, valid_ds, batch, interim, rt, metrics, state.step, tpb)
                evaluated_at = state.step if interim >= len(valid_ds) or cfg.eval_blocks else -1
            epoch_done = state.position.step_in_epoch == 0  # the seed saves one checkpoint per epoch
            last = total_steps is not None and state.step >= total_steps  # saved below, after the final eval
            if not last and (epoch_done or (cfg.save_every and state.step % cfg.save_every == 0)):
                _save(out, state, lossy, fsdp, tokenizer, optimizer, scaler, cfg, rt, run_key,
                      time.perf_counter() - start)  # fmt: skip
    bar.close()
    train_seconds = time.perf_counter() - start
    if stopped_by == "interrupt":  # Ctrl-C: the checkpoint only, quickly (torchrun kills workers after 30 s)
        _save(out, state, lossy, fsdp, tokenizer, optimizer, scaler, cfg, rt, run_key, train_seconds)
        metrics.close()
        if rt.main:
            plot_losses(out / "metrics.jsonl", out / "loss.png", f"{cfg.preset_name}: interrupted at step {state.step}")
            _write_manifest(out, cfg, pack, model_config, params, rt, status="interrupted", sizing=sizing, extra={
                "stopped_by": "interrupt", "steps": state.step, "tokens": state.tokens,
                "train_seconds": round(state.elapsed + train_seconds, 2),
            })  # fmt: skip
        rt.barrier()
        raise Interrupted(
            f"interrupted at step {state.step}; checkpoint saved in {out / 'checkpoints'}; continue with --resume"
        )

    # The end: a last evaluation (the whole split unless --eval-blocks) and checkpoint, the final model at the
    # top of `out`, the plot, the manifest.
    if evaluated_at != state.step:
        valid_loss = _log_eval(lossy, valid_ds, batch, cfg.eval_blocks, rt, metrics, state.step, tpb)
    _save(out, state, lossy, fsdp, tokenizer, optimizer, scaler, cfg, rt, run_key, train_seconds)
    metrics.close()
    summary = {
        "stopped_by": "steps" if total_steps and state.step >= total_steps else "time",
        "steps": state.step,
        "tokens": state.tokens,
        "train_seconds": round(state.elapsed + train_seconds, 2),
        "tokens_per_s": round(state.tokens / max(state.elapsed + train_seconds, 1e-9), 1),
        "valid_loss": valid_loss,
        "valid_perplexity": math.exp(min(valid_loss, 50)),
        "valid_bpb": valid_loss / math.log(2) * tpb,
    }
    weights = sharding.full_model_state(lossy, fsdp)  # a collective: every rank takes part
    if rt.main:
        files = _export_final(out, model, weights, tokenizer)
        manifest = _write_manifest(  # at once: the new files' hashes replace the old ones'
            out, cfg, pack, model_config, params, rt, status="done", extra=summary, sizing=sizing, files=files
        )
        plot_losses(
            out / "metrics.jsonl",
            out / "loss.png",
            f"{cfg.preset_name}: {model_config.n_layer}x{model_config.n_embd}, valid bpb {summary['valid_bpb']:.3f}",
        )
    else:
        manifest = {}
    rt.barrier()
    log(
        f"train: {state.step} steps, {state.tokens:,} tokens in {summary['train_seconds']:.0f} s "
        f"({summary['tokens_per_s']:,.0f} tok/s); valid loss {valid_loss:.4f}, perplexity "
        f"{summary['valid_perplexity']:.2f}, {summary['valid_bpb']:.3f} bits per byte -> {out} (loss curve: "
        f"{out / 'loss.png'})"
    )
    return TrainResult(out=out, manifest=manifest)


def short_block(block: int, progress: float, warmup: float) -> int:
    """Rows of block/4 tokens for the first half of `warmup`, block/2 for the second half, then whole blocks.

    Learned position embeddings are the slow part for a small model: position p is trained once per row,
    so short rows early give the first positions many more updates per token (measured on the stdlib,
    tiny preset, 150 s: context 64 reaches 1.76 bits per byte where 256 reaches 1.97).
    """
    if progress >= warmup or block % 4:
        return block
    return block // 4 if progress < warmup / 2 else block // 2


def _log_eval(
    model: FusedLossLM,
    valid: PackedDataset,
    batch: int,
    limit: int | None,
    rt: Runtime,
    metrics: MetricsLog,
    step: int,
    tokens_per_byte: float,
) -> float:
    loss = _evaluate(model, valid, batch, limit, rt)
    blocks = len(eval_indices(len(valid), limit))
    metrics.write("eval", step, loss=loss, perplexity=math.exp(min(loss, 50)), bpb=loss / math.log(2) * tokens_per_byte,
                  blocks=blocks)  # fmt: skip
    return loss


def _save(
    out: Path,
    state: _State,
    lossy: FusedLossLM,
    fsdp: bool,
    tokenizer: Any,
    optimizer: OptimizerSet,
    scaler: Any,
    cfg: TrainConfig,
    rt: Runtime,
    run_key: dict[str, Any],
    seconds: float,
) -> None:
    sealed = ckpt.sealed_checkpoints(out / "checkpoints")
    # The end right after a save: never replace it. Rank 0 decides for all (what each rank sees on disk may
    # differ, and every rank must take part in the same collectives).
    if rt.any_true(rt.main and bool(sealed) and ckpt.step_of(sealed[-1]) == state.step):
        return
    weights = sharding.full_model_state(lossy, fsdp)  # collectives first, on every rank
    optimizer_state = sharding.full_optimizer_state(lossy, optimizer)
    if rt.main:
        trainer_state = {
            "step": state.step,
            "position": [state.position.epoch, state.position.step_in_epoch],
            "tokens": state.tokens,
            "elapsed": state.elapsed + seconds,
            "optimizer": optimizer_state,
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": ckpt.rng_state(),
            "run": run_key,
        }
        ckpt.save_checkpoint(
            out / "checkpoints", state.step, lossy.model, tokenizer, trainer_state, cfg.keep_last, weights
        )
    rt.barrier()


def _resume_weights(start: tuple[Path, dict], model: Any, model_config: Any, log: Any) -> dict[str, Any]:
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


def _last_good(out: Path) -> str:
    last = ckpt.sealed_checkpoints(out / "checkpoints")
    return f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was saved yet"


def _run_key(cfg: TrainConfig, order: BatchOrder, pack: dict, block: int) -> dict[str, Any]:
    """What decides which blocks each step sees: a resumed run must agree on all of it (the number of
    processes may change, the global batch may not)."""
    return {
        "global_batch": order.global_batch,
        "seed": cfg.seed,
        "block": block,
        "train_blocks": pack["splits"]["train"].get("blocks"),
        "data_sha256": pack.get("data", {}).get("content_sha256"),
    }


def _check_same_run(saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    if not saved:  # a checkpoint from before this check was recorded
        return
    names = {"global_batch": "global batch (processes x --batch-size x --grad-accum)", "seed": "--seed",
             "block": "block length", "train_blocks": "train blocks", "data_sha256": "packed data"}  # fmt: skip
    diff = [f"{names.get(k, k)} {saved.get(k)} -> {v}" for k, v in now.items() if k in saved and saved[k] != v]
    if diff:
        raise PycpilotError(
            "--resume: this run would see other data than the checkpoint's: "
            + "; ".join(diff)
            + " (resume with the same settings, or start over with --overwrite)"
        )


def _resume_state(saved: dict[str, Any], lossy: FusedLossLM, optimizer: OptimizerSet, scaler: Any) -> _State:
    try:
        sharding.load_optimizer_state(lossy, optimizer, saved["optimizer"])
        if saved.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(saved["scaler"])
    except (KeyError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise PycpilotError(f"the checkpoint's optimizer state does not fit this run: {first}") from None
    ckpt.set_rng_state(saved["rng"])
    epoch, in_epoch = saved["position"]
    return _State(
        step=saved["step"], position=Position(epoch, in_epoch), tokens=saved["tokens"], elapsed=saved["elapsed"]
    )


def _export_final(out: Path, model: Any, weights: dict | None, tokenizer: Any) -> dict[str, dict]:
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


def _write_manifest(
    out: Path,
    cfg: TrainConfig,
    pack: dict,
    model_config: Any,
    params: int,
    rt: Runtime,
    status: str,
    extra: dict,
    sizing: dict | None = None,
    files: dict | None = None,
) -> dict:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    if files is None:  # a resumed run: the final model of before is still at the top of `out`, still checked
        files = _recorded_files(out)
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
            | {"parameters": params},
            "packed": {
                "path": str(cfg.packed),
                "context_length": pack["context_length"],
                "tokenizer_sha256": pack.get("tokenizer", {}).get("sha256"),
                "data_sha256": pack.get("data", {}).get("content_sha256"),
            },
            "checkpoints": [p.name for p in ckpt.sealed_checkpoints(out / "checkpoints")],
            "result": extra,
        }
        | ({"sizing": sizing} if sizing else {})
        | ({"files": files} if files else {})
    )
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
