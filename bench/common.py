"""Helpers shared by the benchmarks (run as `python bench/NAME.py`, so this imports as `common`)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name, for the table header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# A child's ru_maxrss starts from the RSS of the process that forked it (Linux carries the old memory's high-water
# mark over exec), so a child of a benchmark that holds a lot of memory would report the benchmark's peak.
# This launcher, a bare interpreter of ~10 MiB, starts the command, waits for it with wait4 and prints the
# command's own ru_maxrss (KiB on Linux) and wall seconds.
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
print(proc.returncode, usage.ru_maxrss, time.perf_counter() - start)
"""


def make_untrained(root: Path, name: str, tokenizer: Path, shape: tuple[int, int, int, int, int]) -> Path:
    """An untrained GPT-2 of `shape` (layers, heads, width, vocabulary, positions) with `tokenizer`, saved as
    root/model-NAME: for speed figures, which do not depend on the weights."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    layers, heads, width, _, positions = shape
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=positions, n_layer=layers, n_head=heads, n_embd=width,
                        activation_function="gelu_pytorch_tanh", bos_token_id=tok.eos_token_id,
                        eos_token_id=tok.eos_token_id)  # fmt: skip
    out = root / f"model-{name}"
    GPT2LMHeadModel(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
