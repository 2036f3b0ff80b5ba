"""The data stage (seed 7.4.1): sources -> cleaning -> dedup -> split -> DatasetDict on disk."""

from typing import Any

from pycpilot.data.config import DataConfig

__all__ = ["DataConfig", "DataResult", "build_dataset"]


def __getattr__(name: str) -> Any:
    # Building needs datasets (a second to import); reading the settings (the command line's --help) does not.
    if name in ("build_dataset", "DataResult"):
        from pycpilot.data import build

        return getattr(build, name)
    raise AttributeError(name)
