"""Where each stage of the datatrove engine writes in the work folder, and what the stages agree on."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pycpilot.data.config import DataConfig

STAGES = ("clean", "buckets", "cluster", "keep", "assemble")
# One row per file that reached deduplication, in the order its task met it (the row's doc id in the bands).
META = np.dtype([("order", "<u8"), ("sig_row", "<i8"), ("passed", "u1"), ("copies", "<u4")])
# One row per kept file, in shard order: where it sits in the corpus and the one-machine path's row digest.
KEPT = np.dtype([("order", "<u8"), ("digest", "u1", (16,)), ("copies", "<u4")])
EXACT, NEAR = 1, 2  # the cluster's decisions


def order_key(source: int, index: int) -> int:
    """A file's place in the corpus: its source, then its position in that source (what the pool follows)."""
    return (source << 40) | index


@dataclass(frozen=True)
class Bands:
    """The LSH banding of the one-machine index (datasketch's b x r for the threshold), plus a band of the
    whitespace-free content hash that finds exact duplicates the same way."""

    b: int
    r: int
    num_perm: int

    @classmethod
    def of(cls, cfg: DataConfig) -> Bands:
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=cfg.near_dedup_threshold, num_perm=cfg.num_perm)
        return cls(b=lsh.b, r=lsh.r, num_perm=cfg.num_perm)

    @property
    def exact(self) -> int:
        return self.b  # the last bucket

    @property
    def buckets(self) -> int:
        return self.b + 1

    def exact_band(self, content_hash: str) -> np.ndarray:
        values = np.frombuffer(hashlib.shake_128(content_hash.encode()).digest(4 * self.r), dtype="<u4").copy()
        values[0] &= 0x7FFFFFFF  # datatrove stops reading a bucket file at a first value of 2**32 - 1
        return values

    def trove_config(self) -> Any:
        from datatrove.pipeline.dedup.minhash import MinhashConfig
        from datatrove.utils.hashing import HashConfig

        # 32-bit values: datasketch's affine32 signatures; sha1 is never called (signatures come from here).
        return MinhashConfig(
            n_grams=1,
            num_buckets=self.buckets,
            hashes_per_bucket=self.r,
            hash_config=HashConfig(hash_fc="sha1", precision=32),
        )


class Work:
    """The work folder's layout; every file is written beside its name and renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def logs(self, stage: str) -> Path:
        return self.root / "logs" / stage

    def clean(self, rank: int) -> Path:
        return self.root / "clean" / f"{rank:05d}.arrow"

    def inputs(self, rank: int) -> Path:
        return self.root / "clean" / f"{rank:05d}.inputs"

    def band_temp(self, band: int, rank: int) -> Path:
        path = self.root / "tmp" / f"bucket_{band:03d}-{rank:05d}.sig"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def clear_temps(self, rank: int) -> None:
        for stale in (self.root / "tmp").glob(f"*-{rank:05d}.sig"):
            stale.unlink(missing_ok=True)

    def meta(self, rank: int) -> Path:
        return self.root / "clean" / f"{rank:05d}.meta.npy"

    def full(self, rank: int) -> Path:
        return self.root / "clean" / f"{rank:05d}.sig"

    def tally(self, stage: str, rank: int) -> Path:
        return self.root / "tally" / f"{stage}-{rank:05d}.json"

    @property
    def sigs(self) -> Path:
        return self.root / "sigs"

    def band_file(self, band: int, rank: int) -> Path:
        return self.sigs / f"bucket_{band:03d}" / f"{rank:05d}.minhash.sig"

    @property
    def dups(self) -> Path:
        return self.root / "dups"

    def decisions(self, rank: int) -> Path:
        return self.root / "decisions" / f"{rank:05d}.npz"

    def kept(self, rank: int) -> Path:
        return self.root / "kept" / f"{rank:05d}.arrow"

    def kept_meta(self, rank: int) -> Path:
        return self.root / "kept" / f"{rank:05d}.npy"


def temp_of(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_npy(path: Path, array: np.ndarray) -> None:
    tmp = temp_of(path)
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    tmp = temp_of(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


DATA = ("clean", "sigs", "dups", "decisions", "kept", "tally", "tmp")  # what a finished run leaves to remove
