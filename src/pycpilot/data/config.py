"""Settings of the data stage. Defaults follow CodeParrot's preprocessing (see the README's table)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DataConfig:
    """Everything `pycpilot data` can be told; `build_dataset(DataConfig(...))` is the Python entry point."""

    out: Path
    sources: list[str] = field(default_factory=lambda: ["stdlib"])
    overwrite: bool = False
    seed: int = 42
    valid_fraction: float = 0.02
    num_proc: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Folder walking: virtualenvs and site-packages are someone else's code, skipped unless asked.
    include_vendored: bool = False
    max_file_size: int = 1_000_000
    # Exact dedup on a hash of the content with all whitespace removed.
    exact_dedup: bool = True
    # Near dedup: MinHash over the set of code tokens, LSH to find candidates.
    near_dedup: bool = True
    near_dedup_threshold: float = 0.85
    num_perm: int = 256
    min_dedup_tokens: int = 10
    # Heuristics (CodeParrot / Codex): a file failing any of them is dropped.
    heuristics: bool = True
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    min_assignments: int = 5
    # Config/test files and files without def/class/for/while are dropped with these probabilities.
    config_test_proba: float = 0.7
    no_keyword_proba: float = 0.7
    syntax_check: bool = True
    decontaminate: bool = True
    keywords: list[str] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    quiet: bool = False

    def validate(self) -> None:
        from pycpilot.errors import PycpilotError

        checks = [
            (0.0 <= self.valid_fraction < 1.0, "--valid-fraction must be in [0, 1)"),
            (self.num_proc >= 1, "--num-proc must be at least 1"),
            (self.max_file_size > 0, "--max-file-size must be positive"),
            (0.0 < self.near_dedup_threshold <= 1.0, "--near-dedup-threshold must be in (0, 1]"),
            (2 <= self.num_perm <= 4096, "--num-perm must be between 2 and 4096"),
            (self.min_dedup_tokens >= 0, "--min-dedup-tokens must be >= 0"),
            (self.max_line_length > 0, "--max-line-length must be positive"),
            (self.max_mean_line_length > 0, "--max-mean-line-length must be positive"),
            (0.0 <= self.min_alnum_fraction <= 1.0, "--min-alnum-fraction must be in [0, 1]"),
            (self.min_assignments >= 0, "--min-assignments must be >= 0"),
            (0.0 <= self.config_test_proba <= 1.0, "--config-test-proba must be in [0, 1]"),
            (0.0 <= self.no_keyword_proba <= 1.0, "--no-keyword-proba must be in [0, 1]"),
        ]
        checks.append((0 <= self.seed < 2**32, "--seed must be between 0 and 2**32 - 1"))
        for ok, message in checks:
            if not ok:
                raise PycpilotError(message)
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
