"""Valid loss during and at the end of training: the whole split, or an even sample of it."""

from __future__ import annotations

import math

import torch

from pycpilot.pack.reader import PackedDataset
from pycpilot.train.loss import FusedLossLM
from pycpilot.train.metrics import MetricsLog
from pycpilot.train.runtime import Runtime, autocast

INTERIM_EVAL_BLOCKS = 256  # valid blocks read by the evaluations during training, unless --eval-blocks


def eval_indices(total: int, limit: int | None) -> range:
    """Which valid blocks an evaluation reads: all, or about `limit` spread evenly over the split (the blocks
    are in file order, so the first `limit` would be a few files only)."""
    if limit is None or limit >= total:
        return range(total)
    return range(0, total, -(-total // max(limit, 1)))


def evaluate(model: FusedLossLM, valid: PackedDataset, batch: int, limit: int | None, rt: Runtime) -> float:
    """Mean next-token loss over the valid blocks (all, or an even sample of about `limit`), shared out across
    ranks."""
    mine = list(eval_indices(len(valid), limit))[rt.rank :: rt.world]
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=rt.device)
    with torch.no_grad(), autocast(rt.device, rt.dtype):
        for start in range(0, len(mine), batch):
            idx = mine[start : start + batch]
            x = torch.stack([valid[i] for i in idx]).to(rt.device)
            total += torch.tensor([model(x).double().item() * len(idx), len(idx)], device=rt.device)
    model.train()
    total = rt.all_sum(total)
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def log_eval(
    model: FusedLossLM,
    valid: PackedDataset,
    batch: int,
    limit: int | None,
    rt: Runtime,
    metrics: MetricsLog,
    step: int,
    tokens_per_byte: float,
) -> float:
    loss = evaluate(model, valid, batch, limit, rt)
    blocks = len(eval_indices(len(valid), limit))
    metrics.write("eval", step, loss=loss, perplexity=math.exp(min(loss, 50)), bpb=loss / math.log(2) * tokens_per_byte,
                  blocks=blocks)  # fmt: skip
    return loss
