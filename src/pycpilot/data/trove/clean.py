"""Stage 1, clean: one task's shard of the sources, checked exactly as the one-machine pool checks them.

Guarantee: a file's checks, MinHash and content hash are the pool's (the same `Worker`), so the later
stages can reach the pool's decisions. Shards are round-robin over each source's files (file j of a
source goes to task j mod T), so every task lists the sources but reads only its own files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from pycpilot.data.config import DataConfig
from pycpilot.data.records import BEFORE_DEDUP, COLUMNS, SCHEMA, record_values, row_digest
from pycpilot.data.sources import Item, Skip, describe_source, iter_source
from pycpilot.data.trove.layout import META, Bands, Work, order_key, save_npy, temp_of
from pycpilot.data.worker import Checked, Worker

# Columns of a clean shard: the pool's record, then what the keep stage needs to count and hash it.
CLEAN_SCHEMA = pa.schema(
    [*SCHEMA, ("_source", pa.int32()), ("_reason", pa.string()), ("_detail", pa.string()), ("_digest", pa.binary(16))]
)
_FLUSH = 512


def shard_entries(cfg: DataConfig, rank: int, world_size: int) -> Iterator[tuple[int, int, Item | Skip]]:
    """(source index, position in the source, item or skip) of this task's files, in corpus order.

    A skipped vendored folder is not a file: task 0 alone passes those on, so they are counted once."""
    for s, spec in enumerate(cfg.sources):
        j = 0
        for found in iter_source(spec, cfg.include_vendored):
            if isinstance(found, Skip) and found.reason == "vendored folder":
                if rank == 0:
                    yield s, -1, found
                continue
            if j % world_size == rank:
                yield s, j, found
            j += 1


class _Tally:
    """Per source: files and bytes seen, removed before dedup by reason, skipped folders, an input digest."""

    def __init__(self, sources: list[str]) -> None:
        self.per_source: list[dict[str, Any]] = [{"seen": [0, 0], "removed": {}, "skipped_folders": 0} for _ in sources]
        self.digests = [hashlib.sha256() for _ in sources]

    def seen(self, s: int, size: int) -> None:
        self.per_source[s]["seen"][0] += 1
        self.per_source[s]["seen"][1] += size

    def removed(self, s: int, reason: str, size: int) -> None:
        files_bytes = self.per_source[s]["removed"].setdefault(reason, [0, 0])
        files_bytes[0] += 1
        files_bytes[1] += size

    def as_json(self) -> list[dict[str, Any]]:
        return [dict(t, digest=d.hexdigest()) for t, d in zip(self.per_source, self.digests, strict=True)]


class CleanShard:
    """Writes one task's clean shard, its rows' meta, the LSH band files and the full signatures."""

    def __init__(self, cfg: DataConfig, work: Work, rank: int) -> None:
        self.cfg, self.work, self.rank = cfg, work, rank
        self.bands = Bands.of(cfg)
        self.worker = Worker(cfg)
        self.tally = _Tally(cfg.sources)
        self.meta: list[tuple[int, int, int, int]] = []
        self.band_rows: list[list[np.ndarray]] = [[] for _ in range(self.bands.buckets)]
        self.band_docs: list[list[int]] = [[] for _ in range(self.bands.buckets)]
        self.rows: dict[str, list] = {f.name: [] for f in CLEAN_SCHEMA}
        self.tmp = {"clean": temp_of(work.clean(rank)), "full": temp_of(work.full(rank))}
        self.writer = pa.ipc.new_stream(str(self.tmp["clean"]), CLEAN_SCHEMA)
        self.full = open(self.tmp["full"], "wb")  # noqa: SIM115 (closed in finish or abort)
        self.signed = 0

    def take(self, s: int, j: int, found: Item | Skip) -> None:
        if isinstance(found, Skip):
            if j < 0:
                self.tally.per_source[s]["skipped_folders"] += 1
            else:
                self.tally.seen(s, 0)
                self.tally.removed(s, found.reason, 0)
            return
        c = self.worker.check(found)
        self.tally.seen(s, c.size)
        self.tally.digests[s].update(f"{found.repo_name}/{found.path}:{c.raw_digest}\n".encode())
        if c.reason in BEFORE_DEDUP:
            self.tally.removed(s, c.reason, c.size)
            return
        self._row(s, j, c)

    def _row(self, s: int, j: int, c: Checked) -> None:
        doc = len(self.meta)
        passed = c.reason is None
        sig_row = -1
        if passed and c.signature is not None:
            sig = c.signature.astype("<u4")
            self.full.write(sig.tobytes())
            sig_row, self.signed = self.signed, self.signed + 1
            for band in range(self.bands.b):
                self.band_rows[band].append(sig[band * self.bands.r : (band + 1) * self.bands.r])
                self.band_docs[band].append(doc)
        # Every file past the read checks takes part in exact dedup, as in the pool (a failed file's copies
        # are duplicates of a dropped file).
        self.band_rows[self.bands.exact].append(self.bands.exact_band(c.hash))
        self.band_docs[self.bands.exact].append(doc)
        self.meta.append((order_key(s, j), sig_row, int(passed), c.item.copies))
        values = record_values(c, self.cfg.sources[s]) if passed else [""] * len(COLUMNS)
        values[COLUMNS.index("size")] = str(c.size)
        values[COLUMNS.index("hash")] = c.hash
        for name, value in zip(self.rows, [*values, s, c.reason, c.detail, row_digest(c)], strict=True):
            self.rows[name].append(value)
        if len(self.rows["content"]) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self.rows["content"]:
            numeric = {"line_mean": 0.0, "line_max": 0, "alpha_frac": 0.0}
            for name, zero in numeric.items():  # failed rows hold "" placeholders
                self.rows[name] = [zero if v == "" else v for v in self.rows[name]]
            self.writer.write_batch(pa.record_batch(self.rows, schema=CLEAN_SCHEMA))
            self.rows = {f.name: [] for f in CLEAN_SCHEMA}

    def finish(self) -> None:
        self._flush()
        self.writer.close()
        self.full.close()
        self._write_bands()
        save_npy(self.work.meta(self.rank), np.array(self.meta, dtype=META))
        os.replace(self.tmp["full"], self.work.full(self.rank))
        os.replace(self.tmp["clean"], self.work.clean(self.rank))
        tally = temp_of(self.work.tally("clean", self.rank))
        tally.write_text(json.dumps({"sources": self.tally.as_json()}))
        os.replace(tally, self.work.tally("clean", self.rank))

    def _write_bands(self) -> None:
        """datatrove's signature files: per band, records of r uint32 values and the doc id, sorted."""
        r = self.bands.r
        dtype = np.dtype([(f"field{i + 1}", "<u4") for i in range(r)] + [(f"field{r + 1}", "<u4")])
        for band in range(self.bands.buckets):
            records = np.zeros(len(self.band_docs[band]), dtype=dtype)
            if len(records):
                values = np.stack(self.band_rows[band])
                for i in range(r):
                    records[f"field{i + 1}"] = values[:, i]
                records[f"field{r + 1}"] = self.band_docs[band]
                records.sort(order=dtype.names)
            path = self.work.band_file(band, self.rank)
            tmp = temp_of(path)
            tmp.write_bytes(records.tobytes())
            os.replace(tmp, path)

    def abort(self) -> None:
        self.writer.close()
        self.full.close()
        for tmp in self.tmp.values():
            tmp.unlink(missing_ok=True)


def check_sources(cfg: DataConfig) -> None:
    for spec in cfg.sources:
        describe_source(spec)
