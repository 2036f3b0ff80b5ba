"""Settings of the tokenizer stage, each declared once (see pycpilot/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pycpilot.data.config import size
from pycpilot.presets import PRESETS
from pycpilot.settings import check, setting

SEED_VOCAB_SIZE = 52_000


@dataclass
class TokenizerConfig:
    """`train_tokenizer(TokenizerConfig(...))` is the Python entry point of `pycpilot tokenizer`."""

    data: Path = setting(help="a `pycpilot data` output folder")
    out: Path = setting(help="output tokenizer folder")
    vocab_size: int | None = setting(
        None,
        help=f"vocabulary size, special tokens included (default: the preset's, else {SEED_VOCAB_SIZE:,})",
        low=300,  # 256 bytes + specials + a few merges
        high=1_000_000,
    )
    preset: str | None = setting(None, help="take the vocabulary size from a preset", choices=tuple(PRESETS))
    base: str | None = setting(
        None,
        help="retrain this tokenizer's pipeline with train_new_from_iterator (e.g. gpt2, needs internet)",
        metavar="NAME_OR_DIR",
    )
    compare: str | None = setting(
        None,
        help="baseline tokenizer for the comparison (default: the same BPE without the FIM tokens; 'none' skips it)",
        metavar="NAME_OR_DIR",
    )
    min_frequency: int = setting(2, help="a merge must be seen this often", low=1)
    sample: int | None = setting(
        None,
        help="learn from a seeded sample of the train split of about this many bytes (500MB, 2GB) instead of all "
        "of it, for corpora larger than memory; files are drawn whole, the manifest records which and how much",
        parse=size,
        low=1,
        metavar="SIZE",
    )
    sample_seed: int = setting(
        0, help="seed of --sample's draw (the same seed draws the same files)", low=0, high=2**63 - 1
    )
    batch_files: int = setting(10_000, help="files per batch fed to the trainer (the seed's iterator)", low=1)
    model_max_length: int = setting(
        1024, help="longest context models using this tokenizer take (GPT-2: 1024)", low=2, high=1 << 20
    )
    overwrite: bool = setting(False, help="replace --out if it exists")
    quiet: bool = setting(False, help="no progress or comparison output", alias="-q")

    def resolved_vocab_size(self) -> int:
        if self.vocab_size is not None:
            return self.vocab_size
        if self.preset is not None:
            from pycpilot.presets import get_preset

            return get_preset(self.preset).vocab_size
        return SEED_VOCAB_SIZE

    def validate(self) -> None:
        check(self)
