"""AdamW with weight decay on matrices only, and a warmup + cosine schedule that holds its floor."""

from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices (attention, MLP, embeddings); never biases or LayerNorms (ln_1/ln_2/ln_f)."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for _name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # tied lm_head/wte is one tensor
            continue
        seen.add(id(param))
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], device: torch.device
) -> torch.optim.Optimizer:
    fused = device.type == "cuda"  # the fused kernel pays off on GPUs; foreach is as fast on CPUs here
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused)


def lr_factor(progress_step: float, warmup: int, total: float, min_ratio: float) -> float:
    """Linear warmup to 1, cosine down to `min_ratio` at `total`, then `min_ratio` for ever.

    (transformers' cosine schedulers climb again past num_training_steps; this one cannot.)
    """
    if warmup > 0 and progress_step < warmup:
        return (progress_step + 1) / (warmup + 1)
    if total <= warmup:
        return 1.0 if progress_step < total else min_ratio
    frac = min(1.0, (progress_step - warmup) / (total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


def lr_factor_by_time(step: int, warmup: int, time_frac: float, min_ratio: float) -> float:
    """The same shape when the budget is a duration: warmup in steps, then cosine over the clock."""
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    frac = min(1.0, max(0.0, time_frac))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))
