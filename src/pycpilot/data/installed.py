"""The `site-packages` source: the `.py` files of the distributions installed in an environment.

Each distribution counts as one repository (`site-packages/<name>`), its licence is read from its metadata
and recorded per file, and PYCPilot itself is left out (and counted).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from pycpilot.data.items import Item, Skip, printable
from pycpilot.errors import PycpilotError

SPEC = "site-packages"
OWN_NAME = "pycpilot"

# Trove classifiers (their last part) -> the lower-case ids codeparrot-ds uses (GitHub's, close to SPDX).
_CLASSIFIERS = {
    "MIT License": "mit",
    "MIT No Attribution License (MIT-0)": "mit-0",
    "Apache Software License": "apache-2.0",
    "BSD License": "bsd",
    "ISC License (ISCL)": "isc",
    "Python Software Foundation License": "psf-2.0",
    "Mozilla Public License 1.1 (MPL 1.1)": "mpl-1.1",
    "Mozilla Public License 2.0 (MPL 2.0)": "mpl-2.0",
    "GNU General Public License (GPL)": "gpl",
    "GNU General Public License v2 (GPLv2)": "gpl-2.0",
    "GNU General Public License v2 or later (GPLv2+)": "gpl-2.0-or-later",
    "GNU General Public License v3 (GPLv3)": "gpl-3.0",
    "GNU General Public License v3 or later (GPLv3+)": "gpl-3.0-or-later",
    "GNU Library or Lesser General Public License (LGPL)": "lgpl",
    "GNU Lesser General Public License v2 (LGPLv2)": "lgpl-2.0",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "lgpl-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "lgpl-3.0",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "lgpl-3.0-or-later",
    "GNU Affero General Public License v3": "agpl-3.0",
    "GNU Affero General Public License v3 or later (AGPLv3+)": "agpl-3.0-or-later",
    "Eclipse Public License 1.0 (EPL-1.0)": "epl-1.0",
    "Eclipse Public License 2.0 (EPL-2.0)": "epl-2.0",
    "The Unlicense (Unlicense)": "unlicense",
    "Boost Software License 1.0 (BSL-1.0)": "bsl-1.0",
    "zlib/libpng License": "zlib",
    "Historical Permission Notice and Disclaimer (HPND)": "hpnd",
    "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "cc0-1.0",
    "Public Domain": "public-domain",
    "Other/Proprietary License": "other",
}
# Free-text `License:` values seen often (lower case, single spaces, without "the" and "license") -> ids.
_ALIASES = {
    "mit-license": "mit",
    "expat": "mit",
    "apache": "apache-2.0",
    "apache 2": "apache-2.0",
    "apache 2.0": "apache-2.0",
    "apache2": "apache-2.0",
    "apache-2": "apache-2.0",
    "apache license, version 2.0": "apache-2.0",
    "apache license version 2.0": "apache-2.0",
    "apache license 2.0": "apache-2.0",
    "apache software": "apache-2.0",
    "bsd": "bsd",
    "python software foundation": "psf-2.0",
    "apache software license 2.0": "apache-2.0",
    "new bsd": "bsd-3-clause",
    "modified bsd": "bsd-3-clause",
    "revised bsd": "bsd-3-clause",
    "3-clause bsd": "bsd-3-clause",
    "bsd 3-clause": "bsd-3-clause",
    "bsd-3": "bsd-3-clause",
    "simplified bsd": "bsd-2-clause",
    "2-clause bsd": "bsd-2-clause",
    "bsd 2-clause": "bsd-2-clause",
    "psf": "psf-2.0",
    "psfl": "psf-2.0",
    "mpl 2.0": "mpl-2.0",
    "mpl2": "mpl-2.0",
    "gplv2": "gpl-2.0",
    "gplv3": "gpl-3.0",
    "lgplv3": "lgpl-3.0",
    "public domain": "public-domain",
}
_PLACEHOLDER = re.compile(r"|unknown|none|n/a|other|custom|see .*|license|licence")  # names no licence
_MAX_LICENSE_FIELD = 60  # longer, or several lines: a whole licence text, not a name


def license_id(expression: str | None, license_field: str | None, classifiers: Iterable[str]) -> str:
    """A lower-case licence id from a distribution's metadata; "unknown" when it names none.

    Tried in order: `License-Expression` (PEP 639), a short one-line `License` field, the licence
    classifiers (several are joined with " or ": a package listing two is usually dual-licensed).
    """
    if expression and expression.strip():
        return " ".join(expression.lower().split())
    text = (license_field or "").strip()
    if text and "\n" not in text and len(text) <= _MAX_LICENSE_FIELD:
        text = " ".join(text.lower().split())
        bare = re.sub(r"^the |(,? licen[cs]e)$", "", text)  # "The MIT License" -> "mit"
        if not _PLACEHOLDER.fullmatch(bare):
            return _ALIASES.get(text) or _ALIASES.get(bare, bare)
    ids: list[str] = []
    for classifier in classifiers:
        parts = [p.strip() for p in classifier.split("::")]
        if len(parts) < 2 or parts[0] != "License" or parts[-1] == "OSI Approved":
            continue
        found = _CLASSIFIERS.get(parts[-1])
        if found is None:  # an unlisted classifier: its short name in brackets, if it has one
            short = re.search(r"\(([^()]+)\)\s*$", parts[-1])
            found = short.group(1).lower().replace(" ", "-") if short else None
        if found and found not in ids:
            ids.append(found)
    return " or ".join(ids) if ids else "unknown"


def normalize(name: str) -> str:
    """PEP 503 normalisation: runs of -, _ and . become one -, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_spec(spec: str) -> bool:
    return spec == SPEC or spec.startswith(SPEC + ":")


def search_path(spec: str) -> list[str] | None:
    """Where `spec` looks for distributions: None (this interpreter's sys.path) or the folders of PATH.

    PATH is a site-packages folder, or a virtualenv (a folder with pyvenv.cfg) whose site-packages is used.
    """
    if spec == SPEC:
        return None
    given = spec[len(SPEC) + 1 :]
    if not given:
        raise PycpilotError(f"source '{SPEC}:' needs a folder, e.g. {SPEC}:/path/to/venv")
    path = Path(given).expanduser()
    if not path.is_dir():
        raise PycpilotError(f"source {spec}: {given} is not a folder")
    if (path / "pyvenv.cfg").is_file():
        found = sorted(path.glob("lib/python*/site-packages")) + sorted(path.glob("Lib/site-packages"))
        if not found:
            raise PycpilotError(f"source {spec}: the virtualenv {given} has no lib/python*/site-packages")
        return [str(p) for p in found]
    return [str(path)]


def root_of(spec: str) -> Path:
    """The folder the source reads (an output must never replace it)."""
    paths = search_path(spec)
    return Path(paths[0]) if paths else Path(sysconfig.get_path("purelib"))


def own_package() -> Path:
    """PYCPilot's own package folder (outside site-packages for an editable install)."""
    import pycpilot

    return Path(pycpilot.__file__).resolve().parent


def _distributions(paths: list[str] | None) -> list[tuple[str, str, Any, Any]]:
    """(normalised name, version, metadata or None if unreadable, dist), sorted by name then version.

    The order makes the owner of a file two distributions list stable. Of distributions with one name, the
    first on the path is kept, as import and importlib.metadata.distribution() do: the others are shadowed.
    """
    found = importlib.metadata.distributions(**({} if paths is None else {"path": paths}))
    dists: dict[str, tuple[str, str, Any, Any]] = {}
    for dist in found:
        try:
            meta = dist.metadata
            name, version = meta.get("Name"), meta.get("Version")
        except Exception:  # unreadable METADATA (e.g. not UTF-8): counted by the caller
            meta, name, version = None, None, None
        if name:
            dists.setdefault(normalize(name), (normalize(name), str(version or ""), meta, dist))
        else:  # named by its folder, for the skip
            where = os.path.realpath(str(getattr(dist, "_path", "?")))
            dists.setdefault(where, (Path(where).name, "", None, dist))
    return sorted(dists.values(), key=lambda r: (r[0], r[1]))


def iter_installed(spec: str, paths: list[str] | None = None) -> Iterator[Item | Skip]:
    """One Item per `.py` file installed by each distribution found on `paths` (default: sys.path).

    A file two distributions list is yielded once, for the first in (name, version) order. Files outside
    the site-packages folder (scripts, data files) and under __pycache__ are not the package's code.
    Skips, each counting one distribution: "pycpilot itself", and "no file list" (no RECORD, or unreadable
    metadata). A file of another distribution inside PYCPilot's own package is a "pycpilot itself" skip too.
    """

    own = own_package()
    seen: set[str] = set()
    for name, version, meta, dist in _distributions(paths):
        label = f"{name}-{version}" if version else name
        if name == OWN_NAME:
            yield Skip(spec, label, "pycpilot itself")
            continue
        try:
            files = None if meta is None else dist.files
        except Exception:  # a malformed RECORD: this distribution gives nothing
            files = None
        if meta is None or files is None:
            yield Skip(spec, label, "no file list")
            continue
        license = license_id(meta.get("License-Expression"), meta.get("License"), meta.get_all("Classifier") or [])
        for f in files:
            rel = PurePosixPath(str(f).replace("\\", "/"))
            if rel.suffix != ".py" or rel.is_absolute() or ".." in rel.parts or "__pycache__" in rel.parts:
                continue
            fs_path = str(dist.locate_file(f))
            real = os.path.realpath(fs_path)
            if real in seen or not os.path.exists(real):
                continue
            seen.add(real)
            if Path(real).is_relative_to(own):
                yield Skip(spec, printable(str(rel)), "pycpilot itself")
                continue
            repo_name = f"site-packages/{name}"
            yield Item(spec, repo_name, printable(str(rel)), license=license, fs_path=fs_path)


def signature(spec: str) -> str:
    """What `spec` reads, cheaply, for a run's fingerprint: every distribution's name, version and place."""
    digest = hashlib.sha256()
    for name, version, _, dist in _distributions(search_path(spec)):
        digest.update(f"{name}\0{version}\0{getattr(dist, '_path', '')}\n".encode())
    return f"{spec} {digest.hexdigest()[:16]}"
