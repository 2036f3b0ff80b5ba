"""The data stage's optional Parquet copy: each split as shards in the codeparrot-ds schema (`--parquet`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SHARD_BYTES = 500_000_000  # the hub's datasets-server favours shards of a few hundred MB


def write_parquet(dsd: Any, folder: Path) -> dict[str, list[str]]:
    """OUT/parquet/SPLIT-00000-of-0000N.parquet per split (the hub's naming); returns the files per split."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {}
    for split, ds in dsd.items():
        n = max(1, math.ceil(ds.data.nbytes / SHARD_BYTES))
        written[split] = []
        for i in range(n):
            name = f"{split}-{i:05d}-of-{n:05d}.parquet"
            ds.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(folder / name))
            written[split].append(f"parquet/{name}")
    return written
