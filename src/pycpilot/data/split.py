"""Train/valid split by repository, so no repository's files sit on both sides."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    train: list[int]
    valid: list[int]
    mode: str  # "repository" or "file"
    note: str = ""


def split_rows(repos: list[str], fraction: float, seed: int) -> Split:
    """Pick whole repositories (seeded) until the valid split holds about `fraction` of the files."""
    names, ids = np.unique(np.asarray(repos, dtype=object), return_inverse=True) if repos else ([], np.zeros(0, int))
    return split_repo_ids(ids, list(names), fraction, seed)


def split_repo_ids(ids: np.ndarray, names: list[str], fraction: float, seed: int) -> Split:
    """`split_rows` for rows given as indices into `names` (what a corpus too big for a list of strings gives).

    Repositories too big to fit (more than 1.5x what is still wanted) are passed over; if that leaves valid
    far too small, the smallest repositories are taken anyway. Only a single repository is split by file.
    """
    n = len(ids)
    if fraction <= 0 or n < 2:
        return Split(list(range(n)), [], "repository", "no valid split requested" if fraction <= 0 else "")
    target = max(1, round(fraction * n))
    per_id = np.bincount(ids, minlength=len(names))
    counts = {names[i]: int(c) for i, c in enumerate(per_id) if c}
    order = sorted(counts)
    random.Random(seed).shuffle(order)
    chosen: set[str] = set()
    taken = 0
    for repo in order:
        if taken >= target:
            break
        if taken + counts[repo] <= max(1.5 * target, 1) and len(chosen) + 1 < len(counts):
            chosen.add(repo)
            taken += counts[repo]
    note = ""
    if taken < 0.5 * target and len(counts) >= 2:
        # Every repository is big: take the smallest ones anyway, so no repository is split; valid grows.
        for repo in sorted(order, key=lambda r: counts[r]):
            if taken >= target or len(chosen) + 1 >= len(counts):
                break
            if repo not in chosen:
                chosen.add(repo)
                taken += counts[repo]
        note = f"; repositories are large, so valid holds {taken} files where {target} were asked"
    if len(counts) >= 2:
        index = {name: i for i, name in enumerate(names)}
        is_valid = np.isin(ids, [index[r] for r in chosen])
        valid, train = np.flatnonzero(is_valid).tolist(), np.flatnonzero(~is_valid).tolist()
        return Split(train, valid, "repository", f"{len(chosen)} of {len(counts)} repositories in valid{note}")
    picked = set(random.Random(seed).sample(range(n), target))
    train = [i for i in range(n) if i not in picked]
    return Split(train, sorted(picked), "file", f"split by file: only one repository ({order[0]})")
