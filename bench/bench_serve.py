"""Benchmark of `pycpilot serve` (`make bench`): completion latency over loopback, side by side with a baseline.

Each request: POST /v1/completions with a 200-token prompt (the start of a stdlib file), max_tokens 32,
temperature 0, scope "file" (only EOS or the length ends it), through a kept-alive HTTP connection per
client thread. Concurrency 1: one client, --requests requests one after another; concurrency 4: four clients
at once. Latency is the whole HTTP round trip as the client sees it.

Model: the tiny preset's shape (4 x 128, vocabulary 8,192, context 256), untrained (speed does not depend on
the weights, and a random model almost never ends early). Ours: `pycpilot serve` (native step, batching). The
baseline is the seed's recipe behind the same HTTP server: `pycpilot serve --engine hf`, which answers each
request with transformers' `model.generate`, one request at a time.
Targets (the issue's): p50 <= 100 ms at concurrency 1; throughput at concurrency 4 >= 2x concurrency 1.
The load generator runs on the same 2 cores as the server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

import httpx

from bench_train import build_inputs
from common import cpu_model
from pycpilot.data.report import table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serve_util import start_process

PROMPT_TOKENS, NEW_TOKENS = 200, 32


def make_model(root: Path, tokenizer: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_layer=4, n_head=4, n_embd=128,
        activation_function="gelu_pytorch_tanh", bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    out = root / "model-tiny"
    GPT2LMHeadModel(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def prompt_text(model: Path, tokens: int = PROMPT_TOKENS) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    text = (Path(json.__file__).parent / "decoder.py").read_text(encoding="utf-8")
    return tok.decode(tok(text, add_special_tokens=False)["input_ids"][:tokens])


def load(base: str, prompt: str, concurrency: int, requests: int, new_tokens: int = NEW_TOKENS) -> dict[str, float]:
    """`requests` requests per client, `concurrency` clients at once."""
    body = {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "scope": "file"}
    latencies: list[float] = []
    tokens: list[int] = []
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            for _ in range(requests):
                start = time.perf_counter()
                r = http.post(f"{base}/v1/completions", json=body)
                took = time.perf_counter() - start
                if r.status_code != 200:
                    failures.append(r.text)
                    return
                with lock:
                    latencies.append(took)
                    tokens.append(r.json()["usage"]["completion_tokens"])

    with httpx.Client() as http:  # warm up: first requests build caches
        for _ in range(3):
            http.post(f"{base}/v1/completions", json=body, timeout=120)
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if failures:
        raise SystemExit(f"a request failed: {failures[0]}")
    ms = sorted(x * 1000 for x in latencies)
    return {
        "p50": statistics.median(ms),
        "p95": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "rps": len(ms) / wall,
        "tps": sum(tokens) / wall,
        "tokens": statistics.mean(tokens),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100, help="requests per client (100)")
    parser.add_argument("--baseline-requests", type=int, default=30, help="requests per client, baseline (30)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    try:
        print(f"date: {subprocess.run(['date'], capture_output=True, text=True).stdout.strip()}")
        print(f"machine: {cpu_model()}, nproc {os.cpu_count()}, {platform.system()} {platform.release()}")
        print("load average at start: {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg()))
        print(f"python {platform.python_version()}, torch {version('torch')}, transformers {version('transformers')}, "
              f"fastapi {version('fastapi')}, uvicorn {version('uvicorn')}")  # fmt: skip
        made = build_inputs(root, [8192], [])
        model = make_model(root, made[8192])
        prompt = prompt_text(model)
        rows, results = [], {}
        short = prompt_text(model, 64)
        for name, extra, n in [("pycpilot serve", [], args.requests), ("baseline (--engine hf)", ["--engine", "hf"],
                                                                       args.baseline_requests)]:  # fmt: skip
            proc, base = start_process(model, *extra)
            try:
                engine = httpx.get(f"{base}/health").json()["engine"]
                for shape, text, new in [("200+32", prompt, NEW_TOKENS), ("64+128", short, 128)]:
                    for concurrency in (1, 4):
                        m = load(base, text, concurrency, n if new == NEW_TOKENS else max(n // 4, 5), new)
                        results[name, concurrency, shape] = m
                        rows.append([
                            f"{name} [{engine}]", shape, str(concurrency), f"{m['p50']:.1f}", f"{m['p95']:.1f}",
                            f"{m['rps']:.1f}", f"{m['tps']:,.0f}", f"{m['tokens']:.1f}",
                        ])  # fmt: skip
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        print("\nprompt + max_tokens: 200+32 (the issue's) and 64+128 (mostly decoding); greedy, tiny preset shape")
        head = ["server", "tokens", "concurrency", "p50 ms", "p95 ms", "requests/s", "new tokens/s", "tokens/request"]
        print(table(head, rows))
        ours1, ours4 = results["pycpilot serve", 1, "200+32"], results["pycpilot serve", 4, "200+32"]
        base1, base4 = results["baseline (--engine hf)", 1, "200+32"], results["baseline (--engine hf)", 4, "200+32"]
        long1, long4 = results["pycpilot serve", 1, "64+128"], results["pycpilot serve", 4, "64+128"]
        print(f"p50 at concurrency 1: {ours1['p50']:.1f} ms (baseline {base1['p50']:.1f} ms, "
              f"{base1['p50'] / ours1['p50']:.1f}x faster) -> target <= 100 ms: "
              f"{'met' if ours1['p50'] <= 100 else 'NOT met'}")  # fmt: skip
        scale = ours4["rps"] / ours1["rps"]
        print(f"throughput, concurrency 4 / 1: {scale:.2f}x (baseline {base4['rps'] / base1['rps']:.2f}x) -> "
              f"target >= 2x: {'met' if scale >= 2 else 'NOT met'}")  # fmt: skip
        print(f"throughput at concurrency 4 vs baseline: {ours4['rps'] / base4['rps']:.1f}x")
        print(f"64+128 (mostly decoding): throughput concurrency 4 / 1: {long4['rps'] / long1['rps']:.2f}x")
        print("load average at end: {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
