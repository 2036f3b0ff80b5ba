"""The pack stage (seed 7.4.3): token blocks on disk, read back with `PackedDataset`."""

from pycpilot.pack.build import PackResult, pack_dataset
from pycpilot.pack.config import PackConfig
from pycpilot.pack.reader import PackedDataset

__all__ = ["PackConfig", "PackResult", "PackedDataset", "pack_dataset"]
