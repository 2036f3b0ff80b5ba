"""The training stage (seed 7.4.4): GPT-2 from scratch on packed blocks, on 1 CPU or N GPUs."""

from typing import Any

from pycpilot.train.config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    # The loop needs torch (1.5 s to import); reading the settings (the command line's --help) does not.
    if name in ("train", "TrainResult"):
        from pycpilot.train import loop

        return getattr(loop, name)
    raise AttributeError(name)
