"""Stage 1, clean: one task's shard of the sources, checked exactly as the one-machine pool checks them.

Guarantee: a file's checks, MinHash and content hash are the pool's (the same `Worker`), so the later
stages can reach the pool's decisions. Which files a task reads: `shards.py`. Memory: the rows' text is
flushed every 512 files; what stays is ~30 bytes per file plus its exact-dedup band (the full signatures go
to disk as they come and are read back, memory-mapped, to write the band files).
"""

from __future__ import annotations

import json
import os
import struct
from array import array
from typing import Any

import numpy as np
import pyarrow as pa

from pycpilot.data.config import DataConfig
from pycpilot.data.records import BEFORE_DEDUP, COLUMNS, SCHEMA, record_values, row_digest
from pycpilot.data.sources import Item, Skip
from pycpilot.data.trove.layout import META, Bands, Work, order_key, save_npy, temp_of
from pycpilot.data.worker import Checked, Worker

# Columns of a clean shard: the pool's record, then what the keep stage needs to count and hash it.
CLEAN_SCHEMA = pa.schema(
    [*SCHEMA, ("_source", pa.int32()), ("_reason", pa.string()), ("_detail", pa.string()), ("_digest", pa.binary(16))]
)
_FLUSH = 512


class _Tally:
    """Per source: files and bytes seen, removed before dedup by reason, skipped folders."""

    def __init__(self, sources: list[str]) -> None:
        self.per_source: list[dict[str, Any]] = [{"seen": [0, 0], "removed": {}, "skipped_folders": 0} for _ in sources]

    def seen(self, s: int, size: int) -> None:
        self.per_source[s]["seen"][0] += 1
        self.per_source[s]["seen"][1] += size

    def removed(self, s: int, reason: str, size: int) -> None:
        files_bytes = self.per_source[s]["removed"].setdefault(reason, [0, 0])
        files_bytes[0] += 1
        files_bytes[1] += size


class CleanShard:
    """Writes one task's clean shard, its rows' meta, the LSH band files and the full signatures."""

    def __init__(self, cfg: DataConfig, work: Work, rank: int) -> None:
        self.cfg, self.work, self.rank = cfg, work, rank
        self.bands = Bands.of(cfg)
        self.worker = Worker(cfg)
        self.tally = _Tally(cfg.sources)
        # per row of the clean shard (files that reached dedup), in the order met
        self.order, self.sig_row, self.passed, self.copies = array("Q"), array("q"), array("B"), array("I")
        self.signed_docs = array("I")  # the row of each full signature
        self.exact_docs, self.exact_values = array("I"), bytearray()
        self.rows: dict[str, list] = {f.name: [] for f in CLEAN_SCHEMA}
        work.clear_temps(rank)  # what a killed earlier attempt of this task left
        finals = {"clean": work.clean(rank), "full": work.full(rank), "inputs": work.inputs(rank)}
        self.tmp = {name: temp_of(path) for name, path in finals.items()}
        self.writer = pa.ipc.new_stream(str(self.tmp["clean"]), CLEAN_SCHEMA)
        self.full = open(self.tmp["full"], "wb")  # noqa: SIM115 (closed in finish or abort)
        self.inputs = open(self.tmp["inputs"], "wb")  # noqa: SIM115 (closed in finish or abort)

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
        # The pool hashes each source's files as it meets them; the assemble stage merges these by order.
        line = f"{found.repo_name}/{found.path}:{c.raw_digest}\n".encode("utf-8", "surrogatepass")
        self.inputs.write(struct.pack("<QI", order_key(s, j), len(line)) + line)
        if c.reason in BEFORE_DEDUP:
            self.tally.removed(s, c.reason, c.size)
            return
        self._row(s, j, c)

    def _row(self, s: int, j: int, c: Checked) -> None:
        doc = len(self.order)
        passed = c.reason is None
        sig_row = -1
        if passed and c.signature is not None:
            self.full.write(c.signature.astype("<u4").tobytes())
            sig_row = len(self.signed_docs)
            self.signed_docs.append(doc)
        if self.cfg.exact_dedup:  # every file past the read checks, as in the pool (a failed file's copies
            self.exact_docs.append(doc)  # are duplicates of a dropped file)
            self.exact_values += self.bands.exact_band(c.hash).tobytes()
        self.order.append(order_key(s, j))
        self.sig_row.append(sig_row)
        self.passed.append(int(passed))
        self.copies.append(c.item.copies)
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
        self.inputs.close()
        self._write_bands()
        meta = np.zeros(len(self.order), dtype=META)
        for name, values in (("order", self.order), ("sig_row", self.sig_row), ("passed", self.passed),
                             ("copies", self.copies)):  # fmt: skip
            meta[name] = np.frombuffer(values, dtype=values.typecode) if len(values) else 0
        save_npy(self.work.meta(self.rank), meta)
        os.replace(self.tmp["full"], self.work.full(self.rank))
        os.replace(self.tmp["inputs"], self.work.inputs(self.rank))
        os.replace(self.tmp["clean"], self.work.clean(self.rank))
        tally = temp_of(self.work.tally("clean", self.rank))
        tally.write_text(json.dumps({"sources": self.tally.per_source}))
        os.replace(tally, self.work.tally("clean", self.rank))

    def _write_bands(self) -> None:
        """datatrove's signature files: per band, records of r uint32 values and the doc id, sorted by all
        fields. Written in WORK/tmp first: datatrove lists every file of a bucket folder, temp files too."""
        b, r, perms = self.bands.b, self.bands.r, self.bands.num_perm
        dtype = np.dtype([(f"field{i + 1}", "<u4") for i in range(r)] + [(f"field{r + 1}", "<u4")])
        signed = np.memmap(self.tmp["full"], dtype="<u4", mode="r") if self.signed_docs else np.zeros(0, "<u4")
        signed = signed.reshape(-1, perms)
        exact = np.frombuffer(bytes(self.exact_values), dtype="<u4").reshape(-1, r)
        for band in range(self.bands.buckets):
            if band < b:
                values, docs = signed[:, band * r : (band + 1) * r], self.signed_docs
            elif self.cfg.exact_dedup:
                values, docs = exact, self.exact_docs
            else:
                values, docs = np.zeros((0, r), "<u4"), array("I")
            records = np.zeros(len(docs), dtype=dtype)
            for i in range(r):
                records[f"field{i + 1}"] = values[:, i]
            records[f"field{r + 1}"] = np.frombuffer(docs, dtype="<u4") if len(docs) else 0
            records.sort(order=dtype.names)
            tmp, final = self.work.band_temp(band, self.rank), self.work.band_file(band, self.rank)
            tmp.write_bytes(records.tobytes())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        del signed

    def abort(self) -> None:
        self.writer.close()
        self.full.close()
        self.inputs.close()
        for tmp in self.tmp.values():
            tmp.unlink(missing_ok=True)
        self.work.clear_temps(self.rank)
