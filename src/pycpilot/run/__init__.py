"""`pycpilot run`: the whole pipeline into one folder, resumable, with a report."""

from pycpilot.run.config import RunConfig
from pycpilot.run.pipeline import run

__all__ = ["RunConfig", "run"]
