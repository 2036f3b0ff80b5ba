"""`--init-from SRC`: the model a fine-tuning starts from, loaded and checked before anything is written.

Guarantee: `load_source` gives a GPT-2 family model with its tokenizer (pycpilot/pretrained.py finds SRC),
`check_tokenizers` refuses a pack made with another tokenizer, and `grow_vocabulary` adds rows for tokens
the pack added (FIM's) without moving any old id's embedding.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.presets import FINE_TUNING, fine_tuning_lr
from pycpilot.pretrained import check_supported, source_folder
from pycpilot.train.config import TrainConfig


def load_source(src: str | Path) -> Any:
    """SRC's model and tokenizer (generate.load.Loaded), checked: exists, loads, GPT-2 family."""
    from pycpilot.generate.load import load_model

    folder, note = source_folder(src)
    try:  # the architecture first: another one would fail later with transformers' words, or not at all
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception:  # an unreadable config.json: load_model says it in one line
        config = None
    if config is not None:
        check_supported(config, src)
    try:
        loaded = load_model(folder)
    except PycpilotError as exc:
        raise PycpilotError(f"--init-from {src}: {exc}") from None
    check_supported(loaded.model.config, src)
    loaded.note = note
    return loaded


def fine_tuning_config(cfg: TrainConfig, config: Any, block: int) -> TrainConfig:
    """`cfg` with SRC's architecture (size options that contradict it are refused) and the fine-tuning
    defaults of presets.FINE_TUNING for whatever was not given; the manifest then shows what ran."""
    shape = {"n_layer": config.n_layer, "n_head": config.n_head, "n_embd": config.n_embd,
             "n_positions": config.n_positions}  # fmt: skip
    for name, theirs in shape.items():
        given = getattr(cfg, name)
        if given is not None and given != theirs:
            raise PycpilotError(
                f"--{name.replace('_', '-')} {given} contradicts --init-from {cfg.init_from}, which has {theirs}: "
                "the architecture comes from it (leave the size options out)"
            )
    if block > config.n_positions:
        raise PycpilotError(
            f"the packed blocks hold {block} tokens but {cfg.init_from} has {config.n_positions} positions: pack "
            f"again with --context-length {config.n_positions} (or less)"
        )
    defaults = {
        **FINE_TUNING,
        "lr": fine_tuning_lr(config.n_embd),
        "dropout": float(getattr(config, "resid_pdrop", 0.0)),
    }
    return replace(cfg, **shape, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def grow_vocabulary(model: Any, size: int) -> int:
    """Give `model` `size` token rows (tokens the pack added, such as FIM's): old ids keep their embeddings, new
    rows start at the mean of the old ones (a neutral guess the first steps move). Returns the rows added."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if size <= old:
        return 0
    model.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[old:] = weight[:old].mean(dim=0)
    model.config.vocab_size = size
    return size - old


def _spec(tokenizer: Any) -> dict[str, Any]:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def check_tokenizers(src_tokenizer: Any, pack_tokenizer: Any, src: str | Path, packed: Path) -> None:
    """The pack's tokenizer must be SRC's (the same merges, splitting and ids), perhaps with tokens added after
    SRC's last id; anything else would feed the model ids that mean other text."""
    ours, theirs = _spec(src_tokenizer), _spec(pack_tokenizer)
    same = all(ours.get(k) == theirs.get(k) for k in ("model", "pre_tokenizer", "normalizer", "decoder"))
    if same:
        vocab, packed_vocab = src_tokenizer.get_vocab(), pack_tokenizer.get_vocab()
        same = all(packed_vocab.get(token) == i for token, i in vocab.items())
        same = same and all(i >= len(vocab) for t, i in packed_vocab.items() if t not in vocab)
    if not same:
        raise PycpilotError(
            f"{packed} was packed with another tokenizer than {src}'s: pack again with --tokenizer {src}"
        )
