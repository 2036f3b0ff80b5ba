"""`pycpilot run`: the whole pipeline on a tiny corpus, skipping, redoing, resuming, and its report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pycpilot.errors import PycpilotError
from pycpilot.run import RunConfig, run

from conftest import good_code, write

TINY = {
    "data": {"valid_fraction": 0.25, "num_proc": 1},
    "tokenizer": {"vocab_size": 400, "compare": "none"},
    "pack": {"context_length": 64},
    "train": {"max_steps": 30, "n_layer": 2, "n_head": 2, "n_embd": 64, "batch_size": 8, "save_every": 10},
    "eval": {"humaneval_limit": 2, "n": 1, "lines": 5},
}


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for r in range(4):
        (root / f"repo{r}" / ".git").mkdir(parents=True)
        for f in range(6):
            write(root / f"repo{r}" / f"m{f}.py", good_code(f"r{r}x{f}", extra=f))
    return root


def _cfg(corpus: Path, out: Path, **changes) -> RunConfig:
    settings = json.loads(json.dumps(TINY))
    for stage, values in changes.items():
        settings[stage].update(values)
    return RunConfig(out=out, sources=[str(corpus)], settings=settings, quiet=True)


def test_a_run_end_to_end_then_skips_then_redoes_what_changed(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    lines: list[str] = []
    manifest = run(_cfg(corpus, out), say=lines.append)  # ~5 s here: the tiny corpus and model keep it short
    for folder in ("data", "tokenizer", "packed", "model", "model/checkpoints", "eval/humaneval", "eval/lines"):
        assert (out / folder).is_dir(), folder
    assert (out / "report.html").exists() and (out / "eval" / "completions.json").exists()
    assert [s["status"] for s in manifest["stages"].values()] == ["done"] * 5
    assert sum("running (not run yet)" in line for line in lines) == 5
    assert "valid" in manifest["stages"]["train"]["summary"] and "HumanEval" in manifest["stages"]["eval"]["summary"]
    bought = next(line for line in lines if "of training bought GPT-2 2x64" in line)  # the last lines: usefulness
    assert "bits per byte; line completion" in bought and "% exact" in bought and "HumanEval pass@1" in bought
    page = (out / "report.html").read_text()
    assert "What the budget bought" in page and "30 steps" in page
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["stage"] == "run" and on_disk["stages"]["train"]["fingerprint"]
    from pycpilot.generate import Completer

    assert Completer(out / "model").complete("def ", max_new_tokens=3).completions  # the model loads

    # Again, unchanged: every stage skipped.
    lines.clear()
    run(_cfg(corpus, out), say=lines.append)
    assert sum("unchanged, skipped" in line for line in lines) == 5

    # --export: the model as a GGUF file, a last stage only when asked for, then skipped like the rest.
    exporting = _cfg(corpus, out)
    exporting.export, exporting.settings["export"] = "ollama", {"type": "q8_0"}
    lines.clear()
    manifest = run(exporting, say=lines.append)
    assert sum("unchanged, skipped" in line for line in lines) == 5
    assert any("[6/6] export: running (not run yet)" in line for line in lines)
    assert (out / "export" / "run.gguf").is_file() and (out / "export" / "run.Modelfile").is_file()
    assert manifest["stages"]["export"]["figures"]["type"] == "q8_0"
    lines.clear()
    run(exporting, say=lines.append)
    assert sum("unchanged, skipped" in line for line in lines) == 6
    (out / "export" / "run.Modelfile").unlink()  # a piece of the export gone: the stage runs again
    lines.clear()
    run(exporting, say=lines.append)
    assert any("export: running (its output is missing or incomplete)" in line for line in lines)
    assert (out / "export" / "run.Modelfile").is_file()

    # A changed training setting: train and eval again, the rest kept, with the reason.
    lines.clear()
    run(_cfg(corpus, out, train={"max_steps": 40}), say=lines.append)
    text = "\n".join(lines)
    assert "data: unchanged" in text and "pack: unchanged" in text
    assert "train: running (max_steps changed (30 -> 40))" in text
    assert "eval: running (the train stage before it was redone)" in text
    assert json.loads((out / "model" / "manifest.json").read_text())["result"]["steps"] == 40

    # A stage's output removed: it runs again, and so does everything after it (its new output).
    shutil.rmtree(out / "packed")
    lines.clear()
    run(_cfg(corpus, out, train={"max_steps": 40}), say=lines.append)
    text = "\n".join(lines)
    assert "pack: running (its output is missing or incomplete)" in text
    assert "train: running (the pack stage before it was redone)" in text and "eval: running" in text

    # A changed corpus: everything from data on.
    write(corpus / "repo0" / "new.py", good_code("added", extra=2))
    lines.clear()
    run(_cfg(corpus, out, train={"max_steps": 40}), say=lines.append)
    assert "data: running (its input changed" in lines[0]
    assert "tokenizer: running (the data stage before it was redone)" in "\n".join(lines)


def test_an_interrupted_training_resumes(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(_cfg(corpus, out), say=lambda _: None)
    # As if killed mid-training: checkpoints but no final model, the run's record still "started".
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["stages"]["train"]["status"] = "started"
    (out / "manifest.json").write_text(json.dumps(manifest))
    for name in ("manifest.json", "model.safetensors", "config.json"):
        (out / "model" / name).unlink()
    newest = sorted((out / "model" / "checkpoints").iterdir())[-1]
    shutil.rmtree(newest)  # the last checkpoint was not written yet
    lines: list[str] = []
    run(_cfg(corpus, out), say=lines.append)
    assert "train: running (resuming the interrupted training)" in "\n".join(lines)
    assert json.loads((out / "model" / "manifest.json").read_text())["result"]["steps"] == 30

    # Interrupted again, and now every checkpoint is damaged: training starts over instead of failing each time.
    (out / "manifest.json").write_text(json.dumps(manifest))
    for ckpt in (out / "model" / "checkpoints").iterdir():
        weights = ckpt / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-3] ^= 1
        weights.write_bytes(bytes(data))
    lines.clear()
    run(_cfg(corpus, out), say=lines.append)
    said = "\n".join(lines)
    assert "train: running (" in said and "resuming" not in said, lines
    assert json.loads((out / "model" / "manifest.json").read_text())["result"]["steps"] == 30


def test_bad_run_folders_and_settings_are_one_line_errors(corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write(other / "notes.txt", "mine")
    with pytest.raises(PycpilotError, match="not a `pycpilot run` folder"):
        run(_cfg(corpus, other))
    broken = tmp_path / "broken"
    write(broken / "manifest.json", "{not json")
    with pytest.raises(PycpilotError, match="unreadable"):
        run(_cfg(corpus, broken))
    with pytest.raises(PycpilotError, match="train: unknown setting 'bogus'"):
        run(_cfg(corpus, tmp_path / "x", train={"bogus": 1}))
    with pytest.raises(PycpilotError, match=r"--eval\.n must be between 1 and 1,000, not 0"):
        run(_cfg(corpus, tmp_path / "y", eval={"n": 0}))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before any work


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenizer": {"vocab_size": 0}}, r"--tokenizer\.vocab-size must be between 300"),
        ({"train": {"n_layer": -3}}, r"--train\.n-layer must be between 1 and 1,024, not -3"),
        ({"train": {"n_head": 0}}, r"--train\.n-head must be between 1 and 1,024, not 0"),
        ({"train": {"n_embd": 30, "n_head": 4}}, r"--train\.n-embd must be a multiple of --train\.n-head"),
        ({"train": {"eval_blocks": -1}}, r"--train\.eval-blocks must be at least 1"),
        ({"train": {"n_positions": 32}}, "train.n_positions 32 is shorter than pack.context_length 64"),
        ({"pack": {"fim_rate": 2.0}}, r"--pack\.fim-rate must be between 0 and 1"),
        ({"data": {"num_perm": 1}}, r"--data\.num-perm must be between 2 and 4,096"),
        ({"tokenizer": {"vocab_size": 70_000}, "pack": {"dtype": "uint16"}}, "uint16 cannot hold token ids"),
        ({"train": {"precision": "fp16"}}, r"--train\.precision fp16 needs a CUDA GPU"),
        ({"eval": {"temperature": 1e-9}}, r"--eval\.temperature must be 0 \(greedy\) or a finite number"),
        ({"train": {"b" * 100_000: 1}}, r"train: unknown setting 'bbbb[b]*'\.\.\. \(100,000 characters\)"),
    ],
)
def test_every_stage_setting_is_checked_before_the_first_stage(
    change: dict, message: str, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "early"
    with pytest.raises(PycpilotError, match=message):
        run(_cfg(corpus, out, **change))
    assert not out.exists()


def test_cli_stage_options_and_recipe(corpus: Path, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("pycpilot"))
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        "data: {valid-fraction: 0.25, num-proc: 1}\ntokenizer: {vocab_size: 400, compare: none}\n"
        "pack: {context_length: 64}\ntrain: {max_steps: 50, n_layer: 2, n_head: 2, n_embd: 64, batch_size: 8}\n"
        "eval: {humaneval_limit: 0, lines: 0}\n"
    )
    base = [exe, "run", "--source", str(corpus), "--out", str(tmp_path / "run"), "--recipe", str(recipe), "-q"]
    done = subprocess.run([*base, "--train.max-steps", "20"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "train done" in done.stdout and "20 steps" in done.stdout  # the command line beat the recipe's 50
    assert "HumanEval" not in done.stdout  # eval: humaneval_limit 0 skips it
    for args, words in [
        (["--train.bogus", "1"], "unrecognized arguments: --bogus"),
        (["--nope.x", "1"], "unknown stage 'nope'"),
        (["--train.lr", "abc"], "invalid float value"),
        (["--train.out", "elsewhere"], "set by `pycpilot run` itself"),
        (["--eval.n", "many"], "invalid int value"),
        (["stray"], "unrecognized argument 'stray'"),
    ]:
        bad = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and words in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1
    typed = tmp_path / "typed.yaml"
    typed.write_text("eval: {n: 'five'}\n")
    bad = subprocess.run([*base[:-3], "--recipe", str(typed)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "eval: n must be int, not 'five'" in bad.stderr, bad.stderr
    typed.write_text("train: {max_steps: ten}\n")
    bad = subprocess.run([*base[:-3], "--recipe", str(typed)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "train: max_steps must be int or null, not 'ten'" in bad.stderr, bad.stderr
    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text("train: [1, 2]\n")
    bad = subprocess.run([*base[:-3], "--recipe", str(bad_recipe)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "must map stage names" in bad.stderr


def test_the_report_opens_in_chromium_with_its_plot(corpus: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        if os.environ.get("PYCPILOT_REQUIRE_BROWSER"):
            pytest.fail("Chromium is missing (make test installs Debian's chromium)")
        pytest.skip("no Chromium here")
    from playwright.sync_api import sync_playwright

    from test_playground import FLAGS

    out = tmp_path / "run"
    run(_cfg(corpus, out), say=lambda _: None)
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1600})
            page.goto((out / "report.html").as_uri())
            assert page.evaluate("document.getElementById('loss').naturalWidth") > 100  # the inline PNG decoded
            assert "valid bits per byte" in page.content() and "codeparrot-small (110M), published" in page.content()
            page.locator("#loss").screenshot(path=str(shot))
        finally:
            browser.close()
    from PIL import Image

    image = Image.open(shot).convert("L")
    lo, hi = image.getextrema()
    assert hi - lo > 100  # not blank: dark lines on a light plot
    assert sum(1 for count in image.histogram() if count) > 20  # many grey levels: a drawn plot


def test_run_serve_starts_the_server_on_the_finished_model(corpus: Path, tmp_path: Path) -> None:
    import httpx

    from serve_util import wait_healthy

    out = tmp_path / "run"
    run(_cfg(corpus, out, eval={"humaneval_limit": 0, "lines": 0}), say=lambda _: None)
    exe = str(Path(sys.executable).with_name("pycpilot"))
    proc = subprocess.Popen(
        [exe, "run", "--source", str(corpus), "--out", str(out), "--serve", "--port", "0", "-q",
         "--data.valid-fraction", "0.25", "--data.num-proc", "1", "--tokenizer.vocab-size", "400",
         "--tokenizer.compare", "none", "--pack.context-length", "64", "--train.max-steps", "30",
         "--train.n-layer", "2", "--train.n-head", "2", "--train.n-embd", "64", "--train.batch-size", "8",
         "--train.save-every", "10", "--eval.humaneval-limit", "0", "--eval.lines", "0", "--eval.n", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and "serve:" not in line:
            line = proc.stderr.readline()
        base = line.split(" at ")[1].split("/ ")[0]
        wait_healthy(base)
        assert httpx.get(f"{base}/v1/models").json()["data"][0]["id"] == "pycpilot-model"
    finally:
        proc.terminate()
        out_text, _ = proc.communicate(timeout=30)
    assert out_text.count("unchanged, skipped") == 5  # the same settings: nothing was redone before serving


def test_a_budget_alone_sizes_the_model_and_the_report_says_how(corpus: Path, tmp_path: Path) -> None:
    """`--train.max-time` with the default preset (auto): the model is sized to the budget, said in the
    train stage's figures, the model manifest and the report."""
    out = tmp_path / "sized"
    cfg = _cfg(corpus, out, eval={"humaneval_limit": 0, "lines": 3})
    cfg.settings["train"] = {"max_time": "3s", "eval_blocks": 2}
    assert cfg.preset == "auto"
    manifest = run(cfg, say=lambda line: None)
    figures = manifest["stages"]["train"]["figures"]
    model = json.loads((out / "model" / "manifest.json").read_text())
    assert model["sizing"]["line"] == figures["sizing"] and figures["budget"] == "3s"
    assert figures["model"] == f"{model['model']['n_layer']}x{model['model']['n_embd']}"
    assert model["config"]["preset"] is None and model["sizing"]["measured"]
    page = (out / "report.html").read_text()
    assert "Sized to the budget" in page and ">3s</td>" in page


def test_a_changed_preset_redoes_the_stages_that_took_it(monkeypatch) -> None:
    """A release that changes a preset's values (tiny's vocabulary did) must not keep the old tokenizer."""
    import dataclasses

    from pycpilot import presets
    from pycpilot.run.fingerprint import fingerprint, settings_of, why
    from pycpilot.tokenizer import TokenizerConfig

    cfg = TokenizerConfig(data=Path("d"), out=Path("t"), preset="tiny")
    before = settings_of(cfg)
    record = {"settings": before, "inputs": ["stage data x"]}
    monkeypatch.setitem(presets.PRESETS, "tiny", dataclasses.replace(presets.PRESETS["tiny"], vocab_size=1234))
    after = settings_of(cfg)
    assert fingerprint("tokenizer", before, ["stage data x"]) != fingerprint("tokenizer", after, ["stage data x"])
    assert why(record, after, ["stage data x"]) == "the tiny preset's values changed"
    assert settings_of(TokenizerConfig(data=Path("d"), out=Path("t"), preset="tiny")) == after


def test_export_settings_without_export_are_refused(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(corpus, tmp_path / "run")
    cfg.settings["export"] = {"type": "q8_0"}
    with pytest.raises(PycpilotError, match="without --export"):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_run_takes_export_options_but_not_its_folders() -> None:
    from pycpilot.cli.run import stage_options

    assert stage_options(["--export.type", "q8_0", "--export.name", "mine"]) == {
        "export": {"type": "q8_0", "name": "mine"}
    }
    for fixed in ("--export.model", "--export.format"):
        with pytest.raises(PycpilotError, match="is set by `pycpilot run` itself"):
            stage_options([fixed, "x"])
    with pytest.raises(PycpilotError, match="invalid choice: 'q4'"):
        stage_options(["--export.type", "q4"])
