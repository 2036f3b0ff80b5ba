"""Size the model to a time budget: measure this machine's training speed, then apply tokens ≈ k × parameters.

Guarantee: `choose_size` returns the largest shape of `LADDER` whose measured tokens/s, spent over the budget,
reaches K_TOKENS_PER_PARAM tokens per non-embedding parameter (the smallest shape when none does), among the
shapes whose memory estimate fits. Shapes are measured from the smallest up and the climb stops at the first
that misses, so a short budget costs a second or two of measuring and an 8-hour one a few more.

K_TOKENS_PER_PARAM was fitted here from runs of the default recipe at 3 and 6 minutes on the stdlib (see
docs/benchmarks.md, "Sizing"): the winner saw 10.5 and 21.5 tokens per non-embedding parameter, the next
size up 3.1 and 5.9, so k lies in (5.9, 10.5]. Tokens are estimated from a short probe, which runs 20-25%
below a real run's tokens/s, so the rule leans to the smaller model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from pycpilot.errors import PycpilotError

K_TOKENS_PER_PARAM = 8.0
# Share of the budget spent training (the rest: evaluations every --eval-every steps, the last save).
TRAINING_SHARE = 0.9
# Below this many optimiser steps a run is mostly warmup: the batch shrinks to keep at least this many.
MIN_STEPS = 600
BATCH_ROWS = (8, 16, 32, 64)


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_head: int
    n_embd: int

    @property
    def non_embedding(self) -> int:
        """Weights of the blocks (attention 4 d², MLP 8 d²), the parameters that k counts."""
        return 12 * self.n_layer * self.n_embd**2

    def __str__(self) -> str:
        return f"{self.n_layer}x{self.n_embd}"


# From below the tiny preset up to GPT-2 small; heads of 32 dimensions up to width 256, then 64.
LADDER = (
    Shape(3, 3, 96),
    Shape(4, 4, 128),
    Shape(4, 6, 192),
    Shape(6, 8, 256),
    Shape(8, 5, 320),
    Shape(8, 6, 384),
    Shape(10, 8, 512),
    Shape(12, 10, 640),
    Shape(12, 12, 768),
)


@dataclass
class SizeChoice:
    shape: Shape
    batch_rows: int
    tokens_per_s: float  # measured for `shape`
    expected_tokens: float
    k: float
    measured: dict[str, float]  # shape -> tokens/s, every shape measured
    probe_seconds: float
    reason: str

    def as_manifest(self) -> dict[str, Any]:
        return asdict(self) | {"label": str(self.shape)}


def choose_size(
    budget_s: float,
    *,
    measure: Callable[[Shape], float],
    fits: Callable[[Shape], bool],
    block: int,
    batch_rows: int | None,
    k: float = K_TOKENS_PER_PARAM,
) -> SizeChoice:
    """Climb LADDER with `measure(shape) -> tokens/s` until a shape's tokens fall short of k × its parameters."""
    start = time.perf_counter()
    measured: dict[Shape, float] = {}
    chosen: Shape | None = None
    first_miss: Shape | None = None
    for shape in LADDER:
        if not fits(shape):
            break
        tps = measure(shape)
        measured[shape] = tps
        if chosen is None or tps * budget_s * TRAINING_SHARE >= k * shape.non_embedding:
            chosen = shape
        if tps * budget_s * TRAINING_SHARE < k * shape.non_embedding:
            first_miss = shape
            break
    if chosen is None:
        raise PycpilotError(
            f"not even the smallest model ({LADDER[0]}) fits in the free memory: free some memory, or pass "
            f"--n-layer/--n-embd/--batch-size yourself with --grad-checkpointing"
        )
    tps = measured[chosen]
    tokens = tps * budget_s * TRAINING_SHARE
    rows = batch_rows or _batch_rows(tokens, block)
    if first_miss is None:
        why = f"the largest size tried; {tokens / chosen.non_embedding:.0f} tokens per parameter"
    elif first_miss == chosen:
        why = f"the smallest size: it sees only {tokens / chosen.non_embedding:.1f} tokens per parameter"
    else:
        miss = measured[first_miss] * budget_s * TRAINING_SHARE
        why = (
            f"{tokens / chosen.non_embedding:.0f} tokens per parameter (rule: >= {k:g}); {first_miss} would see "
            f"{miss / first_miss.non_embedding:.1f}"
        )
    return SizeChoice(
        shape=chosen,
        batch_rows=rows,
        tokens_per_s=round(tps, 1),
        expected_tokens=round(tokens),
        k=k,
        measured={str(s): round(v, 1) for s, v in measured.items()},
        probe_seconds=round(time.perf_counter() - start, 2),
        reason=why,
    )


def _batch_rows(tokens: float, block: int) -> int:
    """The largest batch in BATCH_ROWS that still leaves MIN_STEPS steps (16 rows: the tiny preset's)."""
    rows = [r for r in BATCH_ROWS if tokens / (r * block) >= MIN_STEPS]
    return max(rows) if rows else BATCH_ROWS[0]


def probe_tokens_per_s(
    step: Callable[[torch.Tensor], None], vocab: int, rows: int, block: int, seconds: float = 0.5
) -> float:
    """Tokens/s of `step` (forward, backward and optimiser step of one micro-batch) after one warm-up step,
    timed over at least one step and about `seconds`."""
    x = torch.randint(0, vocab, (rows, block))
    step(x)  # allocations and kernel choices
    done, start = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - start < seconds:
        step(x)
        done += 1
    return done * rows * block / (time.perf_counter() - start)


def probe_rows(shape: Shape, batch_rows: int | None) -> int:
    """Rows per measured step: the run's batch for small shapes; 4 for large ones, whose steps take seconds
    (per token, large matrices run as fast at 4 rows)."""
    return 4 if shape.non_embedding > 5_000_000 else (batch_rows or 16)
