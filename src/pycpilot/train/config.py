"""Settings of the training stage: a preset's defaults, then a recipe file, then explicit options."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.presets import PRESETS, Preset, get_preset
from pycpilot.settings import check, load_settings, setting

DEFAULT_PRESET = "tiny"
OPTIMIZERS = ("adamw", "muon")  # as optim.py names them (a test checks they agree); no torch import here
SCHEDULES = ("cosine", "wsd")


_IO, _MODEL, _OPT = "input and output", "model", "optimiser and schedule"
_BATCH, _EVAL, _SPEED = "batch and budget", "evaluation, checkpoints, logging", "speed and memory"


@dataclass
class TrainConfig:
    """`train(TrainConfig(...))` is the Python entry point of `pycpilot train`. None means "the preset's"."""

    packed: Path = setting(help="a `pycpilot pack` output folder", group=_IO)
    out: Path = setting(help="model folder: final model, checkpoints/, metrics", group=_IO)
    tokenizer: Path | None = setting(None, help="tokenizer folder (default: the one the pack was made with)", group=_IO)
    preset: str | None = setting(
        None,
        help="model and training defaults (tiny's; with --max-time alone, the model is sized to the budget)",
        choices=tuple(PRESETS),
        group=_IO,
    )
    init_from: str | None = setting(
        None,
        help="start from this model's weights (fine-tuning): a model folder, a `pycpilot train` --out or "
        "checkpoint, or hf:NAME[@REVISION]; its architecture and tokenizer (pack with --tokenizer SRC) are used",
        metavar="SRC",
        group=_IO,
    )
    resume: bool = setting(False, help="continue from the newest checkpoint", group=_IO)
    overwrite: bool = setting(False, help="start over in an existing --out", group=_IO)
    quiet: bool = setting(False, help="no progress bar or summary", alias="-q", group=_IO)
    # Model.
    n_layer: int | None = setting(None, help="transformer blocks (preset)", low=1, high=1024, group=_MODEL)
    n_head: int | None = setting(None, help="attention heads (preset)", low=1, high=1024, group=_MODEL)
    n_embd: int | None = setting(None, help="width (preset)", low=1, high=65536, group=_MODEL)
    n_positions: int | None = setting(
        None,
        help="position embeddings (default: the packed block length; more only for later use)",
        low=2,
        high=1 << 20,
        group=_MODEL,
    )
    dropout: float | None = setting(None, help="dropout everywhere (preset)", low=0, below=1, group=_MODEL)
    # Optimiser and schedule.
    optimizer: str | None = setting(
        None,
        help="adamw, or muon: Muon for the blocks' weight matrices and AdamW for the rest (preset)",
        choices=OPTIMIZERS,
        group=_OPT,
    )
    lr: float | None = setting(
        None,
        help="AdamW's peak learning rate (with muon: embeddings, norms, biases) (preset)",
        above=0,
        group=_OPT,
    )
    muon_lr: float | None = setting(
        None, help="Muon's peak learning rate for the blocks' matrices (preset)", above=0, group=_OPT
    )
    muon_weight_decay: float = setting(0.0, help="Muon's decoupled weight decay", low=0, high=10, group=_OPT)
    schedule: str | None = setting(
        None, help="cosine, or wsd: warmup, stable, decay (preset)", choices=SCHEDULES, group=_OPT
    )
    decay: float | None = setting(
        None, help="wsd: the last share of the run, spent decaying (preset)", above=0, high=1, group=_OPT
    )
    zero_init: bool | None = setting(None, help="start the blocks' output projections at zero (preset)", group=_OPT)
    min_lr_ratio: float | None = setting(
        None, help="the schedule ends, and stays, at lr x this (preset)", low=0, high=1, group=_OPT
    )
    warmup_steps: int | None = setting(None, help="linear warmup steps (preset)", low=0, group=_OPT)
    weight_decay: float | None = setting(
        None, help="AdamW decay on weight matrices only (preset)", low=0, high=10, group=_OPT
    )
    beta1: float = setting(0.9, help="AdamW beta1", low=0, below=1, group=_OPT)
    beta2: float | None = setting(None, help="AdamW beta2 (preset)", low=0, below=1, group=_OPT)
    grad_clip: float = setting(1.0, help="clip the gradient norm to this; 0 turns it off", low=0, high=1e6, group=_OPT)
    seq_warmup: float | None = setting(
        None,
        help="share of training on shorter rows (block/4, then block/2) before whole blocks (preset)",
        low=0,
        below=1,
        group=_OPT,
    )
    # Batch and budget.
    batch_size: int | None = setting(
        None, help="blocks per micro-batch per process (preset)", low=1, high=1 << 20, group=_BATCH
    )
    grad_accum: int = setting(1, help="micro-batches per optimiser step", low=1, high=1 << 20, group=_BATCH)
    epochs: float | None = setting(
        None,
        help="passes over the train blocks (preset, unless --max-time/--max-steps)",
        above=0,
        high=1e6,
        group=_BATCH,
    )
    max_steps: int | None = setting(None, help="optimiser steps; the schedule spans them", low=1, group=_BATCH)
    max_time: str | None = setting(
        None,
        help="wall-clock budget such as 6m, 90s or 1h30m: the schedule spans it; without --preset, sizes or "
        "steps, the model is chosen for it (measured here, see README)",
        group=_BATCH,
    )
    seed: int = setting(42, help="seed for the initial weights and the data order", low=0, high=2**32 - 1, group=_BATCH)
    # Evaluation, checkpoints, logging.
    eval_every: int = setting(200, help="steps between valid evaluations", low=1, group=_EVAL)
    eval_blocks: int | None = setting(
        None,
        help="valid blocks per evaluation, spread over the split (default: 256 during training, all at the end)",
        low=1,
        group=_EVAL,
    )
    save_every: int | None = setting(
        None, help="steps between checkpoints (default: epoch ends and the end)", low=1, group=_EVAL
    )
    keep_last: int = setting(3, help="checkpoints kept", low=1, high=1 << 20, group=_EVAL)
    log_every: int = setting(10, help="steps between metric lines", low=1, group=_EVAL)
    # Speed and memory.
    fsdp: str = setting(
        "auto",
        help="with several processes, shard weights, gradients and optimiser state (FSDP) instead of copying "
        "them (DDP); auto: for the large preset",
        choices=("auto", "on", "off"),
        group=_SPEED,
    )
    precision: str = setting(
        "auto",
        help="mixed precision (auto: bf16 on GPUs and on CPUs with native bf16 such as AVX512-BF16, else fp32)",
        choices=("auto", "fp32", "bf16", "fp16"),
        group=_SPEED,
    )
    compile: bool = setting(False, help="torch.compile the model (~30 s first)", group=_SPEED)
    grad_checkpointing: bool = setting(False, help="recompute activations", group=_SPEED)
    memory_check: bool = setting(
        True, help="start even when the memory estimate says the run will not fit", negative=True, group=_SPEED
    )
    recompute_attention: str = setting(
        "auto",
        help="keep only q, k, v of attention with dropout on a CPU and recompute the rest in backward "
        "(auto: when it would keep over 1 GiB)",
        choices=("auto", "on", "off"),
        group=_SPEED,
    )
    loss_chunk: int | None = setting(
        None,
        help="tokens per chunk of the fused output layer + loss (default: 2048)",
        low=1,
        high=1 << 30,
        group=_SPEED,
    )

    def preset_values(self) -> Preset:
        return get_preset(self.preset or DEFAULT_PRESET)

    @property
    def preset_name(self) -> str:
        return self.preset or DEFAULT_PRESET

    def auto_size(self) -> bool:
        """A time budget and nothing that fixes the model: the model is sized to the budget (train/sizing.py)."""
        fixed = (self.preset, self.n_layer, self.n_head, self.n_embd, self.max_steps, self.epochs, self.init_from)
        return self.max_time is not None and all(v is None for v in fixed)

    def resolved(self, name: str) -> Any:
        value = getattr(self, name)
        return getattr(self.preset_values(), name) if value is None else value

    def budget_seconds(self) -> float | None:
        return parse_duration(self.max_time) if self.max_time else None

    def validate(self) -> None:
        """Every setting's type, bounds and combinations, before anything is read or written."""
        check(self)  # each field's choices and bounds (None: the preset's, checked by test_presets)
        if self.resolved("n_embd") % self.resolved("n_head"):
            raise PycpilotError("--n-embd must be a multiple of --n-head")
        self.budget_seconds()  # a malformed --max-time fails here
        import torch

        if self.precision == "fp16" and not torch.cuda.is_available():
            raise PycpilotError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on a CPU")
        if self.optimizer == "muon" and self.fsdp == "on":
            raise PycpilotError("--optimizer muon needs whole weight matrices: use --fsdp off (DDP) or adamw")


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(text: str) -> float:
    """'6m' -> 360.0; '1h30m', '90s', '90' and '2.5m' work too."""
    match = _DURATION.match(text or "")
    if not text or not match or not any(match.groups()):
        raise PycpilotError(f"--max-time {text!r} is not a duration (try 6m, 90s or 1h30m)")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise PycpilotError("--max-time must be positive")
    return seconds


def load_recipe(path: Path) -> dict[str, Any]:
    """A YAML or JSON file of TrainConfig fields (dashes or underscores), checked field by field."""
    return load_settings(TrainConfig, path, fixed={"packed", "out"})
