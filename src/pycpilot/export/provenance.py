"""Where a model came from, for an exported file's metadata: the training run, its corpus and the corpus's licences.

Guarantee: `provenance` never fails an export: a model without PYCPilot manifests (a hub model, folders moved
since) gives what can be found and says what could not, and nothing is guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycpilot.manifest import MANIFEST


@dataclass
class Provenance:
    run: Path | None = None  # the `pycpilot train` folder whose manifest describes the model
    data: Path | None = None  # its corpus (`pycpilot data` folder)
    valid_bpb: float | None = None  # the model's valid bits per byte when training ended
    licenses: list[tuple[str, int]] = field(default_factory=list)  # (licence, files of the train split), most first
    missing: str | None = None  # what could not be followed, for the manifest

    def license_text(self) -> str | None:
        """One licence as it is; several joined by '; ' (most files first): the file's general.license."""
        return "; ".join(name for name, _ in self.licenses) or None


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return found if isinstance(found, dict) else None


def _train_run(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The training manifest of a final model folder or of a checkpoint inside one (RUN/checkpoints/step-N)."""
    for candidate in (folder, folder.parent.parent):
        m = _manifest(candidate)
        if m and m.get("stage") == "train":
            return candidate, m
    return None


def provenance(folder: Path) -> Provenance:
    found = _train_run(folder)
    if found is None:
        return Provenance(missing="no PYCPilot training manifest beside the model")
    run, m = found
    out = Provenance(run=run)
    result = m.get("result") if isinstance(m.get("result"), dict) else {}
    if isinstance(result.get("valid_bpb"), (int, float)):
        out.valid_bpb = float(result["valid_bpb"])
    packed = (m.get("packed") or {}).get("path") if isinstance(m.get("packed"), dict) else None
    pack = _manifest(Path(packed)) if packed else None
    data = ((pack or {}).get("data") or {}).get("path") if isinstance((pack or {}).get("data"), dict) else None
    if not data or not (Path(data) / "dataset_dict.json").is_file():
        out.missing = f"the corpus behind {packed or 'the pack'} is not where the manifests say"
        return out
    out.data = Path(data)
    try:
        import datasets

        counts = Counter(str(x) for x in datasets.load_from_disk(str(out.data))["train"]["license"])
    except Exception as exc:  # an unreadable or foreign dataset: say so in the manifest, do not fail the export
        out.missing = f"the corpus {out.data} cannot be read ({type(exc).__name__})"
        return out
    out.licenses = counts.most_common()
    return out
