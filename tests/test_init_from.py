"""`--init-from SRC`: fine-tuning a model someone trained before (offline: a model trained here stands in)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch

from pycpilot.data import DataConfig, build_dataset
from pycpilot.errors import PycpilotError
from pycpilot.pack import PackConfig, PackedDataset, pack_dataset
from pycpilot.presets import fine_tuning_lr
from pycpilot.tokenizer import TokenizerConfig, load_tokenizer
from pycpilot.tokenizer.specials import CODE_SPECIALS
from pycpilot.tokenizer.train import _save, _train_ours
from pycpilot.train import TrainConfig, train

from conftest import write, write_repos

SMALL = dict(batch_size=4, eval_every=1000, quiet=True, precision="fp32")


def other_code(name: str, extra: int) -> str:
    """Code unlike conftest's good_code: what the fine-tuning is for."""
    body = f'"""Parsing for {name}."""\nimport re\n\nPATTERN_{name.upper()} = re.compile(r"[a-z]+")\n\n'
    for i in range(3 + extra):
        body += (
            f"def parse_{name}_{i}(text):\n    words = PATTERN_{name.upper()}.findall(text)\n"
            f"    result = {{}}\n    for word in words:\n        result[word] = result.get(word, 0) + {i}\n"
            f"    return result\n\n\n"
        )
    return body


@pytest.fixture(scope="module")
def new_data(tmp_path_factory) -> Path:
    root = write_repos(tmp_path_factory.mktemp("newcorpus"), lambda r, f: other_code(f"n{r}x{f}", f), files=5)
    data = root.parent / "newdata"
    build_dataset(DataConfig(out=data, sources=[str(root)], num_proc=1, quiet=True, valid_fraction=0.25))
    return data


def _pack(data: Path, tokenizer: Path | str, out: Path, **kw) -> Path:
    kw = {"context_length": 64, **kw}
    pack_dataset(PackConfig(data=data, tokenizer=Path(tokenizer), out=out, quiet=True, **kw))
    return out


def test_initialising_from_a_folder_keeps_its_logits_and_training_lowers_the_loss(
    tiny_run: Path, new_data: Path, tmp_path: Path
) -> None:
    from pycpilot.generate.load import load_model
    from pycpilot.train.runtime import Runtime
    from pycpilot.train.setup import setup

    packed = _pack(new_data, tiny_run, tmp_path / "packed")  # the model's own tokenizer: ids equal
    pack = json.loads((packed / "manifest.json").read_text())
    assert pack["tokenizer"]["added_tokens"] == [] and not (packed / "tokenizer").exists()
    text = datasets.load_from_disk(str(new_data))["valid"][0]["content"]
    src = load_model(tiny_run)
    ids = src.tokenizer(text, add_special_tokens=False)["input_ids"][:20]
    assert PackedDataset(packed, "valid")[0][:20].tolist() == ids

    cfg = TrainConfig(packed=packed, out=tmp_path / "ft", init_from=str(tiny_run), max_steps=30, **SMALL)
    cfg.validate()
    run = setup(cfg, Runtime.from_env())
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(run.model.eval()(x).logits, src.model(x).logits, atol=1e-5)
    assert run.cfg.optimizer == "adamw" and run.cfg.n_layer == src.model.config.n_layer
    assert run.cfg.lr == fine_tuning_lr(src.model.config.n_embd)

    manifest = train(cfg).manifest
    before, after = manifest["init_from"]["valid_bpb_before"], manifest["result"]["valid_bpb"]
    assert after < before - 0.05, (before, after)
    assert manifest["config"]["init_from"] == str(tiny_run) and manifest["config"]["warmup_steps"] == 20


def test_a_pack_made_with_another_tokenizer_is_refused(tiny_run: Path, new_data: Path, tmp_path: Path) -> None:
    from pycpilot.tokenizer import train_tokenizer

    tok = tmp_path / "tok"
    train_tokenizer(TokenizerConfig(data=new_data, out=tok, vocab_size=400, quiet=True, compare="none"))
    packed = _pack(new_data, tok, tmp_path / "packed")
    cfg = TrainConfig(packed=packed, out=tmp_path / "ft", init_from=str(tiny_run), max_steps=2, **SMALL)
    with pytest.raises(PycpilotError, match=r"packed with another tokenizer than .*: pack again with --tokenizer"):
        train(cfg)
    assert not (tmp_path / "ft").exists()


def _source_without_fim(data: Path, folder: Path) -> Path:
    """A GPT-2 and a tokenizer without FIM tokens, as codeparrot-small's: the hub model's stand-in."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = TokenizerConfig(data=data, out=folder, vocab_size=300, quiet=True)
    folder.mkdir()
    tok = _train_ours(cfg, datasets.load_from_disk(str(data))["train"], 300, [])
    _save(tok, folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_layer=2, n_head=2, n_embd=32,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


def test_fim_tokens_missing_from_the_source_are_added_as_new_rows(new_data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pycpilot.generate import Completer
    from pycpilot.generate.load import load_model
    from pycpilot.train.runtime import Runtime
    from pycpilot.train.setup import setup

    src = _source_without_fim(new_data, tmp_path / "src")
    rows = load_model(src).model.get_input_embeddings().weight.detach().clone()

    plain = tmp_path / "plain"  # --fim-rate 0: nothing is added; no --context-length: the model's 128 positions
    pack_dataset(PackConfig(data=new_data, tokenizer=src, out=plain, fim_rate=0, quiet=True))
    plain_manifest = json.loads((plain / "manifest.json").read_text())
    assert plain_manifest["tokenizer"]["added_tokens"] == [] and plain_manifest["context_length"] == 128

    packed = _pack(new_data, src, tmp_path / "packed", fim_rate=0.5)
    manifest = json.loads((packed / "manifest.json").read_text())
    assert manifest["tokenizer"]["added_tokens"] == CODE_SPECIALS and manifest["vocab_size"] == len(rows) + 5
    assert len(load_tokenizer(packed / "tokenizer")) == len(rows) + 5

    cfg = TrainConfig(packed=packed, out=tmp_path / "ft", init_from=str(src), max_steps=3, **SMALL)
    run = setup(cfg, Runtime.from_env())
    grown = run.model.get_input_embeddings().weight.detach()
    assert grown.shape[0] == len(rows) + 5 and torch.equal(grown[: len(rows)], rows)  # old ids keep theirs
    assert torch.allclose(grown[len(rows) :], rows.mean(dim=0).expand(5, -1))
    assert run.model.lm_head.weight.data_ptr() == run.model.get_input_embeddings().weight.data_ptr()  # still tied
    assert run.init is not None and run.init["added_rows"] == 5

    out = train(cfg).out
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == len(rows) + 5
    got = Completer(out).complete("def parse(text):\n    ", suffix="\n    return words\n", max_new_tokens=4)
    assert got.completions and got.prompt_tokens > 3


def test_a_hub_name_offline_is_one_fast_line(tiny_run: Path, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("pycpilot"))
    packed = tiny_run.parent / "gpacked"
    args = ["train", "--packed", str(packed), "--out", str(tmp_path / "o"), "--init-from", "hf:nobody/no-model"]
    for offline in ("1", ""):
        env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
        env.pop("HF_HUB_OFFLINE", None)
        if offline:
            env["HF_HUB_OFFLINE"] = offline
        started = time.monotonic()
        done = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120)
        seconds = time.monotonic() - started
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "pass its folder: --init-from DIR" in done.stderr
        assert seconds < 30  # no hub retries (the interpreter and torch take most of it)


def _unsupported(folder: Path, tiny_run: Path) -> Path:
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    shutil.copytree(tiny_run, folder, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors", "config.json"))
    tok = load_tokenizer(tiny_run)
    config = GPTNeoConfig(vocab_size=len(tok), max_position_embeddings=64, num_layers=2, num_heads=2,
                          hidden_size=32, attention_types=[[["global"], 2]])  # fmt: skip
    GPTNeoForCausalLM(config).save_pretrained(str(folder))
    (folder / "manifest.json").unlink(missing_ok=True)
    return folder


def _corrupt(folder: Path, tiny_run: Path) -> Path:
    shutil.copytree(tiny_run, folder, ignore=shutil.ignore_patterns("checkpoints"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return folder


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda t, r: t / "missing", "does not exist"),
        (lambda t, r: write(t / "junk" / "notes.txt", "hello").parent, "holds no model"),
        (_unsupported, "is a gpt_neo model; PYCPilot trains, decodes and serves plain GPT-2 models"),
        (_corrupt, "cannot load the model"),
        (lambda t, r: "hf:", "write hub models as hf:OWNER/NAME"),
    ],
)
def test_bad_sources_are_one_line_errors(make, words: str, tiny_run: Path, new_data: Path, tmp_path: Path) -> None:
    packed = _pack(new_data, tiny_run, tmp_path / "packed")
    src = make(tmp_path / "src", tiny_run)
    cfg = TrainConfig(packed=packed, out=tmp_path / "ft", init_from=str(src), max_steps=2, **SMALL)
    with pytest.raises(PycpilotError, match=words) as caught:
        train(cfg)
    assert "\n" not in str(caught.value) and str(src) in str(caught.value)
    assert not (tmp_path / "ft").exists()


def test_size_options_that_contradict_the_source_are_refused(tiny_run: Path, new_data: Path, tmp_path: Path) -> None:
    packed = _pack(new_data, tiny_run, tmp_path / "packed")
    for kw, words in [
        (dict(n_layer=3), r"--n-layer 3 contradicts --init-from .* which has 2"),
        (dict(n_positions=512), "--n-positions 512 contradicts"),
    ]:
        cfg = TrainConfig(packed=packed, out=tmp_path / "ft", init_from=str(tiny_run), max_steps=2, **SMALL, **kw)
        with pytest.raises(PycpilotError, match=words):
            train(cfg)
    # the model's tokenizer says its context (256 positions): the pack refuses longer blocks for it
    with pytest.raises(PycpilotError, match=r"larger than models for this tokenizer use \(256 positions"):
        _pack(new_data, tiny_run, tmp_path / "long", context_length=512)


def test_resume_takes_the_checkpoint_not_the_source_again(tiny_run: Path, new_data: Path, tmp_path: Path) -> None:
    packed = _pack(new_data, tiny_run, tmp_path / "packed")
    common = dict(packed=packed, out=tmp_path / "ft", init_from=str(tiny_run), save_every=2, **SMALL)
    straight = train(TrainConfig(**{**common, "out": tmp_path / "straight"}, max_steps=4)).manifest
    train(TrainConfig(**common, max_steps=2))
    resumed = train(TrainConfig(**common, max_steps=4, resume=True)).manifest
    assert resumed["result"]["valid_loss"] == pytest.approx(straight["result"]["valid_loss"], abs=1e-6)
    assert resumed["init_from"]["valid_bpb_before"] == pytest.approx(straight["init_from"]["valid_bpb_before"])


def test_run_with_init_from_skips_the_tokenizer_and_shows_before_and_after(tiny_run: Path, tmp_path: Path) -> None:
    from pycpilot.run import RunConfig, run

    corpus = write_repos(tmp_path / "corpus", lambda r, f: other_code(f"q{r}x{f}", f), files=5)
    settings = {
        "data": {"valid_fraction": 0.25, "num_proc": 1},
        "pack": {"context_length": 64},
        "train": {"max_steps": 20, "batch_size": 4},
        "eval": {"humaneval_limit": 0, "lines": 5},
    }
    said: list[str] = []
    out = tmp_path / "run"
    cfg = RunConfig(out=out, sources=[str(corpus)], init_from=str(tiny_run), settings=settings, quiet=True)
    manifest = run(cfg, say=said.append)
    assert manifest["stages"]["tokenizer"]["status"] == "skipped" and not (out / "tokenizer").exists()
    assert any("tokenizer: skipped: the pack uses" in line for line in said)
    packed = json.loads((out / "packed" / "manifest.json").read_text())
    assert packed["tokenizer"]["source"] == str(tiny_run) and packed["tokenizer"]["added_tokens"] == []
    train_manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert train_manifest["config"]["init_from"] == str(tiny_run)
    bought = next(line for line in said if "of fine-tuning" in line)
    assert "bits per byte (from " in bought and "% exact (from " in bought
    assert "before fine-tuning" in (out / "report.html").read_text()
    said.clear()
    run(cfg, say=said.append)  # again: nothing to do
    assert sum("unchanged, skipped" in line for line in said) == 4


def test_a_bad_source_stops_a_run_before_any_stage_and_a_pack_names_its_option(
    new_data: Path, tmp_path: Path, monkeypatch
) -> None:
    from pycpilot.run import RunConfig, run

    out = tmp_path / "run"
    for src, words in [(tmp_path / "missing", "does not exist"), ("hf:a/b/c", "write hub models as hf:OWNER/NAME")]:
        with pytest.raises(PycpilotError, match=words) as caught:
            run(RunConfig(out=out, sources=[str(tmp_path)], init_from=str(src), quiet=True))
        assert str(caught.value).startswith(f"--init-from {src}") and not out.exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline, whatever the machine's network
    with pytest.raises(PycpilotError) as caught:
        _pack(new_data, "hf:nobody/no-model", tmp_path / "packed")
    assert str(caught.value).startswith("--tokenizer hf:nobody/no-model: not in the local Hugging Face cache")
    assert "\n" not in str(caught.value) and not (tmp_path / "packed").exists()
