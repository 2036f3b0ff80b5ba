"""Evaluation: pass@k, scoring a samples file, sampling HumanEval from a model, perplexity, line completion."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
import torch

from pycpilot.errors import PycpilotError
from pycpilot.evaluate import load_problems
from pycpilot.evaluate.humaneval import HumanEvalConfig, evaluate_humaneval
from pycpilot.evaluate.lines import LinesConfig, evaluate_lines, pick_positions
from pycpilot.evaluate.passk import pass_at_k, summarize
from pycpilot.evaluate.perplexity import PerplexityConfig, evaluate_perplexity, file_nll

from conftest import good_code, write


def _exe() -> str:
    return str(Path(sys.executable).with_name("pycpilot"))


@pytest.mark.parametrize(("n", "c", "k"), [(5, 1, 1), (5, 2, 2), (6, 0, 3), (4, 4, 2), (7, 3, 5)])
def test_pass_at_k_is_the_chance_that_k_draws_hold_a_correct_one(n: int, c: int, k: int) -> None:
    draws = list(combinations([True] * c + [False] * (n - c), k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(d) for d in draws) / len(draws))


def test_summary_reports_k_only_where_every_task_has_n_samples() -> None:
    rows = [{"task_id": "a", "passed": p} for p in (True, False, False)]
    rows += [{"task_id": "b", "passed": False}] * 10
    s = summarize(rows)
    assert s["pass@1"] == pytest.approx(100 * (1 / 3 + 0) / 2, abs=0.01) and "pass@10" not in s
    assert (s["tasks"], s["samples"], s["samples_per_task"], s["passed"]) == (2, 13, 3, 1)


def test_scoring_a_samples_file_keeps_input_order(tmp_path: Path) -> None:
    problems = load_problems()
    tasks = list(problems)[:3]
    rows = []
    for t in tasks:
        rows.append({"task_id": t, "completion": problems[t]["canonical_solution"]})
        rows.append({"task_id": t, "completion": "    return None\n"})
        rows.append({"task_id": t, "completion": "    while True:\n        pass\n"})
    samples = write(tmp_path / "s.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [_exe(), "eval", "humaneval", "--samples", str(samples), "--out", str(out), "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["completion"]) for r in results] == [(r["task_id"], r["completion"]) for r in rows]
    assert [r["passed"] for r in results] == [True, False, False] * 3
    assert results[0]["result"] == "passed" and results[2]["result"] == "timed out"
    assert results[1]["result"].startswith("failed")
    summary = json.loads((out / "summary.json").read_text())["all"]
    assert summary["pass@1"] == pytest.approx(100 / 3, abs=0.01) and "pass@10" not in summary
    assert "codeparrot-small (110M)" in done.stdout and "3.80" in done.stdout
    assert json.loads((out / "manifest.json").read_text())["sandbox"]["mode"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"task_id": "HumanEval/0", "completion": "x"}\n{oops\n', "line 2: not JSON"),
        (b'{"task_id": "HumanEval/0"}\n', "line 1: needs a string completion"),
        (b'["HumanEval/0"]\n', "line 1: needs a string task_id"),
        (b"\xff\xfe\n", "line 1: not UTF-8"),
        (b"\n\n", "holds no samples"),
        (b'{"task_id": "Nope/1", "completion": "x"}\n', "unknown task_id Nope/1"),
        (b"[" * 100_000 + b"\n", "line 1: not JSON \\(nested too deeply\\)"),
        (b'{"task_id": "HumanEval/0", "completion": "\\ud800"}\n', "line 1: holds a lone surrogate"),
    ],
)
def test_bad_samples_files_are_one_line_errors(content: bytes, message: str, tmp_path: Path) -> None:
    samples = write(tmp_path / "s.jsonl", content)
    with pytest.raises(PycpilotError, match=message):
        evaluate_humaneval(HumanEvalConfig(out=tmp_path / "out", samples=samples, quiet=True))
    assert not (tmp_path / "out").exists()


def test_sampling_humaneval_from_a_model_is_reproducible(tiny_run: Path, tmp_path: Path) -> None:
    kw = dict(model=tiny_run, n=2, temperatures=[0.2, 0.8], limit=2, max_new_tokens=24, quiet=True)
    a = evaluate_humaneval(HumanEvalConfig(out=tmp_path / "a", **kw))
    evaluate_humaneval(HumanEvalConfig(out=tmp_path / "b", **kw))
    assert set(a) == {"T=0.2", "T=0.8"} and a["T=0.2"]["tasks"] == 2 and a["T=0.2"]["samples_per_task"] == 2
    samples = [(tmp_path / x / "samples.jsonl").read_text() for x in "ab"]
    assert samples[0] == samples[1] and len(samples[0].splitlines()) == 8
    results = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert all(
        r["result"] == "passed" or r["result"].startswith("failed") or r["result"] == "timed out" for r in results
    )
    for t in ("T=0.2", "T=0.8"):  # both rates, generated >= kept (kept stops at the scope's end)
        assert a[t]["new_tokens_per_s"] >= a[t]["kept_tokens_per_s"] >= 0 and a[t]["new_tokens_per_s"] > 0
    from pycpilot.evaluate.humaneval import report

    table = report(a).splitlines()
    assert "tok/s generated" in table[0] and f"{a['T=0.8']['new_tokens_per_s']:,.0f}" in table[3]


def test_perplexity_scores_every_token_once_whatever_the_stride(tiny_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "held"
    for i in range(3):
        write(folder / f"f{i}.py", good_code(f"held{i}", extra=8))  # longer than the 256-token context
    write(folder / "bad.py", b"\xff\xfe not utf-8")
    full = evaluate_perplexity(PerplexityConfig(model=tiny_run, data=folder, quiet=True, out=tmp_path / "o"))
    assert full["files"] == 3 and full["skipped"] == 1 and full["tokens"] > 3 * 256
    assert full["bits_per_byte"] == pytest.approx(full["loss"] * full["tokens"] / math.log(2) / full["bytes"])
    narrow = evaluate_perplexity(PerplexityConfig(model=tiny_run, data=folder, stride=256, quiet=True))
    assert narrow["tokens"] == full["tokens"] and narrow["loss"] != full["loss"]  # less context, same tokens
    assert json.loads((tmp_path / "o" / "perplexity.json").read_text())["files"] == 3


def test_perplexity_of_a_short_file_is_transformers_loss(tiny_run: Path) -> None:
    from pycpilot.generate import Completer

    c = Completer(tiny_run)
    ids = [c.tokenizer.eos_token_id, *c.tokenizer("def f(x):\n    return x\n")["input_ids"], c.tokenizer.eos_token_id]
    fast = c.fast
    assert fast is not None
    ours = file_nll(lambda x: fast.step(x, 0, fast.new_cache(1, x.shape[1]), every=True), ids, 256, 128)
    with torch.no_grad():
        theirs = c.model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item() * (len(ids) - 1)
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_line_completion_positions_are_seeded_and_scored(tiny_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "held"
    for i in range(2):
        write(folder / f"f{i}.py", good_code(f"line{i}", extra=3))
    texts = [(p.name, p.read_text()) for p in sorted(folder.iterdir())]
    a, b = pick_positions(texts, 10, 1), pick_positions(texts, 10, 1)
    assert [(p.name, p.cursor) for p in a] == [(p.name, p.cursor) for p in b]
    assert all(p.cursor < p.line_end and "\n" not in p.text[p.cursor : p.line_end] for p in a)
    s = evaluate_lines(LinesConfig(model=tiny_run, data=folder, samples=12, quiet=True, out=tmp_path / "o"))
    rows = json.loads((tmp_path / "o" / "lines.json").read_text())["rows"]
    assert s["samples"] == len(rows) == 12
    assert s["exact_match"] == pytest.approx(100 * sum(r["exact"] for r in rows) / 12)
    assert all("\n" not in r["completion"] and 0 <= r["edit_similarity"] <= 100 for r in rows)
    assert s["parses"] is not None and 0 <= s["parses"] <= 100
    # completed as `complete` and `serve` complete (token healing on), unless --no-heal
    from pycpilot.generate import Completer

    completer = Completer(tiny_run)
    texts_by_name = dict(texts)
    for heal, out in ((True, tmp_path / "o"), (False, tmp_path / "plain")):
        if not heal:
            evaluate_lines(LinesConfig(model=tiny_run, data=folder, samples=12, quiet=True, out=out, heal=False))
        for row in json.loads((out / "lines.json").read_text())["rows"][:4]:
            prompt = texts_by_name[row["file"]][: row["cursor"]]
            want = completer.complete(prompt, max_new_tokens=48, scope="line", bos=True, heal=heal)
            assert row["completion"] == want.completions[0].text


def test_eval_cli_errors_are_one_line(tiny_run: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [_exe(), "eval", "perplexity", "--model", str(tiny_run), "--data", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"pycpilot eval: error: --data {tmp_path / 'none'} does not exist"
    ]
    if not torch.cuda.is_available():
        args = ["eval", "humaneval", "--model", str(tiny_run), "--out", str(tmp_path / "o"), "--device", "cuda"]
        done = subprocess.run([_exe(), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [
            "pycpilot eval: error: --device cuda: this torch sees no CUDA GPU (see the README's GPU install)"
        ]


def test_samples_files_with_a_bom_extra_keys_and_duplicates_are_read(tmp_path: Path, monkeypatch) -> None:
    from pycpilot.evaluate import humaneval

    row = {"task_id": "HumanEval/0", "completion": "    return 1\n", "model": "x"}
    samples = write(tmp_path / "s.jsonl", b"\xef\xbb\xbf" + (json.dumps(row) + "\n").encode() * 2)
    assert humaneval.read_samples(samples) == [row, row]
    monkeypatch.setattr(humaneval, "MAX_SAMPLES_BYTES", 50)
    with pytest.raises(PycpilotError, match="larger than"):
        humaneval.read_samples(samples)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(temperatures=[0.2, 0.2]), "--temperature values must differ"),
        (dict(temperatures=[1e-9]), "--temperature must be 0"),
        (dict(temperatures=[math.nan]), "--temperature must be 0"),
    ],
)
def test_bad_humaneval_options_are_one_line_errors(kw: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(PycpilotError, match=message):
        HumanEvalConfig(out=tmp_path / "o", model=tmp_path, **kw).validate()


def test_a_large_humaneval_seed_still_samples(tiny_run: Path, tmp_path: Path) -> None:
    from pycpilot.evaluate.sampling import sample_humaneval

    cfg = HumanEvalConfig(out=tmp_path / "o", model=tiny_run, n=2, temperatures=[0.8], limit=1, max_new_tokens=4)
    cfg.seed, cfg.quiet = 10**15, True  # derived seeds pass 2**64, which torch refuses
    rows, summary = sample_humaneval(cfg, load_problems(), lambda s: ([{**r, "passed": False} for r in s], 0.0))
    assert len(rows) == 2 and summary["T=0.8"]["samples"] == 2 and summary["T=0.8"]["device"] == "cpu"


@pytest.mark.parametrize(
    ("kw", "message"),
    [(dict(stride=0), "--stride must be at least 1"), (dict(limit=0), "--limit"), (dict(limit=-1), "--limit")],
)
def test_bad_perplexity_options_are_one_line_errors(kw: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(PycpilotError, match=message):
        evaluate_perplexity(PerplexityConfig(model=tmp_path / "no-model", data=tmp_path, quiet=True, **kw))


def test_held_out_files_skip_binary_huge_special_and_empty_ones(tmp_path: Path, monkeypatch) -> None:
    import os

    from pycpilot.evaluate import texts

    folder = tmp_path / "held"
    write(folder / "ok.py", b"\xef\xbb\xbfx = 1\n")
    write(folder / "nul.py", b"x = 1\x00\n")
    write(folder / "empty.py", b" \n")
    write(folder / "big.py", b"x = 1\n" * 100)
    os.mkfifo(folder / "fifo.py")  # would block a plain read forever
    monkeypatch.setattr(texts, "MAX_FILE_BYTES", 100)
    assert texts.read_texts(folder, "valid") == ([("ok.py", "x = 1\n")], 4)
    with pytest.raises(PycpilotError, match="holds no readable, non-empty Python files"):
        texts.read_texts(folder / "big.py", "valid")
    (folder / "empty").mkdir()
    with pytest.raises(PycpilotError, match=r"holds no readable, non-empty Python files \(0 skipped\)"):
        texts.read_texts(folder / "empty", "valid")


def test_data_folders_without_the_split_or_text_are_one_line_errors(tiny_run: Path, tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    from pycpilot.evaluate.texts import read_texts

    with pytest.raises(PycpilotError, match="has no nope split"):
        read_texts(tiny_run.parent / "gdata", "nope")
    DatasetDict({"valid": Dataset.from_dict({"content": ["", " \n", None]})}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(PycpilotError, match="split valid holds no non-empty files"):
        read_texts(tmp_path / "d", "valid")


def test_eval_out_never_clobbers_another_stages_folder(tiny_run: Path, tmp_path: Path) -> None:
    folder = write(tmp_path / "held" / "f.py", 'TOKEN = "<|endoftext|><fim_prefix>"\n').parent
    before = (tiny_run / "manifest.json").read_text()
    with pytest.raises(PycpilotError, match=r"refusing to write into .* not the output of an earlier eval-perplexity"):
        evaluate_perplexity(PerplexityConfig(model=tiny_run, data=folder, quiet=True, out=tiny_run))
    with pytest.raises(PycpilotError, match="refusing to write into"):
        evaluate_lines(LinesConfig(model=tiny_run, data=folder, quiet=True, out=tiny_run))
    with pytest.raises(PycpilotError, match=r"no matching manifest\.json"):  # files, no manifest: not ours either
        evaluate_lines(LinesConfig(model=tiny_run, data=folder, quiet=True, out=folder))
    assert (tiny_run / "manifest.json").read_text() == before and not (tiny_run / "perplexity.json").exists()
    out = tmp_path / "o"
    for _ in range(2):  # its own earlier output is replaced
        s = evaluate_perplexity(PerplexityConfig(model=tiny_run, data=folder, quiet=True, out=out))
    from pycpilot.generate import Completer

    text = (folder / "f.py").read_text()
    assert s["tokens"] == len(Completer(tiny_run).tokens(text)) + 1  # special spellings are text, as in training
    assert json.loads((out / "manifest.json").read_text())["stage"] == "eval-perplexity"


def test_the_parse_check_keeps_the_compilers_warnings_about_generated_code_quiet(capfd) -> None:
    from pycpilot.evaluate.lines import parses

    assert parses("x = (1, 2)(3)\n") and not parses("def f(:\n")  # the first makes CPython warn
    assert capfd.readouterr().err == ""
