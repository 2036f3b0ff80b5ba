"""What a finished pack leaves and says: its manifest (with the tokenizer it used) and its summary lines."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pycpilot.data.load import data_hash
from pycpilot.manifest import MANIFEST, base_manifest, write_json_atomic
from pycpilot.pack.config import PackConfig
from pycpilot.pack.encode import Prepared, SplitStats
from pycpilot.pack.encoder import CheckedEncoder
from pycpilot.tokenizer.load import tokenizer_hash

TOKENIZER = "tokenizer"  # the pack's own copy of a tokenizer it changed or took from a model


@dataclass
class PackResult:
    out: Path
    manifest: dict[str, Any]


def finish(cfg: PackConfig, prep: Prepared, stats: dict[str, SplitStats], elapsed: float, tmp: Path,
           engine: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The tokenizer copy (if the pack changed or borrowed one) and the manifest, written into `tmp`."""
    out = Path(cfg.out)
    used = prep.tok_dir
    if prep.own_copy:
        prep.hf.save_pretrained(str(tmp / TOKENIZER))
        used = tmp / TOKENIZER
    manifest = _manifest(cfg, prep.hf, prep.ctx, prep.dtype, prep.enc, stats, elapsed)
    manifest["engine"] = engine
    manifest["tokenizer"] = {
        "path": str((out / TOKENIZER).resolve() if prep.own_copy else prep.tok_dir),
        "sha256": tokenizer_hash(used),
        "source": str(cfg.tokenizer),
        "added_tokens": prep.added,
    }
    write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def report(cfg: PackConfig, prep: Prepared, stats: dict[str, SplitStats], mb_s: float, elapsed: float) -> None:
    """The summary lines of a finished pack."""
    ctx, out, enc, added = prep.ctx, Path(cfg.out), prep.enc, prep.added
    for split, s in stats.items():
        print(
            f"pack {split}: {s.files:,} files, {s.tokens:,} tokens -> {s.blocks:,} blocks of {ctx}, "
            f"{s.tokens_dropped} tokens dropped (last partial block), {s.fim_files:,} FIM files"
        )
    print(f"pack: {mb_s:.1f} MB/s with {enc.name}, {elapsed:.1f} s -> {out}")
    if enc.note:
        print(f"note: {enc.note}")
    if added:
        print(
            f"pack: {cfg.tokenizer}'s tokenizer had no {', '.join(added)}: added after its last id (saved in "
            f"{out / TOKENIZER}); training from its model adds their rows (--fim-rate 0 packs without them)"
        )


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
