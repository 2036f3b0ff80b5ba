"""Settings of `pycpilot export`, each declared once (see pycpilot/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pycpilot.errors import PycpilotError
from pycpilot.export.tensors import TYPES
from pycpilot.settings import check, setting

FORMATS = ("gguf", "ollama")


@dataclass
class ExportConfig:
    """`export_model(ExportConfig(...))` is the Python entry point of `pycpilot export`."""

    model: Path = setting(help="model folder, checkpoint, or training --out (its newest checkpoint)")
    out: Path = setting(help="the GGUF file to write (FILE.gguf); its manifest goes beside it, FILE.gguf.json")
    type: str = setting(
        "f16",
        help="storage of the weight matrices: f32, f16 or q8_0 (8-bit blocks; a matrix whose rows are not whole "
        "32-value blocks stays f16); norms, biases and position embeddings are always f32",
        choices=TYPES,
    )
    format: str = setting(
        "gguf",
        help="gguf: the file only; ollama: also a Modelfile beside it (FIM template, stops, context) for "
        "`ollama create NAME -f Modelfile`",
        choices=FORMATS,
    )
    name: str | None = setting(
        None, help="the model's name in the file (default: the model folder's name; the run's for RUN/model)"
    )
    overwrite: bool = setting(False, help="replace --out (and its Modelfile) if they exist")
    quiet: bool = setting(False, help="no progress output", alias="-q")

    def validate(self) -> None:
        check(self)
        if self.out.suffix != ".gguf":
            raise PycpilotError(f"--out {self.out} must end in .gguf (llama.cpp and Ollama look for it)")
