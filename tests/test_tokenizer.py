"""The tokenizer stage: files, AutoTokenizer loading, exact round trip, FIM tokens, comparison, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from pycpilot.data import DataConfig, build_dataset
from pycpilot.errors import PycpilotError
from pycpilot.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from pycpilot.tokenizer.specials import ALL_SPECIALS, CODE_SPECIALS, EOS

from conftest import good_code, write

VOCAB = 360
SEED_FILES = {"merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for r in range(6):
        (root / f"repo{r}" / ".git").mkdir(parents=True)
        for f in range(5):
            write(root / f"repo{r}" / f"mod{f}.py", good_code(f"r{r}m{f}", extra=r + f))
    out = root.parent / "data"
    build_dataset(DataConfig(out=out, sources=[str(root)], num_proc=1, quiet=True, valid_fraction=0.2))
    return out


@pytest.fixture(scope="session")
def tok_dir(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(TokenizerConfig(data=data_dir, out=out, vocab_size=VOCAB, quiet=True))
    return out


def test_saves_the_seed_files_and_loads_with_autotokenizer(tok_dir: Path) -> None:
    assert {p.name for p in tok_dir.iterdir()} == SEED_FILES | {"manifest.json"}
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert len(tok) == VOCAB
    assert tok.bos_token == tok.eos_token == tok.unk_token == EOS
    assert tok.eos_token_id == 0
    assert json.loads((tok_dir / "special_tokens_map.json").read_text())["additional_special_tokens"] == CODE_SPECIALS
    merges = (tok_dir / "merges.txt").read_text().splitlines()
    assert len([m for m in merges if m and not m.startswith("#")]) == VOCAB - 256 - len(ALL_SPECIALS)


def test_fim_tokens_are_single_tokens(tok_dir: Path) -> None:
    tok = load_tokenizer(tok_dir)
    for i, special in enumerate(ALL_SPECIALS):
        assert tok.tokenize(special) == [special]
        assert tok.convert_tokens_to_ids(special) == i
    ids = tok.encode("<fim_prefix>def f(<fim_suffix>)\n<fim_middle>")
    assert ids.count(tok.convert_tokens_to_ids("<fim_middle>")) == 1


@given(st.text(max_size=300) | st.lists(st.sampled_from([*ALL_SPECIALS, " ", "\n", "  x", "é", "\t"])).map("".join))
@settings(max_examples=300, deadline=None)
def test_decode_encode_round_trip_is_exact(tok_dir: Path, text: str) -> None:
    tok = _cached(tok_dir)
    assert tok.decode(tok.encode(text)) == text


_TOKENIZERS: dict[Path, object] = {}


def _cached(path: Path):
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = AutoTokenizer.from_pretrained(str(path))
    return _TOKENIZERS[path]


def test_comparison_and_manifest(tok_dir: Path, data_dir: Path) -> None:
    m = json.loads((tok_dir / "manifest.json").read_text())
    assert m["vocab_size"] == m["vocab_size_requested"] == VOCAB and m["vocab_filled"]
    assert m["special_tokens"] == {t: i for i, t in enumerate(ALL_SPECIALS)}
    ours, base = m["comparison"]["ours"], m["comparison"]["baseline_figures"]
    assert "FIM" in m["comparison"]["baseline"]
    assert ours["add_numbers"][0] == "def" and "".join(ours["add_numbers"]).replace("Ġ", " ").startswith("def add")
    assert (
        0.05 < ours["valid_tokens_per_byte"] < 1.0 and base["vocab_size"] == VOCAB
    )  # 5 more merges instead of the 5 tokens
    assert m["data"]["content_sha256"] == json.loads((data_dir / "manifest.json").read_text())["content_sha256"]


def test_a_vocabulary_the_corpus_cannot_fill_is_reported(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "big"
    result = train_tokenizer(TokenizerConfig(data=data_dir, out=out, vocab_size=50_000, compare="none"))
    printed = capsys.readouterr().out
    assert not result.manifest["vocab_filled"]
    assert result.manifest["vocab_size"] < 50_000
    assert f"filled only {result.manifest['vocab_size']:,} of the 50,000" in printed


def test_preset_picks_a_smaller_vocabulary() -> None:
    assert TokenizerConfig(data=Path("."), out=Path("."), preset="tiny").resolved_vocab_size() == 4096
    assert TokenizerConfig(data=Path("."), out=Path(".")).resolved_vocab_size() == 52_000


def test_compare_with_another_tokenizer_folder(data_dir: Path, tok_dir: Path, tmp_path: Path) -> None:
    result = train_tokenizer(
        TokenizerConfig(data=data_dir, out=tmp_path / "t2", vocab_size=300, compare=str(tok_dir), quiet=True)
    )
    comparison = result.manifest["comparison"]
    assert comparison["baseline"] == str(tok_dir) and comparison["baseline_figures"]["vocab_size"] == VOCAB
    # A bigger vocabulary needs fewer tokens for the same text.
    assert comparison["baseline_figures"]["valid_tokens"] < comparison["ours"]["valid_tokens"]


def test_base_tokenizer_is_retrained_with_train_new_from_iterator(
    data_dir: Path, tok_dir: Path, tmp_path: Path
) -> None:
    result = train_tokenizer(
        TokenizerConfig(
            data=data_dir, out=tmp_path / "t3", vocab_size=320, base=str(tok_dir), compare="none", quiet=True
        )
    )
    tok = load_tokenizer(result.out)
    assert len(tok) == 320 and tok.tokenize("<fim_middle>") == ["<fim_middle>"]


def _only_train(data_dir: Path, tmp_path: Path) -> Path:
    dsd = datasets.load_from_disk(str(data_dir))
    datasets.DatasetDict({"train": dsd["train"]}).save_to_disk(str(tmp_path / "onlytrain"))
    return tmp_path / "onlytrain"


def _no_content(data_dir: Path, tmp_path: Path) -> Path:
    dsd = datasets.load_from_disk(str(data_dir)).rename_column("content", "text")
    dsd.save_to_disk(str(tmp_path / "nocontent"))
    return tmp_path / "nocontent"


@pytest.mark.parametrize(
    ("make", "kw", "message"),
    [
        (lambda d, t: t / "missing", {}, "does not exist"),
        (lambda d, t: write(t / "x" / "a.txt", "x").parent, {}, "is not a saved DatasetDict"),
        (_only_train, {}, "has no valid split"),
        (_no_content, {}, "has no 'content' column"),
        (lambda d, t: d, {"vocab_size": 10}, "--vocab-size must be between"),
        (lambda d, t: d, {"base": "/no/such/tokenizer"}, "cannot load tokenizer /no/such/tokenizer"),
        (lambda d, t: d, {"compare": str(Path(__file__))}, "cannot load tokenizer"),
    ],
)
def test_bad_input_fails_in_one_line(make, kw: dict, message: str, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    with pytest.raises(PycpilotError, match=message) as info:
        train_tokenizer(TokenizerConfig(data=make(data_dir, tmp_path), out=out, quiet=True, **kw))
    assert "\n" not in str(info.value) and not out.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: (t / "tokenizer.json").unlink(), "missing tokenizer.json"),
        (lambda t: (t / "tokenizer.json").write_text('{"model": {"type": "BPE", "vo'), "not valid JSON"),
        (lambda t: (t / "tokenizer.json").write_text("[1, 2, 3]"), "does not describe a tokenizer"),
    ],
)
def test_broken_tokenizer_folders_are_refused(damage, message: str, tok_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tok_dir, broken)
    damage(broken)
    with pytest.raises(PycpilotError, match=message):
        load_tokenizer(broken)


def test_a_seeded_sample_of_the_corpus_trains_the_tokenizer(data_dir: Path, tmp_path: Path) -> None:
    """For corpora larger than memory: whole files drawn by seed up to a byte budget, recorded in the manifest."""
    train = datasets.load_from_disk(str(data_dir))["train"]
    total = sum(int(x) for x in train["size"])

    def sampled(name: str, budget: int, seed: int) -> dict:
        out = tmp_path / name
        train_tokenizer(TokenizerConfig(data=data_dir, out=out, vocab_size=VOCAB, quiet=True, compare="none",
                                        sample=budget, sample_seed=seed))  # fmt: skip
        return json.loads((out / "manifest.json").read_text())

    a, again, other = sampled("a", total // 3, 1), sampled("b", total // 3, 1), sampled("c", total // 3, 2)
    s = a["sample"]
    assert s["of_files"] == len(train) and s["of_bytes"] == total and s["bytes_requested"] == total // 3
    assert 0 < s["files"] < len(train) and total // 3 <= s["bytes"] < total // 3 + max(int(x) for x in train["size"])
    assert again["sample"] == s and again["tokenizer_sha256"] == a["tokenizer_sha256"]  # the same seed: same files
    assert other["sample"]["files"] != s["files"] or other["sample"]["bytes"] != s["bytes"]
    everything = sampled("d", 10 * total, 1)["sample"]
    assert (everything["files"], everything["bytes"]) == (len(train), total)
    from pycpilot.cli import build_parser

    args = build_parser().parse_args(["tokenizer", "--data", "d", "--out", "o", "--sample", "2k"])
    assert args.sample == 2000
    with pytest.raises(PycpilotError, match="--sample must be at least 1"):
        TokenizerConfig(data=data_dir, out=tmp_path / "e", sample=0).validate()
    with pytest.raises(PycpilotError, match="--sample-seed must be between 0 and"):
        TokenizerConfig(data=data_dir, out=tmp_path / "e", sample=1000, sample_seed=-1).validate()
    r = subprocess.run([sys.executable, "-m", "pycpilot", "tokenizer", "--data", str(data_dir), "--out",
                        str(tmp_path / "f"), "--sample", "lots"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "not a size: 'lots'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()
