"""Settings of the pack stage."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pycpilot.errors import PycpilotError

SEED_CONTEXT_LENGTH = 1024


@dataclass
class PackConfig:
    """`pack_dataset(PackConfig(...))` is the Python entry point of `pycpilot pack`."""

    data: Path
    tokenizer: Path
    out: Path
    context_length: int | None = None  # None: the preset's, else the seed's 1,024
    preset: str | None = None
    fim_rate: float = 0.5
    fim_spm_rate: float = 0.5
    fim_splits: list[str] = field(default_factory=lambda: ["train"])  # valid stays left-to-right
    seed: int = 42
    dtype: str = "auto"  # auto: uint16 when the vocabulary fits, else uint32
    encoder: str = "auto"  # auto: tiktoken when it is exact for this tokenizer, else tokenizers
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_files: int = 256
    overwrite: bool = False
    quiet: bool = False

    def resolved_context_length(self) -> int:
        if self.context_length is not None:
            return self.context_length
        if self.preset is not None:
            from pycpilot.presets import get_preset

            return get_preset(self.preset).context_length
        return SEED_CONTEXT_LENGTH

    def validate(self) -> None:
        checks = [
            (self.resolved_context_length() >= 2, "--context-length must be at least 2"),
            (0.0 <= self.fim_rate <= 1.0, "--fim-rate must be in [0, 1]"),
            (0.0 <= self.fim_spm_rate <= 1.0, "--fim-spm-rate must be in [0, 1]"),
            (self.dtype in ("auto", "uint16", "uint32"), "--dtype must be auto, uint16 or uint32"),
            (self.encoder in ("auto", "tiktoken", "tokenizers"), "--encoder must be auto, tiktoken or tokenizers"),
            (self.threads >= 1, "--threads must be at least 1"),
            (self.batch_files >= 1, "--batch-files must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise PycpilotError(message)
