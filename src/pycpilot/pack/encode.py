"""Files to token ids, the pack's core: per-file FIM layout, the encoder, and the block writer.

`encode_files` turns any range of a split's files into the same ids the whole split would give there (a file's
layout depends only on its index), so one process (`build.py`) and parallel tasks (`trove.py`) pack alike.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from pycpilot.errors import PycpilotError
from pycpilot.pack import fim
from pycpilot.pack.config import PackConfig
from pycpilot.pack.encoder import CheckedEncoder
from pycpilot.pretrained import tokenizer_folder
from pycpilot.tokenizer.load import load_tokenizer
from pycpilot.tokenizer.specials import CODE_SPECIALS, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX


@dataclass
class SplitStats:
    files: int = 0
    bytes: int = 0
    text_tokens: int = 0  # tokens of the files' text alone
    tokens: int = 0  # everything written or dropped: text + <|endoftext|> + FIM tokens
    blocks: int = 0
    tokens_dropped: int = 0
    fim_files: int = 0
    fim_spm_files: int = 0
    encode_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plan:
    """How to lay out one batch: the texts to encode, and per file None (left to right) or SPM yes/no."""

    pieces: list[str]
    fim: list[bool | None]


def _plan_batch(texts: list[str], first_index: int, split: str, cfg: PackConfig) -> _Plan:
    pieces: list[str] = []
    layouts: list[bool | None] = []
    use_fim = cfg.fim_rate > 0 and split in cfg.fim_splits
    for offset, text in enumerate(texts):
        rng = random.Random(f"{cfg.seed}:{split}:{first_index + offset}")  # per file: any batch size, same data
        if use_fim and rng.random() < cfg.fim_rate:
            spm = rng.random() < cfg.fim_spm_rate
            layouts.append(spm)
            pieces.extend(fim.cut(text, rng))
        else:
            layouts.append(None)
            pieces.append(text)
    return _Plan(pieces, layouts)


class BlockWriter:
    """Appends token ids and writes every full block; the carry never exceeds one block."""

    def __init__(self, file: BinaryIO, context_length: int, dtype: np.dtype) -> None:
        self.file, self.ctx, self.dtype = file, context_length, dtype
        self.carry = np.empty(0, dtype)
        self.blocks = 0

    def add(self, ids: list[int]) -> None:
        arr = np.concatenate([self.carry, np.asarray(ids, dtype=self.dtype)])
        full = len(arr) // self.ctx
        self.file.write(arr[: full * self.ctx].tobytes())
        self.carry = arr[full * self.ctx :]
        self.blocks += full


def encode_files(
    ds: Any,
    rows: range,
    split: str,
    cfg: PackConfig,
    prep: Prepared,
    emit: Callable[[list[int]], None],
    bar: tqdm | None = None,
) -> SplitStats:
    """Encode files `rows` of a split (FIM per file, <|endoftext|> after each) and hand the ids to `emit`.

    Each file's layout depends only on its index, so any range split gives the same stream in pieces."""
    stats = SplitStats()
    for start in range(rows.start, rows.stop, cfg.batch_files):
        texts = ds[start : min(start + cfg.batch_files, rows.stop)]["content"]
        plan = _plan_batch(texts, start, split, cfg)
        t0 = time.perf_counter()
        encoded = prep.enc.encode_batch(plan.pieces)
        stats.encode_s += time.perf_counter() - t0
        seq: list[int] = []
        k = 0  # next unread piece of `encoded`
        for text, how in zip(texts, plan.fim, strict=True):
            n_bytes = len(text.encode("utf-8"))
            stats.files += 1
            stats.bytes += n_bytes
            if bar is not None:
                bar.update(n_bytes)
            if how is None:
                ids = encoded[k]
                k += 1
                stats.text_tokens += len(ids)
                seq.extend(ids)
            else:
                assert prep.fim_ids is not None
                prefix, middle, suffix = encoded[k : k + 3]
                k += 3
                stats.text_tokens += len(prefix) + len(middle) + len(suffix)
                stats.fim_files += 1
                stats.fim_spm_files += how
                seq.extend(fim.layout(prefix, middle, suffix, how, prep.fim_ids))
            seq.append(prep.hf.eos_token_id)
        stats.tokens += len(seq)
        emit(seq)
    return stats


def _dtype(cfg: PackConfig, vocab_size: int) -> np.dtype:
    if cfg.dtype == "uint16" and vocab_size > 2**16:
        raise PycpilotError(f"the vocabulary ({vocab_size:,} tokens) does not fit --dtype uint16 (at most 65,536)")
    if cfg.dtype == "auto":
        return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
    return np.dtype(cfg.dtype)


@dataclass
class Prepared:
    """What every part of a pack needs: the tokenizer, block length, storage type, FIM ids and encoder."""

    tok_dir: Path
    hf: Any
    ctx: int
    dtype: np.dtype
    fim_ids: fim.FimIds | None
    added: list[str]
    enc: CheckedEncoder
    own_copy: bool  # the pack keeps the tokenizer it was made with


def prepare(cfg: PackConfig) -> Prepared:
    """Check the settings against the tokenizer and build the encoder (one-line errors for every mismatch)."""
    tok_dir = tokenizer_folder(cfg.tokenizer)  # a tokenizer folder, or a model's (local, a training run, hf:)
    hf = load_tokenizer(tok_dir)
    ctx = cfg.resolved_context_length()
    positions = _model_positions(tok_dir)
    if positions and cfg.context_length is None and cfg.preset is None and ctx > positions:
        ctx = positions  # a model's tokenizer (--init-from): blocks no longer than the model reads
    limit = getattr(hf, "model_max_length", None)
    if isinstance(limit, int) and ctx > limit:
        raise PycpilotError(
            f"--context-length {ctx} is larger than models for this tokenizer use ({limit} positions, "
            f"model_max_length in {cfg.tokenizer}/tokenizer_config.json)"
        )
    if hf.eos_token_id is None:
        raise PycpilotError(f"tokenizer {cfg.tokenizer} has no end-of-text token to put between files")
    fim_ids, added = None, []
    if cfg.fim_rate > 0:
        added = [t for t in CODE_SPECIALS if t not in hf.get_vocab()]
        if added:  # a pretrained model's tokenizer: the tokens go after its last id, training adds their rows
            hf.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)
        vocab = hf.get_vocab()
        fim_ids = fim.FimIds(vocab[FIM_PREFIX], vocab[FIM_MIDDLE], vocab[FIM_SUFFIX])
    dtype = _dtype(cfg, len(hf))
    enc = CheckedEncoder(hf, tok_dir, cfg.encoder, cfg.threads)  # encodes text only: added tokens do not matter
    if cfg.encoder == "tiktoken" and enc.fast is None:
        raise PycpilotError(f"--encoder tiktoken cannot be used: {enc.note}")
    own_copy = bool(added) or tok_dir != Path(cfg.tokenizer)
    return Prepared(tok_dir, hf, ctx, dtype, fim_ids, added, enc, own_copy)


def _model_positions(folder: Path) -> int | None:
    """The positions of the model whose folder holds this tokenizer, if it is one."""
    try:
        positions = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("n_positions")
    except (OSError, ValueError, AttributeError):
        return None
    return positions if isinstance(positions, int) and positions > 1 else None
