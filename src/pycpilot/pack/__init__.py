"""The pack stage (seed 7.4.3): token blocks on disk, read back with `PackedDataset`."""

from typing import Any

from pycpilot.pack.build import PackResult, pack_dataset
from pycpilot.pack.config import PackConfig

__all__ = ["PackConfig", "PackResult", "PackedDataset", "pack_dataset"]


def __getattr__(name: str) -> Any:
    # The reader needs torch (1.5 s and 250 MB to import); packing does not.
    if name == "PackedDataset":
        from pycpilot.pack.reader import PackedDataset

        return PackedDataset
    raise AttributeError(name)
