"""The training stage (seed 7.4.4): GPT-2 from scratch on packed blocks, on 1 CPU or N GPUs."""

from pycpilot.train.config import TrainConfig
from pycpilot.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
