"""`pycpilot export`: the GGUF file read back by gguf-py and loaded by transformers; bad input in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pycpilot.errors import PycpilotError
from pycpilot.export import ExportConfig
from pycpilot.export.write import export_model
from pycpilot.generate.load import load_model
from pycpilot.tokenizer.specials import CODE_SPECIALS, EOS

gguf = pytest.importorskip("gguf")


def _export(model: Path, out: Path, **options) -> dict:
    return export_model(ExportConfig(model=model, out=out, quiet=True, **options))


def _fields(reader) -> dict:
    """GGUF key -> value (strings decoded, arrays as lists)."""
    out = {}
    for name, f in reader.fields.items():
        if not f.types:
            continue
        out[name] = f.contents()
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pycpilot", "export", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_the_file_holds_every_key_and_tensor_llama_cpp_reads(tiny_run: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / f"m-{kind}.gguf"
    manifest = _export(tiny_run, out, type=kind)
    src = load_model(tiny_run)
    c, tok = src.model.config, src.tokenizer
    reader = gguf.GGUFReader(str(out))
    f = _fields(reader)
    assert f["general.architecture"] == "gpt2" and f["tokenizer.ggml.model"] == "gpt2"
    assert f["tokenizer.ggml.pre"] == "gpt-2"
    assert (f["gpt2.block_count"], f["gpt2.embedding_length"], f["gpt2.attention.head_count"]) == (
        c.n_layer,
        c.n_embd,
        c.n_head,
    )
    assert f["gpt2.context_length"] == c.n_positions and f["gpt2.feed_forward_length"] == 4 * c.n_embd
    vocab = tok.get_vocab()
    tokens = f["tokenizer.ggml.tokens"]
    assert len(tokens) == c.vocab_size and all(tokens[i] == t for t, i in vocab.items())
    types = f["tokenizer.ggml.token_type"]
    assert {types[vocab[t]] for t in [EOS, *CODE_SPECIALS]} == {gguf.TokenType.CONTROL}
    assert types[vocab["def"]] == gguf.TokenType.NORMAL
    spec = json.loads(tok.backend_tokenizer.to_str())
    assert f["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    assert f["tokenizer.ggml.bos_token_id"] == f["tokenizer.ggml.eos_token_id"] == vocab[EOS]
    assert f["tokenizer.ggml.add_bos_token"] is False
    fim = {k: f[f"tokenizer.ggml.fim_{k}_token_id"] for k in ("pre", "suf", "mid", "pad")}
    assert fim == {"pre": vocab["<fim_prefix>"], "suf": vocab["<fim_suffix>"], "mid": vocab["<fim_middle>"],
                   "pad": vocab["<fim_pad>"]}  # fmt: skip
    assert "tokenizer.ggml.fim_sep_token_id" not in f  # never trained: llama.cpp would put it before context files
    assert f["pycpilot.model"] == tiny_run.name  # the folder's name only: the file is meant to be shared
    assert f["general.license"]  # the corpus's, followed through the pack and data manifests
    assert manifest["provenance"]["licenses"] and manifest["gguf"]["fim_ids"] == fim

    tensors = {t.name: t for t in reader.tensors}
    names = {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias"}
    for b in range(c.n_layer):
        for part in ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"):
            names |= {f"blk.{b}.{part}.weight", f"blk.{b}.{part}.bias"}
    assert set(tensors) == names  # tied: no output.weight (llama.cpp reads token_embd)
    state = src.model.state_dict()
    wanted = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
              "q8_0": gguf.GGMLQuantizationType.Q8_0}[kind]  # fmt: skip
    for name, hf, transpose in [("blk.1.attn_qkv.weight", "transformer.h.1.attn.c_attn.weight", True),
                                ("blk.0.ffn_down.weight", "transformer.h.0.mlp.c_proj.weight", True),
                                ("token_embd.weight", "transformer.wte.weight", False)]:  # fmt: skip
        t = tensors[name]
        assert t.tensor_type == wanted, name
        expected = state[hf].t() if transpose else state[hf]
        assert list(t.shape[::-1]) == list(expected.shape)  # gguf lists ne[0] (the row length) first
        values = gguf.dequantize(t.data, t.tensor_type).reshape(expected.shape)
        tolerance = {"f32": 0, "f16": 1e-3, "q8_0": float(expected.abs().max()) / 100}[kind]
        assert np.abs(values - expected.numpy()).max() <= tolerance, name
    for name in ("position_embd.weight", "output_norm.weight", "blk.0.attn_qkv.bias", "blk.0.ffn_norm.weight"):
        assert tensors[name].tensor_type == gguf.GGMLQuantizationType.F32, name


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_transformers_loads_the_file_with_the_same_logits(tiny_run: Path, tmp_path: Path, kind: str) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "m.gguf"
    _export(tiny_run, out, type=kind)
    src = load_model(tiny_run)
    # transformers maps gpt2.context_length to n_ctx, which GPT2Config no longer reads: the positions are given
    positions = src.model.config.n_positions
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32,
                                                n_positions=positions).eval()  # fmt: skip
    ids = torch.tensor([src.tokenizer("def add(a, b):\n    return a + b\n")["input_ids"]])
    with torch.no_grad():
        ours, theirs = src.model(ids).logits, back(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4 if kind == "f32" else 3e-2), (ours - theirs).abs().max()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=out.name)
    text = "def f(x):\n\treturn x  # café 🐍\n<fim_prefix>y<file_sep>"
    assert tok(text)["input_ids"] == src.tokenizer(text)["input_ids"]


def test_q8_0_keeps_rows_that_are_not_whole_blocks_in_f16(tiny_run: Path, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_model(tiny_run).tokenizer
    folder = tmp_path / "odd"
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_layer=1, n_head=2, n_embd=48,
                        activation_function="gelu_new")  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    _export(folder, tmp_path / "odd.gguf", type="q8_0")
    kinds = {t.name: t.tensor_type for t in gguf.GGUFReader(str(tmp_path / "odd.gguf")).tensors}
    assert kinds["blk.0.attn_qkv.weight"] == gguf.GGMLQuantizationType.F16  # rows of 48: not whole 32-blocks
    assert kinds["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0  # rows of 192


def test_ollama_gets_a_modelfile_with_the_fim_template(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "mine.gguf"
    manifest = _export(tiny_run, out, format="ollama")
    text = (tmp_path / "models" / "mine.Modelfile").read_text()
    assert "FROM ./mine.gguf" in text
    assert "<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>" in text
    assert 'PARAMETER stop "<|endoftext|>"' in text and 'PARAMETER stop "<file_sep>"' in text
    assert f"PARAMETER num_ctx {load_model(tiny_run).model.config.n_positions}" in text
    assert manifest["modelfile"] == "mine.Modelfile"
    written = json.loads((tmp_path / "models" / "mine.gguf.json").read_text())
    assert written["stage"] == "export" and written["gguf"]["bytes"] == out.stat().st_size


def test_an_interrupted_export_leaves_no_file(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    import pycpilot.export.write as write

    def broken(model, kind):
        from pycpilot.export.tensors import gguf_tensors

        tensors = gguf_tensors(model, kind)
        yield next(tensors)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write, "gguf_tensors", broken)
    with pytest.raises(PycpilotError, match="No space left on device"):
        _export(tiny_run, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_one_line(tiny_run: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = load_model(tiny_run).tokenizer
    llama = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(str(llama))  # fmt: skip
    tok.save_pretrained(str(llama))
    wordpiece = tmp_path / "metaspace"
    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "<|endoftext|>": 2}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=3, n_positions=16, n_layer=1, n_head=2, n_embd=32)).save_pretrained(
        str(wordpiece)
    )
    fast.save_pretrained(str(wordpiece))
    existing = tmp_path / "there.gguf"
    existing.write_bytes(b"keep me")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    cases = [
        ((str(llama), tmp_path / "a.gguf"), "is a llama model: export writes the GPT-2 family"),
        ((str(wordpiece), tmp_path / "b.gguf"), "pre-tokenizer is not GPT-2's byte-level split"),
        ((str(tiny_run), existing), "already exists (pass --overwrite"),
        ((str(tiny_run), tmp_path / "c.bin"), "must end in .gguf"),
        ((str(tmp_path / "nowhere"), tmp_path / "new" / "dir" / "d.gguf"), "does not exist"),
    ]
    if os.geteuid() != 0:  # root writes anywhere but in /proc
        cases.append(((str(tiny_run), locked / "e.gguf"), "permission denied"))
    elif Path("/proc/self").is_dir():
        cases.append(((str(tiny_run), Path("/proc/pycpilot-test.gguf")), "cannot write /proc/pycpilot-test.gguf"))
    cases.append(((str(tiny_run), existing / "f.gguf"), f"cannot create {existing}"))
    for (model, out), words in cases:
        r = _cli("--model", model, "--out", str(out))
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "new").exists()  # refused: nothing made
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left behind
    with pytest.raises(PycpilotError, match="must be one of f32, f16, q8_0"):
        export_model(ExportConfig(model=tiny_run, out=tmp_path / "f.gguf", type="q4"))


def test_a_failed_export_keeps_the_earlier_files(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    import pycpilot.export.write as write

    out = tmp_path / "m.gguf"
    first = _export(tiny_run, out, format="ollama")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"m.gguf", "m.gguf.json", "m.Modelfile"}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write, "modelfile", broken)  # after the GGUF is written, before anything is replaced
    with pytest.raises(PycpilotError, match="No space left on device"):
        _export(tiny_run, out, format="ollama", type="q8_0", overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert json.loads((tmp_path / "m.gguf.json").read_text())["gguf"]["sha256"] == first["gguf"]["sha256"]


def test_padded_rows_and_added_tokens_keep_their_types(tiny_run: Path, tmp_path: Path) -> None:
    from tokenizers import AddedToken

    from pycpilot.export.vocab import CONTROL, NORMAL, UNUSED, USER_DEFINED, gguf_vocab

    tok = load_model(tiny_run).tokenizer
    tok.add_tokens([AddedToken("<my_marker>", special=False)])
    size = len(tok)
    v = gguf_vocab(tok, size + 3, "m")  # a model padded past the tokenizer (e.g. to a multiple of 64)
    assert len(v.tokens) == size + 3 and v.tokens[size:] == [f"[PAD{i}]" for i in range(size, size + 3)]
    assert v.types[size:] == [UNUSED] * 3
    ids = tok.get_vocab()
    assert v.types[ids["<my_marker>"]] == USER_DEFINED and v.types[ids[EOS]] == CONTROL
    assert v.types[ids["def"]] == NORMAL
    with pytest.raises(PycpilotError, match="ids up to"):
        gguf_vocab(tok, size - 1, "m")
