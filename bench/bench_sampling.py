"""Benchmark: sampling n completions per prompt, our decode batch against transformers' batched `generate`.

    PYTHONPATH=src:bench .venv/bin/python bench/bench_sampling.py [--prompts 8] [-n 10] [--skip-small]

Both sides get the same model, the first --prompts HumanEval prompts, n samples each, temperature 0.8, top-p
0.95 and 128 new tokens, and run every row to the limit (end-of-text off on both sides), so new tokens/s
compare like for like. transformers:

    model.generate(ids, do_sample=True, temperature=0.8, top_p=0.95, num_return_sequences=n, max_new_tokens=128)

one call per prompt. Ours is what `pycpilot eval humaneval` runs: the samples of all prompts through one decode
batch of n rows kept full, one prompt pass per prompt's samples, each sample drawing from its own seed.
Models are untrained (speed does not depend on the weights): the tiny preset's shape (vocabulary 4,096), the
issue's 4 x 256 (vocabulary 32,768) and `small` (124M, 52,000). Targets (issue 18): >= 5x, 3x, 1.5x.
"""

from __future__ import annotations

# isort: off
import pycpilot  # noqa: F401  (first: it sets GOMP_SPINCOUNT, read when torch loads, as the CLI does)

# isort: on
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from bench_train import build_inputs
from common import cpu_model, make_untrained
from pycpilot.data.report import table

SHAPES = {"tiny": (4, 4, 128, 4096, 256), "4x256": (4, 4, 256, 32_768, 1024), "small": (12, 12, 768, 52_000, 1024)}
TARGETS = {"tiny": 5.0, "4x256": 3.0, "small": 1.5}
NEW_TOKENS, TEMPERATURE, TOP_P = 128, 0.8, 0.95


def make_model(root: Path, name: str, tokenizer: Path) -> Path:
    return make_untrained(root, name, tokenizer, SHAPES[name])


def measure(model_dir: Path, prompts: list[str], n: int, device: str = "auto") -> tuple[float, float, int, int]:
    """(ours new tokens/s, transformers', ours tokens, transformers' tokens), both on `device`."""
    from pycpilot.evaluate.sampling import _Problem, _run_queue
    from pycpilot.generate import Completer
    from pycpilot.generate.sampling import SamplingParams

    ours = Completer(model_dir, device=device)
    ours.stop_ids = set()  # every row to the limit
    model = ours.model
    model.generation_config.eos_token_id = None
    todo = []
    for i, prompt in enumerate(prompts):
        ids, _, max_new, _ = ours.prepare(prompt, None, NEW_TOKENS, bos=True)
        todo.append(_Problem(i, str(i), prompt, ids, max_new))
    cfg = SimpleNamespace(batch_size=n, n=n, seed=1)
    if model.device.type == "cuda":  # CUDA's first calls load kernels and libraries: not part of either side
        ours.complete(prompts[0], n=2, max_new_tokens=4, temperature=TEMPERATURE)
    got = [0]

    def params(k: int, p: _Problem) -> SamplingParams:
        return SamplingParams(n=k, max_new_tokens=p.max_new, temperature=TEMPERATURE, top_p=TOP_P, scope="file")

    def finished(p: _Problem, sample: int, c) -> None:
        got[0] += c.tokens

    _sync(model.device)
    start = time.perf_counter()
    _run_queue(ours, cfg, 0, todo, params, finished)  # type: ignore[arg-type]
    _sync(model.device)
    ours_s = time.perf_counter() - start

    torch.manual_seed(0)
    hf_tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for p in todo:
            ids = torch.tensor([p.ids], device=model.device)
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=TEMPERATURE, top_p=TOP_P,
                num_return_sequences=n, max_new_tokens=p.max_new, pad_token_id=0,
            )  # fmt: skip
            hf_tokens += (out.shape[1] - ids.shape[1]) * n
    _sync(model.device)
    hf_s = time.perf_counter() - start
    return got[0] / ours_s, hf_tokens / hf_s, got[0], hf_tokens


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8, help="HumanEval prompts (8)")
    parser.add_argument("-n", type=int, default=10, help="samples per prompt (10)")
    parser.add_argument("--skip-small", action="store_true", help="skip the 124M row")
    args = parser.parse_args()
    from pycpilot.evaluate.problems import load_problems

    root = Path(tempfile.mkdtemp(prefix="bench-sampling-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    try:
        names = ["tiny", "4x256"] + ([] if args.skip_small else ["small"])
        made = build_inputs(root, sorted({SHAPES[name][3] for name in names}), [])
        problems = load_problems()
        prompts = [problems[t]["prompt"].strip() for t in list(problems)[: args.prompts]]
        rows, verdicts = [], []
        for name in names:
            model = make_model(root, name, made[SHAPES[name][3]])
            k = args.prompts if name != "small" else max(2, args.prompts // 4)
            ours, hf, ours_n, hf_n = measure(model, prompts[:k], args.n)
            rows.append([name, str(k), str(args.n), f"{hf_n:,}", f"{hf:,.0f}", f"{ours_n:,}", f"{ours:,.0f}",
                         f"{ours / hf:.2f}x"])  # fmt: skip
            verdicts.append(f"{name}: {ours / hf:.2f}x (target >= {TARGETS[name]}x) -> "
                            f"{'met' if ours / hf >= TARGETS[name] else 'NOT met'}")  # fmt: skip
            print(rows[-1], flush=True)
        print(f"\n{cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}; temperature {TEMPERATURE}, "
              f"top-p {TOP_P}, {NEW_TOKENS} new tokens, every row to the limit")  # fmt: skip
        head = ["model", "prompts", "n", "transformers tokens", "tok/s", "ours tokens", "tok/s", "ours / transformers"]
        print(table(head, rows))
        print("\n".join(verdicts))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
