"""The next token of many rows at once: temperature, top-k and top-p applied to every row in one set of tensor
ops, each row drawing from its own generator.

Guarantee: a row's token depends only on its logits, its settings and its own generator, never on which rows
share the batch: each row takes one uniform number from its generator and picks by inverse CDF over its
filtered distribution, sorted by probability (a stable sort, so ties fall the same way in any batch).
Semantics are transformers': temperature, then top-k (ties with the k-th logit
stay), then top-p over what is left (the token that crosses p stays, the likeliest always does).
"""

from __future__ import annotations

import hashlib

import torch


def row_seed(seed: int, row: int) -> int:
    """Sample `row`'s own seed from a request's seed: sample r of seed s is the same draw in any batch."""
    digest = hashlib.blake2b(f"{seed}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # what torch.Generator.manual_seed takes


def generators(seed: int, rows: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(row_seed(seed, r)) for r in range(rows)]


def uniforms(gens: list[torch.Generator]) -> torch.Tensor:
    """One number in [0, 1) from each row's generator (the only per-row step)."""
    return torch.stack([torch.rand((), generator=g, device=g.device) for g in gens])


def filtered(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities sorted high to low, renormalised after top-k and top-p; the token ids in that order)."""
    scaled = logits.float() / temperature.clamp(min=1e-6)[:, None]
    values, order = torch.sort(scaled, dim=-1, descending=True, stable=True)
    vocab = values.shape[-1]
    k = torch.where((top_k > 0) & (top_k < vocab), top_k, torch.full_like(top_k, vocab))
    kth = values.gather(1, (k - 1)[:, None])
    values = values.masked_fill(values < kth, float("-inf"))
    probs = values.softmax(dim=-1)
    drop = (probs.cumsum(dim=-1) - probs >= top_p[:, None]) & (top_p < 1.0)[:, None]  # 1: off (no rounding cut)
    drop[:, 0] = False
    probs = probs.masked_fill(drop, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True), order


def draw(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    u: torch.Tensor,
) -> torch.Tensor:
    """One token per row: argmax where the temperature is 0, else the inverse CDF of `u` (in [0, 1)) over the
    row's filtered distribution. All arguments but `logits` hold one value per row."""
    greedy = temperature <= 0
    if bool(greedy.all()):
        return logits.argmax(dim=-1)
    probs, order = filtered(logits, torch.where(greedy, torch.ones_like(temperature), temperature), top_k, top_p)
    cdf = probs.cumsum(dim=-1)
    at = torch.searchsorted(cdf, (u.to(cdf.dtype) * cdf[:, -1])[:, None], right=True).clamp(max=cdf.shape[-1] - 1)
    token = order.gather(1, at).squeeze(1)
    return torch.where(greedy, logits.argmax(dim=-1), token)
