"""The next token of many rows at once: temperature, top-k and top-p applied to every row in one set of tensor
ops, each row drawing from its own stream of numbers.

Guarantee: a row's token depends only on its logits, its settings and its own stream, never on which rows
share the batch: each row takes one uniform number from its stream (its seed and its token count) and picks
by inverse CDF over its filtered weights, tokens in id order, and every decision is made in exact integer
arithmetic (see `masses`). Semantics are transformers': temperature, then top-k (ties with the k-th logit
stay), then top-p over what is left (the token that crosses p stays, the likeliest always does)."""

from __future__ import annotations

import ctypes
import hashlib
from typing import Any

import torch


def row_seed(seed: int, row: int) -> int:
    """Sample `row`'s own seed from a request's seed: sample r of seed s is the same draw in any batch."""
    digest = hashlib.blake2b(f"{seed}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # what torch.Generator.manual_seed takes


_GOLDEN, _MIX1, _MIX2, _MASK = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, (1 << 64) - 1


def uniform(seed: int, step: int) -> float:
    """Number `step` (0, 1, ...) of the stream `seed`, in [0, 1): output step + 1 of splitmix64 seeded with
    `seed`. Counter-based: a row keeps no generator, only its seed and how many tokens it has drawn, and a
    number costs a few integer operations (a torch.Generator draw was ~3 us, most of a tiny model's sampling)."""
    z = (seed + (step + 1) * _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK
    return ((z ^ (z >> 31)) >> 11) * 2.0**-53


def uniforms(seeds: list[int], steps: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Row r's number `steps[r]` of its stream `seeds[r]`, as one float64 tensor."""
    return torch.tensor([uniform(s, k) for s, k in zip(seeds, steps, strict=True)], dtype=torch.float64, device=device)


def _one(vocab: int) -> float:
    """The likeliest token's weight: as large as lets every sum of a row stay an exact float64 integer."""
    return float(2 ** (52 - max(vocab - 1, 1).bit_length()))


def masses(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Each token's weight after temperature, top-k and top-p, a float64 holding an integer (0: filtered out).

    Integers because sums of floats depend on the order a kernel adds them in, which can change with the
    number of rows; sums of integers below 2**53 are exact in any order, so a row's kept tokens never depend on
    its neighbours. Weights are exp(logit - max) scaled to 2**(52 - log2 vocabulary) (a token below ~1e-11 of
    the likeliest weighs 0). Top-p needs no sort of the vocabulary (11 ms for 10 x 32,768 here): tokens are
    bucketed by the bits of their float weight, the buckets' masses summed from the least likely up, and only
    the few tokens of the bucket where the cut falls are split again, down to one weight, whose ties fall by
    id."""
    scaled = logits.float() / temperature.clamp(min=1e-6)[:, None]
    weight = (scaled - scaled.max(dim=-1, keepdim=True).values).exp()
    weight = weight.nan_to_num_(nan=0.0)  # inf - inf (a broken model's logits): no weight, as in C
    rows, vocab = weight.shape
    k = torch.where((top_k > 0) & (top_k < vocab), top_k, torch.zeros_like(top_k))
    if bool((k > 0).any()):  # top-k: the k likeliest and any tied with the k-th
        kth = torch.topk(weight, int(k.max()), dim=-1).values.gather(1, (k - 1).clamp(min=0)[:, None])
        weight = torch.where((k[:, None] == 0) | (weight >= kth), weight, torch.zeros_like(weight))
    fixed = (weight.double() * _one(vocab)).round_()
    active = top_p < 1.0
    if not bool(active.any()):
        return fixed
    # Top-p from the bottom: a token goes while the mass of it and everything less likely stays <= (1 - p) of
    # the total (the same cut as "keep the likeliest until their mass reaches p", the likeliest always kept).
    bits = weight.view(torch.int32)  # non-negative floats: their bits sort as they do
    shift, buckets = 17, 1 << 14  # the exponent and 6 bits of mantissa: weights within ~1.6% share a bucket
    bucket = bits >> shift
    offsets = torch.arange(rows, device=logits.device)[:, None] * buckets
    hist = torch.zeros(rows * buckets, dtype=torch.float64, device=logits.device)
    hist.index_add_(0, (bucket + offsets).view(-1), fixed.view(-1))
    below_each = hist.view(rows, buckets).cumsum(dim=-1)
    total = below_each[:, -1]  # the limit is at most total - 1: the likeliest stays even where 1 - p rounds to 1
    limit = torch.minimum(((1.0 - top_p.double()) * total).floor_(), total - 1)
    cut = torch.searchsorted(below_each, limit[:, None], right=True).squeeze(1)  # buckets wholly dropped
    below = torch.where(cut > 0, below_each.gather(1, (cut - 1).clamp(min=0)[:, None]).squeeze(1), 0.0)
    dropped = bucket < cut[:, None]
    # The tokens of the cut's bucket, few: split them by their lower bits, then by id among equal weights.
    r, c = (bucket == cut[:, None]).nonzero(as_tuple=True)
    low, mass = bits[r, c] & ((1 << shift) - 1), fixed[r, c]
    key = (r * (1 << shift) + low).double() * (vocab + 1) + (vocab - c).double()  # row, weight, then id, high first
    order = torch.argsort(key)
    r, c, mass = r[order], c[order], mass[order]
    before = torch.zeros_like(mass)  # mass of the cut's tokens ahead of each, in its row
    if len(mass):
        running = mass.cumsum(dim=0)
        first = torch.ones_like(r, dtype=torch.bool)
        first[1:] = r[1:] != r[:-1]
        start = running - mass
        first_of_row = torch.cummax(torch.where(first, torch.arange(len(r), device=r.device), 0), dim=0).values
        before = running - start[first_of_row]
    out = dropped.clone()
    out[r, c] = before + below[r] <= limit[r]
    return torch.where(active[:, None] & out, torch.zeros_like(fixed), fixed)


def filtered(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(each token's probability after the filters, in id order; the ids), for tests and inspection."""
    fixed = masses(logits, temperature, top_k, top_p)
    ids = torch.arange(fixed.shape[-1], device=fixed.device).expand(fixed.shape)
    return fixed / fixed.sum(dim=-1, keepdim=True), ids


def draw(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    u: torch.Tensor,
    lib: Any = None,
) -> torch.Tensor:
    """One token per row: argmax where the temperature is 0, else the inverse CDF of `u` (in [0, 1)) over the
    row's filtered weights in id order. All arguments but `logits` hold one value per row. With `lib` (the
    native library) the same rule runs in C (sample_rows.c), row after row, O(vocabulary) each."""
    if lib is not None and logits.device.type == "cpu":
        return _draw_native(lib, logits, temperature, top_k, top_p, u)
    greedy = temperature <= 0
    if bool(greedy.all()):
        return logits.argmax(dim=-1)
    fixed = masses(logits, torch.where(greedy, torch.ones_like(temperature), temperature), top_k, top_p)
    cdf = fixed.cumsum(dim=-1)
    total = cdf[:, -1]
    target = torch.minimum((u.double() * total).floor(), total - 1)
    token = torch.searchsorted(cdf, target[:, None], right=True).squeeze(1).clamp_(max=cdf.shape[-1] - 1)
    return torch.where(greedy, logits.argmax(dim=-1), token)


def _draw_native(
    lib: Any, logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    x = logits.detach().float().contiguous()
    rows, vocab = x.shape
    at = [x.data_ptr() + r * vocab * 4 for r in range(rows)]
    got = draw_rows(lib, at, vocab, temperature.tolist(), top_k.tolist(), top_p.tolist(), u.tolist())
    return torch.tensor(got, dtype=torch.long)


def draw_rows(
    lib: Any,
    rows: list[int],
    vocab: int,
    temperature: list[float],
    top_k: list[int],
    top_p: list[float],
    u: list[float],
) -> list[int]:
    """`draw` in C over rows given by address (`vocab` float32 logits each, alive for the call), settings as
    lists: a decode batch's rows are drawn where they lie, with no torch op (a copy of many rows would wake
    torch's threads, which then spin on the cores the decode step needs)."""
    n = len(rows)
    work = torch.empty(vocab * 20 + 8 + 8 * 8192, dtype=torch.uint8)  # floats, doubles, ids, buckets
    out = (ctypes.c_int64 * n)()
    lib.pyc_sample(
        (ctypes.c_void_p * n)(*rows), n, vocab, (ctypes.c_float * n)(*temperature), (ctypes.c_int64 * n)(*top_k),
        (ctypes.c_float * n)(*top_p), (ctypes.c_double * n)(*u), _one(vocab), work.data_ptr(), out,
    )  # fmt: skip
    return list(out)
