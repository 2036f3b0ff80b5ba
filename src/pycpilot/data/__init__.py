"""The data stage (seed 7.4.1): sources -> cleaning -> dedup -> split -> DatasetDict on disk."""

from pycpilot.data.build import DataResult, build_dataset
from pycpilot.data.config import DataConfig

__all__ = ["DataConfig", "DataResult", "build_dataset"]
