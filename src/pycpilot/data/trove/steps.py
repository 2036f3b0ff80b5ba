"""The engine's stages as datatrove pipeline steps (what its executors pickle and run on each task)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

from pycpilot.data.config import DataConfig
from pycpilot.data.trove.layout import DATA, Work
from pycpilot.executors import clear_work
from pycpilot.tasks import TaskStep


class BucketsStep(MinhashDedupBuckets):
    """datatrove's own bucket stage, with the engine's log settings."""

    stage = "buckets"

    def __init__(self, work: str, config: Any) -> None:
        w = Work(work)
        super().__init__(str(w.sigs), str(w.dups), config=config)
        self.work = work


class CleanStep(TaskStep):
    """Read this task's shard of the sources, check every file, write survivors, bands and signatures."""

    stage = "clean"
    name = "clean: read, check, MinHash"

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        from pycpilot.data.trove.clean import CleanShard
        from pycpilot.data.trove.shards import shard_entries

        shard = CleanShard(self.cfg, Work(self.work), rank)
        try:
            with self.track_time():
                for s, j, found in shard_entries(self.cfg, rank, world_size):
                    shard.take(s, j, found)
                    self.stat_update("files")
                shard.finish()
        except BaseException:
            shard.abort()
            raise


class ClusterStep(TaskStep):
    """Decide the duplicates, keep-first in corpus order (one task)."""

    stage = "cluster"
    name = "cluster: keep-first decisions"

    def __init__(self, cfg: DataConfig, work: str, tasks: int) -> None:
        super().__init__(cfg, work)
        self.tasks = tasks

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        from pycpilot.data.trove.cluster import Cluster

        with self.track_time():
            found = Cluster(self.cfg, Work(self.work), self.tasks).run()
        self.stat_update("exact duplicates", value=found["removed"]["exact"])
        self.stat_update("near duplicates", value=found["removed"]["near"])


class KeepStep(TaskStep):
    stage = "keep"
    name = "keep: drop the duplicates"

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        from pycpilot.data.trove.keep import keep_shard

        with self.track_time():
            tally = keep_shard(Work(self.work), rank, len(self.cfg.sources))
        self.stat_update("kept", value=sum(s["kept"][0] for s in tally["sources"]))


class AssembleStep(TaskStep):
    """Write the DatasetDict and manifest at --out (one task), then clear the work folder's data."""

    stage = "assemble"
    name = "assemble: split, DatasetDict, manifest"

    def __init__(self, cfg: DataConfig, work: str, tasks: int, engine: dict[str, Any]) -> None:
        super().__init__(cfg, work)
        self.tasks, self.engine = tasks, engine

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        from pycpilot.data.trove.assemble import assemble

        work = Work(self.work)
        timings_file = Path(self.work) / "timings.json"
        timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
        assemble(self.cfg, work, self.tasks, timings, self.engine)
        if self.cfg.executor == "slurm":  # no driver waits for the jobs: the last one clears the work folder
            clear_work(self.work, DATA)
