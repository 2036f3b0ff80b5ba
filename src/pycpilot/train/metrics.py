"""Where the numbers go: JSON Lines, TensorBoard event files, and a PNG of the loss curves at the end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object per event to metrics.jsonl and mirrors scalars to TensorBoard (rank 0 only)."""

    def __init__(self, folder: Path, enabled: bool, resume_step: int | None = None) -> None:
        """`resume_step`: the checkpoint a resumed run starts from; rows logged after it by the run that was
        killed are dropped (they are about to be logged again), so the curves do not double back."""
        self.enabled = enabled
        self.path = folder / "metrics.jsonl"
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            if resume_step is not None:
                _keep_rows_up_to(self.path, resume_step)
            purge = None if resume_step is None else resume_step + 1  # TensorBoard hides later events
            self._tb = SummaryWriter(log_dir=str(folder / "tensorboard"), purge_step=purge)

    def write(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        assert self._tb is not None
        for key, value in values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self._tb.add_scalar(f"{kind}/{key}", value, step)
        self._tb.flush()

    def eval_at(self, step: int, blocks: int) -> float | None:
        """The valid loss logged at `step` (a resumed run's checkpoint step) over `blocks` blocks, if any."""
        found = [
            r
            for r in read_metrics(self.path)
            if r.get("kind") == "eval" and r.get("step") == step and r.get("blocks", blocks) == blocks
        ]
        return float(found[-1]["loss"]) if self.enabled and found else None

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _keep_rows_up_to(path: Path, step: int) -> None:
    """Rewrite metrics.jsonl without the rows past `step` (temp file, then rename)."""
    if not path.is_file():
        return
    kept = [json.dumps(r) for r in read_metrics(path) if isinstance(r.get("step"), int) and r["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash
    return rows


def plot_losses(metrics: Path, out_png: Path, title: str) -> None:
    """Train and valid loss against step (and valid bits per byte on a second axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics)
    train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
    valid = [(r["step"], r["loss"], r.get("bpb")) for r in rows if r["kind"] == "eval"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue", linewidth=1)
    if valid:
        steps, losses, _ = zip(*valid, strict=True)
        ax.plot(steps, losses, "o-", label="valid loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
