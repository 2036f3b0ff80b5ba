"""Benchmark of completion (`make bench`): our decode loop against transformers' `generate`, same model and prompt.

Each row: greedy decoding of 128 new tokens after a 200-token prompt (the start of a stdlib file), the whole
call timed (prompt included), the best of --repeats. The baseline is the plain transformers call:

    model.generate(input_ids, attention_mask=..., max_new_tokens=128, do_sample=False)

Ours is `Completer.complete(prompt, max_new_tokens=128, scope="file")` (what `pycpilot complete` runs), in
fp32 and with `--int8`. Greedy output must equal transformers' token for token (fp32); the table says so.

Models: the tiny preset trained here for --train-time on the stdlib (so bits per byte mean something), the
issue's 12M shape (4 x 256, vocabulary 32,768) and the seed's `small` (124M, vocabulary 52,000), both
untrained (speed does not depend on the weights). The int8 cost in bits per byte is measured on the tiny model
over the valid split's first --eval-blocks blocks.
"""

from __future__ import annotations

# isort: off
import pycpilot  # noqa: F401  (first: it sets GOMP_SPINCOUNT, read when torch loads, as the CLI does)

# isort: on
import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch

from bench_train import build_inputs, cli
from common import cpu_model
from pycpilot.data.report import table

TARGETS = {"tiny": (3.5, 5.5), "12M": (None, None), "small": (1.3, 2.2)}  # fp32, int8 (x transformers)
SHAPES = {"12M": (4, 4, 256, 32_768), "small": (12, 12, 768, 52_000)}  # layers, heads, width, vocabulary
PROMPT_TOKENS, NEW_TOKENS = 200, 128


def make_untrained(root: Path, name: str, tokenizer: Path) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    layers, heads, width, _ = SHAPES[name]
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=1024, n_layer=layers, n_head=heads, n_embd=width,
        activation_function="gelu_pytorch_tanh", bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    out = root / f"model-{name}"
    GPT2LMHeadModel(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def prompt_text(tokenizer, data_file: Path, context: int) -> str:
    """The file's first 200 tokens, or fewer where prompt + 128 new tokens would pass the context (tiny: 256)."""
    text = data_file.read_text(encoding="utf-8")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: min(PROMPT_TOKENS, context - NEW_TOKENS)]
    return tokenizer.decode(ids)


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def measure(model_dir: Path, prompt: str, repeats: int) -> dict[str, object]:
    from pycpilot.generate import Completer

    ours = Completer(model_dir)
    model = ours.model
    model.generation_config.eos_token_id = None  # both sides run the full 128 tokens
    ours.stop_ids = set()
    ids = torch.tensor([ours.encode(prompt, None)])

    def hf():
        with torch.inference_mode():
            return model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0
            )

    def fast(c=ours):
        return c.complete(prompt, max_new_tokens=NEW_TOKENS, scope="file")

    hf_s, hf_out = timed(hf, repeats)
    fast_s, fast_out = timed(fast, repeats)
    int8 = Completer(model_dir, int8=True)
    int8.stop_ids = set()
    int8_s, int8_out = timed(lambda: fast(int8), repeats)
    on_torch = Completer(model_dir, engine="torch")  # our loop without the C step
    on_torch.stop_ids = set()
    torch_s, torch_out = timed(lambda: fast(on_torch), repeats)
    hf_new = hf_out[0, ids.shape[1] :].tolist()  # type: ignore[index]
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "prompt_tokens": ids.shape[1],
        "hf": len(hf_new) / hf_s,
        "fast": fast_out.completions[0].tokens / fast_s,  # type: ignore[attr-defined]
        "int8": int8_out.completions[0].tokens / int8_s,  # type: ignore[attr-defined]
        "torch": torch_out.completions[0].tokens / torch_s,  # type: ignore[attr-defined]
        "engines": f"{ours.engine}, {int8.engine}, {on_torch.engine}",
        "torch_equal": torch_out.completions[0].ids == hf_new,  # type: ignore[attr-defined]
        "equal": fast_out.completions[0].ids == hf_new,  # type: ignore[attr-defined]
        "int8_agree": _agree(int8_out.completions[0].ids, hf_new),  # type: ignore[attr-defined]
    }


def _agree(a: list[int], b: list[int]) -> float:
    """Share of positions where two greedy outputs still agree (they part at the first difference)."""
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return same / max(len(b), 1)


def bits_per_byte(model_dir: Path, packed: Path, blocks: int) -> tuple[float, float]:
    """Valid bits per byte of the tiny model with fp32 and int8 weights, scored by the decode step itself."""
    from pycpilot.generate import Completer
    from pycpilot.generate.decode import FastGPT2
    from pycpilot.pack.reader import PackedDataset, read_pack_manifest

    ours = Completer(model_dir)
    valid = PackedDataset(packed, "valid")
    split = read_pack_manifest(packed)["splits"]["valid"]
    tokens_per_byte = split["tokens"] / split["bytes"]
    n = min(blocks, len(valid))
    result = []
    for fast in (ours.fast, FastGPT2(ours.model, int8=True)):
        assert fast is not None
        total = 0.0
        for i in range(n):
            # Token by token through the decode step: the numbers generation computes (int8: activations too).
            x = valid[i][None].long()
            cache = fast.new_cache(1, x.shape[1])
            logits = [fast.step(x[:, t : t + 1], t, cache) for t in range(x.shape[1] - 1)]
            total += torch.nn.functional.cross_entropy(torch.cat(logits).float(), x[0, 1:]).item()
        result.append(total / n / math.log(2) * tokens_per_byte)
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="calls per side; the best is kept (3)")
    parser.add_argument("--train-time", default="90s", help="training of the tiny model (90s)")
    parser.add_argument("--eval-blocks", type=int, default=200, help="valid blocks for the int8 bpb cost (200)")
    parser.add_argument("--skip-small", action="store_true", help="skip the 124M row (~1 minute)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    try:
        print(f"date: {subprocess.run(['date'], capture_output=True, text=True).stdout.strip()}")
        print(f"machine: {cpu_model()}, nproc {os.cpu_count()}, {platform.system()} {platform.release()}")
        print("load average at start: {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg()))
        print(f"python {platform.python_version()}, torch {version('torch')}, transformers {version('transformers')}")
        names = ["tiny", "12M"] + ([] if args.skip_small else ["small"])
        vocabs = [8192, 32_768] + ([] if args.skip_small else [52_000])
        made = build_inputs(root, vocabs, [(8192, 256, 0.5)])
        tiny_pack = made[8192, 256]
        cli("train", "--packed", str(tiny_pack), "--out", str(root / "model-tiny"), "--max-time", args.train_time)
        models = {"tiny": root / "model-tiny"}
        models |= {name: make_untrained(root, name, made[SHAPES[name][3]]) for name in names[1:]}
        from transformers import AutoTokenizer

        data_file = Path(json.__file__).parent / "decoder.py"  # a stdlib file: real code for the prompt
        rows, verdicts = [], []
        for name in names:
            tok = AutoTokenizer.from_pretrained(str(models[name]))
            context = json.loads((models[name] / "config.json").read_text())["n_positions"]
            m = measure(models[name], prompt_text(tok, data_file, context), args.repeats)
            fp32_x, int8_x = m["fast"] / m["hf"], m["int8"] / m["hf"]  # type: ignore[operator]
            rows.append([
                f"{name} ({m['params'] / 1e6:.1f}M)", str(m["prompt_tokens"]), f"{m['hf']:,.0f}",
                f"{m['fast']:,.0f}", f"{fp32_x:.2f}x", "yes" if m["equal"] else "NO", f"{m['int8']:,.0f}",
                f"{int8_x:.2f}x", f"{m['int8_agree']:.0%}", f"{m['torch']:,.0f}",
                f"{m['torch'] / m['hf']:.2f}x", "yes" if m["torch_equal"] else "NO",  # type: ignore[operator]
            ])  # fmt: skip
            engines = m["engines"]
            target_fp32, target_int8 = TARGETS[name]
            if target_fp32:
                met = fp32_x >= target_fp32 and int8_x >= target_int8 and m["equal"]
                verdicts.append(
                    f"{name}: fp32 {fp32_x:.2f}x (target {target_fp32}x), int8 {int8_x:.2f}x (target {target_int8}x), "
                    f"greedy equal: {m['equal']} -> {'met' if met else 'NOT met'}"
                )
        print(
            f"\ngreedy, a {PROMPT_TOKENS}-token prompt (fewer where the context is shorter), {NEW_TOKENS} new tokens, "
            f"whole call, best of {args.repeats}; new tokens/s"
        )
        head = ["model", "prompt", "transformers", "ours fp32", "vs", "= greedy", "ours int8", "vs", "int8 = greedy"]
        head += ["torch engine fp32", "vs", "= greedy"]
        print(table(head, rows))
        print(f"engines (fp32, int8, torch column): {engines}; native threads: {torch.get_num_threads()}")
        fp32_bpb, int8_bpb = bits_per_byte(models["tiny"], tiny_pack, args.eval_blocks)
        print(
            f"int8 cost, tiny preset after {args.train_time} of training, first {args.eval_blocks} valid blocks: "
            f"{fp32_bpb:.4f} -> {int8_bpb:.4f} bits per byte ({int8_bpb - fp32_bpb:+.4f})"
        )
        print("targets: " + "; ".join(verdicts))
        print("load average at end: {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
