"""Settings of the pack stage, each declared once (see pycpilot/settings.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pycpilot.executors import EngineSettings
from pycpilot.presets import PRESETS
from pycpilot.settings import check, setting

SEED_CONTEXT_LENGTH = 1024


def csv(text: str) -> list[str]:
    """'train, valid' -> ['train', 'valid']."""
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass
class PackConfig(EngineSettings):
    """`pack_dataset(PackConfig(...))` is the Python entry point of `pycpilot pack`."""

    data: Path = setting(help="a `pycpilot data` output folder")
    tokenizer: Path = setting(
        help="a `pycpilot tokenizer` output folder, or a model's tokenizer: its folder, a `pycpilot train` --out or "
        "hf:NAME[@REVISION] (for --init-from; FIM tokens it lacks are added)"
    )
    out: Path = setting(help="output folder ({split}.bin + manifest.json)")
    context_length: int | None = setting(
        None,
        help=f"tokens per block (default: the preset's, else {SEED_CONTEXT_LENGTH}; with a model's tokenizer, at most "
        "the model's positions)",
        low=2,
        high=1 << 20,
    )
    preset: str | None = setting(None, help="take the context length from a preset", choices=tuple(PRESETS))
    fim_rate: float = setting(
        0.5, help="share of train files laid out fill-in-the-middle (0: plain left-to-right)", low=0, high=1
    )
    fim_spm_rate: float = setting(
        0.5, help="share of FIM files in SPM order (suffix first) rather than PSM", low=0, high=1
    )
    fim_splits: list[str] = setting(
        help="comma-separated splits that get FIM (valid stays plain for comparable perplexity)",
        factory=lambda: ["train"],
        parse=csv,
    )
    seed: int = setting(42, help="seed for the FIM choices (per file)", low=0, high=2**32 - 1)
    dtype: str = setting(
        "auto",
        help="storage type of token ids (auto: uint16 when the vocabulary fits)",
        choices=("auto", "uint16", "uint32"),
    )
    encoder: str = setting(
        "auto",
        help="auto: tiktoken when it is exact for this tokenizer (checked as it runs), else tokenizers",
        choices=("auto", "tiktoken", "tokenizers"),
    )
    threads: int = setting(help="encoder threads (default: the cores)", factory=lambda: os.cpu_count() or 1, low=1)
    batch_files: int = setting(256, help="files encoded per batch", low=1)
    overwrite: bool = setting(False, help="replace --out if it exists")
    quiet: bool = setting(False, help="no progress or summary output", alias="-q")

    def resolved_context_length(self) -> int:
        if self.context_length is not None:
            return self.context_length
        if self.preset is not None:
            from pycpilot.presets import get_preset

            return get_preset(self.preset).context_length
        return SEED_CONTEXT_LENGTH

    def validate(self) -> None:
        check(self)
        self.validate_engine()
