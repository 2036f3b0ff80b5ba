"""`pycpilot tokenizer`: train a GPT-2-style byte-level BPE on the train split (seed 7.4.2)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pycpilot.data.load import data_hash, load_data_dir
from pycpilot.errors import PycpilotError
from pycpilot.manifest import MANIFEST, atomic_output_dir, base_manifest, check_output_dir, write_json_atomic
from pycpilot.tokenizer.config import TokenizerConfig
from pycpilot.tokenizer.load import load_any_tokenizer, tokenizer_hash
from pycpilot.tokenizer.specials import ADD_NUMBERS, CODE_SPECIALS, EOS


@dataclass
class TokenizerResult:
    out: Path
    manifest: dict[str, Any]


def corpus_batches(train: Any, batch_files: int) -> Iterator[list[str]]:
    """The seed's iterator: `batch_files` files at a time, so memory stays bounded on any corpus size."""
    for start in range(0, len(train), batch_files):
        yield train[start : start + batch_files]["content"]


def sample_files(train: Any, budget: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """Whole files drawn in a seeded random order until `budget` bytes are reached (the last one crossing it),
    kept in corpus order; sizes come from the schema's `size` column, so no file is read to choose."""
    import numpy as np

    try:
        sizes = np.array([int(x) for x in train["size"]], dtype=np.int64)
    except (KeyError, ValueError, TypeError):  # not the codeparrot-ds schema: measure the files (reads them once)
        sizes = np.array([len(t.encode("utf-8")) for t in train["content"]], dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(sizes))
    taken = int(np.searchsorted(np.cumsum(sizes[order]), budget)) + 1
    chosen = np.sort(order[:taken])
    info = {"seed": seed, "bytes_requested": budget, "files": len(chosen), "bytes": int(sizes[chosen].sum()),
            "of_files": len(sizes), "of_bytes": int(sizes.sum())}  # fmt: skip
    return train.select(chosen.tolist()), info


def gpt2_style_bpe(vocab_size: int, min_frequency: int, specials: list[str], show_progress: bool) -> tuple:
    """GPT-2's pipeline built with `tokenizers`: its regex, the 256-byte alphabet, byte-level decoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    return tok, trainer


def wrap(tok: Any, model_max_length: int, extra_specials: list[str]) -> Any:
    """A transformers tokenizer around the trained `tokenizers` object (loads back with AutoTokenizer)."""
    from transformers import GPT2Tokenizer

    return GPT2Tokenizer(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        additional_special_tokens=extra_specials,
        clean_up_tokenization_spaces=False,  # decode must give back exactly what was encoded
        add_prefix_space=False,
        model_max_length=model_max_length,
    )


def _train_ours(cfg: TokenizerConfig, train: Any, vocab_size: int, specials_extra: list[str]) -> Any:
    # The trainer draws its own bars; on a non-terminal they come out as blank lines.
    show = not cfg.quiet and sys.stderr.isatty()
    tok, trainer = gpt2_style_bpe(vocab_size, cfg.min_frequency, [EOS, *specials_extra], show)
    tok.train_from_iterator(corpus_batches(train, cfg.batch_files), trainer, length=len(train))
    return wrap(tok, cfg.model_max_length, specials_extra)


def _train_from_base(cfg: TokenizerConfig, base: Any, train: Any, vocab_size: int) -> Any:
    new = [t for t in CODE_SPECIALS if t not in base.get_vocab()]
    if base.eos_token is None:
        new.insert(0, EOS)
    try:
        return base.train_new_from_iterator(
            corpus_batches(train, cfg.batch_files),
            vocab_size,
            length=len(train),
            new_special_tokens=new,
            min_frequency=cfg.min_frequency,
        )
    except Exception as exc:  # a base that is not a fast tokenizer cannot be retrained
        raise PycpilotError(f"cannot train a new tokenizer from --base {cfg.base}: {exc}") from None


def _save(hf: Any, folder: Path) -> list[str]:
    """save_pretrained, plus the three files transformers 5 no longer writes but the seed lists."""
    hf.save_pretrained(str(folder))
    model = hf.backend_tokenizer.model
    if type(model).__name__ == "BPE":
        model.save(str(folder))  # vocab.json and merges.txt
    special_map: dict[str, Any] = {k: getattr(hf, k) for k in ("bos_token", "eos_token", "unk_token") if getattr(hf, k)}
    special_map["additional_special_tokens"] = [t for t in hf.all_special_tokens if t not in special_map.values()]
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
    return sorted(p.name for p in folder.iterdir())


def encode_texts(hf: Any, texts: list[str]) -> list[list[int]]:
    """Token ids without special-token parsing (file text is data, never control tokens), in bulk."""
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        return [hf.encode(t, add_special_tokens=False) for t in texts]
    backend.encode_special_tokens = True
    try:
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    finally:
        backend.encode_special_tokens = False


def describe(hf: Any, texts: list[str], n_bytes: int) -> dict[str, Any]:
    """The seed's comparison figures for one tokenizer: the add_numbers split and tokens per byte."""
    tokens = sum(len(ids) for ids in encode_texts(hf, texts)) if texts else 0
    return {
        "vocab_size": len(hf),
        "add_numbers": hf.tokenize(ADD_NUMBERS),
        "valid_tokens": tokens,
        "valid_tokens_per_byte": round(tokens / n_bytes, 4) if n_bytes else None,
    }


def train_tokenizer(cfg: TokenizerConfig) -> TokenizerResult:
    """Train, save and compare; nothing is left at `cfg.out` if anything fails."""
    cfg.validate()
    out = Path(cfg.out)
    check_output_dir(out, cfg.overwrite, "tokenizer", (Path(cfg.data),))
    dsd = load_data_dir(cfg.data)
    train, valid = dsd["train"], dsd["valid"]
    if len(train) == 0:
        raise PycpilotError(f"{cfg.data} has an empty train split: nothing to learn a vocabulary from")
    sample = None
    if cfg.sample is not None:
        train, sample = sample_files(train, cfg.sample, cfg.sample_seed)
    base = load_any_tokenizer(cfg.base) if cfg.base else None
    compare = load_any_tokenizer(cfg.compare) if cfg.compare not in (None, "none") else None
    vocab_size = cfg.resolved_vocab_size()
    log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))

    with atomic_output_dir(out, cfg.overwrite, "tokenizer", (Path(cfg.data),)) as tmp:
        start = time.perf_counter()
        drawn = ""
        if sample:
            drawn = f" (seed {sample['seed']}: {sample['bytes'] / 1e6:,.1f} of {sample['of_bytes'] / 1e6:,.1f} MB)"
        log(f"tokenizer: training a byte-level BPE, vocabulary {vocab_size:,}, on {len(train):,} files{drawn}")
        hf = (
            _train_from_base(cfg, base, train, vocab_size)
            if base
            else _train_ours(cfg, train, vocab_size, CODE_SPECIALS)
        )
        t_train = time.perf_counter() - start
        files = _save(hf, tmp)

        valid_texts = list(valid["content"])
        n_bytes = sum(len(t.encode("utf-8")) for t in valid_texts)
        if compare is None and cfg.compare != "none":
            # The seed's recipe: the same BPE on the same data, without the FIM/file-separator tokens.
            compare = _train_ours(cfg, train, vocab_size, [])
            baseline_name = "same byte-level BPE without the 5 FIM/file-separator tokens (the seed's recipe)"
        else:
            baseline_name = cfg.compare or "none"
        ours = describe(hf, valid_texts, n_bytes)
        theirs = describe(compare, valid_texts, n_bytes) if compare is not None else None
        manifest = base_manifest("tokenizer", {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()})
        manifest.update(
            {
                "data": {
                    "path": str(cfg.data),
                    "content_sha256": data_hash(cfg.data),
                    "train_files": len(train),
                    "valid_files": len(valid),
                    "valid_bytes": n_bytes,
                },
                "sample": sample,
                "vocab_size_requested": vocab_size,
                "vocab_size": len(hf),
                "vocab_filled": len(hf) >= vocab_size,
                "special_tokens": {t: hf.convert_tokens_to_ids(t) for t in [EOS, *CODE_SPECIALS]},
                "files": files,
                "tokenizer_sha256": tokenizer_hash(tmp),
                "comparison": {"baseline": baseline_name, "ours": ours, "baseline_figures": theirs},
                "timings": {"train_s": round(t_train, 3), "total_s": round(time.perf_counter() - start, 3)},
            }
        )
        write_json_atomic(tmp / MANIFEST, manifest)

    if len(hf) < vocab_size:
        log(
            f"note: the corpus filled only {len(hf):,} of the {vocab_size:,} vocabulary entries asked for "
            f"(no pair left seen {cfg.min_frequency}+ times); the tokenizer has {len(hf):,}"
        )
    log(_comparison_text(ours, theirs, baseline_name))
    log(f"tokenizer: vocabulary {len(hf):,}, trained in {t_train:.1f} s -> {out}")
    return TokenizerResult(out=out, manifest=manifest)


def _comparison_text(ours: dict, theirs: dict | None, baseline: str) -> str:
    lines = ["add_numbers, new tokenizer:", f"  {ours['add_numbers']}"]
    if theirs is not None:
        lines += [f"add_numbers, baseline ({baseline}):", f"  {theirs['add_numbers']}"]
    lines.append(
        f"valid tokens per byte: ours {ours['valid_tokens_per_byte']}"
        + (f", baseline {theirs['valid_tokens_per_byte']}" if theirs else "")
    )
    return "\n".join(lines)
