"""Benchmark of fine-tuning (issue 15): a model that learned the stdlib, fine-tuned on other code, against the
same budget spent from scratch on that code, both in this run.

Inputs (not timed): the start model, `pycpilot train --max-time 4m` on this interpreter's standard library (the
demo's model: the tiny preset's tokenizer, blocks of 256, the budget-sized tiny recipe), or `--start DIR`; the
target corpus, `pycpilot data --source site-packages` (the installed packages), packed with the start model's own
tokenizer (`pycpilot pack --tokenizer START`), so every row reads the same valid split. Rows, valid bits per
byte over that whole split:
- the start model as it is (the figure `--init-from` measures before its first step),
- from scratch: `pycpilot train --max-time 4m` on the target pack (the default recipe, sized to the budget),
- fine-tuned: `pycpilot train --init-from START --max-time 4m` (the fine-tuning defaults; `--lrs` adds more).
Target: the fine-tuned row below both others.

`--small` adds what fine-tuning a 110M-class model costs here: an untrained GPT-2 small (12 x 768, 1,024
positions, vocabulary 32,768 as codeparrot-small's) saved as a folder stands in for the hub's, fine-tuned for a
few steps of batch 4 x 1,024 on the target corpus; tokens/s and the run's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from bench_train import cli, launch
from common import cpu_model
from pycpilot.tables import table


def train(root: Path, label: str, packed: Path, *options: str) -> dict:
    """`pycpilot train` in its own process; its manifest, its peak RSS (GiB) and wall seconds."""
    out = root / label
    exe = Path(sys.executable).parent / "pycpilot"
    gib, wall = launch([str(exe), "train", "--packed", str(packed), "--out", str(out), "-q", *options])
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest | {"peak_gib": gib, "wall_s": wall}


def small_source(root: Path, tokenizer: Path) -> Path:
    """GPT-2 small, untrained, with the 32,768 tokenizer: weights are not what is measured here."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=1024, n_layer=12, n_head=12, n_embd=768,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    out = root / "small-src"
    GPT2LMHeadModel(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="4m", help="each training's --max-time (4m)")
    parser.add_argument("--start", type=Path, help="the start model (default: trained here on the stdlib)")
    parser.add_argument("--lrs", default="", help="more fine-tuning learning rates, comma-separated")
    parser.add_argument("--small", action="store_true", help="also the 110M-class fine-tuning cost (~5 minutes)")
    parser.add_argument("--small-steps", type=int, default=4, help="steps of the 110M-class run (4)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    try:
        date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
        bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
        print(f"date: {date}")
        print(f"machine: {cpu_model()}{' (AVX512-BF16)' if bf16 else ' (no native bf16)'}, nproc {os.cpu_count()}, "
              f"{platform.system()} {platform.release()}")  # fmt: skip
        print(f"python {platform.python_version()}, torch {version('torch')}, transformers {version('transformers')}")
        start = args.start
        if start is None:
            cli("data", "--out", str(root / "stdlib"))
            cli("tokenizer", "--data", str(root / "stdlib"), "--out", str(root / "tok"), "--compare", "none")
            cli("pack", "--data", str(root / "stdlib"), "--tokenizer", str(root / "tok"), "--out", str(root / "p0"))
            start = Path(train(root, "start", root / "p0", "--max-time", args.budget)["config"]["out"])
        cli("data", "--source", "site-packages", "--out", str(root / "site"))
        target = root / "target"
        cli("pack", "--data", str(root / "site"), "--tokenizer", str(start), "--out", str(target))

        scratch = train(root, "scratch", target, "--max-time", args.budget)
        tuned = {}
        for lr in [None, *(x for x in args.lrs.split(",") if x)]:
            options = ["--init-from", str(start), "--max-time", args.budget] + (["--lr", lr] if lr else [])
            tuned[lr] = train(root, f"tuned-{lr or 'default'}", target, *options)
        before = tuned[None]["init_from"]["valid_bpb_before"]
        rows = [["start model as it is (trained on the stdlib)", "-", f"{before:.3f}", "-"]]

        def row(label: str, m: dict) -> list:
            r, model = m["result"], m["model"]
            return [label, f"{model['n_layer']}x{model['n_embd']}, {r['steps']:,} steps", f"{r['valid_bpb']:.3f}",
                    f"{r['tokens_per_s']:,.0f}"]  # fmt: skip

        rows.append(row(f"from scratch, {args.budget}", scratch))
        for m in tuned.values():
            rows.append(row(f"fine-tuned from the start model, {args.budget}, lr {m['config']['lr']:g}", m))
        files = json.loads((target / "manifest.json").read_text())["splits"]["valid"]["files"]
        print(f"\nsite-packages valid split ({files} files), bits per byte")
        print(table(["model", "shape, steps", "valid bpb", "tokens/s"], rows))
        best = min(m["result"]["valid_bpb"] for m in tuned.values())
        met = best < min(before, scratch["result"]["valid_bpb"])
        print(f"target (fine-tuned below both): {'met' if met else 'not met'}")

        if args.small:
            cli("tokenizer", "--data", str(root / "site"), "--out", str(root / "tok32k"), "--vocab-size", "32768",
                "--compare", "none")  # fmt: skip
            src = small_source(root, root / "tok32k")
            big = root / "target-1024"
            cli("pack", "--data", str(root / "site"), "--tokenizer", str(src), "--out", str(big),
                "--context-length", "1024")  # fmt: skip
            m = train(root, "small", big, "--init-from", str(src), "--max-steps", str(args.small_steps),
                      "--batch-size", "4", "--eval-blocks", "4", "--save-every", "100000")  # fmt: skip
            r = m["result"]
            print(f"\nfine-tuning a 110M-class model here ({m['model']['parameters'] / 1e6:.0f}M parameters, "
                  f"{m['compute']['dtype']}, attention {m['compute']['attention']})")  # fmt: skip
            print(table(["steps of 4 x 1,024", "tokens/s", "peak RSS", "wall (start-up, 2 evaluations, save)"],
                        [[r["steps"], f"{r['tokens_per_s']:,.0f}", f"{m['peak_gib']:.1f} GiB",
                          f"{m['wall_s']:.0f} s"]]))  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
