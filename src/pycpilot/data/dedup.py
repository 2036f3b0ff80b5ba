"""Near-duplicate removal: MinHash signatures (computed by the workers) indexed in an LSH."""

from __future__ import annotations

import numpy as np

from pycpilot.data.config import DataConfig

SCHEME = "affine32"  # datasketch's hashing scheme; workers and the index must agree


class NearDedup:
    """Greedy keep-first near dedup: a file is dropped when a kept file's MinHash Jaccard >= threshold."""

    def __init__(self, cfg: DataConfig) -> None:
        from datasketch import LeanMinHash, MinHashLSH

        self._lean = LeanMinHash
        self._lsh = MinHashLSH(threshold=cfg.near_dedup_threshold, num_perm=cfg.num_perm)
        self._signatures: dict[int, np.ndarray] = {}
        self._threshold = cfg.near_dedup_threshold
        self._seed = cfg.seed

    def check_and_add(self, key: int, signature: np.ndarray) -> int | None:
        """Key of the kept file this one nearly duplicates, or None (then it is indexed as kept)."""
        sketch = self._lean(seed=self._seed, hashvalues=signature, scheme="affine32")
        for other in self._lsh.query(sketch):
            if np.mean(self._signatures[other] == signature) >= self._threshold:
                return other
        self._lsh.insert(key, sketch, check_duplication=False)
        self._signatures[key] = signature
        return None
