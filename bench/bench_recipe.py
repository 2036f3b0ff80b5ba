"""Benchmark of the training recipe (issue 12): how much a fixed CPU budget buys, today's recipe against the new.

Inputs (not timed): `pycpilot data` on this interpreter's standard library, a tokenizer of 8,192 and a pack of
256-token blocks with FIM 0.5 (the tiny preset's), identical for every run. Every run is `pycpilot train` in
its own process, one at a time, scored on the whole valid split in bits per byte.

- today's recipe: what `pycpilot train --max-time T` ran before issue 12, spelled out (`RECIPE_BEFORE`):
  GPT-2 4 x 128, AdamW lr 3e-3 (weight decay 0.1, betas 0.9/0.95), 50 warmup steps, cosine to 0.1 over the
  clock, batch 16, sequence-length warmup over 80% of the run;
- the new default: `pycpilot train --max-time T` and nothing else (the recipe of the tiny preset, the model
  sized to the budget by train/sizing.py).

Rows (`--rows`, default `bf16,fp32,speed`):
  bf16  both sides at T with `--precision auto` (bf16 on CPUs with native bf16), `--repeat` times each;
  fp32  the same with `--precision fp32` (what CPUs without native bf16 run);
  speed tokens/s of both recipes on the same 4 x 128 model, 60 steps each (the chosen recipe must not be slower);
  levers  each lever alone on today's recipe, a fixed number of steps (`--lever-steps`), so that the figure is
          what the lever teaches per token, whatever else the machine runs; its tokens/s is printed beside.
The 1-hour row of the issue is a whole `pycpilot run` (see docs/benchmarks.md for its command).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from bench_train import GIB, Run, build_inputs, run_ours
from common import cpu_model
from pycpilot.data.report import table

RECIPE_BEFORE = [
    *("--preset", "tiny", "--optimizer", "adamw", "--schedule", "cosine", "--no-zero-init"),
    *("--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--batch-size", "16"),
    *("--lr", "3e-3", "--min-lr-ratio", "0.1", "--warmup-steps", "50", "--weight-decay", "0.1", "--beta2", "0.95"),
    *("--seq-warmup", "0.8"),
]
LEVERS = {
    "Muon for the block matrices (lr 0.02)": ["--optimizer", "muon", "--muon-lr", "0.02"],
    "zero-initialised output projections": ["--zero-init"],
    "wsd schedule (decay over the last 30%, to 0)": ["--schedule", "wsd", "--decay", "0.3", "--min-lr-ratio", "0"],
    "cosine to 0 instead of 0.1": ["--min-lr-ratio", "0"],
    "batch 32": ["--batch-size", "32"],
    "no sequence-length warmup": ["--seq-warmup", "0"],
}
VOCAB, CONTEXT, FIM = 8192, 256, 0.5


def ours(root: Path, label: str, packed: Path, options: list[str]) -> Run:
    return run_ours(root, label, packed, 1, options)


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def budget_rows(root: Path, packed: Path, budget: str, precision: str, repeat: int) -> None:
    before, after = [], []
    for _ in range(repeat):  # interleaved, so that a slow spell of the machine hits both sides
        before.append(
            ours(root, "today's recipe", packed, [*RECIPE_BEFORE, "--max-time", budget, *precision_flag(precision)])
        )
        after.append(ours(root, "new default", packed, ["--max-time", budget, *precision_flag(precision)]))
    rows = [
        [r.label, str(i + 1), r.shape, f"{r.steps:,}", f"{r.tokens / r.train_s:,.0f}", f"{r.valid_bpb:.3f}"]
        for runs in (before, after)
        for i, r in enumerate(runs)
    ]
    print(f"{budget} of training, --precision {precision}, valid bits per byte over the whole valid split")
    print(table(["recipe", "run", "model", "steps", "tokens/s", "valid bpb"], rows))
    b = [r.valid_bpb for r in before]
    a = [r.valid_bpb for r in after]
    gain = statistics.mean(b) - statistics.mean(a)
    print(
        f"today's {spread(b)}, new {spread(a)}: {gain:+.3f} bits per byte better "
        f"(target >= 0.15: {'met' if gain >= 0.15 else 'NOT met'})\n"
    )


def precision_flag(precision: str) -> list[str]:
    return [] if precision == "auto" else ["--precision", precision]


def speed_row(root: Path, packed: Path) -> None:
    steps = ["--max-steps", "60", "--eval-blocks", "4", "--eval-every", "100000", "--log-every", "1"]
    shape = ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--batch-size", "16", "--seq-warmup", "0"]
    before = ours(root, "today's recipe", packed, [*RECIPE_BEFORE, *steps, "--seq-warmup", "0"])
    after = ours(root, "new recipe, same model", packed, [*steps, *shape])
    print("tokens/s on the same model (4 x 128, batch 16 x 256, whole blocks), steps 2-60")
    rows = [[r.label, f"{r.tokens_per_s:,.0f}", f"{r.peak_gib:.2f}"] for r in (before, after)]
    print(table(["recipe", "tokens/s", "peak GiB"], rows))
    ratio = after.tokens_per_s / before.tokens_per_s
    print(f"new / today's: {ratio:.2f}x (target: no lower; a few % is the noise of a 2-core VM)\n")


def lever_rows(root: Path, packed: Path, steps: int) -> None:
    fixed = ["--max-steps", str(steps), "--eval-every", "100000"]
    base = ours(root, "today's recipe", packed, [*RECIPE_BEFORE, *fixed])
    rows = [[base.label, f"{base.valid_bpb:.3f}", "", f"{base.tokens / base.train_s:,.0f}"]]
    for label, options in LEVERS.items():
        r = ours(root, label, packed, [*RECIPE_BEFORE, *fixed, *options])
        rows.append(
            [label, f"{r.valid_bpb:.3f}", f"{r.valid_bpb - base.valid_bpb:+.3f}", f"{r.tokens / r.train_s:,.0f}"]
        )
    print(f"each lever alone on today's recipe, {steps} steps (the same tokens unless the batch changes)")
    print(table(["run", "valid bpb", "vs today's", "tokens/s"], rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="6m", help="each run's --max-time (6m)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side and precision (2)")
    parser.add_argument("--rows", default="bf16,fp32,speed", help="any of bf16, fp32, speed, levers")
    parser.add_argument("--lever-steps", type=int, default=600, help="steps per lever run (600)")
    args = parser.parse_args()
    rows = set(args.rows.split(","))
    if rows - {"bf16", "fp32", "speed", "levers"} or args.repeat < 1:
        parser.error("--rows takes bf16, fp32, speed and levers; --repeat at least 1")

    root = Path(tempfile.mkdtemp(prefix="bench-recipe-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    try:
        date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
        bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
        print(f"date: {date}")
        print(f"machine: {cpu_model()}{' (AVX512-BF16)' if bf16 else ' (no native bf16)'}, nproc {os.cpu_count()}, "
              f"{ram:.0f} GiB RAM, {platform.system()} {platform.release()}")  # fmt: skip
        print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(f"python {platform.python_version()}, torch {version('torch')}, transformers {version('transformers')}")
        made = build_inputs(root, [VOCAB], [(VOCAB, CONTEXT, FIM)])
        packed = made[VOCAB, CONTEXT]
        print(f"inputs: the stdlib, vocabulary {VOCAB:,}, blocks of {CONTEXT}, FIM {FIM} (not timed)\n")
        if "speed" in rows:
            speed_row(root, packed)
        if "levers" in rows:
            lever_rows(root, packed, args.lever_steps)
        if "bf16" in rows:
            budget_rows(root, packed, args.budget, "auto", args.repeat)
        if "fp32" in rows:
            budget_rows(root, packed, args.budget, "fp32", args.repeat)
        print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
