"""Hostile input found in review: odd names, unreadable or deep folders, Ctrl-C, bad settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from pycpilot.cli import main
from pycpilot.data import DataConfig, build_dataset
from pycpilot.errors import PycpilotError

from conftest import good_code, write


def _run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(["data", "--num-proc", "1", "-q", *argv])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("procs", ["1", "2"])
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_range_is_one_line(seed: str, procs: str, tmp_path: Path, capsys) -> None:
    write(tmp_path / "src" / "a.py", good_code("a"))
    code, err = _run_cli(
        capsys, "--source", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--seed", seed, "--num-proc", procs
    )
    assert code == 2 and err.startswith("pycpilot data: error: --seed must be between 0 and 4,294,967,295, not ")


def test_non_utf8_names_are_kept_with_escaped_paths(tmp_path: Path, cfg_for) -> None:
    root = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    folder = Path(os.fsdecode(os.fsencode(root) + b"/d\xff"))
    folder.mkdir(parents=True)
    (folder / "m.py").write_text(good_code("odd"))
    cfg = cfg_for(root, valid_fraction=0.0)
    build_dataset(cfg)
    row = datasets.load_from_disk(str(cfg.out))["train"][0]
    assert row["path"] == "d\\xff/m.py" and row["repo_name"] == "caf\\xe9"


def test_unreadable_folders_are_skipped_and_counted(tmp_path: Path, cfg_for, monkeypatch) -> None:
    write(tmp_path / "src" / "ok.py", good_code("ok"))
    write(tmp_path / "src" / "locked" / "hidden.py", good_code("hidden"))
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("pycpilot.data.sources.os.scandir", scandir)
    m = build_dataset(cfg_for(tmp_path / "src", valid_fraction=0.0)).manifest
    assert m["kept"]["files"] == 1 and {f["filter"]: f["files"] for f in m["filters"]} == {"unreadable": 1}


def test_deeply_nested_folders_do_not_exhaust_recursion(tmp_path: Path, cfg_for) -> None:
    deep = tmp_path / "deep"
    path = deep
    deep.mkdir()
    for _ in range(1200):  # deeper than Python's default recursion limit
        path = path / "d"
        path.mkdir()
    (path / "bottom.py").write_text(good_code("bottom"))
    try:
        m = build_dataset(cfg_for(deep, valid_fraction=0.0)).manifest
        assert m["kept"]["files"] == 1
    finally:  # shutil.rmtree (pytest's clean-up) recurses and would fail on this tree: take it down level by level
        (path / "bottom.py").unlink()
        while path != tmp_path:
            path.rmdir()
            path = path.parent


def test_keywords_and_licenses_ignore_case(tmp_path: Path, cfg_for) -> None:
    write(tmp_path / "src" / "a.py", good_code("a") + "\nimport pandas\n")
    write(tmp_path / "src" / "b.py", good_code("b"))
    m = build_dataset(cfg_for(tmp_path / "src", valid_fraction=0.0, keywords=["Pandas"])).manifest
    assert m["kept"]["files"] == 1


def test_each_source_must_yield_files(tmp_path: Path, capsys) -> None:
    write(tmp_path / "src" / "a.py", good_code("a"))
    (tmp_path / "empty").mkdir()
    write(tmp_path / "nothing.jsonl", "")
    write(tmp_path / "blank.jsonl", "\n\n")
    for other, message in [
        ("empty", "source {} yields no .py file"),
        ("nothing.jsonl", "source {} holds no records"),
        ("blank.jsonl", "source {} (split train) holds no records"),
    ]:
        code, err = _run_cli(
            capsys, "--source", str(tmp_path / "src"), "--source", str(tmp_path / other), "--out", str(tmp_path / "o")
        )
        assert code == 2 and message.format(tmp_path / other) in err, err
        assert not (tmp_path / "o").exists()


def test_a_source_given_twice_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    write(tmp_path / "src" / "a.py", good_code("a"))
    monkeypatch.chdir(tmp_path)
    code, err = _run_cli(capsys, "--source", "src", "--source", str(tmp_path / "src"), "--out", "o")
    assert code == 2 and f"source {tmp_path / 'src'} is given twice (also as src)" in err


def test_large_repositories_still_never_share_a_split(tmp_path: Path, cfg_for) -> None:
    for repo in "abc":
        (tmp_path / "repos" / repo / ".git").mkdir(parents=True)
        for i in range(30):
            write(tmp_path / "repos" / repo / f"m{i}.py", good_code(f"{repo}{i}"))
    m = build_dataset(cfg_for(tmp_path / "repos", near_dedup=False)).manifest
    dsd = datasets.load_from_disk(str(tmp_path / "out"))
    assert m["split"]["mode"] == "repository" and "repositories are large" in m["split"]["note"]
    assert not set(dsd["train"]["repo_name"]) & set(dsd["valid"]["repo_name"])
    assert (len(dsd["train"]), len(dsd["valid"])) == (60, 30)


def test_unwritable_output_is_one_line(tmp_path: Path, capsys) -> None:
    write(tmp_path / "src" / "a.py", good_code("a"))
    code, err = _run_cli(capsys, "--source", str(tmp_path / "src"), "--out", "/proc/pycpilot-test/out")
    assert code == 2 and err.startswith("pycpilot data: error: cannot write /proc/pycpilot-test/out:")


def test_failed_run_removes_the_parents_it_made(tmp_path: Path, capsys) -> None:
    write(tmp_path / "src" / "a.py", b"\x00")
    code, _ = _run_cli(capsys, "--source", str(tmp_path / "src"), "--out", str(tmp_path / "new" / "deeper" / "o"))
    assert code == 2 and not (tmp_path / "new").exists()


def test_ctrl_c_with_workers_running_exits_cleanly(tmp_path: Path) -> None:
    """A real SIGINT to the whole process group, as a terminal sends, while 2 workers clean the stdlib."""
    exe = Path(sys.executable).with_name("pycpilot")
    # 2,048 MinHash permutations make each file slow enough that the signal always lands mid-run.
    proc = subprocess.Popen(
        [str(exe), "data", "--out", str(tmp_path / "o"), "--num-proc", "2", "--num-perm", "2048"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 60
    while b"kept" not in seen and time.monotonic() < deadline:  # wait until files are flowing
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, rest = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("pycpilot data hung after Ctrl-C")
    err = (seen + rest).decode(errors="replace")
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_manifest_hash_covers_copies_and_license(tmp_path: Path, cfg_for) -> None:
    rows = [{"content": good_code("x"), "license": "mit", "repo_name": "r", "path": "x.py"}]
    write(tmp_path / "a.jsonl", json.dumps(rows[0]) + "\n")
    write(tmp_path / "b.jsonl", json.dumps({**rows[0], "license": "apache-2.0"}) + "\n")
    write(tmp_path / "c.jsonl", json.dumps({**rows[0], "copies": "4"}) + "\n")
    hashes = {
        build_dataset(cfg_for(tmp_path / f"{n}.jsonl", out=tmp_path / f"o{n}", valid_fraction=0.0)).manifest[
            "content_sha256"
        ]
        for n in "abc"
    }
    assert len(hashes) == 3


def test_config_validation_catches_bad_values(tmp_path: Path) -> None:
    with pytest.raises(PycpilotError, match="--near-dedup-threshold"):
        DataConfig(out=tmp_path, near_dedup_threshold=0).validate()
