"""What runs inside a task of the datatrove engine: the base of PYCPilot's pipeline steps and their logging.

Imported by every process that unpickles a step (a local pool worker, a Slurm job, a Ray worker), so the
logging set here holds there too.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from datatrove.pipeline.base import PipelineStep

from pycpilot.errors import PycpilotError


class TaskStep(PipelineStep):
    """A PYCPilot stage as a datatrove step: its config and work folder, run from the command's folder."""

    type = "PYCPilot"

    def __init__(self, cfg: Any, work: str) -> None:
        super().__init__()
        self.cfg, self.work, self.cwd = cfg, work, os.getcwd()

    def __call__(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Any:
        enter(self.cwd)
        return super().__call__(data, rank, world_size)


def enter(cwd: str) -> None:
    """Run a task from the folder the command was given in, so relative paths mean there what they meant
    there (a Ray worker or a Slurm job starts elsewhere)."""
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise PycpilotError(
            f"this node cannot enter {cwd}, where the command ran ({exc.strerror}): run it from a folder every "
            "node sees, or give absolute paths on a shared filesystem"
        ) from None


def quiet_logs() -> None:
    """datatrove's loguru output on stderr: warnings only, one line each, no tracebacks (the error that ends
    a run is PYCPilot's one line; the task's log file keeps everything)."""
    from datatrove.utils.logging import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{message}", filter=lambda r: r["exception"] is None)


def install_quiet_logs() -> None:
    """Make every task (in this process, a pool worker, a Slurm job or a Ray worker) log as `quiet_logs`
    says, with datatrove's full log file per task kept. datatrove has no option for this: its task logger
    puts INFO and tracebacks on stderr, so its two logging functions are replaced here."""
    import datatrove.executor.base as base
    import datatrove.executor.ray as ray_executor
    import datatrove.utils.logging as trove_logging
    from datatrove.utils.logging import logger

    def task_logger(logging_dir: Any, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        quiet_logs()
        logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
        logger.add(logfile, level="DEBUG", colorize=False)
        return logfile

    base.add_task_logger = task_logger
    ray_executor.add_task_logger = task_logger  # it imports the function by name
    trove_logging.setup_default_logger = quiet_logs


install_quiet_logs()
