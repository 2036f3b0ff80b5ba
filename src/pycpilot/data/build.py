"""`pycpilot data`: read the sources, clean, deduplicate, split and save a DatasetDict (seed 7.4.1)."""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from pycpilot.data.config import DataConfig
from pycpilot.data.dedup import NearDedup
from pycpilot.data.parquet import write_parquet
from pycpilot.data.records import (
    BEFORE_DEDUP,
    COLUMNS,
    SCHEMA,
    DataResult,
    SourceStats,
    Tally,
    record_values,
    row_digest,
)
from pycpilot.data.report import build_manifest, filter_table, human_bytes
from pycpilot.data.sources import Item, Skip, describe_source, iter_source, source_path
from pycpilot.data.split import split_rows
from pycpilot.data.worker import Checked, Worker, check_item, init_worker
from pycpilot.errors import PycpilotError
from pycpilot.manifest import MANIFEST, atomic_output_dir, check_output_dir, write_json_atomic


def _checked(cfg: DataConfig, items: Iterator[Item]) -> Iterator[Checked]:
    """Run the per-file checks, in order, on `num_proc` processes (in this one when num_proc is 1)."""
    worker = Worker(cfg)  # built here first: a bad setting fails once, not in every respawned worker
    if cfg.num_proc == 1:
        yield from (worker.check(item) for item in items)
        return
    # spawn, not fork: forking a process that already runs library threads can deadlock.
    # Workers start with Ctrl-C ignored (inherited through exec), so only this process reacts to it.
    main_thread = threading.current_thread() is threading.main_thread()  # signals can only be set there
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        pool = multiprocessing.get_context("spawn").Pool(cfg.num_proc, initializer=init_worker, initargs=(cfg,))
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    try:
        yield from pool.imap(check_item, items, chunksize=16)
        pool.close()
        pool.join()
    except BaseException:  # Ctrl-C, a full disk, the consumer giving up: stop the workers, never hang
        _stop(pool)
        raise


def _stop(pool: Any) -> None:
    """Terminate the pool; if that hangs (a worker killed mid-message), kill the workers outright."""
    stopper = threading.Thread(target=pool.terminate, daemon=True)
    stopper.start()
    stopper.join(5)
    if stopper.is_alive():
        for child in multiprocessing.active_children():
            child.kill()


_FLUSH_ROWS = 512


class Builder:
    def __init__(self, cfg: DataConfig, work: Path) -> None:
        self.cfg = cfg
        self.records_path = work / "records.arrow"
        self.sources = [SourceStats(spec, describe_source(spec)) for spec in cfg.sources]
        self.removed: dict[str, Tally] = defaultdict(Tally)
        self.first_seen: dict[str, int] = {}  # content hash -> kept row
        self.copies: list[int] = []
        self.repos: list[str] = []
        self.row_digests: list[bytes] = []
        self.near = NearDedup(cfg) if cfg.near_dedup else None
        self.contaminated: Counter[str] = Counter()
        self._rows: dict[str, list] = {c: [] for c in COLUMNS}
        self._writer = pa.ipc.new_stream(str(self.records_path), SCHEMA)

    def plan(self) -> tuple[list, int | None]:
        """Per source, its items (listed now for folders, so the bar has a total) and the total if known."""
        plans: list = []
        total: int | None = 0
        for stats in self.sources:
            found = iter_source(stats.spec, self.cfg.include_vendored)
            if stats.kind in ("stdlib", "site-packages", "folder", "file"):
                found = list(found)
                total = None if total is None else total + sum(isinstance(x, Item) for x in found)
            else:
                total = None
            plans.append(found)
        return plans, total

    def items(self, plans: list) -> Iterator[Item]:
        """All sources' items in order; skips found while walking are counted here and not passed on."""
        for index, (stats, found_items) in enumerate(zip(self.sources, plans, strict=True)):
            for found in found_items:
                if isinstance(found, Skip):
                    if found.reason == "vendored folder":
                        stats.skipped_folders += 1
                        continue
                    self._drop(stats, found.reason, 0)
                    stats.seen.add(0)
                    continue
                found.source = str(index)  # workers hand it back: map results to their source
                yield found

    def _drop(self, stats: SourceStats, reason: str, size: int) -> None:
        self.removed[reason].add(size)
        stats.removed[reason].add(size)

    def take(self, c: Checked) -> None:
        stats = self.sources[int(c.item.source)]
        stats.seen.add(c.size)
        stats.digest.update(f"{c.item.repo_name}/{c.item.path}:{c.raw_digest}\n".encode())
        if c.reason in BEFORE_DEDUP:
            self._drop(stats, c.reason, c.size)
            return
        if self.cfg.exact_dedup and c.hash in self.first_seen:
            row = self.first_seen[c.hash]
            if row >= 0:
                self.copies[row] += c.item.copies
            self._drop(stats, "exact duplicate", c.size)
            return
        if c.reason is not None:
            self.first_seen[c.hash] = -1  # its copies will be dropped as duplicates of a dropped file
            if c.reason == "HumanEval contamination":
                self.contaminated[c.detail] += 1
            self._drop(stats, c.reason, c.size)
            return
        row = len(self.copies)
        if self.near is not None and c.signature is not None and self.near.check_and_add(row, c.signature) is not None:
            self.first_seen[c.hash] = -1
            self._drop(stats, "near duplicate", c.size)
            return
        self.first_seen[c.hash] = row
        self._append(stats, c)

    def _append(self, stats: SourceStats, c: Checked) -> None:
        stats.kept.add(c.size)
        self.copies.append(c.item.copies)
        self.repos.append(c.item.repo_name)
        self.row_digests.append(row_digest(c))
        for column, value in zip(COLUMNS, record_values(c, stats.spec), strict=True):
            self._rows[column].append(value)
        if len(self._rows["content"]) >= _FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows["content"]:
            self._writer.write_batch(pa.record_batch(self._rows, schema=SCHEMA))
            self._rows = {c: [] for c in COLUMNS}

    def close(self) -> None:
        self._flush()
        self._writer.close()


def build_dataset(cfg: DataConfig) -> DataResult:
    """Build the cleaned DatasetDict at `cfg.out`; nothing is left there if anything fails."""
    import datasets

    cfg.validate()
    if cfg.executor is not None:
        from pycpilot.data.trove.engine import build_with_datatrove

        return build_with_datatrove(cfg)
    for spec in cfg.sources:
        describe_source(spec)  # a missing or unusable source fails here, before any work
    out = Path(cfg.out)
    inputs = tuple(source_path(spec) for spec in cfg.sources if source_path(spec) is not None)
    check_output_dir(out, cfg.overwrite, "data", inputs)
    datasets.disable_progress_bars()
    start = time.perf_counter()
    log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))

    with atomic_output_dir(out, cfg.overwrite, "data", inputs) as tmp:
        work = tmp / "_work"
        work.mkdir()
        builder = Builder(cfg, work)
        plans, total = builder.plan()
        bar = tqdm(
            desc="data: clean", unit=" files", total=total, disable=cfg.quiet, file=sys.stderr, dynamic_ncols=True
        )
        read_bytes = 0
        try:
            results = _checked(cfg, builder.items(plans))
            for checked in results:
                builder.take(checked)
                read_bytes += checked.size
                bar.update(1)
                if bar.n % 64 == 0:
                    elapsed = max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix_str(f"{read_bytes / elapsed / 1e6:.1f} MB/s, kept {len(builder.copies)}")
        finally:
            results.close()  # stops the worker pool now, whatever happened above
            bar.close()
            builder.close()
        t_clean = time.perf_counter() - start

        seen = sum(s.seen.files for s in builder.sources)
        for stats in builder.sources:
            if stats.seen.files == 0:
                what = "record" if stats.kind in ("saved", "parquet", "json", "hub") else ".py file"
                raise PycpilotError(f"source {stats.spec} yields no {what}")
        if not builder.copies:
            log(filter_table(builder, seen))
            where = "see the table above" if not cfg.quiet else "run without -q to see which filters"
            raise PycpilotError(f"no file left after cleaning: all {seen} files were removed ({where})")

        split = split_rows(builder.repos, cfg.valid_fraction, cfg.seed)
        if split.mode == "file":
            log(f"note: {split.note}")
        records = datasets.Dataset.from_file(str(builder.records_path))
        records = records.remove_columns("copies").add_column("copies", [str(c) for c in builder.copies])
        records = records.select_columns(COLUMNS)
        dsd = datasets.DatasetDict({"train": records.select(split.train), "valid": records.select(split.valid)})
        # datasets writes no shard for an empty split and then cannot load it back: ask for one.
        dsd.save_to_disk(str(tmp), num_shards={name: 1 for name, ds in dsd.items() if len(ds) == 0})
        if cfg.parquet:
            write_parquet(dsd, tmp / "parquet")
        del dsd, records
        shutil.rmtree(work)
        t_total = time.perf_counter() - start

        engine = {"name": "pool", "num_proc": cfg.num_proc}
        manifest = build_manifest(cfg, builder, split, seen, {"clean_s": t_clean, "total_s": t_total}, engine)
        write_json_atomic(tmp / MANIFEST, manifest)

    log(filter_table(builder, seen))
    final = datasets.load_from_disk(str(out))
    log(final)
    sample = final["train"][0]
    log(
        "sample record:",
        "  ".join(f"{k.upper()}: {sample[k]}" for k in ("repo_name", "path", "copies", "size", "license")),
    )
    log(
        f"data: {manifest['splits']['train']['files']} train + {manifest['splits']['valid']['files']} valid files, "
        f"{human_bytes(manifest['kept']['bytes'])}, in {t_total:.1f} s -> {out}"
    )
    return DataResult(out=out, manifest=manifest)
