"""Where code comes from: the stdlib, installed packages, folders of repositories, datasets on disk and on the hub.

Every source yields `Item`s (one file, read later by a worker) or `Skip`s (found bad while walking).
"""

from __future__ import annotations

import errno
import logging
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.data import installed
from pycpilot.data.items import Item, Skip, printable
from pycpilot.errors import PycpilotError

# Folders that never hold code worth training on.
_ALWAYS_SKIPPED = {
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "node_modules",
    ".eggs",
}
# Someone else's code, installed rather than written: skipped unless --include-vendored.
_VENDORED = {"site-packages", "dist-packages", ".venv"}  # plus any folder holding pyvenv.cfg
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")
_BATCH = 1000


def source_path(spec: str) -> Path | None:
    """The local folder or file a source reads, if any (outputs must never replace it)."""
    if spec == "stdlib":
        return Path(sysconfig.get_path("stdlib"))
    if installed.is_spec(spec):
        return installed.root_of(spec)
    if spec.startswith("hf:"):
        local = Path(spec[3:].partition("@")[0])
        return local if spec[3:] and local.exists() else None
    return Path(spec)


def describe_source(spec: str) -> str:
    """The kind of a source spec, as reported in the manifest; raises on a source that cannot be used."""
    if spec == "stdlib":
        return "stdlib"
    if installed.is_spec(spec):
        installed.search_path(spec)  # raises on a missing PATH in site-packages:PATH
        return "site-packages"
    if spec.startswith("hf:"):
        if not spec[3:].strip():
            raise PycpilotError("source 'hf:' needs a dataset name, e.g. hf:huggingface-course/codeparrot-ds-train")
        return "hub"
    path = Path(spec)
    try:
        if not path.exists() and not path.is_symlink():
            raise PycpilotError(f"source {spec} does not exist")
        if path.is_dir():
            os.listdir(path)  # an unlistable source is an error, not an empty one
            return "saved" if _is_saved_dataset(path) else "folder"
        is_file = path.is_file()
    except OSError as exc:
        raise PycpilotError(f"cannot read source {spec}: {exc.strerror or exc}") from None
    if is_file:
        name = path.name.lower()
        if name.endswith(".parquet"):
            return "parquet"
        if name.endswith(_JSON_SUFFIXES):
            return "json"
        if name.endswith(".py"):
            return "file"
    raise PycpilotError(
        f"source {spec} is neither a folder, a saved dataset, a .parquet/.jsonl(.gz) file nor a .py file"
    )


def _is_saved_dataset(path: Path) -> bool:
    """What save_to_disk leaves: dataset_dict.json (a DatasetDict) or state.json + dataset_info.json."""
    return _exists(path / "dataset_dict.json") or (_exists(path / "state.json") and _exists(path / "dataset_info.json"))


def _exists(path: Path) -> bool:
    """Like Path.exists, but a folder we may not look into simply has nothing in it."""
    try:
        return path.exists()
    except OSError:
        return False


def iter_source(spec: str, include_vendored: bool = False) -> Iterator[Item | Skip]:
    kind = describe_source(spec)
    if kind == "stdlib":
        yield from _iter_stdlib()
    elif kind == "site-packages":
        yield from installed.iter_installed(spec, installed.search_path(spec))
    elif kind == "folder":
        yield from _iter_folder(spec, Path(spec), include_vendored)
    elif kind == "file":
        path = Path(spec)
        yield Item(
            source=spec, repo_name=printable(path.resolve().parent.name), path=printable(path.name), fs_path=str(path)
        )
    else:
        yield from _iter_records(spec, _open_dataset(spec, kind))


# --- folders -------------------------------------------------------------------------------------------


@dataclass
class _Frame:
    """One folder being walked: its remaining entries and the repository it belongs to."""

    entries: Iterator[os.DirEntry]
    rel: str
    repo_name: str
    repo_rel: str
    ancestors: frozenset


def _iter_folder(source: str, root: Path, include_vendored: bool) -> Iterator[Item | Skip]:
    """Walk `.py` files in a stable order; follow symlinks but never into a folder already on the path.

    Iterative (an explicit stack), so a deeply nested tree cannot exhaust Python's recursion limit.
    """
    root_name = printable(root.resolve().name) or "root"
    walked: set[tuple[int, int]] = set()
    stack: list[_Frame] = []

    def enter(folder: Path, rel: str, repo_name: str, repo_rel: str, ancestors: frozenset) -> Skip | None:
        try:
            st = folder.stat()
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                return Skip(source, rel, "symlink loop")
            if key in walked:  # a second symlink to a folder we already read: same files, skip quietly
                return None
            walked.add(key)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            return Skip(source, rel or ".", "symlink loop" if exc.errno == errno.ELOOP else "unreadable")
        if _exists(folder / ".git"):  # a repository: its folder names it, paths start at its top
            repo_name, repo_rel = (rel or root_name), rel
        stack.append(_Frame(iter(entries), rel, repo_name, repo_rel, ancestors | {key}))
        return None

    first = enter(root, "", root_name, "", frozenset())
    if first is not None:
        yield first
    while stack:
        frame = stack[-1]
        entry = next(frame.entries, None)
        if entry is None:
            stack.pop()
            continue
        name = printable(entry.name)
        child_rel = f"{frame.rel}/{name}" if frame.rel else name
        try:
            is_dir = entry.is_dir()
        except OSError as exc:
            yield Skip(source, child_rel, "symlink loop" if exc.errno == errno.ELOOP else "unreadable")
            continue
        if is_dir:
            if entry.name in _ALWAYS_SKIPPED:
                continue
            child = Path(entry.path)
            if not include_vendored and (entry.name in _VENDORED or _exists(child / "pyvenv.cfg")):
                yield Skip(source, child_rel, "vendored folder")
                continue
            skipped = enter(child, child_rel, frame.repo_name, frame.repo_rel, frame.ancestors)
            if skipped is not None:
                yield skipped
        elif entry.name.endswith(".py"):
            in_repo = child_rel[len(frame.repo_rel) + 1 :] if frame.repo_rel else child_rel
            yield Item(source=source, repo_name=frame.repo_name, path=in_repo, fs_path=entry.path)


def _iter_stdlib() -> Iterator[Item | Skip]:
    """The running interpreter's standard library; each top-level package counts as one repository."""
    root = Path(sysconfig.get_path("stdlib"))
    for item in _iter_folder("stdlib", root, include_vendored=False):
        if isinstance(item, Item):
            top = item.path.split("/", 1)[0].removesuffix(".py")
            item.repo_name = f"stdlib/{top}"
            item.path = f"Lib/{item.path}"
            item.license = "psf-2.0"
        elif item.reason == "vendored folder":
            continue  # site-packages is not part of the stdlib: not worth a count
        yield item


# --- datasets --------------------------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _open_dataset(spec: str, kind: str) -> list[tuple[str, Any]]:
    """Open a dataset source lazily: a list of (split name, Dataset or IterableDataset)."""
    import datasets

    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors come back to us as exceptions
    datasets.disable_progress_bars()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # retry chatter; the failure is reported below
    try:
        if kind == "saved":
            loaded = datasets.load_from_disk(spec)
        elif kind == "parquet":
            loaded = datasets.load_dataset("parquet", data_files=spec, split="train", streaming=True)
        elif kind == "json":
            loaded = datasets.load_dataset("json", data_files=spec, split="train", streaming=True)
        else:
            name, _, split = spec[3:].partition("@")
            loaded = datasets.load_dataset(name, split=split or None, streaming=True)
    except (StopIteration, IndexError):  # what datasets raises for an empty file or saved folder
        raise PycpilotError(f"source {spec} holds no records") from None
    except Exception as exc:  # datasets raises many types; the user needs one line naming the source
        hint = ""
        if kind == "hub" and ("reach" in str(exc) or "offline" in str(exc).lower()):
            hint = " (no network? save the dataset once with save_to_disk and pass its folder as --source)"
        raise PycpilotError(f"cannot open dataset source {spec}: {_short(exc)}{hint}") from None
    if isinstance(loaded, datasets.DatasetDict | datasets.IterableDatasetDict):
        return list(loaded.items())
    return [("train", loaded)]


def _iter_records(spec: str, splits: list[tuple[str, Any]]) -> Iterator[Item | Skip]:
    for split, ds in splits:
        columns = ds.column_names
        if columns == []:
            raise PycpilotError(f"source {spec} (split {split}) holds no records")
        if columns is not None and "content" not in columns:
            raise PycpilotError(f"source {spec} (split {split}) has no 'content' column; it has: {', '.join(columns)}")
        index = 0
        try:
            for batch in ds.iter(batch_size=_BATCH):
                if "content" not in batch:
                    raise PycpilotError(f"source {spec} (split {split}) has no 'content' column")
                n = len(batch["content"])
                for i in range(n):
                    yield _record_item(spec, split, index, {k: v[i] for k, v in batch.items()})
                    index += 1
        except PycpilotError:
            raise
        except (StopIteration, IndexError):
            raise PycpilotError(f"source {spec} (split {split}) holds no records") from None
        except Exception as exc:  # the failing batch starts at `index`
            raise PycpilotError(
                f"cannot read dataset source {spec} in records {index}-{index + _BATCH - 1}: {_short(exc)}"
            ) from None


def _record_item(spec: str, split: str, index: int, row: dict[str, Any]) -> Item | Skip:
    path = str(row.get("path") or f"{split}/{index}.py")
    content = row.get("content")
    if not isinstance(content, str):
        return Skip(spec, path, "malformed record")
    try:
        copies = max(1, int(row.get("copies") or 1))
    except (TypeError, ValueError):
        copies = 1
    return Item(
        source=spec,
        repo_name=str(row.get("repo_name") or Path(spec).name or spec),
        path=path,
        license=str(row.get("license") or "unknown").lower(),
        copies=copies,
        content=content,
    )
