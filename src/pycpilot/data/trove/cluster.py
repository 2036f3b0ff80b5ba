"""Stage 3, cluster: decide, from the files that share an LSH band, which ones the pool would have dropped.

Guarantee: the same decisions as the one-machine pool (`data.build.Builder.take` with `data.dedup.NearDedup`),
not datatrove's own clustering. datatrove's `MinhashDedupCluster` joins every band collision into one
cluster (A~B and B~C drop C even when A and C differ) and keeps one file per cluster in no set order; the
pool walks the corpus in order and drops a file only when an earlier *kept* file shares a band with it and
their signatures agree on at least the threshold (exact duplicates: an earlier file with the same
whitespace-free hash, whatever became of it). That needs only the band collisions and, for each candidate
pair, the two full signatures: memory grows with the duplicates found, not with the corpus.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pycpilot.data.config import DataConfig
from pycpilot.data.trove.layout import EXACT, NEAR, Bands, Work, save_npz_atomic

Node = tuple[int, int]  # (task, row in its clean shard)


def _components(pairs: np.ndarray) -> dict[Node, int]:
    """Union-find over one band's pairs: files with equal band values form one component (a clique)."""
    parent: dict[Node, Node] = {}

    def root(x: Node) -> Node:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for f1, d1, f2, d2 in pairs.tolist():
        a, b = root((f1, d1)), root((f2, d2))
        if a != b:
            parent[max(a, b)] = min(a, b)
    ids: dict[Node, int] = {}
    return {x: ids.setdefault(root(x), len(ids)) for x in list(parent)}


class Cluster:
    def __init__(self, cfg: DataConfig, work: Work, tasks: int) -> None:
        self.cfg, self.work, self.tasks = cfg, work, tasks
        self.bands = Bands.of(cfg)
        self._meta: dict[int, np.ndarray] = {}
        self._full: dict[int, np.ndarray] = {}

    def meta(self, task: int) -> np.ndarray:
        if task not in self._meta:
            self._meta[task] = np.load(self.work.meta(task), mmap_mode="r")
        return self._meta[task]

    def signature(self, node: Node) -> np.ndarray:
        task, row = node
        if task not in self._full:
            self._full[task] = np.memmap(self.work.full(task), dtype="<u4", mode="r").reshape(-1, self.bands.num_perm)
        return self._full[task][int(self.meta(task)[row]["sig_row"])]

    def band_pairs(self, band: int) -> np.ndarray:
        files = sorted(Path(self.work.dups).glob(f"{band:05d}_*.dups"))
        arrays = [np.fromfile(f, dtype="<u4").reshape(-1, 4) for f in files]
        return np.concatenate(arrays) if arrays else np.zeros((0, 4), dtype="<u4")

    def run(self) -> dict[str, Any]:
        # Per file in any collision: its component in each band it collides in.
        exact = _components(self.band_pairs(self.bands.exact))
        near: dict[Node, list[tuple[int, int]]] = defaultdict(list)
        for band in range(self.bands.b):
            for node, comp in _components(self.band_pairs(band)).items():
                near[node].append((band, comp))
        nodes = sorted(set(exact) | set(near), key=lambda x: int(self.meta(x[0])[x[1]]["order"]))

        first_of_exact: dict[int, Node] = {}
        kept: set[Node] = set()
        kept_in: dict[tuple[int, int], list[Node]] = defaultdict(list)
        decisions: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        extra_copies: dict[Node, int] = defaultdict(int)
        for x in nodes:
            info = self.meta(x[0])[x[1]]
            if x in exact:
                first = first_of_exact.setdefault(exact[x], x)
                if first != x:
                    decisions[x[0]]["rows"].append(x[1])
                    decisions[x[0]]["kinds"].append(EXACT)
                    if first in kept:
                        extra_copies[first] += int(info["copies"])
                    continue
            if not info["passed"]:
                continue  # dropped by its own filter in the keep stage
            if x in near and self._near_kept(x, near[x], kept_in):
                decisions[x[0]]["rows"].append(x[1])
                decisions[x[0]]["kinds"].append(NEAR)
                continue
            kept.add(x)
            for key in near.get(x, ()):
                kept_in[key].append(x)
        for (task, row), add in extra_copies.items():
            decisions[task]["copy_rows"].append(row)
            decisions[task]["copy_add"].append(add)
        removed = {"exact": 0, "near": 0}
        for task in range(self.tasks):
            d = decisions.get(task, {})
            kinds = np.array(d.get("kinds", []), dtype=np.uint8)
            removed["exact"] += int((kinds == EXACT).sum())
            removed["near"] += int((kinds == NEAR).sum())
            save_npz_atomic(
                self.work.decisions(task),
                rows=np.array(d.get("rows", []), dtype=np.int64),
                kinds=kinds,
                copy_rows=np.array(d.get("copy_rows", []), dtype=np.int64),
                copy_add=np.array(d.get("copy_add", []), dtype=np.int64),
            )
        return {"files_in_collisions": len(nodes), "removed": removed}

    def _near_kept(self, x: Node, keys: list[tuple[int, int]], kept_in: dict) -> bool:
        """Whether an earlier kept file shares a band with x and agrees on >= threshold of the signature."""
        sig = None
        for key in keys:
            for y in kept_in.get(key, ()):
                sig = self.signature(x) if sig is None else sig
                if np.mean(self.signature(y) == sig) >= self.cfg.near_dedup_threshold:
                    return True
        return False
