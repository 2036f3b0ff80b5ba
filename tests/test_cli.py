"""The command line: help, clean one-line failures, refusal to clobber, and nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from pycpilot.cli import main
from pycpilot.data import DataConfig

from conftest import good_code, write


def _run(*argv: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("pycpilot")
    return subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=300)


def test_help_explains_every_option() -> None:
    top = _run("--help")
    assert top.returncode == 0 and "data" in top.stdout
    data = _run("data", "--help")
    assert data.returncode == 0
    text = data.stdout
    for name in DataConfig.__dataclass_fields__:
        if name in ("out", "sources"):
            continue
        flags = {f"--{name.replace('_', '-')}", f"--no-{name.replace('_', '-')}"}
        assert any(flag in text for flag in flags) or (name == "quiet" and "--quiet" in text), name
    assert "--source" in text and "hf:NAME" in text


def test_console_script_builds_a_dataset(tmp_path: Path) -> None:
    write(tmp_path / "src" / "a.py", good_code("one"))
    write(tmp_path / "src" / "b.py", good_code("two"))
    done = _run(
        "data",
        "--source",
        str(tmp_path / "src"),
        "--out",
        str(tmp_path / "out"),
        "--num-proc",
        "2",
        "--valid-fraction",
        "0.5",
    )
    assert done.returncode == 0, done.stderr
    assert "= kept" in done.stdout and "DatasetDict" in done.stdout and "REPO_NAME: src" in done.stdout
    assert "data: clean" in done.stderr  # the progress bar
    dsd = datasets.load_from_disk(str(tmp_path / "out"))
    assert (len(dsd["train"]), len(dsd["valid"])) == (1, 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "/no/such/place"], "source /no/such/place does not exist"),
        (["--source", "{empty}"], "yields no .py file"),
        (["--source", "{notes}"], "is neither a folder"),
        (["--source", "hf:"], "needs a dataset name"),
        (["--source", "{allbad}"], "no file left after cleaning"),
        (["--valid-fraction", "1.5"], "--valid-fraction must be in [0, 1)"),
        (["--num-proc", "0"], "--num-proc must be at least 1"),
    ],
)
def test_bad_input_gives_one_line_and_no_output(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / "README.md", "no python here\n")
    write(tmp_path / "notes.txt", "hello\n")
    write(tmp_path / "allbad" / "a.py", b"\x00\x01binary")
    argv = [a.format(empty=tmp_path / "empty", notes=tmp_path / "notes.txt", allbad=tmp_path / "allbad") for a in argv]
    out = tmp_path / "out"
    code = main(["data", "--out", str(out), "--num-proc", "1", "-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path, capsys) -> None:
    write(tmp_path / "src" / "a.py", good_code("one"))
    out = tmp_path / "out"
    args = ["data", "--source", str(tmp_path / "src"), "--out", str(out), "--num-proc", "1", "-q"]
    args += ["--valid-fraction", "0"]
    assert main(args) == 0
    first = (out / "manifest.json").read_text()
    assert main(args) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == first
    write(tmp_path / "src" / "b.py", good_code("two"))
    assert main([*args, "--overwrite"]) == 0
    assert len(datasets.load_from_disk(str(out))["train"]) == 2


@pytest.mark.parametrize("where", ["foreign", "source", "parent_of_source", "cwd", "other_stage"])
def test_overwrite_never_destroys_what_is_not_ours(where: str, tmp_path: Path, capsys, monkeypatch) -> None:
    src = tmp_path / "proj" / "src"
    write(src / "a.py", good_code("one"))
    write(tmp_path / "proj" / "notes.txt", "precious\n")
    write(tmp_path / "foreign" / "thesis.tex", "precious\n")
    write(tmp_path / "tok" / "manifest.json", '{"stage": "tokenizer"}')
    monkeypatch.chdir(tmp_path / "proj")
    out = {
        "foreign": tmp_path / "foreign",
        "source": src,
        "parent_of_source": tmp_path / "proj",
        "cwd": Path("."),
        "other_stage": tmp_path / "tok",
    }[where]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code = main(["data", "--source", str(src), "--out", str(out), "--overwrite", "--num-proc", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "choose another --out" in err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    write(tmp_path / "src" / "a.py", good_code("one"))
    out = tmp_path / "out"
    stale = tmp_path / ".out.tmp-999999999"  # left by a run that was killed with -9
    stale.mkdir()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("pycpilot.data.build.split_rows", boom)
    assert main(["data", "--source", str(tmp_path / "src"), "--out", str(out), "--num-proc", "1", "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_worker_pool_is_stopped_on_error(tmp_path: Path, monkeypatch, capsys) -> None:
    """A failure while the pool runs must not hang or leave worker processes behind."""
    for i in range(50):
        write(tmp_path / "src" / f"m{i}.py", good_code(f"m{i}"))
    calls = {"n": 0}
    import pycpilot.data.build as build

    real_take = build.Builder.take

    def failing_take(self, checked):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real_take(self, checked)

    monkeypatch.setattr(build.Builder, "take", failing_take)
    code = main(["data", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--num-proc", "2", "-q"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "pycpilot data: error: No space left on device"
    assert not (tmp_path / "out").exists()
    ps = subprocess.run(["ps", "-o", "args=", "--ppid", str(os.getpid())], capture_output=True, text=True).stdout
    workers = [line for line in ps.splitlines() if "spawn_main" in line]  # the resource tracker may stay
    assert workers == []


@pytest.mark.parametrize(("command", "config"), [("tokenizer", "TokenizerConfig"), ("pack", "PackConfig")])
def test_stage_help_lists_every_setting(command: str, config: str) -> None:
    import pycpilot.pack.config
    import pycpilot.tokenizer.config

    cls = getattr(pycpilot.tokenizer.config, config, None) or getattr(pycpilot.pack.config, config)
    text = _run(command, "--help").stdout
    for name in cls.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in text or name == "quiet", (command, name)


def test_tokenizer_and_pack_from_the_command_line(tmp_path: Path, capsys) -> None:
    for i in range(12):
        write(tmp_path / "src" / f"m{i}.py", good_code(f"cli{i}", extra=i))
    data, tok, packed = (str(tmp_path / n) for n in ("data", "tok", "packed"))
    assert (
        main(
            [
                "data",
                "--source",
                str(tmp_path / "src"),
                "--out",
                data,
                "--num-proc",
                "1",
                "-q",
                "--valid-fraction",
                "0.2",
            ]
        )
        == 0
    )
    assert main(["tokenizer", "--data", data, "--out", tok, "--vocab-size", "320"]) == 0
    out = capsys.readouterr().out
    assert "add_numbers, new tokenizer:" in out and "valid tokens per byte: ours" in out
    assert main(["pack", "--data", data, "--tokenizer", tok, "--out", packed, "--context-length", "16"]) == 0
    out = capsys.readouterr().out
    assert "pack train:" in out and "blocks of 16" in out
    assert main(["pack", "--data", data, "--tokenizer", tok, "--out", packed, "--context-length", "16"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["pack", "--data", data, "--tokenizer", tok, "--out", data, "--overwrite"]) == 2
    assert "would replace the input" in capsys.readouterr().err
