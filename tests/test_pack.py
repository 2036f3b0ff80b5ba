"""The pack stage: no token lost, blocks equal to direct encoding, FIM reversible, the reader, bad input."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pycpilot.data import DataConfig, build_dataset
from pycpilot.errors import PycpilotError
from pycpilot.pack import PackConfig, PackedDataset, fim, pack_dataset
from pycpilot.pack.encode import _dtype
from pycpilot.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer

from conftest import good_code, write

CTX = 32


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pcorpus")
    for r in range(5):
        (root / f"repo{r}" / ".git").mkdir(parents=True)
        for f in range(4):
            write(root / f"repo{r}" / f"m{f}.py", good_code(f"p{r}x{f}", extra=f))
    # File text that spells special tokens is still just text.
    write(root / "repo0" / "tricky.py", good_code("tricky") + '\nMARK = "<|endoftext|><fim_prefix>"\n')
    data = root.parent / "pdata"
    build_dataset(DataConfig(out=data, sources=[str(root)], num_proc=1, quiet=True, valid_fraction=0.25))
    tok = root.parent / "ptok"
    train_tokenizer(TokenizerConfig(data=data, out=tok, vocab_size=340, quiet=True, compare="none"))
    return data, tok


def _pack(stage_dirs, out: Path, **kw) -> dict:
    data, tok = stage_dirs
    kw.setdefault("context_length", CTX)
    kw.setdefault("quiet", True)
    return pack_dataset(PackConfig(data=data, tokenizer=tok, out=out, **kw)).manifest


def _stream(pack_dir: Path, split: str) -> list[int]:
    ds = PackedDataset(pack_dir, split)
    return [t for i in range(len(ds)) for t in ds[i].tolist()]


def test_no_token_is_lost_and_blocks_match_direct_encoding(stage_dirs, tmp_path: Path) -> None:
    data, tok_dir = stage_dirs
    m = _pack(stage_dirs, tmp_path / "p", fim_rate=0.0)
    tok = load_tokenizer(tok_dir)
    plain = load_tokenizer(tok_dir).backend_tokenizer
    plain.encode_special_tokens = True  # file text is data: "<|endoftext|>" in a file is not the token
    dsd = datasets.load_from_disk(str(data))
    for split in ("train", "valid"):
        expected: list[int] = []
        for text in dsd[split]["content"]:
            ids = plain.encode(text, add_special_tokens=False).ids
            if "<|endoftext|>" not in text:
                assert ids == tok.encode(text)  # the tokenizer's own encode, where no special is spelled
            expected += [*ids, tok.eos_token_id]
        s = m["splits"][split]
        assert s["files"] == len(dsd[split])
        assert len(expected) == s["tokens"] == s["blocks"] * CTX + s["tokens_dropped"]
        assert 0 <= s["tokens_dropped"] < CTX
        assert _stream(tmp_path / "p", split) == expected[: s["blocks"] * CTX]
        assert s["tokens"] - s["files"] == s["text_tokens"]
    tricky = next(t for t in [*dsd["train"]["content"], *dsd["valid"]["content"]] if "<|endoftext|>" in t)
    assert tok.eos_token_id not in plain.encode(tricky, add_special_tokens=False).ids


def test_tiktoken_and_tokenizers_write_identical_blocks(stage_dirs, tmp_path: Path) -> None:
    a = _pack(stage_dirs, tmp_path / "a", encoder="tiktoken", fim_rate=0.5)
    b = _pack(stage_dirs, tmp_path / "b", encoder="tokenizers", fim_rate=0.5)
    assert (a["encoder"], b["encoder"]) == ("tiktoken", "tokenizers")
    for split in ("train", "valid"):
        assert (tmp_path / "a" / f"{split}.bin").read_bytes() == (tmp_path / "b" / f"{split}.bin").read_bytes()


def test_fim_layouts_restore_the_original_files(stage_dirs, tmp_path: Path) -> None:
    data, tok_dir = stage_dirs
    m = _pack(stage_dirs, tmp_path / "f", fim_rate=1.0, fim_spm_rate=0.5, context_length=CTX)
    s = m["splits"]["train"]
    assert s["fim_files"] == s["files"] and 0 < s["fim_spm_files"] < s["files"]
    assert m["splits"]["valid"]["fim_files"] == 0  # valid stays left to right
    tok = load_tokenizer(tok_dir)
    vocab = tok.get_vocab()
    ids = fim.FimIds(vocab["<fim_prefix>"], vocab["<fim_middle>"], vocab["<fim_suffix>"])
    stream = _stream(tmp_path / "f", "train")
    files, current = [], []
    for t in stream:
        if t == tok.eos_token_id:
            files.append(current)
            current = []
        else:
            current.append(t)
    originals = datasets.load_from_disk(str(data))["train"]["content"]
    assert len(files) >= len(originals) - 1
    for seq, original in zip(files, originals, strict=False):
        assert seq[0] == ids.prefix
        assert tok.decode(fim.restore(seq, ids)) == original


@given(st.text(max_size=200), st.integers(0, 2**32), st.booleans())
@settings(max_examples=200, deadline=None)
def test_fim_cut_and_restore_round_trip(text: str, seed: int, spm: bool) -> None:
    prefix, middle, suffix = fim.cut(text, random.Random(seed))
    assert prefix + middle + suffix == text
    ids = fim.FimIds(-1, -2, -3)
    enc = [[ord(c) for c in part] for part in (prefix, middle, suffix)]
    restored = fim.restore(fim.layout(*enc, spm, ids), ids)
    assert "".join(map(chr, restored)) == text


def test_fim_choices_are_seeded_per_file(stage_dirs, tmp_path: Path) -> None:
    a = _pack(stage_dirs, tmp_path / "s1", seed=1, batch_files=3)
    b = _pack(stage_dirs, tmp_path / "s2", seed=1, batch_files=50)
    c = _pack(stage_dirs, tmp_path / "s3", seed=2)
    assert (tmp_path / "s1" / "train.bin").read_bytes() == (tmp_path / "s2" / "train.bin").read_bytes()
    assert (tmp_path / "s1" / "train.bin").read_bytes() != (tmp_path / "s3" / "train.bin").read_bytes()
    assert a["splits"]["train"]["fim_files"] == b["splits"]["train"]["fim_files"]
    assert c["fim"] == {"rate": 0.5, "spm_rate": 0.5, "splits": ["train"], "seed": 2}


def test_reader_and_manifest(stage_dirs, tmp_path: Path) -> None:
    m = _pack(stage_dirs, tmp_path / "r")
    assert m["dtype"] == "uint16" and m["context_length"] == CTX and m["vocab_size"] == 340
    assert len(m["tokenizer"]["sha256"]) == 64 and m["data"]["content_sha256"]
    assert (tmp_path / "r" / "train.bin").stat().st_size == m["splits"]["train"]["blocks"] * CTX * 2
    ds = PackedDataset(tmp_path / "r", "train")
    assert len(ds) == m["splits"]["train"]["blocks"]
    block = ds[len(ds) - 1]
    assert block.dtype == torch.long and block.shape == (CTX,)
    assert int(block.max()) < 340
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    assert next(iter(loader)).shape == (4, CTX)
    raw = np.memmap(tmp_path / "r" / "valid.bin", dtype=np.uint16, mode="r").reshape(-1, CTX)
    assert raw[0].tolist() == PackedDataset(tmp_path / "r", "valid")[0].tolist()


def test_reader_refuses_damaged_packs(stage_dirs, tmp_path: Path) -> None:
    _pack(stage_dirs, tmp_path / "d")
    with pytest.raises(PycpilotError, match="no split 'test'"):
        PackedDataset(tmp_path / "d", "test")
    with open(tmp_path / "d" / "train.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(PycpilotError, match=r"train.bin has 100 bytes, the manifest promises \d+ \(truncated\?\)"):
        PackedDataset(tmp_path / "d", "train")
    (tmp_path / "d" / "manifest.json").write_text("{")
    with pytest.raises(PycpilotError, match="not a valid pack manifest"):
        PackedDataset(tmp_path / "d", "train")
    with pytest.raises(PycpilotError, match="not a packed dataset"):
        PackedDataset(tmp_path / "nowhere", "train")


@pytest.mark.parametrize(
    ("setup", "kw", "message"),
    [
        (lambda sd, t: {"tokenizer": t / "none"}, {}, "tokenizer folder .* does not exist"),
        (
            lambda sd, t: {"tokenizer": write(t / "half" / "tokenizer_config.json", "{}").parent},
            {},
            "missing tokenizer.json",
        ),
        (
            lambda sd, t: {"tokenizer": write(t / "junk" / "tokenizer.json", "\x00\x01").parent},
            {},
            "missing tokenizer_config.json",
        ),
        (lambda sd, t: {}, {"context_length": 1}, "--context-length must be between 2 and"),
        (lambda sd, t: {}, {"context_length": 4096}, "larger than models for this tokenizer use \\(1024 positions"),
        (lambda sd, t: {"data": t}, {}, "is not a saved DatasetDict"),
        (lambda sd, t: {}, {"fim_rate": 1.5}, "--fim-rate must be between 0 and 1, not 1.5"),
    ],
)
def test_bad_input_fails_in_one_line(setup, kw: dict, message: str, stage_dirs, tmp_path: Path) -> None:
    data, tok = stage_dirs
    paths = {"data": data, "tokenizer": tok, **setup(stage_dirs, tmp_path)}
    out = tmp_path / "packed"
    with pytest.raises(PycpilotError, match=message) as info:
        pack_dataset(PackConfig(out=out, quiet=True, **paths, **kw))
    assert "\n" not in str(info.value) and not out.exists()


def test_storage_type_follows_the_vocabulary() -> None:
    cfg = PackConfig(data=Path("."), tokenizer=Path("."), out=Path("."))
    assert _dtype(cfg, 65_536) == np.uint16 and _dtype(cfg, 65_537) == np.uint32
    cfg.dtype = "uint16"
    with pytest.raises(PycpilotError, match=r"vocabulary \(70,000 tokens\) does not fit --dtype uint16"):
        _dtype(cfg, 70_000)


def test_a_tokenizer_without_the_gpt2_pipeline_falls_back_to_tokenizers(stage_dirs, tmp_path: Path) -> None:
    _, tok = stage_dirs
    odd = tmp_path / "odd"
    shutil.copytree(tok, odd)
    spec = json.loads((odd / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFC"}
    (odd / "tokenizer.json").write_text(json.dumps(spec))
    data, _ = stage_dirs
    m = pack_dataset(PackConfig(data=data, tokenizer=odd, out=tmp_path / "o", context_length=CTX, quiet=True)).manifest
    assert m["encoder"] == "tokenizers" and "not a plain GPT-2-style" in m["encoder_note"]
    with pytest.raises(PycpilotError, match="--encoder tiktoken cannot be used"):
        pack_dataset(PackConfig(data=data, tokenizer=odd, out=tmp_path / "o2", encoder="tiktoken", quiet=True))
