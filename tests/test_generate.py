"""Completion: the fast decoder against transformers' generate, sampling, stops and scopes, FIM, loading."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pycpilot.errors import PycpilotError
from pycpilot.generate import CompleteConfig, Completer, complete
from pycpilot.generate.decode import FastGPT2
from pycpilot.generate.load import resolve_model_dir
from pycpilot.generate.text import Stopper, TokenText, safe_stream_length

PROMPTS = ["class Store:\n    def __init__(self, size):\n", "def mean", "import math\n\n\ndef helper_g1x3_2(x):\n"]


@pytest.fixture(scope="module")
def completer(tiny_run: Path) -> Completer:
    return Completer(tiny_run)


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_greedy_decoders_equal_transformers_generate(engine: str, tiny_run: Path, completer: Completer) -> None:
    ours_engine = completer if engine == "auto" else Completer(tiny_run, engine=engine)
    hf = Completer(tiny_run, engine="hf")
    assert (ours_engine.engine, hf.engine) == ("native" if engine == "auto" else "torch", "hf")
    for prompt in PROMPTS:
        ours = ours_engine.complete(prompt, max_new_tokens=60, scope="file").completions[0]
        theirs = hf.complete(prompt, max_new_tokens=60, scope="file").completions[0]
        assert ours.ids == theirs.ids and ours.text == theirs.text, prompt
        assert len(ours.ids) > 10  # it really generated


def test_prefill_logits_match_the_model(completer: Completer) -> None:
    ids = completer.encode(PROMPTS[0], None)
    fast = completer.fast
    assert fast is not None
    ours = fast.step(torch.tensor([ids]), 0, fast.new_cache(1, len(ids)))
    with torch.no_grad():
        theirs = completer.model(torch.tensor([ids])).logits[:, -1]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_sampling_is_reproducible_with_a_seed_and_n_rows_differ(completer: Completer) -> None:
    kw = dict(n=4, max_new_tokens=30, temperature=1.0, top_p=0.95, top_k=50, scope="file")
    a = [c.ids for c in completer.complete(PROMPTS[1], seed=1, **kw).completions]
    b = [c.ids for c in completer.complete(PROMPTS[1], seed=1, **kw).completions]
    c = [c.ids for c in completer.complete(PROMPTS[1], seed=2, **kw).completions]
    assert a == b and a != c
    assert len({tuple(x) for x in a}) > 1  # the rows are sampled independently


def test_stops_scopes_and_finish_reasons(completer: Completer) -> None:
    long = completer.complete(PROMPTS[0], max_new_tokens=12, scope="file").completions[0]
    assert long.finish_reason == "length" and long.tokens == 12
    line = completer.complete(PROMPTS[0], max_new_tokens=60, scope="line").completions[0]
    assert "\n" not in line.text and line.finish_reason == "stop"
    full = completer.complete(PROMPTS[0], max_new_tokens=60, scope="file").completions[0].text
    word = full[6:10]  # a piece of what it writes anyway
    cut = completer.complete(PROMPTS[0], max_new_tokens=60, scope="file", stop=[word]).completions[0]
    assert cut.finish_reason == "stop" and cut.text == full[: full.index(word)]


def test_streamed_text_is_the_completion(completer: Completer) -> None:
    pieces: list[str] = []
    done = completer.complete(PROMPTS[2], max_new_tokens=50, scope="block", on_text=pieces.append).completions[0]
    assert "".join(pieces) == done.text and len(pieces) >= 1


def test_block_scope_stops_at_a_dedent_or_a_new_top_level_statement() -> None:
    s = Stopper("def f(x):\n", [], "block")
    text = "    y = x + 1\n    return y\n\nz = f(2)\n"
    assert text[: s.cut(text)] == "    y = x + 1\n    return y\n"
    assert s.cut("    if x:\n        return 1\n    return 2") is None  # deeper, then back to the block: fine
    assert s.cut("    return x\ndef g():") is not None  # CodeParrot's "\ndef"
    inline = Stopper("    x = fo", [], "block")  # the cursor mid-line: that line sets the block's indentation
    assert inline.cut("o(1)\n    y = 2\nprint(y)") == len("o(1)\n    y = 2")
    line = Stopper("x = ", [], "line")
    assert line.cut("1\ny = 2") == 1 and line.cut("1") is None
    custom = Stopper("", ["###"], "file")
    assert custom.cut("a ## b ### c") == 7 and safe_stream_length("ab##", custom) == 2


def test_fill_in_the_middle_uses_the_psm_layout(completer: Completer) -> None:
    ids = completer.encode("def f(x):\n    ", "\n    return y\n")
    vocab = completer.tokenizer.get_vocab()
    assert ids[0] == vocab["<fim_prefix>"] and ids[-1] == vocab["<fim_middle>"] and vocab["<fim_suffix>"] in ids
    out = completer.complete("def f(x):\n    ", suffix="\n    return y\n", max_new_tokens=20)
    assert out.completions and out.prompt_tokens == len(ids)


def test_a_prompt_longer_than_the_context_is_cut_from_the_left(completer: Completer) -> None:
    prompt = "x = 1\n" * 400
    out = completer.complete(prompt, max_new_tokens=16, scope="file")
    assert out.prompt_cut > 0 and out.prompt_tokens + 16 <= completer.context


def test_token_text_matches_the_tokenizer_and_holds_back_a_cut_character(completer: Completer) -> None:
    text = TokenText(completer.tokenizer)
    assert text.table is not None  # byte-level BPE: the fast path
    sample = 'def café(x):\n    return "naïve ✓"\n'
    ids = completer.tokenizer(sample, add_special_tokens=False)["input_ids"]
    assert text.decode(ids) == completer.tokenizer.decode(ids) == sample
    data = "✓".encode()
    partial = [i for i, b in enumerate(text.table) if b == data[:1]]
    if partial:  # a token that is the first byte of a 3-byte character: nothing shows yet
        assert text.decode([partial[0]]) == ""


def test_a_rows_cached_bytes_decode_as_the_whole_row(completer: Completer) -> None:
    """RowBytes looks each token up once; ids that do not extend the last ones start it again."""
    from pycpilot.generate.text import RowBytes

    text, row = TokenText(completer.tokenizer), RowBytes()
    ids = completer.tokenizer('def café(x):\n    return "naïve ✓"\n', add_special_tokens=False)["input_ids"]
    ids = [*ids, completer.tokenizer.eos_token_id, *ids[:3]]  # a special id in the middle
    for k in range(len(ids) + 1):
        assert text.decode(ids[:k], row) == text.decode(ids[:k])
    assert row.ids == ids
    for other in (ids[:2], ids[1:4], []):  # shorter, different, empty: from the start
        assert text.decode(other, row) == text.decode(other) and row.ids == other


def test_a_stopper_fed_a_growing_text_cuts_where_a_fresh_one_does() -> None:
    """The incremental scan (only what is new, and the last line) finds the same end as scanning all again."""
    import random

    pieces = ["    ", "x = 1", "\n", "\n    ", "\n  ", "\n\n", "if y:", "\n        z", "#", "\ndef", "print", "\n#",
              "  ", "\t", "return x", "###", "é", "\nprint(1)", "  \n", "\nclass"]  # fmt: skip
    rng = random.Random(5)
    for case in range(400):
        prompt = rng.choice(["def f(x):\n", "    x = fo", "", "class A:\n    def g(self):\n        ", "x = "])
        scope = ("line", "block", "file")[case % 3]
        stops = rng.choice([[], ["###"], ["\n\n", "re"]])
        grown = Stopper(prompt, stops, scope)
        text = ""
        for _ in range(30):
            text += rng.choice(pieces)
            want = Stopper(prompt, stops, scope).cut(text)
            assert grown.cut(text) == want, (prompt, scope, stops, text)
            if want is not None:
                break


def test_int8_weights_stay_close_to_fp32(completer: Completer) -> None:
    fast, fast8 = completer.fast, FastGPT2(completer.model, int8=True)
    assert fast is not None
    ids = torch.tensor([completer.encode(PROMPTS[0], None)])
    a = fast.step(ids, 0, fast.new_cache(1, ids.shape[1]))
    b = fast8.step(ids, 0, fast8.new_cache(1, ids.shape[1]))
    assert torch.nn.functional.cosine_similarity(a, b).item() > 0.99 and not torch.equal(a, b)


def test_a_training_run_loads_its_newest_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    running = tmp_path / "running"
    shutil.copytree(tiny_run / "checkpoints", running / "checkpoints")
    folder, note = resolve_model_dir(running)
    assert folder.name == "step-0000040" and "training has not finished" in note
    assert Completer(running).complete("def", max_new_tokens=4).completions


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "model.safetensors").unlink() or p, "holds no model"),
        (lambda p: (p / "config.json").write_text("{not json") and p, "config.json is not readable JSON"),
        (lambda p: (p / "config.json").write_text("[1]") and p, "does not describe a model"),
        (lambda p: (p / "tokenizer.json").unlink() or p, "not a complete tokenizer folder"),
        (
            lambda p: _edit_config(p, n_embd="abc"),
            r"config.json is not a valid model configuration: .*'n_embd' expected int, got str",
        ),
        (
            lambda p: _edit_config(p, n_embd=32),
            r"model.safetensors does not fit .*config.json: transformer\.\S+ is \[.*\] in the weights but \[.*\] by",
        ),
    ],
)
def test_bad_model_folders_are_one_line_errors(make, message: str, tiny_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_run, folder, ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(PycpilotError, match=message):
        Completer(make(folder))


def _edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def test_truncated_weights_are_one_line_errors(tiny_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_run, folder, ignore=shutil.ignore_patterns("checkpoints"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(PycpilotError, match="cannot load the model"):
        Completer(folder)


def test_cli_completes_from_stdin_and_reports(tiny_run: Path) -> None:
    exe = str(Path(sys.executable).with_name("pycpilot"))
    done = subprocess.run(
        [exe, "complete", "--model", str(tiny_run), "--max-new-tokens", "20", "--scope", "line"],
        input="def mean",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "\n" not in done.stdout.rstrip("\n") and "native engine" in done.stderr and "tokens/s" in done.stderr
    bad = subprocess.run(
        [exe, "complete", "--model", str(tiny_run), "--top-p", "2", "x"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "pycpilot complete: error: --top-p must be in (0, 1], not 2.0"
    ]


def test_config_reads_prompt_files(tiny_run: Path, tmp_path: Path) -> None:
    f = tmp_path / "p.py"
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(PycpilotError, match="is not UTF-8"):
        complete(CompleteConfig(model=tiny_run, file=f, quiet=True))
    f.write_text("def f(", encoding="utf-8")
    assert complete(CompleteConfig(model=tiny_run, file=f, quiet=True, max_new_tokens=3)).completions
    assert json.loads((tiny_run / "manifest.json").read_text())["status"] == "done"


def test_a_large_max_new_tokens_leaves_the_prompt_at_least_half_the_context(completer: Completer) -> None:
    ids = completer.encode("def mean", None)
    short = completer.complete("def mean", max_new_tokens=10_000, scope="file")  # the prompt was cut to 1 token
    assert short.prompt_cut == 0 and short.prompt_tokens == len(ids)
    assert short.completions[0].tokens <= completer.context - len(ids)
    long = completer.complete("x = 1\n" * 400, max_new_tokens=10_000, scope="file")
    assert long.prompt_tokens == completer.context // 2 and long.prompt_cut > 0
    humaneval = completer.complete(PROMPTS[0], max_new_tokens=completer.context, bos=True, scope="file")
    assert humaneval.prompt_cut == 0 and humaneval.prompt_tokens == len(completer.encode(PROMPTS[0], None)) + 1


def test_a_long_fill_in_the_middle_prompt_keeps_its_fim_tokens(completer: Completer) -> None:
    prefix_id, suffix_id, middle_id = completer.fim
    suffix = "".join(f"y{i} = {i}\n" for i in range(300))
    ids, cut = completer._fit("x = 1\n" * 400, suffix, False, 100)
    assert len(ids) == 100 and cut > 0 and (ids[0], ids[-1]) == (prefix_id, middle_id) and ids.count(suffix_id) == 1
    whole = completer.encode("", suffix)
    assert ids[: ids.index(suffix_id) + 1] == [prefix_id, suffix_id]  # the prefix went first, ...
    assert ids[ids.index(suffix_id) : -1] == whole[1:-1][: 100 - 3 + 1]  # ... then the end of the suffix
    out = completer.complete("x = 1\n" * 400, suffix="y = 2\n" * 400, max_new_tokens=8)
    assert out.prompt_cut > 0 and out.completions[0].tokens >= 1


def test_special_token_spellings_in_a_prompt_are_plain_text(completer: Completer) -> None:
    special = set(completer.tokenizer.all_special_ids)
    for text in ("<|endoftext|>", "<fim_prefix>", 'x = "<fim_middle>"\n'):
        ids = completer.encode(text, None)
        assert len(ids) > 1 and not special & set(ids), text  # as `pack` encoded the training files
        assert completer.complete(text, max_new_tokens=4).completions
    assert completer.complete("", max_new_tokens=4).prompt_tokens == 1  # the end-of-text token alone


def test_the_hf_engine_stops_and_counts_as_the_fast_one(tiny_run: Path, completer: Completer) -> None:
    hf = Completer(tiny_run, engine="hf")
    full = completer.complete(PROMPTS[0], max_new_tokens=40, scope="file").completions[0].text
    for kw in (dict(stop=[full[8:11]], scope="file"), dict(scope="line"), dict(scope="block"), dict(n=2)):
        ours = completer.complete(PROMPTS[0], max_new_tokens=40, **kw).completions  # type: ignore[arg-type]
        theirs = hf.complete(PROMPTS[0], max_new_tokens=40, **kw).completions  # type: ignore[arg-type]
        assert [(c.text, c.finish_reason, c.tokens, c.ids) for c in ours] == [
            (c.text, c.finish_reason, c.tokens, c.ids) for c in theirs
        ], kw
    pieces: list[str] = []
    done = hf.complete(PROMPTS[2], max_new_tokens=20, on_text=pieces.append).completions[0]
    assert "".join(pieces) == done.text  # `complete` prints the first completion through on_text


@pytest.mark.parametrize("engine", ["auto", "hf"])
def test_a_deadline_or_cancel_ends_every_row_as_length(engine: str, tiny_run: Path, completer: Completer) -> None:
    c = completer if engine == "auto" else Completer(tiny_run, engine="hf")
    for kw in (dict(deadline=time.monotonic() - 1), dict(cancelled=lambda: True)):
        out = c.complete(PROMPTS[0], n=3, max_new_tokens=50, temperature=1.0, scope="file", **kw)  # type: ignore
        assert [(x.finish_reason, x.tokens) for x in out.completions] == [("length", 1)] * 3, kw


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(n=0), "-n must be between 1 and 256"),
        (dict(max_new_tokens=0), "--max-new-tokens must be at least 1"),
        (dict(temperature=1e-45), "--temperature must be 0"),  # logits / T overflow: NaN probabilities
        (dict(temperature=float("inf")), "--temperature must be 0"),
        (dict(seed=2**70), "--seed must be between"),
        (dict(scope="function"), "--scope must be one of"),
        (dict(stop=[""]), "--stop strings must not be empty"),
    ],
)
def test_bad_settings_of_complete_are_one_line_errors(kw: dict, message: str, completer: Completer) -> None:
    with pytest.raises(PycpilotError, match=message):
        completer.complete("def f", **kw)


def test_a_suffix_needs_fim_tokens(completer: Completer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completer, "fim", [None, None, None])
    with pytest.raises(PycpilotError, match="no fill-in-the-middle tokens"):
        completer.complete("def f(", suffix=")\n")


def test_block_scope_ignores_spaces_after_the_prompts_own_line() -> None:
    s = Stopper("def f(x):", [], "block")
    for first in ("", "  "):  # trailing spaces on `def f(x):` do not make it the block's first line
        text = first + "\n    return x\nprint(f(1))"
        assert text[: s.cut(text)] == first + "\n    return x"


def test_ids_past_the_tokenizer_decode_to_nothing(completer: Completer) -> None:
    text = TokenText(completer.tokenizer)
    assert text.table is not None
    ab = completer.tokenizer("ab", add_special_tokens=False)["input_ids"]
    assert text.decode([ab[0], len(text.table) + 3, *ab[1:]]) == "ab"  # a model with a padded vocabulary


def test_a_tokenizer_larger_than_the_model_is_a_one_line_error(tiny_run: Path, tmp_path: Path) -> None:
    from pycpilot.tokenizer.load import load_tokenizer

    folder = tmp_path / "m"
    shutil.copytree(tiny_run, folder, ignore=shutil.ignore_patterns("checkpoints"))
    tokenizer = load_tokenizer(folder)
    tokenizer.add_tokens(["qqzzxx"])
    tokenizer.save_pretrained(folder)
    with pytest.raises(PycpilotError, match="tokens but the model only"):
        Completer(folder)


def test_devices_resolve_to_the_cpu_here_and_the_c_step_stays_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pycpilot.generate.complete import resolve_device

    assert resolve_device("auto", "auto", False).type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    assert resolve_device("auto", "auto", False).type == "cuda"
    assert resolve_device("auto", "native", False).type == "cpu" and resolve_device("auto", "auto", True).type == "cpu"
    with pytest.raises(PycpilotError, match="--engine native and --int8 are CPU-only"):
        resolve_device("cuda", "auto", True)
    with pytest.raises(PycpilotError, match="--device must be one of auto, cpu, cuda"):
        resolve_device("tpu", "auto", False)


def test_cli_bad_prompts_are_one_line_errors(tiny_run: Path, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("pycpilot"))
    base = [exe, "complete", "--model", str(tiny_run), "--max-new-tokens", "4"]
    f = tmp_path / "p.py"
    f.write_text("def f(", encoding="utf-8")
    for args, stdin, message in [
        ([], b"def \xff\xfe", "stdin is not UTF-8 text"),
        (["--temperature", "1e-45"], b"def f", "--temperature must be 0 (greedy) or a finite number >= 1e-06"),
        (["x", "--file", str(f)], b"", "give a prompt or --file, not both"),
        (["x", "--device", "cuda"], b"", "--device cuda: this torch sees no CUDA GPU (see the README's GPU install)"),
    ]:
        done = subprocess.run([*base, *args], input=stdin, capture_output=True, timeout=120)
        assert done.returncode == 2 and done.stderr.decode().strip().splitlines() == [
            f"pycpilot complete: error: {message}"
        ], done.stderr


def test_a_huge_prompt_file_is_a_one_line_error(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys.modules["pycpilot.generate.complete"], "MAX_PROMPT_BYTES", 1000)
    f = tmp_path / "big.py"
    f.write_text("x = 1\n" * 200, encoding="utf-8")
    with pytest.raises(PycpilotError, match=r"big\.py holds more than"):
        complete(CompleteConfig(model=tiny_run, file=f, quiet=True))


def test_cutting_in_steps_keeps_the_start_but_never_the_tokens_before_the_cursor(completer: Completer) -> None:
    long = "".join(f"v{i} = {i}\n" for i in range(200))
    ids = completer.encode(long, None)
    for grow in range(6):  # a growing file: cut in 32s, so its first kept token stays put
        kept, cut, _, _ = completer.prepare(long + "w = 0\n" * grow, None, 16, bos=False, cut_step=32)
        assert cut % 32 == 0 and kept[:50] == ids[cut : cut + 50]
    # A short prefix before a long suffix that overflows by a few tokens: only those go, not a rounded 32
    # (which would take the whole prefix), and the tokens just before the cursor stay.
    prefix = "import os\n\n\ndef f(x):\n    y = x + 1\n    z = y * 2\n    return x + y + z\n\nvalue ="
    room, lines = completer.context - 16, 0
    while len(completer.encode(prefix, "".join(f"\nu{i} = {i}" for i in range(lines)))) <= room + 2:
        lines += 1
    suffix = "".join(f"\nu{i} = {i}" for i in range(lines))
    over = len(completer.encode(prefix, suffix)) - room
    assert 0 < over < len(completer.tokens(prefix)) - 3
    kept, cut, _, _ = completer.prepare(prefix, suffix, 16, bos=False, cut_step=32)
    assert cut == over
    at = kept.index(completer.fim[1])  # the suffix token: the prefix's end is just before it
    assert kept[at - 3 : at] == completer.tokens(prefix)[-3:]


def test_token_healing_gives_back_the_last_token(tiny_run: Path, completer: Completer) -> None:
    prompt = PROMPTS[0]  # ends with a newline
    ids = completer.encode(prompt, None)
    healed_ids, _, _, healed = completer.prepare(prompt, None, 20, bos=False, heal=True)
    assert healed_ids == ids[:-1] and healed == completer.text.table[ids[-1]] and not healed.strip()
    half = "def mean(values):\n    total = 0\n    for val"  # a word typed half-way
    word_ids = completer.encode(half, None)
    ids_back, _, _, word = completer.prepare(half, None, 20, bos=False, heal=True)
    assert ids_back == word_ids[:-1] and word == completer.text.table[word_ids[-1]] and half.endswith(word.decode())
    cut = completer.complete(half, max_new_tokens=6, scope="line", heal=True).completions[0]
    assert completer.text.table[cut.ids[0]].startswith(word) and cut.text == completer.text.decode(cut.ids)[len(word) :]
    for text in ("s = 'é", "s = '日本"):  # a token that ends inside a character stays (counted in characters)
        last = completer.text.table[completer.encode(text, None)[-1]]
        try:
            whole = last.decode("utf-8")
        except UnicodeDecodeError:
            whole = None
        assert completer.prepare(text, None, 20, bos=False, heal=True)[3] == (last if whole is not None else b"")
    assert completer.prepare(prompt, "\n    return x\n", 20, bos=False, heal=True)[3] == b""  # FIM: as trained
    got = completer.complete(prompt, max_new_tokens=20, scope="file", heal=True).completions[0]
    first = completer.text.table[got.ids[0]]
    assert first.startswith(healed)  # the first new token re-spells what was given back
    assert got.text == completer.text.decode(got.ids)[len(healed) :]
    hf = Completer(tiny_run, engine="hf").complete(prompt, max_new_tokens=20, scope="file", heal=True).completions[0]
    assert hf.ids == got.ids and hf.text == got.text  # both engines heal alike
    torch_engine = Completer(tiny_run, engine="torch").complete(prompt, max_new_tokens=20, scope="file", heal=True)
    assert torch_engine.completions[0].ids == got.ids


def test_the_first_token_mask_holds_exactly_the_tokens_that_start_with_the_healed_bytes(completer: Completer) -> None:
    table = completer.text.table
    assert table is not None
    for healed in (b" sel", b"\n    ", b" ", b"(", b"de", b"\xff\xfe"):
        mask = completer.first_mask(healed)
        assert mask is not None
        want = {i for i, b in enumerate(table) if b.startswith(healed) and i not in completer.text.special}
        assert set(mask.nonzero().flatten().tolist()) == want, healed
    assert completer.first_mask(b"") is None


def test_cli_heals_by_default_and_no_heal_turns_it_off(tiny_run: Path, completer: Completer) -> None:
    exe = str(Path(sys.executable).with_name("pycpilot"))
    base = [exe, "complete", "--model", str(tiny_run), "--max-new-tokens", "12", "--scope", "file", "--no-stream"]
    prompt = PROMPTS[0]
    healed = subprocess.run([*base, prompt], capture_output=True, text=True, timeout=120)
    plain = subprocess.run([*base, "--no-heal", prompt], capture_output=True, text=True, timeout=120)
    assert healed.returncode == plain.returncode == 0
    want = completer.complete(prompt, max_new_tokens=12, scope="file", heal=True).completions[0].text
    want_plain = completer.complete(prompt, max_new_tokens=12, scope="file").completions[0].text
    assert healed.stdout.rstrip("\n") == want.rstrip("\n") and plain.stdout.rstrip("\n") == want_plain.rstrip("\n")
