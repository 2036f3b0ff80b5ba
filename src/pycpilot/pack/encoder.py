"""Fast, exact encoding for packing.

A byte-level BPE with GPT-2's pipeline is re-expressed as a tiktoken encoding (same regex, same merges as
ranks), which encodes 2-3x faster than `tokenizers` here. It is only used when the tokenizer has exactly that
pipeline, and its output is checked against the tokenizer's own on a sample of every batch; on any
difference PYCPilot switches to the tokenizer itself for the rest of the run and says so.
File text is always data: special-token strings inside a file are encoded as plain text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CHECK_EVERY = 32  # every 32nd file of a batch is also encoded by the tokenizer and compared


def byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, reversed (transformers 5 no longer exports it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _is_gpt2_pipeline(spec: dict[str, Any]) -> bool:
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    return (
        model.get("type") == "BPE"
        and not model.get("dropout")
        and not model.get("byte_fallback")
        and spec.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
    )


class HFEncoder:
    name = "tokenizers"

    def __init__(self, hf: Any) -> None:
        self.backend = hf.backend_tokenizer
        self.backend.encode_special_tokens = True  # file text is data, never control tokens

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]


class TiktokenEncoder:
    name = "tiktoken"

    def __init__(self, spec: dict[str, Any], threads: int) -> None:
        import tiktoken

        decode = byte_decoder()
        vocab: dict[str, int] = spec["model"]["vocab"]
        specials = {t["content"] for t in spec.get("added_tokens", [])}
        ranks = {bytes(decode[ch] for ch in tok): i for tok, i in vocab.items() if tok not in specials}
        self.encoding = tiktoken.Encoding("pycpilot", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
        self.threads = threads

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=self.threads)


class CheckedEncoder:
    """tiktoken where it is known to agree with the tokenizer, verified as it goes."""

    def __init__(self, hf: Any, tokenizer_dir: Path, prefer: str, threads: int) -> None:
        self.reference = HFEncoder(hf)
        self.fast: TiktokenEncoder | None = None
        self.note = ""
        if prefer in ("auto", "tiktoken"):
            spec = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
            if _is_gpt2_pipeline(spec):
                try:
                    self.fast = TiktokenEncoder(spec, threads)
                except (ImportError, KeyError, ValueError) as exc:
                    self.note = f"tiktoken unavailable ({exc}); used tokenizers"
            else:
                self.note = "tokenizer is not a plain GPT-2-style byte-level BPE; used tokenizers"

    @property
    def name(self) -> str:
        return self.fast.name if self.fast else self.reference.name

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.fast is None:
            return self.reference.encode_batch(texts)
        ids = self.fast.encode_batch(texts)
        sample = list(range(0, len(texts), CHECK_EVERY))
        expected = self.reference.encode_batch([texts[i] for i in sample])
        if any(ids[i] != e for i, e in zip(sample, expected, strict=True)):
            self.fast = None
            self.note = "tiktoken disagreed with the tokenizer on a file; switched to tokenizers"
            return self.reference.encode_batch(texts)
        return ids
