"""`pycpilot data --executor local|slurm|ray`: the data stage's five stages on datatrove (see __init__.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pycpilot.data.config import DataConfig
from pycpilot.data.sources import describe_source, source_path
from pycpilot.data.trove.layout import DATA
from pycpilot.errors import PycpilotError
from pycpilot.executors import ENGINE_FIELDS, Stage, claim, clear_work, run_stages, work_dir_of
from pycpilot.manifest import check_output_dir

# Settings that change no stage's files: a work folder can be resumed with other values of these.
_NOT_WORK = ENGINE_FIELDS - {"tasks"} | {"out", "overwrite", "quiet", "num_proc", "parquet"}


def stages(cfg: DataConfig, work: Path, engine: dict[str, Any]) -> list[Stage]:
    from pycpilot.data.trove.layout import Bands
    from pycpilot.data.trove.steps import AssembleStep, BucketsStep, CleanStep, ClusterStep, KeepStep

    bands, root = Bands.of(cfg), str(work)
    return [
        Stage("clean", [CleanStep(cfg, root)], cfg.tasks),
        Stage("buckets", [BucketsStep(root, bands.trove_config())], bands.buckets),
        Stage("cluster", [ClusterStep(cfg, root, cfg.tasks)], 1),
        Stage("keep", [KeepStep(cfg, root)], cfg.tasks),
        Stage("assemble", [AssembleStep(cfg, root, cfg.tasks, engine)], 1),
    ]


def build_with_datatrove(cfg: DataConfig) -> Any:
    from pycpilot.data.records import DataResult

    for spec in cfg.sources:
        describe_source(spec)  # a missing or unusable source fails here, before any job starts
        if spec in ("stdlib", "site-packages") and (cfg.executor == "slurm" or cfg.ray_address):
            raise PycpilotError(
                f"source {spec} is this machine's own: on a cluster every node would list its own; copy the files to "
                "a shared folder and give that (or use --executor local)"
            )
    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite, "data", tuple(p for s in cfg.sources if (p := source_path(s)) is not None))
    work = work_dir_of(cfg, out)
    claim(work, cfg, _NOT_WORK, DATA)
    engine = {"name": "datatrove", "executor": cfg.executor, "tasks": cfg.tasks, "workers": cfg.workers,
              "work_dir": str(work)}  # fmt: skip
    if not run_stages(cfg, "data", work, stages(cfg, work, engine), cfg.quiet):
        return None  # submitted to Slurm: the assemble job writes --out and clears the work folder
    if cfg.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)  # the default folder beside --out: nothing worth keeping
    else:
        clear_work(work, DATA)  # the logs stay
    return DataResult(out=out, manifest=json.loads((out / "manifest.json").read_text()))
