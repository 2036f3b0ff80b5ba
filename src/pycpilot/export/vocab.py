"""A tokenizer as llama.cpp's `gpt2` tokenizer model reads it: tokens, their types, merges, special ids.

Guarantee: `gguf_vocab` accepts only what llama.cpp would split and merge exactly as `tokenizers` does (a
byte-level BPE with GPT-2's split regex, no normaliser, no byte fallback) and refuses anything else in one line;
the ids it writes are the tokenizer's own, so a prompt tokenizes to the same ids on both sides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.tokenizer.specials import EOS, FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX

# GPT-2's split pattern as tokenizers' ByteLevel(use_regex=True) applies it; llama.cpp's `gpt-2` pre-tokenizer
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# llama.cpp's token types (gguf.TokenType): plain text, control (special) and user-defined (added, not special)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

# The FIM tokens the model was trained with, by llama.cpp's metadata key. Not `<file_sep>` as fim_sep: the pack
# never writes it, and with the id set llama.cpp's /infill would put that untrained token before every context
# file; without it the context goes in as plain text above the prefix, much as `serve`'s /infill does.
FIM_KEYS = {"pre": FIM_PREFIX, "suf": FIM_SUFFIX, "mid": FIM_MIDDLE, "pad": FIM_PAD}


@dataclass
class Vocab:
    tokens: list[str]  # byte-level spelling, index = id; rows past the tokenizer are "[PAD<id>]"
    types: list[int]
    merges: list[str]  # "a b", in rank order
    eos: int
    bos: int
    fim: dict[str, int] = field(default_factory=dict)  # "pre"/"suf"/"mid"/"pad" -> id, those present


def _split_is_gpt2(pre: Any) -> bool:
    """The pre-tokenizer splits as GPT-2 does: ByteLevel with its regex, or Split(GPT-2's regex) + ByteLevel."""
    if not isinstance(pre, dict):
        return False
    if pre.get("type") == "ByteLevel":
        return pre.get("use_regex", True) and not pre.get("add_prefix_space", False)
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers") or []) == 2:
        split, byte_level = pre["pretokenizers"]
        if not isinstance(split, dict) or not isinstance(split.get("pattern") or {}, dict):
            return False
        pattern = (split.get("pattern") or {}).get("Regex")
        return (
            split.get("type") == "Split"
            and pattern == GPT2_SPLIT
            and split.get("behavior") == "Isolated"
            and not split.get("invert", False)
            and isinstance(byte_level, dict)
            and byte_level.get("type") == "ByteLevel"
            and not byte_level.get("use_regex", True)
            and not byte_level.get("add_prefix_space", False)
        )
    return False


def check_byte_level_bpe(spec: dict[str, Any], where: str) -> None:
    """One line for the first thing llama.cpp's gpt2 tokenizer would do differently."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise PycpilotError(f"{where}: the tokenizer is {model.get('type') or 'unknown'}, not a byte-level BPE")
    if model.get("byte_fallback"):
        raise PycpilotError(f"{where}: the tokenizer is a BPE with byte fallback, not a byte-level BPE (GPT-2's)")
    decoder = (spec.get("decoder") or {}).get("type")
    if decoder not in ("ByteLevel", None):
        raise PycpilotError(f"{where}: the tokenizer's decoder is {decoder}, not GPT-2's ByteLevel")
    odd = [o for o in ("ignore_merges", "dropout", "continuing_subword_prefix", "end_of_word_suffix") if model.get(o)]
    if odd:  # all unset (falsy) in GPT-2's BPE
        raise PycpilotError(f"{where}: the tokenizer's BPE sets {odd[0]}, which llama.cpp's gpt2 tokenizer lacks")
    if not _split_is_gpt2(spec.get("pre_tokenizer")):
        raise PycpilotError(
            f"{where}: the tokenizer's pre-tokenizer is not GPT-2's byte-level split "
            f"({json.dumps(spec.get('pre_tokenizer'))[:120]}); llama.cpp would split text differently"
        )
    if spec.get("normalizer") is not None:
        kind = spec["normalizer"].get("type")
        raise PycpilotError(f"{where}: the tokenizer has a normalizer ({kind}); GPT-2's has none")


def gguf_vocab(tokenizer: Any, rows: int, where: str) -> Vocab:
    """The tokenizer's vocabulary for a model with `rows` embedding rows (checked first)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    check_byte_level_bpe(spec, where)
    vocab = tokenizer.get_vocab()  # base and added tokens, by id
    top = max(vocab.values(), default=-1)
    if top >= rows:
        raise PycpilotError(f"{where}: the tokenizer has ids up to {top:,} but the model only {rows:,} rows")
    by_id = {i: t for t, i in vocab.items()}
    added = {a["content"]: bool(a.get("special")) for a in spec.get("added_tokens") or []}
    tokens, types = [], []
    for i in range(rows):
        token = by_id.get(i)
        if token is None:  # embedding rows the tokenizer never produces (a padded vocabulary)
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        else:
            tokens.append(token)
            types.append(NORMAL if token not in added else CONTROL if added[token] else USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges") or []]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else vocab.get(EOS)
    if eos is None:
        raise PycpilotError(f"{where}: the tokenizer has no end-of-text token")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    fim = {key: vocab[token] for key, token in FIM_KEYS.items() if token in vocab}
    return Vocab(tokens, types, merges, eos, bos, fim)
