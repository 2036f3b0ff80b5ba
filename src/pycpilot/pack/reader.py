"""Read packed blocks without loading a split into memory.

Layout of a pack folder: `manifest.json` plus one `{split}.bin` per split, a C-ordered array of
`blocks x context_length` token ids of the manifest's `dtype` (uint16 or uint32), no header. Any language
can read it: `numpy.memmap(path, dtype, mode="r", shape=(blocks, context_length))`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pycpilot.errors import PycpilotError


@dataclass(frozen=True)
class SplitInfo:
    files: int
    tokens: int  # before cutting into blocks (the last partial block is dropped)
    blocks: int
    bytes: int  # UTF-8 bytes of the split's files: bits per byte = nats per token / ln 2 * tokens / bytes


@dataclass(frozen=True)
class PackInfo:
    """A pack folder's manifest as the stages after it read it: the block length is decided here, once."""

    path: Path
    context_length: int  # tokens per block
    dtype: str
    splits: dict[str, SplitInfo]
    tokenizer_path: str | None  # the tokenizer the blocks were made with, and its hash
    tokenizer_sha256: str | None
    data_sha256: str | None  # the data folder's content hash

    @classmethod
    def read(cls, pack_dir: str | Path) -> PackInfo:
        m = read_pack_manifest(pack_dir)
        try:
            splits = {
                name: SplitInfo(int(s.get("files", 0)), int(s["tokens"]), int(s["blocks"]), int(s.get("bytes", 0)))
                for name, s in m["splits"].items()
            }
            tokenizer, data = m.get("tokenizer") or {}, m.get("data") or {}
            own = Path(pack_dir) / "tokenizer"  # a copy the pack keeps moves with it
            path = str(own) if own.is_dir() else tokenizer.get("path")
            return cls(Path(pack_dir), int(m["context_length"]), str(m["dtype"]), splits, path,
                       tokenizer.get("sha256"), data.get("content_sha256"))  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError):
            raise PycpilotError(f"{pack_dir}/manifest.json is not a valid pack manifest (a field is missing)") from None

    def tokens_per_byte(self, split: str = "valid") -> float:
        s = self.splits.get(split)
        return s.tokens / s.bytes if s and s.bytes else float("nan")


def read_pack_manifest(pack_dir: str | Path) -> dict[str, Any]:
    path = Path(pack_dir) / "manifest.json"
    if not path.is_file():
        raise PycpilotError(f"{pack_dir} is not a packed dataset (no manifest.json); make it with `pycpilot pack`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["splits"], manifest["dtype"], manifest["context_length"]
    except (ValueError, KeyError, TypeError):
        raise PycpilotError(f"{path} is not a valid pack manifest (truncated or from another tool?)") from None
    return manifest


class PackedDataset(torch.utils.data.Dataset):
    """`PackedDataset(PACK_DIR, "train")[i]` is block i as a LongTensor of `context_length` token ids."""

    def __init__(self, pack_dir: str | Path, split: str) -> None:
        manifest = read_pack_manifest(pack_dir)
        if split not in manifest["splits"]:
            raise PycpilotError(f"{pack_dir} has no split {split!r} (it has: {', '.join(manifest['splits'])})")
        self.context_length = int(manifest["context_length"])
        self.dtype = np.dtype(manifest["dtype"])
        blocks = int(manifest["splits"][split]["blocks"])
        path = Path(pack_dir) / f"{split}.bin"
        expected = blocks * self.context_length * self.dtype.itemsize
        actual = path.stat().st_size if path.is_file() else -1
        if actual != expected:
            raise PycpilotError(f"{path} has {max(actual, 0)} bytes, the manifest promises {expected} (truncated?)")
        self._blocks = (
            np.memmap(path, dtype=self.dtype, mode="r", shape=(blocks, self.context_length))
            if blocks
            else np.zeros((0, self.context_length), self.dtype)
        )

    def __len__(self) -> int:
        return len(self._blocks)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self._blocks[index].astype(np.int64))
