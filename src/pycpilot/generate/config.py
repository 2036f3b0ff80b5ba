"""Settings of `pycpilot complete` (no torch here); its sampling options are SamplingParams' own fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.generate.sampling import SAMPLING_FIELDS, SamplingParams, sampling_setting
from pycpilot.generate.text import ENGINES
from pycpilot.settings import check, setting


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
    max_new_tokens: int = sampling_setting("max_new_tokens")
    temperature: float = sampling_setting("temperature")
    top_p: float = sampling_setting("top_p")
    top_k: int = sampling_setting("top_k")
    n: int = sampling_setting("n")
    seed: int = sampling_setting("seed")
    stop: list[str] = sampling_setting("stop")
    scope: str = sampling_setting("scope")
    int8: bool = setting(False, help="int8 weights (faster; costs a little accuracy)")
    engine: str = engine_setting()
    threads: int | None = threads_setting()
    device: str = device_setting()
    heal: bool = setting(
        True,
        help="keep the prompt's last token (by default it is given back and the first new token must start with "
        "its text: token healing)",
        negative=True,
    )
    stream: bool = setting(True, help="print at the end, not as it comes", negative=True)
    quiet: bool = setting(False, help="print nothing (for scripts using the API)", alias="-q")

    def validate(self) -> None:
        check(self)
        self.sampling()
        if self.prompt is not None and self.file is not None:
            raise PycpilotError("give a prompt or --file, not both")

    def sampling(self) -> SamplingParams:
        return SamplingParams(**{name: getattr(self, name) for name in SAMPLING_FIELDS})
