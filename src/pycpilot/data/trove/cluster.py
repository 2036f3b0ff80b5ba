"""Stage 3, cluster: decide, from the files that share an LSH band, which ones the pool would have dropped.

Guarantee: the same decisions as the one-machine pool (`data.build.Builder.take` with `data.dedup.NearDedup`),
not datatrove's own clustering. datatrove's `MinhashDedupCluster` joins every band collision into one
cluster (A~B and B~C drop C even when A and C differ) and keeps one file per cluster in no set order; the
pool walks the corpus in order and drops a file when an earlier file has the same whitespace-free hash
(whatever became of that file), or when an earlier *kept* file shares a band with it and their signatures
agree on at least the threshold.

datatrove's bucket stage writes, per band, pairs of consecutive files in sorted band order, so the files
with one band value form a chain: its connected components are the cliques of equal values. Memory is a few
numpy arrays of the files that reached dedup (about 60 bytes each) and one band's pairs at a time; the
signatures stay on disk, read two at a time for each candidate pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pycpilot.data.config import DataConfig
from pycpilot.data.trove.layout import EXACT, NEAR, Bands, Work, save_npz_atomic


class Cluster:
    def __init__(self, cfg: DataConfig, work: Work, tasks: int) -> None:
        self.cfg, self.work, self.tasks = cfg, work, tasks
        self.bands = Bands.of(cfg)
        metas = [np.load(work.meta(t), mmap_mode="r") for t in range(tasks)]
        self.offsets = np.concatenate([[0], np.cumsum([len(m) for m in metas])]).astype(np.int64)
        self.n = int(self.offsets[-1])  # files that reached dedup, all tasks; node g = offsets[task] + row
        meta = np.concatenate(metas)
        self.passed, self.sig_row, self.copies = meta["passed"] != 0, meta["sig_row"], meta["copies"]
        self.pos = np.empty(self.n, dtype=np.int64)  # node -> place in corpus order
        self.pos[np.argsort(meta["order"], kind="stable")] = np.arange(self.n)
        self.task_of = np.repeat(np.arange(tasks), np.diff(self.offsets))
        self._full: dict[int, np.ndarray] = {}

    def signature(self, node: int) -> np.ndarray:
        task = int(self.task_of[node])
        if task not in self._full:
            sig = np.memmap(self.work.full(task), dtype="<u4", mode="r")
            self._full[task] = sig.reshape(-1, self.bands.num_perm)
        return self._full[task][int(self.sig_row[node])]

    def components(self, band: int) -> tuple[np.ndarray, np.ndarray]:
        """(nodes in a collision of this band, their component label)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        files = sorted(Path(self.work.dups).glob(f"{band:05d}_*.dups"))
        parts = [np.fromfile(f, dtype="<u4").reshape(-1, 4) for f in files]
        pairs = np.concatenate(parts) if parts else np.zeros((0, 4), dtype="<u4")
        a = self.offsets[pairs[:, 0].astype(np.int64)] + pairs[:, 1]
        b = self.offsets[pairs[:, 2].astype(np.int64)] + pairs[:, 3]
        nodes = np.unique(np.concatenate([a, b]))
        if not len(nodes):
            return nodes, nodes
        local = np.searchsorted(nodes, np.concatenate([a, b]))
        graph = coo_matrix((np.ones(len(a)), (local[: len(a)], local[len(a) :])), shape=(len(nodes), len(nodes)))
        return nodes, connected_components(graph, directed=False)[1]

    def run(self) -> dict[str, Any]:
        kind = np.zeros(self.n, dtype=np.uint8)  # EXACT / NEAR for removed files
        extra = np.zeros(self.n, dtype=np.int64)  # copies a kept file gains from its exact duplicates
        # Exact: in each group of equal hashes every file but the first in corpus order goes.
        nodes, labels = self.components(self.bands.exact)
        group_first = np.zeros(0, dtype=np.int64)
        if len(nodes):
            by = np.lexsort((self.pos[nodes], labels))
            starts = np.flatnonzero(np.r_[True, labels[by][1:] != labels[by][:-1]])
            firsts = nodes[by][starts]
            group_first = firsts[np.searchsorted(labels[by][starts], labels)]  # per node of `nodes`
            kind[nodes] = EXACT
            kind[firsts] = 0
        # Near: walk the candidates in corpus order; a file goes when an earlier kept file of one of its band
        # components agrees with it on >= the threshold of the signature.
        candidate = (kind == 0) & self.passed & (self.sig_row >= 0)
        bands = [self._members(band, candidate) for band in range(self.bands.b)]
        kept = (kind == 0) & self.passed  # final for every file the walk has passed
        walk = np.flatnonzero(candidate)
        for x in walk[np.argsort(self.pos[walk])].tolist():
            if self._near_kept(x, bands, kept):
                kind[x] = NEAR
                kept[x] = False
        # Copies: a kept first of an exact group gains the copies of the rest of its group.
        if len(nodes):
            removed = kind[nodes] == EXACT
            np.add.at(extra, group_first[removed], self.copies[nodes[removed]].astype(np.int64))
            extra[~kept] = 0
        return self._write(kind, extra)

    def _members(self, band: int, candidate: np.ndarray) -> tuple[np.ndarray, ...]:
        """One band's candidates in collisions, by component then corpus order: (nodes, the start of each
        one's component in that array, the nodes sorted by id with their index, for lookups)."""
        nodes, labels = self.components(band)
        keep = candidate[nodes]
        nodes, labels = nodes[keep], labels[keep]
        order = np.lexsort((self.pos[nodes], labels))
        nodes, labels = nodes[order], labels[order]
        first = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if len(nodes) else np.zeros(0, np.int64)
        start = first[np.searchsorted(first, np.arange(len(nodes)), side="right") - 1] if len(nodes) else first
        by_id = np.argsort(nodes)
        return nodes, start, nodes[by_id], by_id

    def _near_kept(self, x: int, bands: list[tuple[np.ndarray, ...]], kept: np.ndarray) -> bool:
        sig = None
        seen: set[int] = set()
        for nodes, start, sorted_ids, by_id in bands:
            j = int(np.searchsorted(sorted_ids, x))
            if j == len(sorted_ids) or sorted_ids[j] != x:
                continue  # no collision in this band
            i = int(by_id[j])
            earlier = nodes[start[i] : i]  # x's component, before x in corpus order
            for y in earlier[kept[earlier]].tolist():
                if y in seen:
                    continue
                seen.add(y)
                sig = self.signature(x) if sig is None else sig
                if np.mean(self.signature(y) == sig) >= self.cfg.near_dedup_threshold:
                    return True
        return False

    def _write(self, kind: np.ndarray, extra: np.ndarray) -> dict[str, Any]:
        for task in range(self.tasks):
            lo, hi = int(self.offsets[task]), int(self.offsets[task + 1])
            k, e = kind[lo:hi], extra[lo:hi]
            rows = np.flatnonzero(k)
            copy_rows = np.flatnonzero(e)
            save_npz_atomic(
                self.work.decisions(task), rows=rows, kinds=k[rows], copy_rows=copy_rows, copy_add=e[copy_rows]
            )
        removed = {"exact": int((kind == EXACT).sum()), "near": int((kind == NEAR).sum())}
        return {"files_in_collisions": int(self.n), "removed": removed}
