"""Optimisers and learning-rate schedules.

`adamw`: AdamW on everything, weight decay on matrices only. `muon`: torch's Muon (momentum orthogonalised by
Newton-Schulz) on the transformer blocks' weight matrices, AdamW on the rest (embeddings, which the output
layer shares, position embeddings, LayerNorms, biases), as in the modded-nanoGPT speedruns.

GPT-2's `Conv1D` stores a weight as (in, out), where torch's Muon reads (out, in) for its shape-based step
size sqrt(max(1, out/in)); each matrix's group carries the factor that turns the step torch computes into
the one meant for its real shape (see `_conv1d_correction`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

OPTIMIZERS = ("adamw", "muon")  # TrainConfig's choices (config.py keeps its own copy: it must not import torch)
SCHEDULES = ("cosine", "wsd")


def param_groups(model: torch.nn.Module, weight_decay: float, leave_out: frozenset[int] = frozenset()) -> list[dict]:
    """AdamW's groups: decay the weight matrices (attention, MLP, embeddings), never biases or LayerNorms
    (ln_1/ln_2/ln_f); parameters whose id is in `leave_out` belong to another optimiser."""
    decay, no_decay = [], []
    for _name, param in _unique_params(model):
        if id(param) not in leave_out:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _unique_params(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    seen: set[int] = set()
    out = []
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # tied lm_head/wte is one tensor
            continue
        seen.add(id(param))
        out.append((name, param))
    return out


def is_block_matrix(name: str, param: torch.Tensor) -> bool:
    """The weight matrices inside the transformer blocks (c_attn, c_proj, c_fc): what Muon updates."""
    return param.dim() == 2 and ".h." in f".{name}" and name.endswith(".weight")


def _conv1d_correction(shape: torch.Size) -> float:
    """Conv1D keeps (in, out): the step meant for (out, in) over the one torch's Muon computes from (in, out)."""
    fan_in, fan_out = shape[0], shape[1]
    return math.sqrt(max(1.0, fan_out / fan_in)) / math.sqrt(max(1.0, fan_in / fan_out))


class OptimizerSet:
    """Several torch optimisers stepped as one. Each group's `base_lr` is its peak; `set_lr` applies a factor."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = [o for o in optimizers if o.param_groups]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def set_lr(self, factor: float) -> None:
        for group in self.param_groups:
            group["lr"] = group["base_lr"] * factor

    def unscale_(self, scaler: Any) -> None:
        for o in self.optimizers:
            scaler.unscale_(o)

    def step(self, scaler: Any) -> None:
        for o in self.optimizers:
            scaler.step(o)
        scaler.update()

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)


def make_optimizer(
    model: torch.nn.Module,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: torch.device,
    muon_lr: float = 0.02,
    muon_weight_decay: float = 0.0,
) -> OptimizerSet:
    fused = device.type == "cuda"  # the fused kernel pays off on GPUs; foreach is as fast on CPUs here
    params = _unique_params(model)
    matrices = [(n, p) for n, p in params if name == "muon" and is_block_matrix(n, p)]
    adam_groups = [
        g | {"base_lr": lr} for g in param_groups(model, weight_decay, frozenset(id(p) for _, p in matrices))
    ]
    optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(adam_groups, lr=lr, betas=betas, fused=fused)]
    if matrices:
        by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for _, p in matrices:
            by_shape.setdefault(tuple(p.shape), []).append(p)
        muon_groups = [
            {"params": ps, "base_lr": muon_lr * _conv1d_correction(torch.Size(shape))}
            for shape, ps in sorted(by_shape.items())
        ]
        optimizers.insert(0, torch.optim.Muon(muon_groups, lr=muon_lr, weight_decay=muon_weight_decay))
    return OptimizerSet(optimizers)


def lr_factor(
    progress: float, step: int, warmup: int, min_ratio: float, schedule: str = "cosine", decay: float = 0.2
) -> float:
    """Linear warmup over `warmup` steps, then `schedule` over `progress` (0..1 of the run, in steps or on
    the clock), ending, and staying, at `min_ratio`.

    cosine: from 1 down to `min_ratio` over the whole run after warmup. wsd (warmup-stable-decay): 1 until
    the last `decay` share of the run, then straight down to `min_ratio`. (transformers' cosine schedulers
    climb again past num_training_steps; these cannot.)
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    frac = min(1.0, max(0.0, progress))
    if schedule == "wsd":  # decay is in (0, 1] (TrainConfig.validate)
        into = (frac - (1.0 - decay)) / decay
        return 1.0 - (1.0 - min_ratio) * min(1.0, max(0.0, into))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


def steps_progress(step: int, warmup: int, total: float) -> float:
    """A step budget's progress after warmup (the cosine spans the steps after warmup)."""
    if total <= warmup:
        return 0.0 if step < total else 1.0
    return (step - warmup) / (total - warmup)
