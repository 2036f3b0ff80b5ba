"""`pycpilot train`: GPT-2 from scratch on packed blocks (seed 7.4.4), top to bottom.

setup (setup.py: inputs, model, optimiser, resume) -> fit: for each step, the step's blocks, forward/backward
per micro-batch, clip, step, schedule, then the hooks (log, evaluate, checkpoint) -> finish: the last
evaluation and checkpoint, the final model, the manifest, the plot.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pycpilot.errors import Interrupted, PycpilotError
from pycpilot.train import evaluation, sharding
from pycpilot.train.config import TrainConfig
from pycpilot.train.evaluation import eval_indices, log_eval
from pycpilot.train.metrics import MetricsLog, plot_losses
from pycpilot.train.optim import lr_factor, steps_progress
from pycpilot.train.runtime import Runtime, autocast, flops_per_token, peak_flops
from pycpilot.train.saving import export_final, last_good, save, write_manifest
from pycpilot.train.setup import Run, setup


@dataclass
class TrainResult:
    out: Path
    manifest: dict[str, Any]


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


@dataclass
class _Progress:
    """What the loop keeps between steps (beyond the checkpointed State)."""

    start: float  # perf_counter when this process began training
    last_log: tuple[float, int]  # (time, tokens) of the last metric line
    valid_loss: float = math.nan
    evaluated_at: int = -1  # the step of the last whole-split evaluation


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) into `cfg.out`; see the module docstring for the shape of it."""
    from transformers.utils import logging as hf_logging

    cfg.validate()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint
    hf_logging.set_verbosity_error()
    rt = Runtime.from_env()
    try:
        run = setup(cfg, rt)
        return fit(run)
    finally:
        rt.close()


def fit(run: Run) -> TrainResult:
    cfg, rt, state = run.cfg, run.rt, run.state
    if rt.main:
        write_manifest(run, status="running", extra={})
    metrics = MetricsLog(run.out, enabled=rt.main, resume_step=state.step if run.resumed else None)
    _say_what_runs(run)
    if run.init is not None:
        _before_fine_tuning(run, metrics)
    bar = tqdm(total=run.total_steps, initial=state.step, desc="train", unit="step", file=sys.stderr,
               disable=cfg.quiet or not rt.main, dynamic_ncols=True)  # fmt: skip
    now = time.perf_counter()
    progress = _Progress(start=now, last_log=(now, state.tokens))
    whole = len(eval_indices(len(run.valid_ds), cfg.eval_blocks))
    logged = metrics.eval_at(state.step, whole) if run.resumed else None
    if rt.any_true(logged is not None):  # a resume that ends at once does not evaluate the same step again
        progress.evaluated_at, progress.valid_loss = state.step, logged if logged is not None else math.nan
    interrupted = False
    with _StopFlag() as stop:
        while True:
            elapsed = state.elapsed + time.perf_counter() - progress.start
            if run.total_steps is not None and state.step >= run.total_steps:
                break
            if rt.any_true(run.budget is not None and elapsed >= run.budget):
                break
            if rt.any_true(stop.requested):
                interrupted = True
                break
            loss, lr = step(run, elapsed)
            _after_step(run, metrics, bar, progress, loss, lr)
    bar.close()
    seconds = time.perf_counter() - progress.start
    if interrupted:
        _interrupted(run, metrics, seconds)
    return finish(run, metrics, progress, seconds)


def _before_fine_tuning(run: Run, metrics: MetricsLog) -> None:
    """--init-from: the source model's valid figure (step 0, outside the time budget, over the blocks the final
    evaluation reads), so the run shows what the fine-tuning bought; a resumed run finds it in its metrics."""
    assert run.init is not None
    blocks = run.cfg.eval_blocks  # what the final evaluation reads too (default: the whole split)
    loss = metrics.eval_at(0, len(eval_indices(len(run.valid_ds), blocks))) if run.resumed else None
    if run.rt.any_true(run.rt.main and loss is None):  # only rank 0 reads metrics: it decides for all
        loss = log_eval(run.lossy, run.valid_ds, run.batch, blocks, run.rt, metrics, 0, run.tokens_per_byte)
    loss = math.nan if loss is None else loss
    run.init["valid_bpb_before"] = loss / math.log(2) * run.tokens_per_byte
    run.log(f"train: before fine-tuning: valid {run.init['valid_bpb_before']:.3f} bits per byte")


def step(run: Run, elapsed: float) -> tuple[float, float]:
    """One optimiser step: the schedule's learning rate, forward/backward per micro-batch, clip, step.
    Returns (loss, learning rate); a loss or gradient that is not finite stops the run."""
    cfg, rt, state, optimizer = run.cfg, run.rt, run.state, run.optimizer
    warmup, total = cfg.resolved("warmup_steps"), run.total_steps
    # The schedule runs on steps, or on the clock when only a time budget is set.
    progress = steps_progress(state.step, warmup, total) if total else elapsed / run.budget
    factor = lr_factor(
        progress, state.step, warmup, cfg.resolved("min_lr_ratio"), cfg.resolved("schedule"), cfg.resolved("decay")
    )
    optimizer.set_lr(factor)
    micro = run.order.micro_batches(state.position)
    length = short_block(run.block, state.step / total if total else elapsed / run.budget, cfg.resolved("seq_warmup"))
    step_loss = torch.zeros((), device=rt.device)
    for i, idx in enumerate(micro):
        x = torch.stack([run.train_ds[int(j)] for j in idx]).to(rt.device, non_blocking=True)
        x = x.reshape(-1, length)  # sequence-length warmup: the same tokens as more, shorter rows
        sync = rt.world == 1 or i == len(micro) - 1
        with sharding.set_sync(run.step_fn, sync), autocast(rt.device, rt.dtype):  # none mid-accumulation
            loss = run.step_fn(x) / len(micro)
        run.scaler.scale(loss).backward()
        step_loss += loss.detach()
    value = float(rt.all_mean(step_loss))
    if not math.isfinite(value):
        raise PycpilotError(
            f"the loss became {value} at step {state.step + 1}: stopped; {last_good(run.out)} "
            f"(try a lower --lr or --grad-clip)"
        )
    if cfg.grad_clip > 0:
        optimizer.unscale_(run.scaler)
        norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip))
        if not math.isfinite(norm) and not run.scaler.is_enabled():  # fp16's scaler skips such steps itself
            raise PycpilotError(
                f"the gradients became {norm} at step {state.step + 1} (the loss was {value:.4f}): "
                f"stopped before they reach the weights; {last_good(run.out)} (try a lower --lr)"
            )
    optimizer.step(run.scaler)
    optimizer.zero_grad()
    state.step += 1
    state.position = run.order.advance(state.position)
    state.tokens += run.tokens_per_step
    return value, cfg.resolved("lr") * factor


def _after_step(run: Run, metrics: MetricsLog, bar: Any, progress: _Progress, loss: float, lr: float) -> None:
    """The hooks after a step: a metric line, an evaluation, a checkpoint, when each is due."""
    cfg, state = run.cfg, run.state
    if state.step % cfg.log_every == 0 or state.step == 1:
        _log_step(run, metrics, bar, progress, loss, lr)
    bar.update(1)
    if state.step % cfg.eval_every == 0:
        interim = cfg.eval_blocks or evaluation.INTERIM_EVAL_BLOCKS  # the final evaluation reads the whole split
        progress.valid_loss = log_eval(
            run.lossy, run.valid_ds, run.batch, interim, run.rt, metrics, state.step, run.tokens_per_byte
        )
        progress.evaluated_at = state.step if interim >= len(run.valid_ds) or cfg.eval_blocks else -1
    epoch_done = state.position.step_in_epoch == 0  # the seed saves one checkpoint per epoch
    last = run.total_steps is not None and state.step >= run.total_steps  # saved by finish, after the last eval
    if not last and (epoch_done or (cfg.save_every and state.step % cfg.save_every == 0)):
        save(run, time.perf_counter() - progress.start)


def _log_step(run: Run, metrics: MetricsLog, bar: Any, progress: _Progress, loss: float, lr: float) -> None:
    state, rt = run.state, run.rt
    now = time.perf_counter()
    tok_s = (state.tokens - progress.last_log[1]) / max(now - progress.last_log[0], 1e-9)
    progress.last_log = (now, state.tokens)
    row = {
        "loss": loss,
        "lr": lr,
        "tokens": state.tokens,
        "tokens_per_s": round(tok_s, 1),
        "epoch": state.position.epoch + state.position.step_in_epoch / run.order.steps_per_epoch,
    }
    flop_peak = peak_flops(rt.device)
    if flop_peak:
        fpt = flops_per_token(run.params, run.model_config.n_layer, run.model_config.n_embd, run.block)
        row["mfu"] = round(tok_s * fpt / flop_peak / rt.world, 4)
    metrics.write("train", state.step, **row)
    if run.total_steps is None and run.budget and state.step >= 5:  # the ETA of a time budget
        spent = state.elapsed + now - progress.start
        bar.total = max(state.step, int(state.step / spent * run.budget))
    mfu = f" mfu {row['mfu']:.0%}" if "mfu" in row else ""
    bar.set_postfix_str(f"loss {loss:.3f} lr {lr:.2e} {tok_s:,.0f} tok/s{mfu}")


def _interrupted(run: Run, metrics: MetricsLog, seconds: float) -> None:
    """Ctrl-C: the checkpoint only, quickly (torchrun kills workers after 30 s), then the one-line exit."""
    state, out = run.state, run.out
    save(run, seconds)
    metrics.close()
    if run.rt.main:
        plot_losses(out / "metrics.jsonl", out / "loss.png", f"{run.cfg.preset_name}: interrupted at step {state.step}")
        write_manifest(run, status="interrupted", extra={
            "stopped_by": "interrupt", "steps": state.step, "tokens": state.tokens,
            "train_seconds": round(state.elapsed + seconds, 2),
        })  # fmt: skip
    run.rt.barrier()
    raise Interrupted(
        f"interrupted at step {state.step}; checkpoint saved in {out / 'checkpoints'}; continue with --resume"
    )


def finish(run: Run, metrics: MetricsLog, progress: _Progress, seconds: float) -> TrainResult:
    """A last evaluation (the whole split unless --eval-blocks) and checkpoint, the final model at the top of
    `out`, the manifest, the plot."""
    cfg, rt, state, out = run.cfg, run.rt, run.state, run.out
    valid_loss = progress.valid_loss
    if progress.evaluated_at != state.step:
        valid_loss = log_eval(
            run.lossy, run.valid_ds, run.batch, cfg.eval_blocks, rt, metrics, state.step, run.tokens_per_byte
        )
    save(run, seconds)
    metrics.close()
    train_seconds = state.elapsed + seconds
    summary = {
        "stopped_by": "steps" if run.total_steps and state.step >= run.total_steps else "time",
        "steps": state.step,
        "tokens": state.tokens,
        "train_seconds": round(train_seconds, 2),
        "tokens_per_s": round(state.tokens / max(train_seconds, 1e-9), 1),
        "valid_loss": valid_loss,
        "valid_perplexity": math.exp(min(valid_loss, 50)),
        "valid_bpb": valid_loss / math.log(2) * run.tokens_per_byte,
    }
    before = run.init.get("valid_bpb_before") if run.init else None
    weights = sharding.full_model_state(run.lossy, run.fsdp)  # a collective: every rank takes part
    manifest: dict[str, Any] = {}
    if rt.main:
        files = export_final(out, run.model, weights, run.tokenizer)
        manifest = write_manifest(run, status="done", extra=summary, files=files)  # at once: the new hashes
        shape = f"{run.model_config.n_layer}x{run.model_config.n_embd}"
        plot_losses(out / "metrics.jsonl", out / "loss.png",
                    f"{cfg.preset_name}: {shape}, valid bpb {summary['valid_bpb']:.3f}")  # fmt: skip
    rt.barrier()
    run.log(
        f"train: {state.step} steps, {state.tokens:,} tokens in {summary['train_seconds']:.0f} s "
        f"({summary['tokens_per_s']:,.0f} tok/s); valid loss {valid_loss:.4f}, perplexity "
        f"{summary['valid_perplexity']:.2f}, {summary['valid_bpb']:.3f} bits per byte"
        + (f" ({before:.3f} before fine-tuning)" if before is not None else "")
        + f" -> {out} (loss curve: {out / 'loss.png'})"
    )
    return TrainResult(out=out, manifest=manifest)


def _say_what_runs(run: Run) -> None:
    cfg, rt, mc = run.cfg, run.rt, run.model_config
    limits = [
        f"up to {run.total_steps:,} steps" if run.total_steps else "",
        f"within {cfg.max_time}" if run.budget else "",
    ]
    run.log(
        f"train: GPT-2 {mc.n_layer}x{mc.n_embd}, {run.params / 1e6:.1f}M parameters, {mc.n_positions} "
        f"positions, {len(run.train_ds):,} blocks of {run.block}, global batch "
        f"{run.order.global_batch} on {rt.world} x {rt.device.type} "
        f"({str(rt.dtype).removeprefix('torch.') if rt.dtype else 'fp32'}), "
        + ", ".join(x for x in limits if x)
        + f"; about {run.estimate_gib:.1f} GiB"
    )


def short_block(block: int, progress: float, warmup: float) -> int:
    """Rows of block/4 tokens for the first half of `warmup`, block/2 for the second half, then whole blocks.

    Learned position embeddings are the slow part for a small model: position p is trained once per row,
    so short rows early give the first positions many more updates per token (measured on the stdlib,
    tiny preset, 150 s: context 64 reaches 1.76 bits per byte where 256 reaches 1.97).
    """
    if progress >= warmup or block % 4:
        return block
    return block // 4 if progress < warmup / 2 else block // 2
