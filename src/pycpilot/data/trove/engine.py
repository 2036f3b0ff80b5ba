"""Run the data stage's five stages on datatrove's Local, Slurm or Ray executor (`pycpilot data --executor`)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pycpilot.data.config import DataConfig
from pycpilot.data.sources import describe_source, source_path
from pycpilot.data.trove.layout import clear_work
from pycpilot.errors import PycpilotError
from pycpilot.manifest import check_output_dir

# What must match for a work folder to be resumed: everything that changes a stage's files.
_NOT_WORK = {"out", "overwrite", "quiet", "num_proc", "workers", "work_dir", "parquet", "executor", "ray_address"}
_NOT_WORK |= {"slurm_partition", "slurm_time", "task_mem_gb", "slurm_sbatch"}


def work_dir_of(cfg: DataConfig) -> Path:
    if cfg.work_dir is not None:
        work = Path(cfg.work_dir).expanduser()
        if not work.is_dir():
            raise PycpilotError(
                f"work dir {work} does not exist: create it (on Slurm and Ray, on a filesystem every node sees)"
            )
        return work.resolve()
    out = Path(cfg.out).resolve()
    return out.with_name(out.name + ".work")


def _claim(work: Path, cfg: DataConfig) -> None:
    """Record the settings a work folder is for; resuming with other settings would mix two corpora."""
    wanted = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in _NOT_WORK}
    record = work / "settings.json"
    if record.is_file():
        try:
            had = json.loads(record.read_text())
        except ValueError:
            had = None
        if had != wanted:
            changed = sorted(k for k in wanted if not isinstance(had, dict) or had.get(k) != wanted[k])
            raise PycpilotError(
                f"work dir {work} holds an unfinished run with other settings ({', '.join(changed) or 'unreadable'}):"
                " rerun with those, or remove the folder or pass another --work-dir"
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    clear_work(work, logs=True)  # a finished run's completion markers would make this one skip its tasks
    tmp = record.with_name(".settings.json.tmp")
    tmp.write_text(json.dumps(wanted, indent=1, default=str))
    os.replace(tmp, record)


def _pipelines(cfg: DataConfig, work: Path, engine: dict[str, Any]) -> list[tuple[str, list, int]]:
    from pycpilot.data.trove.layout import Bands
    from pycpilot.data.trove.steps import AssembleStep, BucketsStep, CleanStep, ClusterStep, KeepStep

    bands, root = Bands.of(cfg), str(work)
    return [
        ("clean", [CleanStep(cfg, root)], cfg.tasks),
        ("buckets", [BucketsStep(root, bands.trove_config())], bands.buckets),
        ("cluster", [ClusterStep(cfg, root, cfg.tasks)], 1),
        ("keep", [KeepStep(cfg, root)], cfg.tasks),
        ("assemble", [AssembleStep(cfg, root, cfg.tasks, engine)], 1),
    ]


def build_with_datatrove(cfg: DataConfig) -> Any:
    from pycpilot.data.build import DataResult

    for spec in cfg.sources:
        describe_source(spec)  # a missing or unusable source fails here, before any job starts
    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite, "data", tuple(p for s in cfg.sources if (p := source_path(s)) is not None))
    work = work_dir_of(cfg)
    _claim(work, cfg)
    engine = {"name": "datatrove", "executor": cfg.executor, "tasks": cfg.tasks, "workers": cfg.workers,
              "work_dir": str(work)}  # fmt: skip
    from pycpilot.data.trove.layout import quiet_logs

    quiet_logs()
    stages = _pipelines(cfg, work, engine)
    if cfg.executor == "slurm":
        _submit_slurm(cfg, work, stages)
        return None
    if cfg.executor == "ray":
        _start_ray(cfg)
    timings: dict[str, float] = {}
    for number, (stage, pipeline, tasks) in enumerate(stages, 1):
        if stage == "assemble":
            (work / "timings.json").write_text(json.dumps(timings))
        start = time.perf_counter()
        executor = _executor(cfg, work, stage, pipeline, tasks)
        with _Progress(cfg, f"data [{number}/{len(stages)}] {stage}", work / "logs" / stage, tasks):
            try:
                executor.run()
            except Exception as exc:
                raise _failed(stage, executor, work, exc) from None
            finally:
                quiet_logs()  # a task run in this process put datatrove's default logger back
        if executor.get_incomplete_ranks(range(tasks)):
            raise _failed(stage, executor, work, None)
        timings[f"{stage}_s"] = time.perf_counter() - start
    if cfg.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)  # the default folder beside --out: nothing worth keeping
    else:
        clear_work(work)  # the logs stay
    from pycpilot.data.load import load_data_dir

    return DataResult(out=out, manifest=json.loads((out / "manifest.json").read_text())) if load_data_dir(out) else None


class _Progress:
    """A bar of finished tasks (datatrove's completion markers), polled while the executor runs."""

    def __init__(self, cfg: DataConfig, desc: str, logs: Path, tasks: int) -> None:
        self.done_dir, self.tasks = logs / "completions", tasks
        self.bar = tqdm(desc=desc, total=tasks, unit=" tasks", disable=cfg.quiet, file=sys.stderr, dynamic_ncols=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _count(self) -> int:
        try:
            return sum(1 for _ in self.done_dir.iterdir())
        except OSError:
            return 0

    def _poll(self) -> None:
        while not self.stop.wait(0.5):
            self.bar.update(self._count() - self.bar.n)

    def __enter__(self) -> _Progress:
        self.bar.update(self._count())  # tasks a resumed run finished before
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.bar.update(self._count() - self.bar.n)
        self.bar.close()


def _say(cfg: DataConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, file=sys.stderr, flush=True)


def _failed(stage: str, executor: Any, work: Path, exc: BaseException | None) -> PycpilotError:
    missing = executor.get_incomplete_ranks(range(executor.world_size))
    which = f"task {missing[0]:05d}" if missing else "a task"
    log = work / "logs" / stage / "logs" / f"task_{missing[0]:05d}.log" if missing else work / "logs" / stage
    reason = f": {str(exc).strip().splitlines()[-1][:200]}" if exc is not None and str(exc).strip() else ""
    return PycpilotError(
        f"data: the {stage} stage failed in {which} of {executor.world_size}{reason} (log: {log}); run the same "
        f"command again to resume: finished tasks are kept"
    )


def _executor(cfg: DataConfig, work: Path, stage: str, pipeline: list, tasks: int) -> Any:
    logs = str(work / "logs" / stage)
    if cfg.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(
            pipeline, tasks=tasks, workers=cfg.workers or -1, logging_dir=logs, mem_per_cpu_gb=cfg.task_mem_gb
        )
    from datatrove.executor import LocalPipelineExecutor

    workers = min(cfg.workers or os.cpu_count() or 1, tasks)
    return LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs)


def _start_ray(cfg: DataConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray_address
    if address and address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or address, int(port or 6379)), timeout=5).close()
        except (OSError, ValueError) as exc:
            raise PycpilotError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=cfg.workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # ConnectionError, a version mismatch, ...
        raise PycpilotError(f"cannot start or join Ray ({address or 'local'}): {str(exc).splitlines()[0]}") from None


def _submit_slurm(cfg: DataConfig, work: Path, stages: list[tuple[str, list, int]]) -> None:
    """Submit the five stages as sbatch jobs, each depending on the one before (afterok)."""
    from datatrove.executor import SlurmPipelineExecutor

    venv = Path(sys.prefix) / "bin" / "activate"
    extra = dict(kv.split("=", 1) for kv in cfg.slurm_sbatch)
    previous = None
    executors = []
    for stage, pipeline, tasks in stages:
        previous = SlurmPipelineExecutor(
            pipeline,
            tasks=tasks,
            time=cfg.slurm_time,
            partition=cfg.slurm_partition or "",
            workers=cfg.workers or -1,
            mem_per_cpu_gb=cfg.task_mem_gb,
            job_name=f"pycpilot-data-{stage}",
            venv_path=str(venv) if venv.is_file() else None,
            sbatch_args=extra,
            logging_dir=str(work / "logs" / stage),
            slurm_logs_folder=str(work / "slurm" / stage),
            depends=previous,
        )
        executors.append((stage, previous))
    try:
        previous.run()  # launches the chain, first stage first
    except Exception as exc:
        raise PycpilotError(f"data: sbatch failed: {str(exc).strip().splitlines()[-1][:200]}") from None
    for stage, ex in executors:
        _say(cfg, f"data: submitted {stage} as Slurm job {ex.job_id}")
    _say(cfg, f"data: the DatasetDict appears at {cfg.out} when the assemble job ends (logs: {work / 'logs'})")
