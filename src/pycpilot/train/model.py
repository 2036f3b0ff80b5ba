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

    positions = cfg.n_positions or block  # the pack decides the block; more positions only when asked
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
        # GPT-2's tanh GELU as one fused op: the same function as "gelu_new", which is written as six
        # elementwise ops that each keep an activation-sized tensor for backward (~20% slower, ~3 GiB at small).
        activation_function="gelu_pytorch_tanh",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        use_cache=True,
    )


# Attention with dropout on a CPU runs SDPA's math kernel, which keeps batch x heads x block x block scores,
# probabilities and dropout mask per layer for backward (~4 GiB of `small`'s 13 GiB in bf16). This variant
# keeps only q, k and v and recomputes the rest in backward, with the same dropout mask (the RNG state is
# replayed): measured at `small`, batch 4 x 1,024, bf16: 13.1 -> 5.8 GiB peak for 13% fewer tokens/s.
RECOMPUTED_SDPA = "sdpa_recompute_core"


def _recomputed_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kw: Any) -> Any:
    import torch
    from torch.utils.checkpoint import checkpoint
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not (module.training and torch.is_grad_enabled() and kw.get("dropout", 0.0) > 0 and query.device.type == "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kw)  # fused kernels: lean already

    def core(q: Any, k: Any, v: Any) -> Any:
        return sdpa_attention_forward(module, q, k, v, attention_mask, **kw)[0]

    return checkpoint(core, query, key, value, use_reentrant=False, preserve_rng_state=True), None


def attention_saved_gib(config: Any, batch: int, block: int) -> float:
    """What the math kernel keeps for backward over all layers (scores, probabilities, mask, dropped: ~7 bytes)."""
    return config.n_layer * batch * config.n_head * block * block * 7 / GIB


def build_model(
    config: Any,
    grad_checkpointing: bool,
    recompute_attention: bool = False,
    zero_init: bool = False,
    start: Any = None,
) -> Any:
    """A fresh GPT2LMHeadModel of `config`, or `start` (a loaded model, for --init-from) made ready to train.

    `zero_init`: every block starts as the identity (its attention and MLP output projections at zero), so
    early updates are not fighting random residual writes; the projections' gradients are not zero, so they
    leave zero at the first step."""
    import torch
    from transformers import AttentionInterface, GPT2LMHeadModel

    attention = "sdpa"
    if recompute_attention:
        AttentionInterface.register(RECOMPUTED_SDPA, _recomputed_sdpa)
        attention = RECOMPUTED_SDPA
    if start is not None:
        model = start
        model.set_attn_implementation(attention)
        model.train()
    else:
        model = GPT2LMHeadModel._from_config(config, attn_implementation=attention)
    if zero_init and start is None:
        with torch.no_grad():
            for block in model.transformer.h:
                block.attn.c_proj.weight.zero_()
                block.mlp.c_proj.weight.zero_()
    if grad_checkpointing:
        # transformers 5 renamed it (the old name warns that it goes in v6)
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
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
    config: Any,
    batch: int,
    block: int,
    loss_chunk: int,
    grad_checkpointing: bool,
    recompute_attention: bool = False,
    bytes_per_value: int = 4,
    shards: int = 1,
) -> MemoryEstimate:
    """Parameters + gradients + AdamW's two moments (split over `shards` FSDP ranks), plus activations
    (Korthikanti et al.'s per-layer count). `recompute_attention`: no T x T scores are kept for backward,
    true of the fused SDPA kernels (GPUs, or no dropout) and of our recomputed attention core alike."""
    d, layers, vocab, heads = config.n_embd, config.n_layer, config.vocab_size, config.n_head
    params = vocab * d + config.n_positions * d + layers * (12 * d * d + 13 * d) + 2 * d
    weights = params * 4 * 4 / shards  # fp32 weights, gradients, exp_avg, exp_avg_sq
    tokens = batch * block
    per_layer = tokens * d * 34 + (0 if recompute_attention else 5 * heads * tokens * block)  # bytes at 16 bits
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
