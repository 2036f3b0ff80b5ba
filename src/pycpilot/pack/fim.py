"""Fill-in-the-middle transforms, as in SantaCoder / StarCoder training.

A file is cut at two random character positions into prefix, middle and suffix and laid out as
PSM:  <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle
SPM:  <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle
so the model learns to write the middle after seeing both sides. Each part is tokenized on its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class FimIds:
    prefix: int
    middle: int
    suffix: int


def cut(text: str, rng: random.Random) -> tuple[str, str, str]:
    """Two uniform cut points (characters), sorted: prefix, middle, suffix."""
    a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
    return text[:a], text[a:b], text[b:]


def layout(prefix: list[int], middle: list[int], suffix: list[int], spm: bool, ids: FimIds) -> list[int]:
    if spm:
        return [ids.prefix, ids.suffix, *suffix, ids.middle, *prefix, *middle]
    return [ids.prefix, *prefix, ids.suffix, *suffix, ids.middle, *middle]


def restore(seq: list[int], ids: FimIds) -> list[int]:
    """Undo `layout`: the token ids in reading order (prefix, middle, suffix), for checks and tests."""
    if seq[:2] == [ids.prefix, ids.suffix]:  # SPM: suffix, then prefix + middle after <fim_middle>
        m = seq.index(ids.middle, 2)
        suffix, prefix_middle = seq[2:m], seq[m + 1 :]
        return prefix_middle + suffix
    if seq[:1] == [ids.prefix]:
        s = seq.index(ids.suffix, 1)
        m = seq.index(ids.middle, s + 1)
        return seq[1:s] + seq[m + 1 :] + seq[s + 1 : m]
    return seq
