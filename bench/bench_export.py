"""Benchmark of `pycpilot export` (issue 16): our decoding against llama.cpp's on the same weights and prompt.

Rows: the tiny preset's shape (4 x 128, its vocabulary, context 256), 4 x 256 (vocabulary 32,768) and the seed's
`small` (12 x 768, 124M, vocabulary 52,000), untrained (speed does not depend on the weights; neither side stops
at an end-of-text token). Each model is exported twice (`pycpilot export --type f32` and `--type q8_0`) and
decoded greedily after the same prompt (the start of a stdlib file, 200 tokens, 128 where the context is 256):

- ours: `Completer.complete(prompt, max_new_tokens=N, scope="file")`, what `pycpilot complete` runs, fp32 and
  `--int8`; decoding alone = (the call with N new tokens - the call with 1) / (N - 1), best of --repeats;
- llama.cpp (prebuilt, node-llama-cpp in tools/llamacpp): its own timing of the single-token decode calls
  (`llama_perf_context_print`'s "eval time", so node's per-token cost is not counted against it), best of
  --repeats.

Ours counts all a call does per token (the step, choosing the token, the stop checks); llama.cpp's figure counts
only its decode call, so the comparison leans its way. Both sides run with 1 and 2 threads; the better of each is
shown, with its thread count.

Target: ours >= 1.0x llama.cpp in every row (f32 vs our fp32, q8_0 vs our int8).
"""

from __future__ import annotations

# isort: off
import pycpilot  # noqa: F401  (first: it sets GOMP_SPINCOUNT, read when torch loads, as the CLI does)

# isort: on
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from bench_train import build_inputs
from common import cpu_model, make_untrained
from pycpilot.presets import PRESETS
from pycpilot.tables import table

TINY = PRESETS["tiny"]
SHAPES = {  # layers, heads, width, vocabulary, positions
    "tiny": (TINY.n_layer, TINY.n_head, TINY.n_embd, TINY.vocab_size, TINY.context_length),
    "4x256": (4, 4, 256, 32_768, 1024),
    "small": (12, 12, 768, 52_000, 1024),
}
PROMPT_TOKENS, NEW_TOKENS = 200, 128
LLAMA = Path(__file__).resolve().parent.parent / "tools" / "llamacpp"


def make_model(root: Path, name: str, tokenizer: Path) -> Path:
    return make_untrained(root, name, tokenizer, SHAPES[name])


def prompt_text(tokenizer, context: int) -> str:
    text = (Path(json.__file__).parent / "decoder.py").read_text(encoding="utf-8")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: min(PROMPT_TOKENS, context - NEW_TOKENS)]
    return tokenizer.decode(ids)


def ours(model: Path, prompt: str, int8: bool, repeats: int, threads: int) -> float:
    """Our decoding tokens/s: the difference of an N-token and a 1-token call, best of `repeats` each."""
    from pycpilot.generate import Completer

    c = Completer(model, int8=int8, threads=threads)
    c.stop_ids = set()  # run the full N tokens, as llama.cpp's loop does

    def best(n: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            got = c.complete(prompt, max_new_tokens=n, scope="file")
            times.append(time.perf_counter() - start)
            assert got.completions[0].tokens == n
        return min(times)

    return (NEW_TOKENS - 1) / (best(NEW_TOKENS) - best(1))


def llama_cpp(gguf: Path, prompt: str, context: int, repeats: int, root: Path) -> tuple[float, int]:
    """llama.cpp's decoding tokens/s and the thread count that gave it."""
    job = root / "job.json"
    job.write_text(
        json.dumps(
            {
                "model": str(gguf),
                "context": context,
                "bench": {"prompt": prompt, "n": NEW_TOKENS, "repeat": repeats, "threads": [1, 2]},
            }
        )
    )
    r = subprocess.run(["node", str(LLAMA / "llama.mjs"), str(job)], capture_output=True, text=True, timeout=1800)
    if r.returncode:
        sys.exit(f"llama.cpp failed on {gguf}: {r.stderr.strip()[-500:]}")
    rates = json.loads(r.stdout.strip().splitlines()[-1])["bench"]["tokens_per_s"]
    threads, best = max(((int(t), max(v)) for t, v in rates.items()), key=lambda x: x[1])
    return best, threads


def _threads(n: int) -> str:
    return f"{n} thread{'s' * (n > 1)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="tries per side; the best is kept (3)")
    parser.add_argument("--skip-small", action="store_true", help="skip the 124M row")
    args = parser.parse_args()
    if shutil.which("node") is None or not (LLAMA / "node_modules" / "node-llama-cpp").is_dir():
        sys.exit("llama.cpp is not installed: install node and run `make llamacpp`")
    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    try:
        print(f"date: {subprocess.run(['date'], capture_output=True, text=True).stdout.strip()}")
        print(f"machine: {cpu_model()}, nproc {os.cpu_count()}, {platform.system()} {platform.release()}")
        print("load average at start: {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg()))
        print(
            f"python {platform.python_version()}, torch {version('torch')}, gguf {version('gguf')}, "
            f"node-llama-cpp {json.loads((LLAMA / 'package.json').read_text())['dependencies']['node-llama-cpp']}"
        )
        names = [n for n in SHAPES if not (args.skip_small and n == "small")]
        made = build_inputs(root, sorted({SHAPES[n][3] for n in names}), [])
        from transformers import AutoTokenizer

        from pycpilot.export import ExportConfig
        from pycpilot.export.write import export_model

        rows, verdicts = [], []
        for name in names:
            model = make_model(root, name, made[SHAPES[name][3]])
            context = SHAPES[name][4]
            prompt = prompt_text(AutoTokenizer.from_pretrained(str(model)), context)
            figures = {}
            for ggml, int8 in (("f32", False), ("q8_0", True)):
                gguf = root / f"{name}-{ggml}.gguf"
                export_model(ExportConfig(model=model, out=gguf, type=ggml, quiet=True))
                theirs, threads = llama_cpp(gguf, prompt, context, args.repeats, root)
                mine = {t: ours(model, prompt, int8, args.repeats, t) for t in (1, 2)}
                best = max(mine, key=mine.__getitem__)
                figures[ggml] = (mine[best], best, theirs, threads)
                gguf.unlink()
            cells = [name]
            for a, mine, b, theirs in figures.values():
                cells += [f"{a:,.0f} ({_threads(mine)})", f"{b:,.0f} ({_threads(theirs)})", f"{a / b:.2f}x"]
                verdicts.append(a / b >= 1.0)
            rows.append(cells)
        print(f"\ngreedy decoding after a {PROMPT_TOKENS}-token prompt (128 where the context is 256), "
              f"{NEW_TOKENS} new tokens, best of {args.repeats}; new tokens/s")  # fmt: skip
        print(table(["model", "ours fp32", "llama.cpp f32", "ratio", "ours int8", "llama.cpp q8_0", "ratio"], rows))
        print(f"target (ours >= 1.0x llama.cpp in every row): {'met' if all(verdicts) else 'NOT met'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
