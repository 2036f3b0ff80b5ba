"""Model and data presets, in one place. Every stage reads its defaults for a preset from here.

`small` is the seed's recipe (GPT-2 small, vocabulary 52,000, context 1,024); `medium` and `large` are the
GPT-2 sizes; `tiny` is sized to learn something useful in minutes on a 2-core CPU from a corpus of tens of
megabytes (the stdlib), so its vocabulary and context are small too.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycpilot.errors import PycpilotError


@dataclass(frozen=True)
class Preset:
    name: str
    vocab_size: int
    context_length: int
    n_layer: int
    n_head: int
    n_embd: int


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", vocab_size=8192, context_length=256, n_layer=4, n_head=4, n_embd=256),
        Preset("small", vocab_size=52000, context_length=1024, n_layer=12, n_head=12, n_embd=768),
        Preset("medium", vocab_size=52000, context_length=1024, n_layer=24, n_head=16, n_embd=1024),
        Preset("large", vocab_size=52000, context_length=1024, n_layer=36, n_head=20, n_embd=1280),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise PycpilotError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
