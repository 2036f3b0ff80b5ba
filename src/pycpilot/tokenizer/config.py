"""Settings of the tokenizer stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pycpilot.errors import PycpilotError

SEED_VOCAB_SIZE = 52_000


@dataclass
class TokenizerConfig:
    """`train_tokenizer(TokenizerConfig(...))` is the Python entry point of `pycpilot tokenizer`."""

    data: Path
    out: Path
    vocab_size: int | None = None  # None: the preset's, else the seed's 52,000
    preset: str | None = None
    base: str | None = None  # train_new_from_iterator on this tokenizer instead of building GPT-2's pipeline
    compare: str | None = None  # baseline for the comparison; default: the same BPE without our additions
    min_frequency: int = 2
    batch_files: int = 10_000  # files per batch fed to the trainer (the seed's iterator)
    model_max_length: int = 1024
    overwrite: bool = False
    quiet: bool = False

    def resolved_vocab_size(self) -> int:
        if self.vocab_size is not None:
            return self.vocab_size
        if self.preset is not None:
            from pycpilot.presets import get_preset

            return get_preset(self.preset).vocab_size
        return SEED_VOCAB_SIZE

    def validate(self) -> None:
        vocab = self.resolved_vocab_size()
        if not 300 <= vocab <= 1_000_000:
            raise PycpilotError("--vocab-size must be between 300 (256 bytes + specials + merges) and 1,000,000")
        if self.min_frequency < 1:
            raise PycpilotError("--min-frequency must be at least 1")
        if self.batch_files < 1:
            raise PycpilotError("--batch-files must be at least 1")
        if self.model_max_length < 2:
            raise PycpilotError("--model-max-length must be at least 2")
