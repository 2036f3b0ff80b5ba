"""The data stage end to end on tiny corpora made here: every filter, dedup, split and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from pycpilot.data import build_dataset

from conftest import good_code, write


def _kept_paths(out: Path) -> set[str]:
    dsd = datasets.load_from_disk(str(out))
    return {p for split in dsd.values() for p in split["path"]}


def _filters(out: Path) -> dict[str, int]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {f["filter"]: f["files"] for f in manifest["filters"]}


def test_every_filter_removes_its_file(messy_repo: Path, cfg_for, tmp_path: Path) -> None:
    cfg = cfg_for(messy_repo, valid_fraction=0.0, max_file_size=20_000, config_test_proba=1.0, no_keyword_proba=1.0)
    result = build_dataset(cfg)
    assert _kept_paths(cfg.out) == {"good_one.py", "good_two.py"}
    assert _filters(cfg.out) == {
        "unreadable": 2,  # the broken symlink and the FIFO
        "symlink loop": 3,  # loop_a.py, loop_b.py and the sub/back folder
        "binary (NUL bytes)": 1,
        "not UTF-8": 1,
        "empty": 2,
        "over size limit": 1,
        "exact duplicate": 1,
        "auto-generated": 1,
        "max line length": 1,
        "mean line length": 1,
        "alphanumeric fraction": 1,
        "config or test file": 1,
        "no def/class/for/while": 1,
        "few assignments": 1,
        "syntax error": 1,
        "HumanEval contamination": 1,
        "near duplicate": 1,
    }
    assert result.manifest["contamination"] == {"HumanEval/0": 1}
    train = datasets.load_from_disk(str(cfg.out))["train"]
    rows = {r["path"]: r for r in train}
    assert rows["good_one.py"]["copies"] == "2"  # itself and the whitespace variant
    assert rows["good_two.py"]["copies"] == "1"
    assert rows["good_one.py"]["repo_name"] == "messy"
    assert int(rows["good_one.py"]["size"]) == len(good_code("alpha").encode())
    assert train.column_names[:6] == ["repo_name", "path", "copies", "size", "content", "license"]


def test_each_step_can_be_switched_off(messy_repo: Path, cfg_for) -> None:
    cfg = cfg_for(
        messy_repo,
        valid_fraction=0.0,
        max_file_size=20_000,
        exact_dedup=False,
        near_dedup=False,
        heuristics=False,
        syntax_check=False,
        decontaminate=False,
    )
    build_dataset(cfg)
    kept = _kept_paths(cfg.out)
    assert {"zz_dup.py", "zz_near.py", "contaminated.py", "py2.py", "autogen.py", "few_assign.py"} <= kept
    # Bad files are never kept, whatever is switched off.
    assert not kept & {"binary.py", "latin1.py", "empty.py", "huge.py", "fifo.py", "loop_a.py"}


def test_probabilistic_filters_are_seeded(tmp_path: Path, cfg_for) -> None:
    corpus = tmp_path / "tests_repo"
    for i in range(40):
        write(
            corpus / f"t{i}.py",
            f"def test_case_{i}():\n    a = {i}\n    b = a + 1\n    c = b * 2\n    d = c\n    e = d\n    assert e\n",
        )
    kept = []
    for run, seed in enumerate((7, 7, 8)):
        cfg = cfg_for(corpus, out=tmp_path / f"o{run}", seed=seed, valid_fraction=0.0, near_dedup=False)
        build_dataset(cfg)
        kept.append(_kept_paths(cfg.out))
    assert kept[0] == kept[1]  # same seed, same files
    assert kept[0] != kept[2]
    assert 2 <= len(kept[0]) <= 25  # ~30% of 40 survive the 0.7 drop


def test_split_by_repository_never_shares_a_repo(tmp_path: Path, cfg_for) -> None:
    corpus = tmp_path / "many"
    for r in range(30):
        (corpus / f"org/repo{r}" / ".git").mkdir(parents=True)
        for f in range(3):
            write(corpus / f"org/repo{r}/src/m{f}.py", good_code(f"r{r}f{f}"))
    cfg = cfg_for(corpus, valid_fraction=0.1, near_dedup=False)
    result = build_dataset(cfg)
    dsd = datasets.load_from_disk(str(cfg.out))
    train_repos, valid_repos = set(dsd["train"]["repo_name"]), set(dsd["valid"]["repo_name"])
    assert not train_repos & valid_repos
    assert train_repos | valid_repos == {f"org/repo{r}" for r in range(30)}
    assert 6 <= len(dsd["valid"]) <= 12 and len(dsd["valid"]) % 3 == 0
    assert set(dsd["train"]["path"]) == {"src/m0.py", "src/m1.py", "src/m2.py"}
    assert result.manifest["split"]["mode"] == "repository"


def test_single_repository_falls_back_to_file_split(tmp_path: Path, cfg_for, capsys) -> None:
    corpus = tmp_path / "solo"
    for f in range(20):
        write(corpus / f"m{f}.py", good_code(f"solo{f}"))
    cfg = cfg_for(corpus, valid_fraction=0.1, near_dedup=False, quiet=False)
    result = build_dataset(cfg)
    dsd = datasets.load_from_disk(str(cfg.out))
    assert (len(dsd["train"]), len(dsd["valid"])) == (18, 2)
    assert result.manifest["split"]["mode"] == "file"
    assert "only one repository (solo)" in capsys.readouterr().out


def test_vendored_folders_are_skipped_unless_asked(tmp_path: Path, cfg_for) -> None:
    corpus = tmp_path / "proj"
    write(corpus / "app.py", good_code("app"))
    write(corpus / ".venv/lib/python3.11/site-packages/dep.py", good_code("dep"))
    write(corpus / "env3/pyvenv.cfg", "home = /usr\n")
    write(corpus / "env3/lib/other.py", good_code("other"))
    write(corpus / "__pycache__/junk.py", good_code("junk"))
    write(corpus / "venv/builder.py", good_code("builder"))  # a package named venv (as in the stdlib)
    write(corpus / ".git/hooks/hook.py", good_code("hook"))
    cfg = cfg_for(corpus, valid_fraction=0.0)
    assert _kept_paths(build_dataset(cfg).out) == {"app.py", "venv/builder.py"}
    cfg = cfg_for(corpus, valid_fraction=0.0, include_vendored=True, overwrite=True)
    assert _kept_paths(build_dataset(cfg).out) == {
        "app.py",
        "venv/builder.py",
        ".venv/lib/python3.11/site-packages/dep.py",
        "env3/lib/other.py",
    }


def test_same_input_same_output_with_any_worker_count(messy_repo: Path, cfg_for, tmp_path: Path) -> None:
    manifests = []
    for procs in (1, 2):
        cfg = cfg_for(messy_repo, out=tmp_path / f"w{procs}", num_proc=procs, max_file_size=20_000)
        manifests.append(build_dataset(cfg).manifest)
    a, b = manifests
    assert a["content_sha256"] == b["content_sha256"]
    assert a["filters"] == b["filters"]
    assert a["sources"][0]["input_sha256"] == b["sources"][0]["input_sha256"]


def test_manifest_records_config_versions_counts_and_hashes(messy_repo: Path, cfg_for) -> None:
    cfg = cfg_for(messy_repo, max_file_size=20_000, valid_fraction=0.0)
    m = build_dataset(cfg).manifest
    on_disk = json.loads((cfg.out / "manifest.json").read_text())
    assert on_disk["content_sha256"] == m["content_sha256"]
    assert m["stage"] == "data" and m["config"]["max_file_size"] == 20_000
    assert {"python", "datasets", "datasketch", "pycpilot"} <= set(m["versions"])
    src = m["sources"][0]
    assert src["kind"] == "folder" and src["files"] == m["seen"]["files"]
    assert src["files"] == sum(f["files"] for f in m["filters"]) + m["kept"]["files"]
    assert src["bytes"] == sum(f["bytes"] for f in m["filters"]) + m["kept"]["bytes"]
    assert m["timings"]["total_s"] > 0


def test_stdlib_is_the_default_source(tmp_path: Path) -> None:
    from pycpilot.data import DataConfig

    m = build_dataset(DataConfig(out=tmp_path / "std", quiet=True, num_proc=2)).manifest
    assert m["sources"][0]["kind"] == "stdlib" and m["sources"][0]["files"] > 1000
    dsd = datasets.load_from_disk(str(tmp_path / "std"))
    assert len(dsd["train"]) > 500 and len(dsd["valid"]) > 5
    assert not set(dsd["train"]["repo_name"]) & set(dsd["valid"]["repo_name"])
    assert all(p.startswith("Lib/") and "site-packages" not in p for p in dsd["train"]["path"])
    assert set(dsd["train"]["license"]) == {"psf-2.0"}
