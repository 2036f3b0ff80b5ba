"""Benchmark of the training stage (`make bench`) on this interpreter's standard library, on the CPU.

The seed's loop runs in fp32 (as written). Ours runs as `pycpilot train` does by default (`--precision auto`:
bf16 autocast where the CPU has native bf16, such as AVX512-BF16 or AMX, else fp32) and, in rows 1 and 2, once
more with `--precision fp32`, so the gain of the loop itself and that of mixed precision can be told apart.

The inputs are built once with our data / tokenizer / pack stages (not timed). Each row runs `pycpilot train`
against the seed's plain loop, written here with plain `transformers` / `torch` calls:

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=..., n_layer=..., n_head=..., n_embd=...))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    for x in batches:  # blocks of PackedDataset(pack, "train") in a seeded random order
        loss = model(input_ids=x, labels=x).loss; loss.backward(); opt.step(); opt.zero_grad()

1. speed: GPT-2 4 layers x 4 heads x 256, vocabulary 32,768, batch 8 x 512, the same model on both sides (GPT-2's
   dropout 0.1), plus ours with dropout 0 (the tiny preset's); tokens/s over steps 3..N (target: >= 1.5x);
2. memory: the seed's `small` (12 x 12 x 768, vocabulary 52,000, batch 4 x 1,024): peak RSS and tokens/s over
   steps 2..S (target: <= 10 GiB at no lower tokens/s); skipped with --skip-small or --quick;
3. learning in 6 minutes (only with --learning, ~13 minutes): `pycpilot train --preset tiny --max-time 6m`
   against the seed's recipe (lr 5e-5, 1,000 warmup steps, dropout 0.1) on the same 4 x 256 model, both scored
   in bits per byte on the whole valid split (target: <= 1.6).

Every training run is its own process, started from a tiny launcher that reports its peak RSS (see common.py),
one at a time, so both sides get the same cores and a fresh interpreter. `--quick` (a smoke test, ~1-2 minutes)
runs row 1 with 4 steps and skips row 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import LAUNCHER, cpu_model
from pycpilot.data.report import table  # plain Python: no torch, no datasets

# This process only builds the inputs and starts the runs: torch and transformers are imported by the runs
# themselves, so that this process stays small while an 18 GiB run of the seed's loop shares the machine with it.

# Row 1: the model of the speed target.
SPEED = {"vocab": 32_768, "context": 512, "batch": 8, "n_layer": 4, "n_head": 4, "n_embd": 256}
TARGET_SPEEDUP = 1.5
PLATFORM_SEED_TOK_S = "1,500-1,700"  # the seed's loop on this model, as the platform measured it
# Row 2: the seed's `small` preset.
SMALL = {"vocab": 52_000, "context": 1024, "batch": 4, "n_layer": 12, "n_head": 12, "n_embd": 768}
TARGET_SMALL_GIB = 10.0
PLATFORM_SMALL = "18 GiB, 109 tokens/s"  # the seed's loop at `small`, as the platform measured it
# Row 3: the tiny preset's inputs; the seed's schedule (cosine over 5 epochs after 1,000 warmup steps).
TINY = {"vocab": 8_192, "context": 256, "batch": 8, "n_layer": 4, "n_head": 4, "n_embd": 256}
SEED_LR, SEED_WARMUP, SEED_EPOCHS = 5e-5, 1000, 5
TARGET_BPB = 1.6
PLATFORM_SEED_BPB = 3.72
# Ours evaluates on the valid split at the end of every run; rows 1-2 time training, so that evaluation is kept
# to a few blocks (a whole valid split at `small` would take minutes and measure nothing asked here).
EVAL_BLOCKS = 8
SEED = 42
GIB = 2**30


# --- the seed's loop, run as a child: `python bench/bench_train.py --seed-loop SPEC.json` ----------------------


def seed_loop(spec: dict[str, Any]) -> None:
    """The seed's plain loop on `spec["packed"]`; writes step times, losses and (optionally) valid bpb as JSON."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, get_scheduler

    from pycpilot.pack.reader import PackedDataset, read_pack_manifest

    torch.manual_seed(SEED)
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=spec["context"],
        n_layer=spec["n_layer"],
        n_head=spec["n_head"],
        n_embd=spec["n_embd"],
    )
    model = GPT2LMHeadModel(config)
    model.train()  # GPT-2's default dropout 0.1 is on
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"])
    train = PackedDataset(spec["packed"], "train")
    batch = spec["batch"]
    per_epoch = len(train) // batch
    sched = None
    if spec["warmup"]:
        sched = get_scheduler(
            "cosine", opt, num_warmup_steps=spec["warmup"], num_training_steps=SEED_EPOCHS * per_epoch
        )

    gen = torch.Generator().manual_seed(SEED)
    perm = torch.randperm(len(train), generator=gen)
    times: list[float] = []
    losses: list[float] = []
    start = time.perf_counter()
    # A step count for rows 1-2, a wall-clock budget (checked before each step, as ours does) for row 3.
    while len(times) < (spec["steps"] or sys.maxsize):
        if spec["seconds"] and time.perf_counter() - start >= spec["seconds"]:
            break
        i = len(times) % per_epoch
        if i == 0 and times:
            perm = torch.randperm(len(train), generator=gen)  # a new order every epoch
        x = torch.stack([train[int(j)] for j in perm[i * batch : (i + 1) * batch]])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        times.append(time.perf_counter() - start)

    result: dict[str, Any] = {
        "times": times,
        "losses": losses,
        "tokens_per_step": batch * train.context_length,
        "attn_implementation": model.config._attn_implementation,
    }
    if spec["evaluate"]:
        # Mean next-token loss over the whole valid split, in bits per byte as ours computes it.
        valid = PackedDataset(spec["packed"], "valid")
        model.eval()
        total = 0.0
        with torch.no_grad():
            for s in range(0, len(valid), batch):
                x = torch.stack([valid[i] for i in range(s, min(s + batch, len(valid)))])
                total += model(input_ids=x, labels=x).loss.item() * len(x)
        split = read_pack_manifest(spec["packed"])["splits"]["valid"]
        result["valid_loss"] = total / len(valid)
        result["valid_bpb"] = result["valid_loss"] / math.log(2) * split["tokens"] / split["bytes"]
    Path(spec["result"]).write_text(json.dumps(result))


# --- running and measuring -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run: what a row reports."""

    label: str
    tokens_per_s: float  # over the steps after the first `skip`
    peak_gib: float  # the run's own ru_maxrss
    wall_s: float  # the whole process: start-up, model, training, end
    steps: int
    tokens: int  # trained on, all steps
    first_loss: float
    last_loss: float
    valid_bpb: float | None = None
    train_s: float | None = None
    compute: str = "fp32"  # ours: the precision and attention the run used, from its manifest
    shape: str = ""  # ours: layers x width, from its manifest


def launch(args: list[str]) -> tuple[float, float]:
    """Run `args` under the launcher; (peak RSS GiB, wall seconds). Fails loudly with the run's stderr."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *args], capture_output=True, text=True)
    last = out.stdout.strip().splitlines()[-1:] or ["? 0 0"]
    code, max_kib, seconds = last[0].split()
    if out.returncode != 0 or code != "0":
        raise SystemExit(f"{' '.join(args)} failed with exit code {code}:\n{out.stderr[-4000:]}")
    return int(max_kib) * 1024 / GIB, float(seconds)


def run_seed(
    root: Path, label: str, packed: Path, shape: dict[str, int], skip: int, steps: int = 0, **spec: Any
) -> Run:
    """The seed's loop in its own process; tokens/s from the wall time of the steps after the first `skip`."""
    result = root / f"seed-{time.monotonic_ns()}.json"
    full = {"packed": str(packed), "tokenizer": str(packed_tokenizer(packed)), "result": str(result), "steps": steps}
    full |= {k: shape[k] for k in ("context", "batch", "n_layer", "n_head", "n_embd")}
    full |= {"lr": SEED_LR, "warmup": 0, "seconds": 0, "evaluate": False} | spec
    spec_file = root / f"spec-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(full))
    gib, wall = launch([sys.executable, str(Path(__file__).resolve()), "--seed-loop", str(spec_file)])
    r = json.loads(result.read_text())
    times, n = r["times"], len(r["times"])
    timed = times[-1] - times[skip - 1] if n > skip else math.nan
    return Run(
        label=f"{label} ({r['attn_implementation']} attention)",
        tokens_per_s=(n - skip) * r["tokens_per_step"] / timed,
        peak_gib=gib,
        wall_s=wall,
        steps=n,
        tokens=n * r["tokens_per_step"],
        first_loss=r["losses"][0],
        last_loss=r["losses"][-1],
        valid_bpb=r.get("valid_bpb"),
        train_s=times[-1],
    )


def run_ours(root: Path, label: str, packed: Path, skip: int, options: list[str]) -> Run:
    """`pycpilot train` in its own process; tokens/s from its metrics.jsonl rows after step `skip`."""
    out = root / f"ours-{time.monotonic_ns()}"
    exe = Path(sys.executable).parent / "pycpilot"
    gib, wall = launch([str(exe), "train", "--packed", str(packed), "--out", str(out), "-q", *options])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    # Each row's tokens_per_s covers the tokens since the row before: summing tokens / rate gives the wall time
    # from step `skip` to the last step, the span the seed's side is timed over.
    tokens = seconds = 0.0
    for prev, row in itertools.pairwise(train):
        if row["step"] > skip:
            tokens += row["tokens"] - prev["tokens"]
            seconds += (row["tokens"] - prev["tokens"]) / row["tokens_per_s"]
    manifest = json.loads((out / "manifest.json").read_text())
    result, compute = manifest["result"], manifest["compute"]
    shutil.rmtree(out, ignore_errors=True)  # checkpoints of `small` weigh ~1.5 GB
    dtype = compute["dtype"].removeprefix("torch.").replace("bfloat16", "bf16").replace("float32", "fp32")
    extra = ", attention recomputed" if "recompute" in compute["attention"] else ""
    return Run(
        label=f"{label} [{dtype}{extra}]",
        compute=dtype,
        tokens_per_s=tokens / seconds if seconds else math.nan,
        peak_gib=gib,
        wall_s=wall,
        steps=result["steps"],
        tokens=result["tokens"],
        first_loss=train[0]["loss"],
        last_loss=train[-1]["loss"],
        valid_bpb=result["valid_bpb"],
        train_s=result["train_seconds"],
        shape=f"{manifest['model']['n_layer']}x{manifest['model']['n_embd']}",
    )


# --- inputs ---------------------------------------------------------------------------------------------------


def cli(*args: str) -> None:
    """A `pycpilot` stage as a child process, so that none of its memory stays in this one."""
    command = [str(Path(sys.executable).parent / "pycpilot"), *args, "-q"]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-4000:]}")


def build_inputs(root: Path, vocabs: list[int], packs: list[tuple[int, int, float]]) -> dict[Any, Path]:
    """The stdlib corpus, one tokenizer per vocabulary and one pack per (vocabulary, context, FIM rate)."""
    data = root / "data"
    cli("data", "--out", str(data))
    made: dict[Any, Path] = {"data": data}
    for vocab in vocabs:
        made[vocab] = root / f"tok-{vocab}"
        cli(
            "tokenizer", "--data", str(data), "--out", str(made[vocab]), "--vocab-size", str(vocab), "--compare", "none"
        )
    for vocab, context, fim in packs:
        made[vocab, context] = root / f"pack-{vocab}-{context}"
        cli(
            "pack",
            "--data",
            str(data),
            "--tokenizer",
            str(made[vocab]),
            "--out",
            str(made[vocab, context]),
            *flags({"--context-length": context, "--fim-rate": fim}),
        )
    return made


def packed_tokenizer(packed: Path) -> Path:
    return Path(json.loads((packed / "manifest.json").read_text())["tokenizer"]["path"])


def flags(options: dict[str, object]) -> list[str]:
    """{"--max-steps": 4} -> ["--max-steps", "4"]."""
    return [text for name, value in options.items() for text in (name, str(value))]


def model_options(shape: dict[str, int]) -> list[str]:
    """The options that give ours the model of `shape` (the rest: the tiny preset's training settings)."""
    names = {"--n-layer": "n_layer", "--n-head": "n_head", "--n-embd": "n_embd", "--n-positions": "context"}
    return flags({flag: shape[key] for flag, key in names.items()} | {"--batch-size": shape["batch"]})


def steps_options(steps: int) -> list[str]:
    """`steps` steps, a metrics row each, and no evaluation but the short one at the end."""
    return flags({"--max-steps": steps, "--eval-every": 100_000, "--log-every": 1, "--eval-blocks": EVAL_BLOCKS})


# --- the rows -----------------------------------------------------------------------------------------------


def speed_row(root: Path, packed: Path, steps: int) -> None:
    skip = 2  # the first steps pay for allocations and warm-up on both sides
    common = [*model_options(SPEED), *steps_options(steps)]
    seed = run_seed(root, "seed loop, dropout 0.1", packed, SPEED, skip, steps=steps)
    same = [*common, "--dropout", "0.1"]
    ours = [
        run_ours(root, "pycpilot train --dropout 0.1 (same model)", packed, skip, same),
        run_ours(root, "pycpilot train --dropout 0.1 --precision fp32", packed, skip, [*same, "--precision", "fp32"]),
        run_ours(root, "pycpilot train --dropout 0 (tiny preset's)", packed, skip, [*common, "--dropout", "0"]),
    ]
    s = SPEED
    print(
        f"1. speed: GPT-2 {s['n_layer']} layers x {s['n_head']} heads x {s['n_embd']}, vocabulary {s['vocab']:,}, "
        f"batch {s['batch']} x {s['context']}, {steps} steps, tokens/s over steps {skip + 1}-{steps}"
    )
    rows = [[seed.label, f"{seed.tokens_per_s:,.0f}", "1.00x", *run_cells(seed)]]
    rows += [
        [o.label, f"{o.tokens_per_s:,.0f}", f"{o.tokens_per_s / seed.tokens_per_s:.2f}x", *run_cells(o)] for o in ours
    ]
    print(table(["run", "tokens/s", "vs seed", "peak RSS GiB", "wall s (incl. start-up)", "loss first/last"], rows))
    ratio = ours[0].tokens_per_s / seed.tokens_per_s
    print(
        f"target: ours >= {TARGET_SPEEDUP}x the seed loop's tokens/s on the same model -> "
        f"{verdict(ratio >= TARGET_SPEEDUP)} ({ratio:.2f}x [{ours[0].compute}]; in fp32: "
        f"{ours[1].tokens_per_s / seed.tokens_per_s:.2f}x; with dropout 0: "
        f"{ours[2].tokens_per_s / seed.tokens_per_s:.2f}x); platform: seed at {PLATFORM_SEED_TOK_S} tokens/s"
    )
    print(
        "ours: fused chunked output layer + loss, fused tanh GELU, glibc malloc keeping freed blocks, AdamW with "
        "decay groups, grad clip 1.0, lr schedule, "
        f"metrics every step; its end-of-run evaluation on {EVAL_BLOCKS} valid blocks and saving count in wall s\n"
    )


def memory_row(root: Path, packed: Path, steps: int) -> None:
    skip = 1
    seed = run_seed(root, "seed loop (small)", packed, SMALL, skip, steps=steps)
    ours = [
        run_ours(root, "pycpilot train --preset small", packed, skip, ["--preset", "small", *steps_options(steps)]),
        run_ours(
            root,
            "pycpilot train --preset small --precision fp32",
            packed,
            skip,
            ["--preset", "small", "--precision", "fp32", *steps_options(steps)],
        ),
    ]
    s = SMALL
    print(
        f"2. memory: the seed's small, GPT-2 {s['n_layer']} x {s['n_head']} x {s['n_embd']}, vocabulary "
        f"{s['vocab']:,}, batch {s['batch']} x {s['context']}, {steps} steps, tokens/s over steps {skip + 1}-{steps}"
    )
    rows = [[seed.label, f"{seed.peak_gib:.2f}", "1.00x", f"{seed.tokens_per_s:,.1f}", "1.00x", *run_cells(seed)[1:]]]
    rows += [
        [
            o.label,
            f"{o.peak_gib:.2f}",
            f"{o.peak_gib / seed.peak_gib:.2f}x",
            f"{o.tokens_per_s:,.1f}",
            f"{o.tokens_per_s / seed.tokens_per_s:.2f}x",
            *run_cells(o)[1:],
        ]
        for o in ours
    ]
    print(table(["run", "peak RSS GiB", "vs seed", "tokens/s", "vs seed", "wall s (incl. start-up)", "loss"], rows))
    o = ours[0]
    met = o.peak_gib <= TARGET_SMALL_GIB and o.tokens_per_s >= seed.tokens_per_s
    print(
        f"target: ours <= {TARGET_SMALL_GIB:.0f} GiB at no lower tokens/s than the seed loop -> {verdict(met)} "
        f"({o.peak_gib:.2f} GiB, {o.tokens_per_s / seed.tokens_per_s:.2f}x [{o.compute}]); "
        f"platform: seed at {PLATFORM_SMALL}\n"
    )


def learning_row(root: Path, packed: Path, budget: str) -> None:
    from pycpilot.train.config import parse_duration  # imports torch (pycpilot.train)

    seconds = parse_duration(budget)
    # The seed's recipe on the 4 x 256 model: batch 8, lr 5e-5 after 1,000 warmup steps, dropout 0.1.
    seed = run_seed(root, "seed recipe", packed, TINY, 1, seconds=seconds, warmup=SEED_WARMUP, evaluate=True)
    ours = run_ours(root, f"pycpilot train --preset tiny --max-time {budget}", packed, 1, ["--max-time", budget])
    t = TINY
    print(
        f"3. learning in {budget}: GPT-2 {t['n_layer']} x {t['n_head']} x {t['n_embd']}, vocabulary {t['vocab']:,}, "
        f"context {t['context']} (the tiny preset's pack, FIM 0.5); valid bits per byte on the whole valid split"
    )
    rows = [
        [
            r.label,
            f"{r.train_s:.0f}",
            f"{r.steps:,}",
            f"{r.tokens / r.train_s:,.0f}",  # all steps: what the budget bought (ours' includes its evaluations)
            f"{r.valid_bpb:.3f}",
            f"{r.valid_bpb / seed.valid_bpb:.2f}x",
        ]
        for r in (seed, ours)
        if r.valid_bpb is not None and r.train_s is not None and seed.valid_bpb is not None
    ]
    print(table(["run", "train s", "steps", "tokens/s", "valid bpb", "vs seed"], rows))
    assert ours.valid_bpb is not None  # both sides always evaluate in this row
    print(
        f"target: ours <= {TARGET_BPB} bpb -> {verdict(ours.valid_bpb <= TARGET_BPB)} ({ours.valid_bpb:.3f}); "
        f"platform: the seed recipe at {PLATFORM_SEED_BPB} bpb (its lr 5e-5 never leaves warmup)"
    )
    # What a model that has learnt nothing scores (uniform over the vocabulary), to read the bpb against.
    valid = json.loads((packed / "manifest.json").read_text())["splits"]["valid"]
    uniform = math.log2(t["vocab"]) * valid["tokens"] / valid["bytes"]
    print(
        f"ours: batch 16, lr 3e-3, warmup 50, cosine over the clock, evaluations every 200 steps inside its {budget}; "
        f"a uniform guess over the vocabulary scores {uniform:.2f} bpb\n"
    )


def _native_bf16() -> bool:
    probe = [sys.executable, "-c", "from pycpilot.train.runtime import cpu_has_bf16 as f; print(f())"]
    return subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "True"


# --- reporting ------------------------------------------------------------------------------------------------


def run_cells(r: Run) -> list[str]:
    return [f"{r.peak_gib:.2f}", f"{r.wall_s:.1f}", f"{r.first_loss:.2f}/{r.last_loss:.2f}"]


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: row 1 with 4 steps, no row 2")
    parser.add_argument("--steps", type=int, help="row 1's steps (default 20, --quick 4; at least 3)")
    parser.add_argument("--small-steps", type=int, default=3, help="row 2's steps (default 3, ~40 s each)")
    parser.add_argument("--skip-small", action="store_true", help="skip row 2 (needs ~18 GiB free for the seed)")
    parser.add_argument("--learning", action="store_true", help="run row 3 (learning in 6 minutes, ~13 minutes)")
    parser.add_argument("--learning-time", default="6m", help="row 3's budget per side (default 6m)")
    parser.add_argument("--seed-loop", type=Path, help=argparse.SUPPRESS)  # the child side of run_seed
    args = parser.parse_args()
    if args.seed_loop:
        return seed_loop(json.loads(args.seed_loop.read_text()))

    steps = args.steps or (4 if args.quick else 20)
    small = not (args.quick or args.skip_small)
    if steps < 3 or args.small_steps < 2:
        parser.error("--steps must be at least 3 and --small-steps at least 2 (the first steps are not timed)")

    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")  # the stages' children inherit it: nothing left behind
    try:
        date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
        print(f"date: {date}")
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
        print(
            f"machine: {cpu_model()}, nproc {os.cpu_count()}, {ram:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}"
        )
        # Other work on the machine skews the timings: the load average tells a reader if there was any.
        print("load average at start: {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg()))
        print(
            f"python {platform.python_version()}, torch {version('torch')}, transformers {version('transformers')}; "
            f"CPU{' with native bf16' if _native_bf16() else ''}, torch's default threads on both sides"
        )

        start = time.perf_counter()
        vocabs = [SPEED["vocab"]] + ([SMALL["vocab"]] if small else []) + ([TINY["vocab"]] if args.learning else [])
        packs = [(SPEED["vocab"], SPEED["context"], 0.0)]
        packs += [(SMALL["vocab"], SMALL["context"], 0.0)] if small else []
        packs += [(TINY["vocab"], TINY["context"], 0.5)] if args.learning else []  # the tiny preset's default FIM
        made = build_inputs(root, vocabs, packs)
        print(
            f"inputs: `pycpilot data` on the stdlib, tokenizers {', '.join(f'{v:,}' for v in vocabs)}, packs "
            f"{', '.join(f'{c} (FIM {f})' for _, c, f in packs)}; built in {time.perf_counter() - start:.0f} s "
            f"(not timed){' -- quick mode: row 1 with few steps, row 2 skipped' if args.quick else ''}\n"
        )

        speed_row(root, made[SPEED["vocab"], SPEED["context"]], steps)
        if small:
            memory_row(root, made[SMALL["vocab"], SMALL["context"]], args.small_steps)
        if args.learning:
            learning_row(root, made[TINY["vocab"], TINY["context"]], args.learning_time)
        print("load average at end: {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
