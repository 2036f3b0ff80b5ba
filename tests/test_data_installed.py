"""The site-packages source, on a small fake environment made here (never the real venv)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from pycpilot.data import build_dataset, installed
from pycpilot.data.installed import iter_installed, license_id
from pycpilot.data.sources import Item, Skip, describe_source, source_path
from pycpilot.errors import PycpilotError

from conftest import good_code, write

OSI = "License :: OSI Approved :: "


def _dist(site: Path, name: str, version: str, headers: str, files: dict[str, str], record: bool = True) -> None:
    """A dist-info folder (METADATA, RECORD listing `files` and itself) and the files, under `site`."""
    info = f"{name}-{version}.dist-info"
    write(site / info / "METADATA", f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n{headers}\n")
    for rel, text in files.items():
        if text:  # "" lists the file in RECORD without installing it
            write(site / rel, text)
    if record:
        rows = [*files, f"{info}/METADATA", f"{info}/RECORD"]
        write(site / info / "RECORD", "".join(f"{r},,\n" for r in rows))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Five distributions: licences from each metadata field, a shared file, no RECORD, and PYCPilot."""
    site = tmp_path / "env" / "site-packages"
    long_text = "Copyright (c) 2020 Someone\n\nPermission is hereby granted, free of charge, to any person ..."
    _dist(
        site,
        "Foo_Bar",
        "1.0",
        f"License-Expression: MIT OR Apache-2.0\nLicense: BSD\nClassifier: {OSI}ISC License (ISCL)",
        {
            "foo_bar/__init__.py": good_code("foo"),
            "foo_bar/core.py": good_code("core", extra=2),
            "foo_bar/__pycache__/core.cpython-311.py": "x = 1\n",
            "foo_bar/data.txt": "not code\n",
            "foo_bar/gone.py": "",
            "../../bin/foo-script.py": "",
            "shared/common.py": good_code("common"),
        },
    )
    _dist(
        site,
        "baz",
        "2.0",
        f"Classifier: Programming Language :: Python :: 3\nClassifier: {OSI}BSD License",
        {"baz/__init__.py": good_code("baz", extra=1), "baz/util.py": good_code("util"), "shared/common.py": ""},
    )
    _dist(site, "longlic", "0.1", "License: " + long_text.replace("\n", "\n        "), {"longlic.py": good_code("ll")})
    _dist(site, "norecord", "3.0", "License: MIT", {"norecord/__init__.py": good_code("nr")}, record=False)
    _dist(site, "PyCPilot", "0.1.0", "License: MIT", {"pycpilot/__init__.py": good_code("me")})
    return site


def _walk(site: Path) -> list[Item | Skip]:
    return list(iter_installed("site-packages", [str(site)]))


def test_items_repos_paths_and_licences(site: Path) -> None:
    found = _walk(site)
    items = {(i.repo_name, i.path, i.license) for i in found if isinstance(i, Item)}
    assert items == {
        ("site-packages/baz", "baz/__init__.py", "bsd"),
        ("site-packages/baz", "baz/util.py", "bsd"),
        ("site-packages/baz", "shared/common.py", "bsd"),  # listed by foo-bar too: taken once, by the first
        ("site-packages/foo-bar", "foo_bar/__init__.py", "mit or apache-2.0"),
        ("site-packages/foo-bar", "foo_bar/core.py", "mit or apache-2.0"),
        ("site-packages/longlic", "longlic.py", "unknown"),  # a whole licence text is not an id
    }
    assert all(Path(i.fs_path).is_file() for i in found if isinstance(i, Item))
    skips = [(s.path, s.reason) for s in found if isinstance(s, Skip)]
    assert skips == [("norecord-3.0", "no file list"), ("pycpilot-0.1.0", "pycpilot itself")]
    assert found == _walk(site)  # a stable order


def test_files_inside_pycpilots_own_package_are_skipped(site: Path, monkeypatch) -> None:
    monkeypatch.setattr(installed, "own_package", lambda: (site / "baz").resolve())
    found = _walk(site)
    assert [(s.path, s.reason) for s in found if isinstance(s, Skip) and s.reason == "pycpilot itself"] == [
        ("baz/__init__.py", "pycpilot itself"),
        ("baz/util.py", "pycpilot itself"),
        ("pycpilot-0.1.0", "pycpilot itself"),
    ]


def test_unreadable_metadata_or_record_is_a_skip(site: Path) -> None:
    (site / "baz-2.0.dist-info" / "RECORD").write_bytes(b"baz/__init__.py,,\nbaz/caf\xe9.py,,\n")  # not UTF-8
    (site / "longlic-0.1.dist-info" / "METADATA").write_bytes(b"Name: longlic\nSummary: caf\xe9\n")
    (site / "Foo_Bar-1.0.dist-info" / "RECORD").unlink()
    (site / "Foo_Bar-1.0.dist-info" / "RECORD").mkdir()  # cannot be read as a file
    found = _walk(site)
    assert not [i for i in found if isinstance(i, Item)]
    assert [(s.path, s.reason) for s in found if isinstance(s, Skip)] == [
        ("baz-2.0", "no file list"),
        ("foo-bar-1.0", "no file list"),
        ("longlic-0.1.dist-info", "no file list"),  # no readable name: its folder names it
        ("norecord-3.0", "no file list"),
        ("pycpilot-0.1.0", "pycpilot itself"),
    ]


@pytest.mark.parametrize(
    ("expression", "field", "classifiers", "expected"),
    [
        ("MIT", None, [], "mit"),
        ("  Apache-2.0  OR  MIT ", "BSD", [], "apache-2.0 or mit"),
        (None, "BSD-3-Clause", [OSI + "MIT License"], "bsd-3-clause"),
        (None, "Apache 2.0", [], "apache-2.0"),
        (None, "new BSD License", [], "bsd-3-clause"),
        (None, "The MIT License", [], "mit"),
        (None, "Apache 2.0 License", [], "apache-2.0"),
        (None, "Apache License, Version 2.0", [], "apache-2.0"),
        (None, "See LICENSE file", [OSI + "MIT License"], "mit"),
        (None, "UNKNOWN", [OSI + "MIT License"], "mit"),
        (None, "BSD 3-Clause License\n\nCopyright ...", [OSI + "BSD License"], "bsd"),
        (None, "x" * 61, [], "unknown"),
        (None, None, [OSI + "Apache Software License"], "apache-2.0"),
        (None, None, [OSI + "Python Software Foundation License"], "psf-2.0"),
        (None, None, [OSI + "GNU General Public License v3 (GPLv3)"], "gpl-3.0"),
        (None, None, [OSI + "GNU Lesser General Public License v2 or later (LGPLv2+)"], "lgpl-2.0-or-later"),
        (None, None, [OSI + "Mozilla Public License 2.0 (MPL 2.0)"], "mpl-2.0"),
        (None, None, [OSI + "European Union Public Licence 1.2 (EUPL 1.2)"], "eupl-1.2"),
        (None, "", ["License :: OSI Approved", OSI + "ISC License (ISCL)"], "isc"),
        (None, None, [OSI + "Apache Software License", OSI + "BSD License"], "apache-2.0 or bsd"),
        (None, None, ["Topic :: Software Development", "Programming Language :: Python"], "unknown"),
        ("", "  ", [], "unknown"),
    ],
)
def test_license_id(expression, field, classifiers, expected: str) -> None:
    assert license_id(expression, field, classifiers) == expected


def test_spec_kind_path_and_errors(site: Path, tmp_path: Path) -> None:
    assert describe_source("site-packages") == "site-packages"
    assert describe_source(f"site-packages:{site}") == "site-packages"
    assert source_path(f"site-packages:{site}") == site
    assert source_path("site-packages").is_dir()  # this interpreter's purelib
    venv = tmp_path / "venv"
    write(venv / "pyvenv.cfg", "home = /usr/bin\n")
    (venv / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    assert installed.search_path(f"site-packages:{venv}") == [str(venv / "lib" / "python3.11" / "site-packages")]
    for bad in ("site-packages:", f"site-packages:{tmp_path / 'missing'}"):
        with pytest.raises(PycpilotError, match="site-packages"):
            describe_source(bad)


def test_the_data_stage_keeps_licences_and_whole_distributions(site: Path, cfg_for, tmp_path: Path) -> None:
    cfg = cfg_for(f"site-packages:{site}", valid_fraction=0.3, near_dedup=False)
    m = build_dataset(cfg).manifest
    source = m["sources"][0]
    assert source["kind"] == "site-packages" and source["kept_files"] == 6
    assert source["removed"]["pycpilot itself"]["files"] == 1 and source["removed"]["no file list"]["files"] == 1
    assert {f["filter"] for f in m["filters"]} == {"pycpilot itself", "no file list"}
    dsd = datasets.load_from_disk(str(cfg.out))
    rows = [r for split in dsd.values() for r in split]
    assert {r["path"]: r["license"] for r in rows} == {
        "baz/__init__.py": "bsd",
        "baz/util.py": "bsd",
        "shared/common.py": "bsd",
        "foo_bar/__init__.py": "mit or apache-2.0",
        "foo_bar/core.py": "mit or apache-2.0",
        "longlic.py": "unknown",
    }
    train, valid = (set(dsd[s]["repo_name"]) for s in ("train", "valid"))
    assert valid and train and not train & valid  # each distribution's files on one side
    assert m["split"]["mode"] == "repository"
    kept = build_dataset(cfg_for(f"site-packages:{site}", out=tmp_path / "mit", licenses=["bsd"], near_dedup=False))
    assert kept.manifest["kept"]["files"] == 4  # the bsd files and the one with no known licence
    with pytest.raises(PycpilotError, match="would replace the input"):
        build_dataset(cfg_for(f"site-packages:{site}", out=site.parent))
    assert json.loads((cfg.out / "manifest.json").read_text())["sources"][0]["spec"] == f"site-packages:{site}"
