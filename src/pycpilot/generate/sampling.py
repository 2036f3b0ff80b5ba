"""`SamplingParams`: how the new tokens of one prompt are picked and when they stop, validated once.

One value, as llama.cpp's `common_params_sampling` is one struct for its CLI and its server: `pycpilot
complete` builds it from its options, `serve` from each request, `eval` for each problem, and the decode loop
(batch.py) and transformers' `generate` (hf.py) read it. A bad value is a one-line error when it is made,
naming the option as the command line spells it; nothing downstream checks again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.generate.text import SCOPES
from pycpilot.settings import check, setting

MIN_TEMPERATURE = 1e-6  # below this, logits / temperature overflow to inf and sampling breaks: use 0 (greedy)
MAX_ROWS = 256  # completions of one prompt decoded together


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    max_new_tokens: int = setting(128, help="at most this many new tokens", low=1)
    temperature: float = setting(0.0, help="0 is greedy (default); > 0 samples", low=0)
    top_p: float = setting(1.0, help="nucleus sampling mass (1.0: off)", above=0, high=1)
    top_k: int = setting(0, help="sample among the k likeliest tokens (0: off)", low=0)
    n: int = setting(1, help="completions, decoded as one batch", low=1, high=MAX_ROWS, flag="-n")
    seed: int = setting(42, help="sampling seed", low=0, high=2**63 - 1)
    stop: tuple[str, ...] = setting(help="stop before this text (repeatable)", factory=tuple)
    scope: str = setting(
        "block",
        help="stop at the end of the line, of the block (a dedent or a new top-level def/class/if/print/#/@) or "
        "only at the end of the file (EOS)",
        choices=SCOPES,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))  # a list from the command line or JSON
        check(self)
        check_temperature(self.temperature)
        if not all(isinstance(s, str) and s for s in self.stop):
            raise PycpilotError("--stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check_temperature(t: float) -> None:
    """0 (greedy) or a finite temperature that does not overflow the logits; `eval` checks its list with it."""
    if not (t == 0 or MIN_TEMPERATURE <= t < math.inf):
        raise PycpilotError(f"--temperature must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:g}")


def sampling_setting(name: str, default: Any = None, **changes: Any) -> Any:
    """The field `name` of SamplingParams declared on another config (complete's, eval's) with its help and
    bounds, optionally another default or other bounds (`high=` for eval's batches)."""
    original = next(f for f in fields(SamplingParams) if f.name == name)
    spec = replace(original.metadata["spec"], **changes)
    if default is not None:
        return field(default=default, metadata={"spec": spec})
    if name == "stop":
        return field(default_factory=list, metadata={"spec": spec})
    return field(default=original.default, metadata={"spec": spec})


SAMPLING_FIELDS = tuple(f.name for f in fields(SamplingParams))
