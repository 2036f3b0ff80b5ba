"""The pipeline's stages as one protocol: name, config class, entry function, the folders each reads.

`pycpilot STAGE` (cli/stages.py) and `pycpilot run` (run/stages.py) both iterate over `PIPELINE`: the command line
of a stage is its config's fields (settings.py), its entry function takes that config, and `run` fills the
input and output folders named here. Classes and functions are named by import path and loaded on use, so
that `pycpilot --help` does not import torch or datasets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Stage:
    name: str
    folder: str  # its output in a run folder
    config_path: str  # "module:Class", a dataclass of `setting` fields
    entry_path: str  # "module:function", taking that config
    help: str
    description: str
    inputs: dict[str, str] = field(default_factory=dict)  # config field -> the earlier stage whose output it reads

    def config_class(self) -> type:
        return _load(self.config_path)

    def entry(self) -> Callable[[Any], Any]:
        return _load(self.entry_path)

    @property
    def required(self) -> set[str]:
        """Fields the command line must give: the folders, which `run` sets itself."""
        return {"out", *self.inputs}


PIPELINE: tuple[Stage, ...] = (
    Stage(
        "data", "data", "pycpilot.data.config:DataConfig", "pycpilot.data.build:build_dataset",
        help="collect and clean Python files into a train/valid DatasetDict (seed 7.4.1)",
        description="Collect Python files from one or more sources, clean them with CodeParrot's filters, "
        "split train/valid by repository and save a datasets.DatasetDict (codeparrot-ds schema) with a "
        "manifest.json.",
    ),
    Stage(
        "tokenizer", "tokenizer", "pycpilot.tokenizer.config:TokenizerConfig",
        "pycpilot.tokenizer.train:train_tokenizer",
        help="train a byte-level BPE code tokenizer on the train split (seed 7.4.2)",
        description="Train a GPT-2-style byte-level BPE (GPT-2's regex, byte alphabet, <|endoftext|>) with "
        "StarCoder's FIM tokens on the train split of a `pycpilot data` folder, save it with save_pretrained "
        "(+ vocab.json, merges.txt, special_tokens_map.json, manifest.json) and compare it with a baseline.",
        inputs={"data": "data"},
    ),
    Stage(
        "pack", "packed", "pycpilot.pack.config:PackConfig", "pycpilot.pack.build:pack_dataset",
        help="tokenize the corpus and cut it into blocks of token ids (seed 7.4.3)",
        description="Tokenize every file of a `pycpilot data` folder, append <|endoftext|>, concatenate and cut "
        "into blocks of --context-length tokens (only the last partial block of a split is dropped), with "
        "optional fill-in-the-middle; read the result with pycpilot.pack.PackedDataset.",
        inputs={"data": "data", "tokenizer": "tokenizer"},
    ),
    Stage(
        "train", "model", "pycpilot.train.config:TrainConfig", "pycpilot.train.loop:train",
        help="train a GPT-2 from scratch on packed blocks (seed 7.4.4)",
        description="Train transformers' GPT2LMHeadModel from a preset on a `pycpilot pack` folder, on a CPU or, "
        "launched with torchrun / accelerate launch, on several GPUs and nodes. Settings come from the preset, "
        "then --recipe FILE (YAML/JSON), then the options given here. Unset options show (preset).",
        inputs={"packed": "pack"},
    ),
)  # fmt: skip

BY_NAME = {stage.name: stage for stage in PIPELINE}
