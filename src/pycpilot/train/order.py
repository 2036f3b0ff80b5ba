"""Which blocks each step trains on: a seeded shuffle per epoch, cut into per-rank shards that never overlap.

The order depends only on (seed, epoch), so a resumed run, or a run on another number of processes with the
same global batch, sees exactly the same blocks at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Position:
    epoch: int = 0
    step_in_epoch: int = 0


class BatchOrder:
    def __init__(self, n_blocks: int, micro_batch: int, grad_accum: int, world: int, rank: int, seed: int) -> None:
        self.n = n_blocks
        self.micro, self.accum, self.world, self.rank, self.seed = micro_batch, grad_accum, world, rank, seed
        self.global_batch = micro_batch * grad_accum * world
        self.steps_per_epoch = n_blocks // self.global_batch
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=gen)
            self._perm_epoch = epoch
        return self._perm

    def micro_batches(self, pos: Position) -> list[torch.Tensor]:
        """This rank's `grad_accum` micro-batches of block indices for the step at `pos`."""
        perm = self._permutation(pos.epoch)
        start = pos.step_in_epoch * self.global_batch + self.rank * self.micro * self.accum
        mine = perm[start : start + self.micro * self.accum]
        return list(mine.split(self.micro))

    def advance(self, pos: Position) -> Position:
        if pos.step_in_epoch + 1 >= self.steps_per_epoch:
            return Position(pos.epoch + 1, 0)
        return Position(pos.epoch, pos.step_in_epoch + 1)
