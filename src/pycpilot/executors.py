"""Stages that run as datatrove pipelines on its Local, Slurm or Ray executor (`pycpilot data` and `pycpilot
pack` with `--executor`): their shared settings, the work folder, and the loop that runs the stages.

Each stage is a list of datatrove pipeline steps and a task count. Local and Ray run the stages one after the
other here, with a bar of finished tasks; Slurm gets them as sbatch jobs chained with afterok. A failed task
stops the run with one line; running the same command again resumes (datatrove's completion markers).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.settings import setting

_ENGINE = "corpora beyond one machine (datatrove; see the README)"


def _pairs(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(kw_only=True)
class EngineSettings:
    """The executor options of a stage that can run on datatrove (mixed into its config)."""

    executor: str | None = setting(
        None,
        help="run on datatrove's executor: local (processes here), slurm (sbatch jobs) or ray (a Ray cluster); "
        "default: this machine alone",
        choices=("local", "slurm", "ray"),
        group=_ENGINE,
    )
    tasks: int = setting(8, help="tasks the input is cut into (each a shard of files)", low=1, high=9999, group=_ENGINE)
    workers: int | None = setting(
        None,
        help="tasks running at once (default: the cores with local; no limit on Slurm and Ray, whose schedulers "
        "place the tasks)",
        low=1,
        group=_ENGINE,
    )
    work_dir: Path | None = setting(
        None,
        help="intermediate files, logs and completion markers; rerun with the same one to resume "
        "(default: OUT.work beside --out; on Slurm and Ray a folder every node sees)",
        group=_ENGINE,
    )
    slurm_partition: str | None = setting(None, help="Slurm partition (needed with --executor slurm)", group=_ENGINE)
    slurm_time: str = setting("4:00:00", help="Slurm time limit of each job", group=_ENGINE)
    task_mem_gb: int = setting(
        4, help="memory per task, GB (Slurm: --mem-per-cpu; Ray: the reservation)", low=1, group=_ENGINE
    )
    slurm_sbatch: list[str] = setting(
        help="extra sbatch directives, comma-separated KEY=VALUE (account=abc,qos=high)",
        factory=list,
        parse=_pairs,
        group=_ENGINE,
    )
    ray_address: str | None = setting(
        None, help="Ray cluster to join (auto, or HOST:PORT); default: start a local Ray", group=_ENGINE
    )

    def validate_engine(self) -> None:
        if self.executor == "slurm" and not self.slurm_partition:
            raise PycpilotError("--executor slurm needs --slurm-partition")
        if self.executor is None:
            stray = [k for k in ("work_dir", "slurm_partition", "ray_address") if getattr(self, k) is not None]
            if stray:
                option = "--" + stray[0].replace("_", "-")
                raise PycpilotError(f"{option} is for the datatrove engine: add --executor local|slurm|ray")
        bad = [kv for kv in self.slurm_sbatch if "=" not in kv or not kv.split("=", 1)[0].strip()]
        if bad:
            raise PycpilotError(f"--slurm-sbatch takes KEY=VALUE pairs, not {bad[0]!r}")


ENGINE_FIELDS = frozenset(EngineSettings.__dataclass_fields__)


@dataclass
class Stage:
    name: str
    pipeline: list
    tasks: int


def work_dir_of(cfg: EngineSettings, out: Path) -> Path:
    if cfg.work_dir is not None:
        work = Path(cfg.work_dir).expanduser()
        if not work.is_dir():
            raise PycpilotError(
                f"work dir {work} does not exist: create it (on Slurm and Ray, on a filesystem every node sees)"
            )
        return work.resolve()
    out = Path(out).resolve()
    return out.with_name(out.name + ".work")


def claim(
    work: Path, cfg: Any, ignore: frozenset[str] | set[str], data: tuple[str, ...], inputs: dict[str, Any] | None = None
) -> None:
    """Record the settings (and input hashes) a work folder is for; resuming with others would mix two inputs."""
    wanted = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in ignore}
    wanted |= inputs or {}
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
    clear_work(work, data, logs=True)  # a finished run's completion markers would make this one skip its tasks
    tmp = record.with_name(".settings.json.tmp")
    tmp.write_text(json.dumps(wanted, indent=1, default=str))
    os.replace(tmp, record)


def clear_work(root: str | Path, data: tuple[str, ...], logs: bool = False) -> None:
    """Remove a finished (or abandoned) run's data from a work folder; its logs too when `logs`."""
    import shutil

    root = Path(root)
    for name in (*data, *(("logs",) if logs else ())):
        shutil.rmtree(root / name, ignore_errors=True)
    for name in ("timings.json", "settings.json", *(("slurm_jobs.json",) if logs else ())):
        (root / name).unlink(missing_ok=True)


def run_stages(cfg: EngineSettings, command: str, work: Path, stages: list[Stage], quiet: bool) -> bool:
    """Run (local, Ray) or submit (Slurm) the stages; True once they ran, False when only submitted.

    Before each stage, WORK/timings.json holds the seconds of the stages before it (for a last stage's manifest)."""
    from pycpilot.tasks import quiet_logs

    quiet_logs()
    if cfg.executor == "slurm":
        _submit_slurm(cfg, command, work, stages, quiet)
        return False
    if cfg.executor == "ray":
        _start_ray(cfg)
    timings: dict[str, float] = {}
    for number, stage in enumerate(stages, 1):
        (work / "timings.json").write_text(json.dumps(timings))
        start = time.perf_counter()
        executor = _executor(cfg, work, stage)
        label = f"{command} [{number}/{len(stages)}] {stage.name}"
        with _Progress(label, work / "logs" / stage.name, stage.tasks, quiet):
            try:
                executor.run()
            except Exception as exc:
                raise _failed(command, stage, executor, work, exc) from None
            finally:
                quiet_logs()  # a task run in this process put datatrove's default logger back
        if executor.get_incomplete_ranks(range(stage.tasks)):
            raise _failed(command, stage, executor, work, None)
        timings[f"{stage.name}_s"] = time.perf_counter() - start
    return True


class _Progress:
    """A bar of finished tasks (datatrove's completion markers), polled while the executor runs."""

    def __init__(self, desc: str, logs: Path, tasks: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.done_dir = logs / "completions"
        self.bar = tqdm(desc=desc, total=tasks, unit=" tasks", disable=quiet, file=sys.stderr, dynamic_ncols=True)
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


def _failed(command: str, stage: Stage, executor: Any, work: Path, exc: BaseException | None) -> PycpilotError:
    """One line: the stage, the task that failed (the first unfinished one whose log names an error), why, its log."""
    logs = work / "logs" / stage.name / "logs"
    missing = executor.get_incomplete_ranks(range(stage.tasks))
    errors = {rank: _last_error(logs / f"task_{rank:05d}.log") for rank in missing}
    rank = next((r for r in missing if errors[r]), missing[0] if missing else None)
    which = f"task {rank:05d}" if rank is not None else "a task"
    log = logs / f"task_{rank:05d}.log" if rank is not None else logs
    text = str(exc).strip() if exc is not None else ""
    text = text or (errors.get(rank, "") if rank is not None else "")
    reason = f": {text.splitlines()[-1][:200]}" if text else ""
    return PycpilotError(
        f"{command}: the {stage.name} stage failed in {which} of {stage.tasks}{reason} (log: {log}); run the same "
        f"command again to resume: finished tasks are kept"
    )


def _last_error(log: Path) -> str:
    """The last line of a task log that names an error (Ray retries a task and raises nothing here)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line for line in reversed(lines) if "Error" in line or "Exception" in line), "")


def _executor(cfg: EngineSettings, work: Path, stage: Stage) -> Any:
    logs = str(work / "logs" / stage.name)
    if cfg.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(
            stage.pipeline,
            tasks=stage.tasks,
            workers=cfg.workers or -1,
            logging_dir=logs,
            mem_per_cpu_gb=cfg.task_mem_gb,
        )
    from datatrove.executor import LocalPipelineExecutor

    workers = min(cfg.workers or os.cpu_count() or 1, stage.tasks)
    return LocalPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=workers, logging_dir=logs)


def _start_ray(cfg: EngineSettings) -> None:
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


def _submit_slurm(cfg: EngineSettings, command: str, work: Path, stages: list[Stage], quiet: bool) -> None:
    """Submit the stages as sbatch jobs, each depending on the one before (afterok); refuse while an earlier
    submission of this work folder is still queued, and cancel a chain that could not be submitted whole."""
    from datatrove.executor import SlurmPipelineExecutor

    record = work / "slurm_jobs.json"
    queued = _still_queued(json.loads(record.read_text()) if record.is_file() else {})
    if queued:
        raise PycpilotError(
            f"{command}: Slurm jobs {', '.join(queued)} of an earlier submission for {work} are still queued or "
            "running: wait for them, or scancel them and run again"
        )
    venv = Path(sys.prefix) / "bin" / "activate"
    extra = dict(kv.split("=", 1) for kv in cfg.slurm_sbatch)
    previous = None
    executors = []
    for stage in stages:
        previous = SlurmPipelineExecutor(
            stage.pipeline,
            tasks=stage.tasks,
            time=cfg.slurm_time,
            partition=cfg.slurm_partition or "",
            workers=cfg.workers or -1,
            mem_per_cpu_gb=cfg.task_mem_gb,
            job_name=f"pycpilot-{command}-{stage.name}",
            venv_path=str(venv) if venv.is_file() else None,
            sbatch_args=extra,
            logging_dir=str(work / "logs" / stage.name),
            slurm_logs_folder=str(work / "slurm" / stage.name),
            depends=previous,
        )
        executors.append((stage.name, previous))
    assert previous is not None
    try:
        previous.run()  # launches the chain, first stage first
    except Exception as exc:
        submitted = [str(ex.job_id) for _, ex in executors if ex.job_id not in (None, -1)]
        if submitted:
            subprocess.run(["scancel", *submitted], capture_output=True, check=False)
        raise PycpilotError(f"{command}: sbatch failed: {str(exc).strip().splitlines()[-1][:200]}") from None
    jobs = {name: str(ex.job_id) for name, ex in executors if ex.job_id not in (None, -1)}
    record.write_text(json.dumps(jobs))
    if not quiet:
        for name, job in jobs.items():
            print(f"{command}: submitted {name} as Slurm job {job}", file=sys.stderr)
        print(f"{command}: the output appears when the last job ends (logs: {work / 'logs'})", file=sys.stderr)


def _still_queued(jobs: dict[str, str]) -> list[str]:
    if not jobs:
        return []
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(jobs.values())], capture_output=True,
                             text=True, timeout=60, check=False).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []  # no squeue here: nothing to check against
    listed = {line.strip().split("_")[0] for line in out.splitlines() if line.strip()}
    return [job for job in jobs.values() if job in listed]
