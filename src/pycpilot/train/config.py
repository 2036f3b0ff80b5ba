"""Settings of the training stage: a preset's defaults, then a recipe file, then explicit options."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.presets import Preset, get_preset
from pycpilot.train.optim import OPTIMIZERS, SCHEDULES

DEFAULT_PRESET = "tiny"


@dataclass
class TrainConfig:
    """`train(TrainConfig(...))` is the Python entry point of `pycpilot train`. None means "the preset's"."""

    packed: Path
    out: Path
    tokenizer: Path | None = None  # default: the one the pack manifest names
    preset: str | None = None  # None: tiny's settings, and with --max-time alone a model sized to the budget
    # Model.
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    n_positions: int | None = None  # default: the preset's context length, at least the block length
    dropout: float | None = None
    # Optimiser and schedule.
    optimizer: str | None = None  # adamw | muon
    lr: float | None = None  # AdamW's (with muon: embeddings, norms, biases)
    muon_lr: float | None = None  # muon: the blocks' weight matrices
    muon_weight_decay: float = 0.0
    schedule: str | None = None  # cosine | wsd
    decay: float | None = None  # wsd: share of the run spent decaying
    zero_init: bool | None = None
    min_lr_ratio: float | None = None  # the cosine ends, and stays, at lr * min_lr_ratio
    warmup_steps: int | None = None
    weight_decay: float | None = None
    beta1: float = 0.9
    beta2: float | None = None
    grad_clip: float = 1.0
    seq_warmup: float | None = None  # share of training run on shorter rows (block/4, then block/2)
    # Batch and budget.
    batch_size: int | None = None  # blocks per micro-batch per process
    grad_accum: int = 1
    epochs: float | None = None
    max_steps: int | None = None
    max_time: str | None = None  # "6m", "90s", "1h30m"
    seed: int = 42
    # Evaluation, checkpoints, logging.
    eval_every: int = 200
    eval_blocks: int | None = None  # None: 256 blocks spread over the valid split, the whole split at the end
    save_every: int | None = None
    keep_last: int = 3
    log_every: int = 10
    resume: bool = False
    overwrite: bool = False
    # Speed and memory.
    fsdp: str = "auto"  # shard weights, gradients and optimiser state over processes; auto: `large` on 2+
    precision: str = "auto"  # auto: bf16 autocast on GPUs and on CPUs with native bf16, else fp32
    compile: bool = False
    grad_checkpointing: bool = False
    memory_check: bool = True  # refuse, before any work, a run the memory estimate says will not fit
    # auto: on a CPU with attention dropout, when the attention kept for backward passes 1 GiB (see model.py)
    recompute_attention: str = "auto"
    loss_chunk: int | None = None  # tokens per chunk of the fused output layer + loss; None: see loss.py
    quiet: bool = False

    def preset_values(self) -> Preset:
        return get_preset(self.preset or DEFAULT_PRESET)

    @property
    def preset_name(self) -> str:
        return self.preset or DEFAULT_PRESET

    def auto_size(self) -> bool:
        """A time budget and nothing that fixes the model: the model is sized to the budget (train/sizing.py)."""
        fixed = (self.preset, self.n_layer, self.n_head, self.n_embd, self.max_steps, self.epochs)
        return self.max_time is not None and all(v is None for v in fixed)

    def resolved(self, name: str) -> Any:
        value = getattr(self, name)
        return getattr(self.preset_values(), name) if value is None else value

    def budget_seconds(self) -> float | None:
        return parse_duration(self.max_time) if self.max_time else None

    def validate(self) -> None:
        checks = [
            (self.resolved("lr") > 0, "--lr must be positive"),
            (self.resolved("optimizer") in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.resolved("muon_lr") > 0, "--muon-lr must be positive"),
            (self.muon_weight_decay >= 0, "--muon-weight-decay must be >= 0"),
            (self.resolved("schedule") in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (0 < self.resolved("decay") <= 1, "--decay must be in (0, 1]"),
            (0 <= self.resolved("min_lr_ratio") <= 1, "--min-lr-ratio must be in [0, 1]"),
            (self.resolved("warmup_steps") >= 0, "--warmup-steps must be >= 0"),
            (0 <= self.resolved("dropout") < 1, "--dropout must be in [0, 1)"),
            (0 <= self.resolved("seq_warmup") < 1, "--seq-warmup must be in [0, 1)"),
            (self.resolved("batch_size") >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.grad_clip >= 0, "--grad-clip must be >= 0 (0 turns clipping off)"),
            (self.epochs is None or self.epochs > 0, "--epochs must be positive"),
            (self.max_steps is None or self.max_steps > 0, "--max-steps must be positive"),
            (self.eval_every >= 1 and self.log_every >= 1, "--eval-every and --log-every must be at least 1"),
            (self.save_every is None or self.save_every >= 1, "--save-every must be at least 1"),
            (self.keep_last >= 1, "--keep-last must be at least 1"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), "--precision must be auto, fp32, bf16 or fp16"),
            (self.fsdp in ("auto", "on", "off"), "--fsdp must be auto, on or off"),
            (self.recompute_attention in ("auto", "on", "off"), "--recompute-attention must be auto, on or off"),
            (self.loss_chunk is None or self.loss_chunk >= 1, "--loss-chunk must be at least 1"),
            (0 <= self.seed < 2**32, "--seed must be between 0 and 2**32 - 1"),
            (self.resolved("n_embd") % self.resolved("n_head") == 0, "--n-embd must be a multiple of --n-head"),
        ]
        for ok, message in checks:
            if not ok:
                raise PycpilotError(message)
        self.budget_seconds()  # a malformed --max-time fails here


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
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PycpilotError(f"cannot read recipe {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PycpilotError(f"recipe {path} is not UTF-8 text") from None
    try:
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json both: one line naming the file and the place
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PycpilotError(f"recipe {path} is malformed: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PycpilotError(f"recipe {path} must be a mapping of settings, not {type(data).__name__}")
    known = {f.name: f for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known or name in ("packed", "out"):
            raise PycpilotError(f"recipe {path}: unknown setting {key!r}")
        out[name] = _coerce(path, key, value, str(known[name].type))
    return out


def _coerce(path: Path, key: str, value: Any, annotation: str) -> Any:
    """Values as the field expects them; YAML's 3e-3 is a string, for instance."""
    if value is None:
        return None
    for kind, cast in (("bool", bool), ("int", int), ("float", float), ("Path", Path), ("str", str)):
        if annotation.startswith(kind):
            try:
                if kind == "bool" and not isinstance(value, bool):
                    raise ValueError
                if kind == "int" and (isinstance(value, bool) or float(value) != int(float(value))):
                    raise ValueError
                return cast(float(value)) if kind == "int" else cast(value)
            except (TypeError, ValueError):
                raise PycpilotError(f"recipe {path}: {key} must be {kind}, got {value!r}") from None
    return value
