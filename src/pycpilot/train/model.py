"""The model: transformers' GPT2LMHeadModel built from a preset and the tokenizer, plus a memory estimate."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.train.config import TrainConfig

GIB = 2**30


def gpt2_config(cfg: TrainConfig, tokenizer: Any, block: int) -> Any:
    from transformers import GPT2Config

    positions = cfg.n_positions or max(cfg.preset_values().context_length, block)
    if block > positions:
        raise PycpilotError(
            f"the packed blocks hold {block} tokens but the model has {positions} positions: "
            f"pack again with --context-length {positions} or pass --n-positions {block}"
        )
    dropout = cfg.resolved("dropout")
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=positions,
        n_layer=cfg.resolved("n_layer"),
        n_head=cfg.resolved("n_head"),
        n_embd=cfg.resolved("n_embd"),
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        use_cache=True,
    )


def build_model(config: Any, grad_checkpointing: bool) -> Any:
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    if grad_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


@dataclass
class MemoryEstimate:
    params: int
    weights_gib: float
    activations_gib: float

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.activations_gib


def estimate_memory(
    config: Any, batch: int, block: int, loss_chunk: int, grad_checkpointing: bool, bytes_per_value: int = 4
) -> MemoryEstimate:
    """Parameters + gradients + AdamW's two moments, plus activations (Korthikanti et al.'s per-layer count)."""
    d, layers, vocab, heads = config.n_embd, config.n_layer, config.vocab_size, config.n_head
    params = vocab * d + config.n_positions * d + layers * (12 * d * d + 13 * d) + 2 * d
    weights = params * 4 * 4  # fp32 weights, gradients, exp_avg, exp_avg_sq
    tokens = batch * block
    per_layer = tokens * d * 34 + 5 * heads * tokens * block  # in bytes at 16 bits; scale below
    if grad_checkpointing:
        per_layer = tokens * d * 2
    activations = layers * per_layer * bytes_per_value / 2 + loss_chunk * vocab * 4 * 2 + tokens * d * 4 * 4
    return MemoryEstimate(params, weights / GIB, activations / GIB)


def available_memory_gib(device: Any) -> float | None:
    try:
        if device.type == "cuda":
            import torch

            free, _ = torch.cuda.mem_get_info(device)
            return free / GIB
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GIB
    except (OSError, ValueError, RuntimeError):
        return None
    return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")) / GIB if hasattr(os, "sysconf") else None
