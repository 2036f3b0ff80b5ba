"""Dataset sources: save_to_disk folders, parquet, JSON Lines (.gz) and hf:NAME, against local data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pytest

from pycpilot.data import build_dataset
from pycpilot.errors import PycpilotError

from conftest import good_code, write


def _records() -> list[dict]:
    rows = [
        {
            "repo_name": f"user/repo{i % 4}",
            "path": f"pkg/mod{i}.py",
            "copies": "3",
            "size": "0",
            "content": good_code(f"rec{i}") + ("\nimport pandas as pd\n" if i % 2 else ""),
            "license": "mit" if i < 6 else "gpl-3.0",
        }
        for i in range(8)
    ]
    rows.append({**rows[0], "path": "pkg/again.py"})  # an exact copy of record 0
    return rows


def _contents(out: Path) -> list[str]:
    dsd = datasets.load_from_disk(str(out))
    return sorted(c for split in dsd.values() for c in split["content"])


def _expected(rows: list[dict]) -> list[str]:
    return sorted({r["content"] for r in rows})


@pytest.mark.parametrize("fmt", ["saved", "saved_dict", "parquet", "jsonl", "jsonl.gz", "hf"])
def test_dataset_sources_round_trip(fmt: str, tmp_path: Path, cfg_for) -> None:
    rows = _records()
    ds = datasets.Dataset.from_list(rows)
    if fmt == "saved":
        ds.save_to_disk(str(src := tmp_path / "saved"))
    elif fmt == "saved_dict":
        datasets.DatasetDict({"train": ds.select(range(5)), "validation": ds.select(range(5, 9))}).save_to_disk(
            str(src := tmp_path / "saved_dict")
        )
    elif fmt == "parquet":
        ds.to_parquet(str(src := tmp_path / "code.parquet"))
    elif fmt == "jsonl":
        write(src := tmp_path / "code.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "jsonl.gz":
        with gzip.open(src := tmp_path / "code.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    else:  # hf:NAME goes through load_dataset(NAME); a local data folder stands in for the hub here
        write(tmp_path / "hubcopy" / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        src = f"hf:{tmp_path / 'hubcopy'}"
    cfg = cfg_for(src, valid_fraction=0.25, near_dedup=False)
    m = build_dataset(cfg).manifest
    assert _contents(cfg.out) == _expected(rows)
    assert m["filters"] == [{"filter": "exact duplicate", "files": 1, "bytes": len(rows[0]["content"].encode())}]
    dsd = datasets.load_from_disk(str(cfg.out))
    assert not set(dsd["train"]["repo_name"]) & set(dsd["valid"]["repo_name"])
    first = next(r for split in dsd.values() for r in split if r["path"] == "pkg/mod0.py")
    assert first["copies"] == "6"  # 3 recorded copies, seen twice
    assert first["size"] == str(len(rows[0]["content"].encode()))  # recomputed, not trusted


def test_licenses_and_keywords_filters(tmp_path: Path, cfg_for) -> None:
    rows = _records()
    write(src := tmp_path / "code.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    cfg = cfg_for(src, valid_fraction=0.0, near_dedup=False, licenses=["mit"], keywords=["pandas"])
    m = build_dataset(cfg).manifest
    kept = datasets.load_from_disk(str(cfg.out))["train"]
    assert sorted(kept["path"]) == ["pkg/mod1.py", "pkg/mod3.py", "pkg/mod5.py"]
    assert {f["filter"]: f["files"] for f in m["filters"]} == {"license": 2, "keywords": 4}


def test_mixed_sources_keep_their_order_and_counts(tmp_path: Path, cfg_for) -> None:
    write(tmp_path / "code.jsonl", json.dumps({"content": good_code("fromjson")}) + "\n")
    write(tmp_path / "repo" / "a.py", good_code("fromfolder"))
    cfg = cfg_for(tmp_path / "repo", tmp_path / "code.jsonl", valid_fraction=0.0)
    m = build_dataset(cfg).manifest
    assert [s["kind"] for s in m["sources"]] == ["folder", "json"]
    assert [s["kept_files"] for s in m["sources"]] == [1, 1]
    train = datasets.load_from_disk(str(cfg.out))["train"]
    assert train["path"][0] == "a.py" and train["license"][1] == "unknown"
    assert train["repo_name"][1] == "code.jsonl"


def test_malformed_records_are_skipped_and_counted(tmp_path: Path, cfg_for) -> None:
    lines = [
        json.dumps({"content": good_code("ok")}),
        json.dumps({"content": None, "path": "x.py"}),
        json.dumps({"content": "a = 1\x00"}),
    ]
    write(src := tmp_path / "code.jsonl", "\n".join(lines) + "\n")
    m = build_dataset(cfg_for(src, valid_fraction=0.0)).manifest
    assert {f["filter"]: f["files"] for f in m["filters"]} == {"malformed record": 1, "binary (NUL bytes)": 1}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write(p / "x.jsonl", '{"content": "a"}\n{not json\n'), "cannot read dataset source"),
        (lambda p: write(p / "x.jsonl", json.dumps({"text": "a = 1"}) + "\n"), "no 'content' column"),
        (lambda p: datasets.Dataset.from_dict({"code": ["x"]}).to_parquet(str(p / "x.parquet")), "no 'content' column"),
        (lambda p: write(p / "x.parquet", b"PAR1 this is not parquet"), "cannot"),
    ],
)
def test_broken_dataset_files_fail_with_one_line(make, message: str, tmp_path: Path, cfg_for) -> None:
    make(tmp_path)
    src = next(p for p in tmp_path.iterdir() if p.is_file())
    cfg = cfg_for(src)
    with pytest.raises(PycpilotError, match=message) as info:
        build_dataset(cfg)
    assert "\n" not in str(info.value)
    assert not cfg.out.exists()


def test_a_code_folder_with_a_state_json_is_still_code(tmp_path: Path, cfg_for) -> None:
    write(tmp_path / "app" / "state.json", "{}\n")
    write(tmp_path / "app" / "main.py", good_code("app"))
    m = build_dataset(cfg_for(tmp_path / "app", valid_fraction=0.0)).manifest
    assert m["sources"][0]["kind"] == "folder" and m["kept"]["files"] == 1
