"""Stage 5, assemble: the kept shards as the DatasetDict and manifest the pool writes at --out.

Guarantee: rows in corpus order, the same split and the same content hash as the one-machine pool, so
`pycpilot tokenizer` and `pycpilot pack` read it unchanged (and a run's later stages see the same corpus).
Memory: a few numbers per kept file (order, digest, copies, repository id); the text stays memory-mapped.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pycpilot.data.config import DataConfig
from pycpilot.data.parquet import write_parquet
from pycpilot.data.records import COLUMNS, SourceStats, Tally
from pycpilot.data.report import build_manifest, filter_table, human_bytes
from pycpilot.data.sources import describe_source, source_path
from pycpilot.data.split import split_repo_ids
from pycpilot.data.trove.layout import Work
from pycpilot.errors import PycpilotError
from pycpilot.manifest import MANIFEST, atomic_output_dir, write_json_atomic


class _Rows:
    """Index -> value over numpy arrays, for the report's per-row loops (row digests, repositories)."""

    def __init__(self, get: Any, n: int) -> None:
        self._get, self._n = get, n

    def __getitem__(self, i: int) -> Any:
        return self._get(i)

    def __len__(self) -> int:
        return self._n


class Totals:
    """The tallies of every task, shaped as the pool's `Builder` so the same report and manifest apply."""

    def __init__(self, cfg: DataConfig, work: Work, tasks: int) -> None:
        self.sources = [SourceStats(spec, describe_source(spec)) for spec in cfg.sources]
        self.removed: dict[str, Tally] = defaultdict(Tally)
        self.contaminated: Counter[str] = Counter()
        self.copies: Any = []  # the kept rows' values, set once they are ordered
        for rank in range(tasks):
            clean = json.loads(work.tally("clean", rank).read_text())["sources"]
            keep = json.loads(work.tally("keep", rank).read_text())
            for s, stats in enumerate(self.sources):
                c, k = clean[s], keep["sources"][s]
                stats.seen.files += c["seen"][0]
                stats.seen.bytes += c["seen"][1]
                stats.kept.files += k["kept"][0]
                stats.kept.bytes += k["kept"][1]
                stats.skipped_folders += c["skipped_folders"]
                for reason, (files, size) in [*c["removed"].items(), *k["removed"].items()]:
                    for tally in (stats.removed[reason], self.removed[reason]):
                        tally.files += files
                        tally.bytes += size
            self.contaminated.update(keep["contaminated"])
        for stats, digest in zip(self.sources, _input_digests(work, tasks, len(self.sources)), strict=True):
            stats.digest = digest


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        while head := f.read(12):
            order, n = struct.unpack("<QI", head)
            yield order, f.read(n)


def _input_digests(work: Work, tasks: int, sources: int) -> list[Any]:
    """Each source's input hash as the pool computes it: its files' lines in corpus order (the tasks' records
    merged by their order keys, a few at a time)."""
    digests = [hashlib.sha256() for _ in range(sources)]
    for order, line in heapq.merge(*(_records(work.inputs(rank)) for rank in range(tasks))):
        digests[order >> 40].update(line)
    return digests


def assemble(cfg: DataConfig, work: Work, tasks: int, timings: dict[str, float], engine: dict[str, Any]) -> dict:
    import datasets

    start = time.perf_counter()
    datasets.disable_progress_bars()
    log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))
    totals = Totals(cfg, work, tasks)
    seen = sum(s.seen.files for s in totals.sources)
    for stats in totals.sources:
        if stats.seen.files == 0:
            what = "record" if stats.kind in ("saved", "parquet", "json", "hub") else ".py file"
            raise PycpilotError(f"source {stats.spec} yields no {what}")
    metas = [np.load(work.kept_meta(rank)) for rank in range(tasks)]
    meta = np.concatenate(metas) if metas else np.zeros(0)
    if len(meta) == 0:
        log(filter_table(totals, seen))
        raise PycpilotError(f"no file left after cleaning: all {seen} files were removed (see the table above)")
    order = np.argsort(meta["order"], kind="stable")  # corpus position -> row of the concatenated shards
    files = [str(work.kept(rank)) for rank in range(tasks)]
    table = pa.concat_tables(pa.ipc.open_stream(pa.memory_map(f)).read_all() for f in files)
    names = pc.unique(table["repo_name"])
    ids = pc.index_in(table["repo_name"], value_set=names).to_numpy()[order]
    name_list = names.to_pylist()
    split = split_repo_ids(ids, name_list, cfg.valid_fraction, cfg.seed)
    if split.mode == "file":
        log(f"note: {split.note}")
    digests, copies = meta["digest"][order], meta["copies"][order]
    totals.copies = _Rows(lambda i: int(copies[i]), len(order))
    totals.row_digests = _Rows(lambda i: digests[i].tobytes(), len(order))
    totals.repos = _Rows(lambda i: name_list[ids[i]], len(order))

    out = Path(cfg.out)
    inputs = tuple(p for spec in cfg.sources if (p := source_path(spec)) is not None)
    with atomic_output_dir(out, cfg.overwrite, "data", inputs) as tmp:
        records = datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files]).select_columns(COLUMNS)
        dsd = datasets.DatasetDict(
            {
                "train": records.select(order[np.asarray(split.train, dtype=np.int64)]),
                "valid": records.select(order[np.asarray(split.valid, dtype=np.int64)]),
            }
        )
        dsd.save_to_disk(str(tmp), num_shards={name: 1 for name, ds in dsd.items() if len(ds) == 0})
        if cfg.parquet:
            write_parquet(dsd, tmp / "parquet")
        del dsd, records
        timings = dict(timings, assemble_s=time.perf_counter() - start)
        timings["total_s"] = sum(timings.values())
        manifest = build_manifest(cfg, totals, split, seen, timings, engine)
        write_json_atomic(tmp / MANIFEST, manifest)
    log(filter_table(totals, seen))
    log(
        f"data: {manifest['splits']['train']['files']} train + {manifest['splits']['valid']['files']} valid files, "
        f"{human_bytes(manifest['kept']['bytes'])}, on datatrove ({engine['executor']}, {tasks} tasks) -> {out}"
    )
    return manifest
