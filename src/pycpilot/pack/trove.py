"""`pycpilot pack --executor local|slurm|ray`: files encoded in parallel tasks, then one merge into blocks.

Guarantee: the same `{split}.bin` as one process, id for id. Task t encodes the contiguous files
[t*n/T, (t+1)*n/T) of each split into a stream of ids (a file's FIM layout depends only on its index, see
`build.encode_files`); the merge reads the streams in task order through the same block writer, so the
blocks, the zero-waste concatenation and the one dropped tail per split are those of one process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pycpilot.data.load import SPLITS, load_data_dir
from pycpilot.executors import ENGINE_FIELDS, Stage, claim, clear_work, run_stages, work_dir_of
from pycpilot.manifest import MANIFEST, atomic_output_dir, check_output_dir, write_json_atomic
from pycpilot.pack.config import PackConfig
from pycpilot.pack.encode import BlockWriter, SplitStats, encode_files, prepare
from pycpilot.pack.summary import PackResult, finish, report
from pycpilot.pretrained import tokenizer_folder
from pycpilot.tasks import TaskStep

_DATA = ("tokens",)
_NOT_WORK = ENGINE_FIELDS - {"tasks"} | {"out", "overwrite", "quiet", "threads", "batch_files"}
_CHUNK = 1 << 24  # ids read at a time by the merge


def _stream(work: Path, split: str, rank: int) -> Path:
    return work / "tokens" / split / f"{rank:05d}.bin"


class EncodeStep(TaskStep):
    name = "encode: files to ids"

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        cfg = self.cfg
        if cfg.executor == "local":  # tasks share this machine's cores
            workers = min(cfg.workers or os.cpu_count() or 1, world_size)
            cfg = dataclasses.replace(cfg, threads=max(1, (os.cpu_count() or 1) // workers))
        else:
            cfg = dataclasses.replace(cfg, threads=1)  # one CPU per task on Slurm and Ray
        prep = prepare(cfg)
        dsd = load_data_dir(cfg.data)
        for split in SPLITS:
            n = len(dsd[split])
            rows = range(rank * n // world_size, (rank + 1) * n // world_size)
            path = _stream(Path(self.work), split, rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with self.track_time(), open(tmp, "wb") as f:
                stats = encode_files(
                    dsd[split], rows, split, cfg, prep, lambda ids: np.asarray(ids, prep.dtype).tofile(f)
                )
            path.with_suffix(".json").write_text(json.dumps(asdict(stats)))
            os.replace(tmp, path)
            self.stat_update("files", value=stats.files)


class MergeStep(TaskStep):
    name = "merge: streams to blocks"

    def __init__(self, cfg: PackConfig, work: str, engine: dict[str, Any]) -> None:
        super().__init__(cfg, work)
        self.engine = engine

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        cfg, work = self.cfg, Path(self.work)
        start = time.perf_counter()
        prep = prepare(dataclasses.replace(cfg, threads=1))
        stats: dict[str, SplitStats] = {}
        inputs = (Path(cfg.data), Path(cfg.tokenizer))
        with atomic_output_dir(Path(cfg.out), cfg.overwrite, "pack", inputs) as tmp:
            for split in SPLITS:
                total = SplitStats()
                with open(tmp / f"{split}.bin", "wb") as f:
                    writer = BlockWriter(f, prep.ctx, prep.dtype)
                    for task in range(cfg.tasks):
                        part = json.loads(_stream(work, split, task).with_suffix(".json").read_text())
                        for key in (
                            "files",
                            "bytes",
                            "text_tokens",
                            "tokens",
                            "fim_files",
                            "fim_spm_files",
                            "encode_s",
                        ):
                            setattr(total, key, getattr(total, key) + part[key])
                        ids = np.memmap(_stream(work, split, task), dtype=prep.dtype, mode="r")
                        for at in range(0, len(ids), _CHUNK):
                            writer.add(ids[at : at + _CHUNK])
                        del ids
                total.blocks, total.tokens_dropped = writer.blocks, len(writer.carry)
                stats[split] = total
            timings = json.loads((work / "timings.json").read_text()) if (work / "timings.json").is_file() else {}
            elapsed = sum(timings.values()) + time.perf_counter() - start
            manifest = finish(cfg, prep, stats, elapsed, tmp, self.engine)
            manifest_timings = dict(manifest["timings"], **{k: round(v, 3) for k, v in timings.items()})
            manifest["timings"] = manifest_timings
            write_json_atomic(tmp / MANIFEST, manifest)
        if not cfg.quiet:
            mb = sum(s.bytes for s in stats.values()) / 1e6
            report(cfg, prep, stats, mb / max(elapsed, 1e-9), elapsed)
        if cfg.executor == "slurm":  # no driver waits for the jobs: the last one clears the work folder
            clear_work(work, _DATA)


def pack_with_datatrove(cfg: PackConfig) -> PackResult | None:
    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite, "pack", (Path(cfg.data), Path(cfg.tokenizer)))
    prepare(dataclasses.replace(cfg, threads=1))  # a bad tokenizer or context length fails here, before any task
    load_data_dir(cfg.data)
    work = work_dir_of(cfg, out)
    from pycpilot.data.load import data_hash
    from pycpilot.tokenizer.load import tokenizer_hash

    inputs = {"data_sha256": data_hash(cfg.data), "tokenizer_sha256": tokenizer_hash(tokenizer_folder(cfg.tokenizer))}
    claim(work, cfg, _NOT_WORK, _DATA, inputs)  # a rebuilt data folder or tokenizer is not resumed
    engine = {"name": "datatrove", "executor": cfg.executor, "tasks": cfg.tasks, "workers": cfg.workers,
              "work_dir": str(work)}  # fmt: skip
    stages = [
        Stage("encode", [EncodeStep(cfg, str(work))], cfg.tasks),
        Stage("merge", [MergeStep(cfg, str(work), engine)], 1),
    ]
    if not run_stages(cfg, "pack", work, stages, cfg.quiet):
        return None
    if cfg.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        clear_work(work, _DATA)
    return PackResult(out=out, manifest=json.loads((out / "manifest.json").read_text()))
