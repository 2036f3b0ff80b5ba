"""`pycpilot pack`: tokenize every file, add <|endoftext|>, concatenate and cut into blocks (seed 7.4.3).

Unlike the seed's `return_overflowing_tokens` recipe, which throws away the tail of every file (9.6% of the
stdlib's tokens at 1,024), files are concatenated first, so only the last partial block of a split is lost.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from pycpilot.data.load import SPLITS, data_hash, load_data_dir
from pycpilot.errors import PycpilotError
from pycpilot.manifest import MANIFEST, atomic_output_dir, base_manifest, check_output_dir, write_json_atomic
from pycpilot.pack import fim
from pycpilot.pack.config import PackConfig
from pycpilot.pack.encoder import CheckedEncoder
from pycpilot.pretrained import tokenizer_folder
from pycpilot.tokenizer.load import load_tokenizer, tokenizer_hash
from pycpilot.tokenizer.specials import CODE_SPECIALS, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

TOKENIZER = "tokenizer"  # the pack's own copy of a tokenizer it changed or took from a model


@dataclass
class PackResult:
    out: Path
    manifest: dict[str, Any]


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


class _BlockWriter:
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


def _pack_split(
    ds: Any,
    split: str,
    cfg: PackConfig,
    enc: CheckedEncoder,
    ctx: int,
    dtype: np.dtype,
    eos: int,
    fim_ids: fim.FimIds | None,
    folder: Path,
    bar: tqdm,
) -> SplitStats:
    stats = SplitStats()
    with open(folder / f"{split}.bin", "wb") as f:
        writer = _BlockWriter(f, ctx, dtype)
        for start in range(0, len(ds), cfg.batch_files):
            texts = ds[start : start + cfg.batch_files]["content"]
            plan = _plan_batch(texts, start, split, cfg)
            t0 = time.perf_counter()
            encoded = enc.encode_batch(plan.pieces)
            stats.encode_s += time.perf_counter() - t0
            seq: list[int] = []
            k = 0  # next unread piece of `encoded`
            for text, how in zip(texts, plan.fim, strict=True):
                n_bytes = len(text.encode("utf-8"))
                stats.files += 1
                stats.bytes += n_bytes
                bar.update(n_bytes)
                if how is None:
                    ids = encoded[k]
                    k += 1
                    stats.text_tokens += len(ids)
                    seq.extend(ids)
                else:
                    assert fim_ids is not None
                    prefix, middle, suffix = encoded[k : k + 3]
                    k += 3
                    stats.text_tokens += len(prefix) + len(middle) + len(suffix)
                    stats.fim_files += 1
                    stats.fim_spm_files += how
                    seq.extend(fim.layout(prefix, middle, suffix, how, fim_ids))
                seq.append(eos)
            stats.tokens += len(seq)
            writer.add(seq)
    stats.blocks = writer.blocks
    stats.tokens_dropped = len(writer.carry)
    return stats


def _dtype(cfg: PackConfig, vocab_size: int) -> np.dtype:
    if cfg.dtype == "uint16" and vocab_size > 2**16:
        raise PycpilotError(f"the vocabulary ({vocab_size:,} tokens) does not fit --dtype uint16 (at most 65,536)")
    if cfg.dtype == "auto":
        return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
    return np.dtype(cfg.dtype)


def pack_dataset(cfg: PackConfig) -> PackResult:
    """Pack the train and valid splits into blocks; nothing is left at `cfg.out` if anything fails."""
    cfg.validate()
    out = Path(cfg.out)
    inputs = (Path(cfg.data), Path(cfg.tokenizer))
    check_output_dir(out, cfg.overwrite, "pack", inputs)
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
    dsd = load_data_dir(cfg.data)
    enc = CheckedEncoder(hf, tok_dir, cfg.encoder, cfg.threads)  # encodes text only: added tokens do not matter
    own_copy = bool(added) or tok_dir != Path(cfg.tokenizer)  # the pack keeps the tokenizer it was made with
    if cfg.encoder == "tiktoken" and enc.fast is None:
        raise PycpilotError(f"--encoder tiktoken cannot be used: {enc.note}")

    start = time.perf_counter()
    total_bytes = sum(_split_bytes(dsd[s]) for s in SPLITS)
    with atomic_output_dir(out, cfg.overwrite, "pack", inputs) as tmp:
        bar = tqdm(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            desc="pack",
            disable=cfg.quiet,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        stats: dict[str, SplitStats] = {}
        try:
            for split in SPLITS:
                bar.set_description(f"pack: {split}")
                stats[split] = _pack_split(dsd[split], split, cfg, enc, ctx, dtype, hf.eos_token_id, fim_ids, tmp, bar)
        finally:
            bar.close()
        elapsed = time.perf_counter() - start
        used = tok_dir
        if own_copy:
            hf.save_pretrained(str(tmp / TOKENIZER))
            used = tmp / TOKENIZER
        manifest = _manifest(cfg, hf, ctx, dtype, enc, stats, elapsed)
        manifest["tokenizer"] = {
            "path": str((out / TOKENIZER).resolve() if own_copy else tok_dir),
            "sha256": tokenizer_hash(used),
            "source": str(cfg.tokenizer),
            "added_tokens": added,
        }
        write_json_atomic(tmp / MANIFEST, manifest)

    if not cfg.quiet:
        for split, s in stats.items():
            print(
                f"pack {split}: {s.files:,} files, {s.tokens:,} tokens -> {s.blocks:,} blocks of {ctx}, "
                f"{s.tokens_dropped} tokens dropped (last partial block), {s.fim_files:,} FIM files"
            )
        print(f"pack: {total_bytes / 1e6 / max(elapsed, 1e-9):.1f} MB/s with {enc.name}, {elapsed:.1f} s -> {out}")
        if enc.note:
            print(f"note: {enc.note}")
        if added:
            print(
                f"pack: {cfg.tokenizer}'s tokenizer had no {', '.join(added)}: added after its last id (saved in "
                f"{out / TOKENIZER}); training from its model adds their rows (--fim-rate 0 packs without them)"
            )
    return PackResult(out=out, manifest=manifest)


def _model_positions(folder: Path) -> int | None:
    """The positions of the model whose folder holds this tokenizer, if it is one."""
    try:
        positions = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("n_positions")
    except (OSError, ValueError, AttributeError):
        return None
    return positions if isinstance(positions, int) and positions > 1 else None


def _split_bytes(ds: Any) -> int:
    """UTF-8 size of the split, from the data stage's `size` column when present (it is exact)."""
    if "size" in ds.column_names:
        try:
            return sum(int(s) for s in ds["size"])
        except (TypeError, ValueError):
            pass
    return sum(len(t.encode("utf-8")) for t in ds["content"])


def _manifest(
    cfg: PackConfig,
    hf: Any,
    ctx: int,
    dtype: np.dtype,
    enc: CheckedEncoder,
    stats: dict[str, SplitStats],
    elapsed: float,
) -> dict[str, Any]:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    manifest = base_manifest("pack", config)
    splits = {}
    for split, s in stats.items():
        row = {k: v for k, v in asdict(s).items() if k not in ("extra", "encode_s")}
        row["tokens_per_byte"] = round(s.text_tokens / s.bytes, 4) if s.bytes else None
        row["fim"] = split in cfg.fim_splits and cfg.fim_rate > 0
        splits[split] = row
    manifest.update(
        {
            "format": "{split}.bin: blocks x context_length token ids, C order, no header (see pycpilot.pack.reader)",
            "context_length": ctx,
            "dtype": dtype.name,
            "vocab_size": len(hf),
            "eos_token_id": hf.eos_token_id,
            "data": {"path": str(cfg.data), "content_sha256": data_hash(cfg.data)},
            "fim": {"rate": cfg.fim_rate, "spm_rate": cfg.fim_spm_rate, "splits": cfg.fim_splits, "seed": cfg.seed},
            "encoder": enc.name,
            "encoder_note": enc.note,
            "splits": splits,
            "timings": {"total_s": round(elapsed, 3), "encode_s": round(sum(s.encode_s for s in stats.values()), 3)},
        }
    )
    return manifest
