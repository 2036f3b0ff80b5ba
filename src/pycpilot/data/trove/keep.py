"""Stage 4, keep: one task's clean shard minus what the cluster removed, with the files' final copy counts.

Guarantee: a row is kept exactly when it passed every check and the cluster did not remove it; every other
row is counted once, under the first reason the pool would give it (a duplicate before its own filter).
"""

from __future__ import annotations

import json
import os
from array import array
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from pycpilot.data.records import COLUMNS, SCHEMA
from pycpilot.data.trove.layout import EXACT, KEPT, Work, save_npy, temp_of

_REASON = {EXACT: "exact duplicate", 2: "near duplicate"}


def keep_shard(work: Work, rank: int, sources: int) -> dict[str, Any]:
    decided = np.load(work.decisions(rank))
    removed_as = dict(zip(decided["rows"].tolist(), decided["kinds"].tolist(), strict=True))
    extra = dict(zip(decided["copy_rows"].tolist(), decided["copy_add"].tolist(), strict=True))
    meta = np.load(work.meta(rank), mmap_mode="r")
    per_source: list[dict[str, Any]] = [{"kept": [0, 0], "removed": {}} for _ in range(sources)]
    contaminated: Counter[str] = Counter()
    kept_order, kept_digests, kept_copies = array("Q"), bytearray(), array("I")

    def count(s: int, reason: str, size: int) -> None:
        files_bytes = per_source[s]["removed"].setdefault(reason, [0, 0])
        files_bytes[0] += 1
        files_bytes[1] += size

    tmp = temp_of(work.kept(rank))
    row = 0
    try:
        with pa.ipc.open_stream(str(work.clean(rank))) as reader, pa.ipc.new_stream(str(tmp), SCHEMA) as writer:
            for batch in reader:
                cols = batch.select(["size", "_source", "_reason", "_detail", "_digest"]).to_pydict()
                keep_at: list[int] = []
                copies: list[str] = []
                for i in range(batch.num_rows):
                    s, size, reason = cols["_source"][i], int(cols["size"][i]), cols["_reason"][i]
                    if row in removed_as:
                        count(s, _REASON[removed_as[row]], size)
                    elif reason is not None:
                        count(s, reason, size)
                        if reason == "HumanEval contamination":
                            contaminated[cols["_detail"][i]] += 1
                    else:
                        n = int(meta[row]["copies"]) + extra.get(row, 0)
                        keep_at.append(i)
                        copies.append(str(n))
                        kept_order.append(int(meta[row]["order"]))
                        kept_digests += cols["_digest"][i]
                        kept_copies.append(n)
                        per_source[s]["kept"][0] += 1
                        per_source[s]["kept"][1] += size
                    row += 1
                if keep_at:
                    kept = batch.take(pa.array(keep_at)).select(COLUMNS)
                    kept = kept.set_column(COLUMNS.index("copies"), "copies", pa.array(copies, pa.string()))
                    writer.write_batch(pa.RecordBatch.from_arrays(kept.columns, schema=SCHEMA))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    kept_meta = np.zeros(len(kept_order), dtype=KEPT)
    if len(kept_order):
        kept_meta["order"] = np.frombuffer(kept_order, dtype="<u8")
        kept_meta["digest"] = np.frombuffer(bytes(kept_digests), dtype=np.uint8).reshape(-1, 16)
        kept_meta["copies"] = np.frombuffer(kept_copies, dtype="<u4")
    save_npy(work.kept_meta(rank), kept_meta)
    os.replace(tmp, work.kept(rank))
    tally = {"sources": per_source, "contaminated": dict(contaminated)}
    out = temp_of(work.tally("keep", rank))
    out.write_text(json.dumps(tally))
    os.replace(out, work.tally("keep", rank))
    return tally
