"""The device check: one short script for a session that is lent a machine with a CUDA GPU.

1. training (issue 4): `pycpilot train --preset small` (bf16 autocast, SDPA) on the stdlib for --train-steps
   steps at batch --batch x 1,024; tokens/s and MFU over the steps after the first 10, from its metrics.jsonl
   (target: MFU >= 40% on an H100);
2. serving (issue 6): `pycpilot serve --device cuda` with the tiny preset's shape, 200-token prompts (each its
   own) and 32 new tokens at concurrency 1 and 4 (target: throughput at 4 >= 2x at 1), with the CPU server of
   the same model beside it (`--device cpu`);
3. sampling (issue 18): bench_sampling's comparison on the GPU, our torch engine's decode batch (10 samples of
   each of 8 HumanEval prompts, temperature 0.8, top-p 0.95, 128 new tokens) against transformers' batched
   `generate`, untrained 4 x 256 (vocabulary 32,768) and `small` models (target on a CPU: 3x and 1.5x).

`--smoke` runs the same on the CPU with a few steps, to check the script itself where there is no GPU.
Usage on the device machine: `make install && .venv/bin/python bench/bench_gpu.py` (~8 minutes).
"""

from __future__ import annotations

# isort: off
import pycpilot  # noqa: F401  (first: it sets GOMP_SPINCOUNT, read when torch loads, as the CLI does)

# isort: on
import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_sampling import SHAPES
from bench_sampling import make_model as make_sampling_model
from bench_sampling import measure as measure_sampling
from bench_serve import NEW_TOKENS, PROMPT_TOKENS, load, make_model, prompt_windows
from bench_train import build_inputs
from pycpilot.data.report import table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serve_util import start_process


def train_row(root: Path, packed: Path, steps: int, batch: int, smoke: bool) -> list[str]:
    out = root / "small"
    exe = Path(sys.executable).parent / "pycpilot"
    options = ["--preset", "small", "--max-steps", str(steps), "--batch-size", str(batch), "--log-every", "1"]
    options += ["--eval-every", str(steps + 1), "--eval-blocks", "8", "-q"]
    if smoke:
        options += ["--n-layer", "2", "--n-head", "2", "--n-embd", "64"]
    start = time.perf_counter()
    done = subprocess.run([str(exe), "train", "--packed", str(packed), "--out", str(out), *options], text=True)
    if done.returncode != 0:
        raise SystemExit("pycpilot train failed")
    wall = time.perf_counter() - start
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    skip = min(10, len(train) // 2)
    tokens = seconds = 0.0
    for prev, row in itertools.pairwise(train):
        if row["step"] > skip:
            tokens += row["tokens"] - prev["tokens"]
            seconds += (row["tokens"] - prev["tokens"]) / row["tokens_per_s"]
    mfu = [r["mfu"] for r in train[skip:] if "mfu" in r]
    compute = json.loads((out / "manifest.json").read_text())["compute"]
    shutil.rmtree(out, ignore_errors=True)
    return [
        f"small, batch {batch} x 1,024", compute["device"], compute["dtype"].removeprefix("torch."), str(len(train)),
        f"{tokens / seconds:,.0f}" if seconds else "-", f"{sum(mfu) / len(mfu):.1%}" if mfu else "-",
        f"{train[0]['loss']:.2f} -> {train[-1]['loss']:.2f}", f"{wall:.0f}",
    ]  # fmt: skip


def serve_rows(model: Path, device: str, requests: int) -> tuple[list[list[str]], float]:
    prompts = prompt_windows(model, PROMPT_TOKENS, 4 * requests)
    proc, base = start_process(model, "--device", device)
    rows, rps = [], {}
    try:
        for concurrency in (1, 4):
            m = load(base, prompts, concurrency, requests, NEW_TOKENS)
            rps[concurrency] = m["rps"]
            rows.append([
                device, str(concurrency), f"{m['p50']:.1f}", f"{m['p95']:.1f}", f"{m['rps']:.1f}", f"{m['tps']:,.0f}"
            ])  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows, rps[4] / rps[1]


def sampling_rows(root: Path, made: dict, device: str, prompts: int) -> list[list[str]]:
    from pycpilot.evaluate.problems import load_problems

    problems = load_problems()
    texts = [problems[t]["prompt"].strip() for t in list(problems)[:prompts]]
    rows = []
    for name in ("4x256", "small"):
        model = make_sampling_model(root, name, made[SHAPES[name][3]])
        ours, hf, _, _ = measure_sampling(model, texts, 10, device)
        rows.append([name, device, str(len(texts)), f"{hf:,.0f}", f"{ours:,.0f}", f"{ours / hf:.2f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-steps", type=int, default=200, help="training steps of `small` (200)")
    parser.add_argument("--batch", type=int, default=16, help="rows of 1,024 tokens per step (16)")
    parser.add_argument("--requests", type=int, default=100, help="requests per client when serving (100)")
    parser.add_argument("--smoke", action="store_true", help="the same on the CPU, a few steps (no GPU needed)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("bench_gpu: this torch sees no CUDA GPU (use --smoke to check the script on a CPU)")
    if args.smoke:
        args.train_steps, args.batch, args.requests = 4, 2, 5
    root = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    try:
        print(f"date: {subprocess.run(['date'], capture_output=True, text=True).stdout.strip()}")
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (smoke run on the CPU)"
        print(f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}")
        made = build_inputs(root, [52000, 8192, 32768], [(52000, 1024, 0.0)])
        head = ["run", "device", "dtype", "steps", "tokens/s", "MFU", "loss", "wall s"]
        print("\n1. training\n" + table(head, [train_row(root, made[52000, 1024], args.train_steps, args.batch,
                                                           args.smoke)]))  # fmt: skip
        model = make_model(root, made[8192])
        rows, ratios = [], {}
        for device in ("cpu",) if args.smoke else ("cuda", "cpu"):
            got, ratios[device] = serve_rows(model, device, args.requests)
            rows += got
        head = ["device", "concurrency", "p50 ms", "p95 ms", "requests/s", "new tokens/s"]
        title = f"2. serving, {PROMPT_TOKENS}+{NEW_TOKENS}, tiny shape, every request its own prompt"
        print(f"\n{title}\n" + table(head, rows))
        for device, ratio in ratios.items():
            print(f"throughput, concurrency 4 / 1 on {device}: {ratio:.2f}x (target >= 2x)")
        print("\n3. sampling, 10 samples per prompt, T 0.8, top-p 0.95, 128 new tokens\n" + table(
            ["model", "device", "prompts", "transformers tok/s", "ours tok/s", "ours / transformers"],
            sampling_rows(root, made, "cpu" if args.smoke else "cuda", 2 if args.smoke else 8),
        ))  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
