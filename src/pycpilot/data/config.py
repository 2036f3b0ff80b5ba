"""Settings of the data stage, each declared once (see pycpilot/settings.py). Defaults follow CodeParrot's
preprocessing (see the README's table)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from pycpilot.executors import EngineSettings
from pycpilot.settings import check, setting

_IO, _DEDUP, _FILTERS = "input and output", "deduplication", "filters"
_SOURCES = (
    "repeatable: 'stdlib' (this interpreter's standard library; the default), 'site-packages' (the packages "
    "installed here, one repository each, licence from their metadata; PYCPilot left out) or site-packages:PATH "
    "(those of another site-packages folder or virtualenv), a folder of code/repositories, a datasets "
    "save_to_disk folder, a .parquet or .jsonl(.gz) file, or hf:NAME[@SPLIT] to load_dataset(NAME) from the hub "
    "(streaming)"
)


def size(text: str) -> int:
    """'1MB', '500k', '2000' -> bytes."""
    units = {"k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "b": 1, "": 1}
    t = text.strip().lower()
    number = t.rstrip("kmgb")
    try:
        return int(float(number) * units[t[len(number) :]])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1MB, 500k or 2000)") from None


def csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass
class DataConfig(EngineSettings):
    """Everything `pycpilot data` can be told; `build_dataset(DataConfig(...))` is the Python entry point."""

    out: Path = setting(help="output folder (a DatasetDict + manifest.json)", group=_IO)
    sources: list[str] = setting(help=_SOURCES, factory=lambda: ["stdlib"], flag="--source", metavar="SRC", group=_IO)
    overwrite: bool = setting(False, help="replace --out if it exists", group=_IO)
    # Folder walking: virtualenvs and site-packages are someone else's code, skipped unless asked.
    include_vendored: bool = setting(
        False, help="also walk virtualenvs, site-packages and dist-packages inside folder sources", group=_IO
    )
    max_file_size: int = setting(
        1_000_000, help="skip files larger than this (bytes; 1MB, 500k also work)", parse=size, low=1, group=_IO
    )
    num_proc: int = setting(
        help="worker processes (default: the cores)", factory=lambda: os.cpu_count() or 1, low=1, group=_IO
    )
    seed: int = setting(42, help="seed for the split and the probabilistic filters", low=0, high=2**32 - 1, group=_IO)
    valid_fraction: float = setting(
        0.02, help="share of files in the valid split (whole repositories are moved)", low=0, below=1, group=_IO
    )
    quiet: bool = setting(False, help="no progress bar or tables", alias="-q", group=_IO)
    # Exact dedup on a hash of the content with all whitespace removed.
    exact_dedup: bool = setting(True, help="keep files that are equal up to whitespace", negative=True, group=_DEDUP)
    # Near dedup: MinHash over the set of code tokens, LSH to find candidates.
    near_dedup: bool = setting(True, help="skip MinHash LSH near-duplicate removal", negative=True, group=_DEDUP)
    near_dedup_threshold: float = setting(
        0.85,
        help="Jaccard similarity of code-token sets at which a file counts as a near duplicate",
        above=0,
        high=1,
        group=_DEDUP,
    )
    num_perm: int = setting(256, help="MinHash permutations", low=2, high=4096, group=_DEDUP)
    min_dedup_tokens: int = setting(
        10, help="files with fewer distinct code tokens are not near-deduplicated", low=0, group=_DEDUP
    )
    # Heuristics (CodeParrot / Codex): a file failing any of them is dropped.
    heuristics: bool = setting(
        True,
        help="turn off all line-length/alphanumeric/auto-generated/config/keyword/assignment filters",
        negative=True,
        group=_FILTERS,
    )
    max_line_length: int = setting(1000, help="drop files with a longer line", low=1, group=_FILTERS)
    max_mean_line_length: float = setting(
        100.0, help="drop files whose mean line length is above this", above=0, group=_FILTERS
    )
    min_alnum_fraction: float = setting(
        0.25, help="drop files with a smaller fraction of alphanumeric characters", low=0, high=1, group=_FILTERS
    )
    min_assignments: int = setting(
        5, help="drop files with fewer '=' characters (CodeParrot: 5)", low=0, group=_FILTERS
    )
    # Config/test files and files without def/class/for/while are dropped with these probabilities.
    config_test_proba: float = setting(
        0.7, help="probability of dropping a config or test file (0 keeps them all)", low=0, high=1, group=_FILTERS
    )
    no_keyword_proba: float = setting(
        0.7,
        help="probability of dropping a file with no def/class/for/while (0 keeps them all)",
        low=0,
        high=1,
        group=_FILTERS,
    )
    syntax_check: bool = setting(True, help="keep files that do not compile as Python 3", negative=True, group=_FILTERS)
    decontaminate: bool = setting(
        True, help="keep files containing HumanEval prompts or solutions", negative=True, group=_FILTERS
    )
    keywords: list[str] = setting(
        help="comma-separated: keep only files mentioning one (codeparrot-ds used pandas,sklearn,matplotlib,seaborn)",
        factory=list,
        parse=csv,
        group=_FILTERS,
    )
    licenses: list[str] = setting(
        help="comma-separated: keep only these licenses where the source records one",
        factory=list,
        parse=csv,
        group=_FILTERS,
    )

    parquet: bool = setting(
        False, help="also write each split as Parquet shards in the codeparrot-ds schema (OUT/parquet/)", group=_IO
    )

    def validate(self) -> None:
        from pycpilot.errors import PycpilotError

        check(self)
        if not self.sources:
            raise PycpilotError("no --source given")
        # Matching is on lower-cased text and license ids are lower case in codeparrot-ds.
        self.keywords = [k.lower() for k in self.keywords]
        self.licenses = [lic.lower() for lic in self.licenses]
        seen: dict[str, str] = {}
        for spec in self.sources:
            if spec == "stdlib" or spec.startswith("hf:") or spec == "site-packages":
                key = spec
            elif spec.startswith("site-packages:"):
                key = "site-packages:" + str(Path(spec[len("site-packages:") :]).expanduser().resolve())
            else:
                key = str(Path(spec).resolve())
            if key in seen:
                raise PycpilotError(f"source {spec} is given twice (also as {seen[key]}): its files would count twice")
            seen[key] = spec
        self.validate_engine()
