"""llama.cpp itself on an exported GGUF: its tokenization, greedy continuation and infill equal ours.

llama.cpp comes prebuilt through npm's `node-llama-cpp` (tools/llamacpp, pinned with its lockfile; `make test`
runs `npm ci` there). Skipped only where node is absent."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pycpilot.export import ExportConfig
from pycpilot.export.write import export_model
from pycpilot.generate import Completer

TOOLS = Path(__file__).resolve().parent.parent / "tools" / "llamacpp"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: llama.cpp runs in node")

PROBES = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n\tdef __init__(self, x: float) -> None:\n\t\tself.x = x  # café, naïve, 日本語 🐍\n",
    "x = [1, 2, 3]\r\nif x:    \n\n\n        print(f'{x!r:>10}')\n",
    "<fim_prefix>def f():<fim_suffix>\n<fim_middle>",
]


def llama(job: dict, tmp_path: Path) -> dict:
    if not (TOOLS / "node_modules" / "node-llama-cpp").is_dir():
        pytest.fail("node-llama-cpp is not installed: run `make llamacpp` (npm ci in tools/llamacpp)")
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    r = subprocess.run(["node", str(TOOLS / "llama.mjs"), str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    export_model(ExportConfig(model=tiny_run, out=out, type="f32", quiet=True))
    return out


def test_llama_cpp_tokenizes_and_completes_as_we_do(exported: Path, tiny_run: Path, tmp_path: Path) -> None:
    completer = Completer(tiny_run)
    prompts = ["def add(a, b):\n", "import os\n\n\ndef list_files(folder):\n    ", "class Config:\n    name = "]
    got = llama({"model": str(exported), "context": 256, "threads": 1, "tokenize": PROBES,
                 "greedy": [{"prompt": p, "n": 16} for p in prompts]}, tmp_path)  # fmt: skip
    for probe, theirs in zip(PROBES, got["tokens"], strict=True):
        assert theirs == completer.tokenizer(probe)["input_ids"], probe
    for prompt, theirs in zip(prompts, got["greedy"], strict=True):
        ours = completer.complete(prompt, max_new_tokens=16, temperature=0, scope="file", heal=False)
        assert theirs["text"] == ours.completions[0].text, prompt  # `pycpilot complete --temperature 0 --no-heal`
    assert sum(len(g["tokens"]) for g in got["greedy"]) >= 16  # not all stopped at once: something was compared


def test_llama_cpp_infill_uses_our_fim_tokens(exported: Path, tiny_run: Path, tmp_path: Path) -> None:
    completer = Completer(tiny_run)
    prefix, suffix = "def area(r):\n    ", "\n    return a\n"
    got = llama({"model": str(exported), "context": 256, "threads": 1,
                 "infill": [{"prefix": prefix, "suffix": suffix, "n": 12}]}, tmp_path)  # fmt: skip
    ours = completer.complete(prefix, suffix=suffix, max_new_tokens=12, temperature=0, scope="file", heal=False)
    assert got["infill"][0] == ours.completions[0].text and got["infill"][0]
