"""Which files of the sources a task of the datatrove engine reads, and where each sits in the corpus.

Guarantee: the tasks' shards partition every source (each file read by exactly one task) and each file comes
with its position in its source as the pool meets it, so the later stages can restore corpus order. Files of a
folder are dealt round-robin (every task lists the folder, reads only its own files); a saved dataset is dealt
in slices of rows, a Parquet file in row groups, so a task decodes only its own records; JSON Lines and `hf:`
sources are streamed by every task, which keeps its own records (no random access there).
"""

from __future__ import annotations

from collections.abc import Iterator

from pycpilot.data.config import DataConfig
from pycpilot.data.items import Item, Skip
from pycpilot.data.sources import _BATCH, _open_dataset, _record_item, _short, describe_source, iter_source
from pycpilot.errors import PycpilotError

Entry = tuple[int, int, Item | Skip]  # (source index, position in the source, what was found)


def shard_entries(cfg: DataConfig, rank: int, world_size: int) -> Iterator[Entry]:
    """This task's files, in corpus order. A skipped vendored folder is not a file: task 0 alone passes those
    on (position -1), so they are counted once."""
    for s, spec in enumerate(cfg.sources):
        kind = describe_source(spec)
        if kind == "saved":
            yield from ((s, j, found) for j, found in _saved(spec, rank, world_size))
        elif kind == "parquet":
            yield from ((s, j, found) for j, found in _parquet(spec, rank, world_size))
        else:
            yield from ((s, j, found) for j, found in _dealt(spec, cfg.include_vendored, rank, world_size))


def _dealt(spec: str, include_vendored: bool, rank: int, world_size: int) -> Iterator[tuple[int, Item | Skip]]:
    j = 0
    for found in iter_source(spec, include_vendored):
        if isinstance(found, Skip) and found.reason == "vendored folder":
            if rank == 0:
                yield -1, found
            continue
        if j % world_size == rank:
            yield j, found
        j += 1


def _check_columns(spec: str, split: str, columns: list[str] | None) -> None:
    if columns == []:
        raise PycpilotError(f"source {spec} (split {split}) holds no records")
    if columns is not None and "content" not in columns:
        raise PycpilotError(f"source {spec} (split {split}) has no 'content' column; it has: {', '.join(columns)}")


def _saved(spec: str, rank: int, world_size: int) -> Iterator[tuple[int, Item | Skip]]:
    """A save_to_disk folder: slice k of _BATCH rows (over all its splits, in order) goes to task k mod T."""
    offset = 0
    for split, ds in _open_dataset(spec, "saved"):
        _check_columns(spec, split, ds.column_names)
        for start in range(0, len(ds), _BATCH):
            if ((offset + start) // _BATCH) % world_size != rank:
                continue
            try:
                batch = ds[start : start + _BATCH]
            except Exception as exc:  # a corrupt arrow file
                raise PycpilotError(f"cannot read dataset source {spec} at record {start}: {_short(exc)}") from None
            for i in range(len(batch["content"])):
                yield offset + start + i, _record_item(spec, split, start + i, {k: v[i] for k, v in batch.items()})
        offset += len(ds)
        offset += -offset % _BATCH  # the next split starts on a slice of its own


def _parquet(spec: str, rank: int, world_size: int) -> Iterator[tuple[int, Item | Skip]]:
    """A Parquet file: row group k goes to task k mod T; only that task decodes it."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(spec)
        _check_columns(spec, "train", pf.schema_arrow.names)
        index = 0
        for k in range(pf.num_row_groups):
            rows = pf.metadata.row_group(k).num_rows
            if k % world_size == rank:
                batch = pf.read_row_group(k).to_pydict()
                for i in range(rows):
                    yield index + i, _record_item(spec, "train", index + i, {c: v[i] for c, v in batch.items()})
            index += rows
    except PycpilotError:
        raise
    except Exception as exc:  # not Parquet, a truncated file
        raise PycpilotError(f"cannot read dataset source {spec}: {_short(exc)}") from None
