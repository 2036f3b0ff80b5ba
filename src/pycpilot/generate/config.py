"""Settings of `pycpilot complete` and the sampling checks `Completer.complete` shares (no torch here)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.generate.text import ENGINES, SCOPES
from pycpilot.settings import check, setting

MIN_TEMPERATURE = 1e-6  # below this, logits / temperature overflow to inf and sampling breaks: use 0 (greedy)


def check_settings(
    n: int, max_new_tokens: int, temperature: float, top_p: float, top_k: int, stop: list[str], scope: str, seed: int
) -> None:
    """The sampling settings of `pycpilot complete` and `Completer.complete`, each bad one a one-line error."""
    checks = [
        (max_new_tokens >= 1, "--max-new-tokens must be at least 1"),
        (
            temperature == 0 or MIN_TEMPERATURE <= temperature < math.inf,
            f"--temperature must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:g}",
        ),
        (0 < top_p <= 1, "--top-p must be in (0, 1]"),
        (top_k >= 0, "--top-k must be >= 0"),
        (1 <= n <= 256, "-n must be between 1 and 256"),
        (scope in SCOPES, f"--scope must be one of {', '.join(SCOPES)}"),
        (all(isinstance(s, str) and s for s in stop), "--stop strings must not be empty"),
        (0 <= seed < 2**63, "--seed must be between 0 and 2**63 - 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise PycpilotError(message)


def engine_setting() -> Any:
    """The decoder option, as `complete` and `serve` both take it (a fresh field for each dataclass)."""
    return setting(
        "auto",
        help="decoder: auto (native if a C compiler is here, else torch), native (our C step), torch (our loop on "
        "torch ops) or hf (transformers' generate, for comparison)",
        choices=ENGINES,
    )


def threads_setting() -> Any:
    return setting(None, help="threads of the native step (default: torch's count)", low=1, high=64)


def device_setting() -> Any:
    return setting(
        "auto",
        help="where the model runs: auto (a CUDA GPU if torch sees one, else the CPU), cpu or cuda",
        choices=("auto", "cpu", "cuda"),
    )


@dataclass
class CompleteConfig:
    """`complete(CompleteConfig(...))` is the Python entry point of `pycpilot complete`."""

    model: Path = setting(help="model folder, checkpoint, or training --out")
    prompt: str | None = setting(None, help="the code before the cursor (default: --file, else stdin)", positional=True)
    file: Path | None = setting(None, help="read the prompt from this file")
    suffix: str | None = setting(None, help="the code after the cursor: fill in the middle")
    max_new_tokens: int = setting(128, help="at most this many new tokens", low=1)
    temperature: float = setting(0.0, help="0 is greedy (default); > 0 samples", low=0)
    top_p: float = setting(1.0, help="nucleus sampling mass (1.0: off)", above=0, high=1)
    top_k: int = setting(0, help="sample among the k likeliest tokens (0: off)", low=0)
    n: int = setting(1, help="completions, decoded as one batch", low=1, high=256, flag="-n")
    seed: int = setting(42, help="sampling seed", low=0, high=2**63 - 1)
    stop: list[str] = setting(help="stop before this text (repeatable)", factory=list)
    scope: str = setting(
        "block",
        help="stop at the end of the line, of the block (a dedent or a new top-level def/class/if/print/#/@) or "
        "only at the end of the file (EOS)",
        choices=SCOPES,
    )
    int8: bool = setting(False, help="int8 weights (faster; costs a little accuracy)")
    engine: str = engine_setting()
    threads: int | None = threads_setting()
    device: str = device_setting()
    heal: bool = setting(
        True,
        help="keep a prompt's trailing whitespace token (by default it is given back and the first new token must "
        "start with it: token healing)",
        negative=True,
    )
    stream: bool = setting(True, help="print at the end, not as it comes", negative=True)
    quiet: bool = setting(False, help="print nothing (for scripts using the API)", alias="-q")

    def validate(self) -> None:
        check(self)
        check_settings(
            self.n, self.max_new_tokens, self.temperature, self.top_p, self.top_k, self.stop, self.scope, self.seed
        )
        if self.prompt is not None and self.file is not None:
            raise PycpilotError("give a prompt or --file, not both")
