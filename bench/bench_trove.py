"""Benchmark: the data stage on datatrove's local executor against the one-machine pool, same corpus, same run.

    PYTHONPATH=src:bench .venv/bin/python bench/bench_trove.py [--size 2GB] [--scale 4] [--tasks 16]

The corpus is real code (this interpreter's stdlib and the installed packages) written out again and again
until it reaches --size: every copy after the first edits each file, half of them lightly (a comment and
one renamed identifier: near duplicates the stage must remove) and half heavily (every long identifier
renamed: new files that stay). Each path runs as its own `pycpilot data` process on 2 workers; its peak
memory is the largest sum of RSS over its process tree (sampled every 0.2 s). Targets (issue 17): the
datatrove path's throughput per core >= 0.8x the pool's, and its peak memory at --scale times the corpus
<= 1.2x its peak at 1x (the pool's grows with the corpus: its LSH index and signatures stay in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import psutil

from common import cpu_model
from pycpilot.data.config import size as parse_size
from pycpilot.tables import table

HEADERS = ["path", "corpus", "files", "GB", "wall s", "MB/s per core", "peak RSS GiB", "RSS - shared GiB"]
_IDENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]{4,})\b")


def sources() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    files = []
    for root in roots:
        files += sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts and p.is_file())
    return files


def make_corpus(folder: Path, target: int, seed: int = 0) -> tuple[int, int]:
    """Copies of the source files until `target` bytes; returns (files, bytes)."""
    if (folder / ".done").is_file():
        n, b = (folder / ".done").read_text().split()
        return int(n), int(b)
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(seed)
    texts = []
    for path in sources():
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    written = files = copy = 0
    while written < target:
        repo = folder / f"copy{copy:03d}"
        for i, text in enumerate(texts):
            if written >= target:
                break
            if copy and rng.random() < 0.5:  # a near duplicate: a comment and one identifier renamed
                text = f"# copy {copy}\n" + _IDENT.sub(lambda m: m.group(1) + "_x", text, count=1)
            elif copy:  # a new file: every long identifier renamed
                text = _IDENT.sub(lambda m, c=copy: f"{m.group(1)}_{c}", text)
            path = repo / f"d{i // 1000:03d}" / f"f{i:06d}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = text.encode("utf-8", "surrogatepass")
            path.write_bytes(data)
            written += len(data)
            files += 1
        copy += 1
    (folder / ".done").write_text(f"{files} {written}")
    return files, written


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS summed over the process tree, the same without file-backed pages), in GiB.

    RSS counts the pages of memory-mapped files that a process has touched (Arrow tables are read that
    way); the kernel drops those first. RSS minus shared pages is the memory a process really holds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_sum = peak_anon = 0.0
    root = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak_sum, peak_anon
        while proc.poll() is None:
            try:
                info = [p.memory_info() for p in [root, *root.children(recursive=True)]]
            except psutil.Error:
                info = []
            if info:
                peak_sum = max(peak_sum, sum(m.rss for m in info))
                peak_anon = max(peak_anon, sum(m.rss - m.shared for m in info))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"bench_trove: {' '.join(cmd)} failed:\n{err.decode()[-2000:]}")
    return time.perf_counter() - start, peak_sum / 2**30, peak_anon / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("2GB"), help="the 1x corpus (default: 2GB)")
    ap.add_argument("--scale", type=int, default=4, help="the larger corpus, in multiples of --size")
    ap.add_argument("--tasks", type=int, default=16, help="datatrove tasks per GB of corpus (default: 16)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_trove"), help="corpora and outputs")
    args = ap.parse_args()
    pycpilot = [sys.executable, "-m", "pycpilot", "data", "-q", "--overwrite", "--num-proc", "2"]
    rows, results, stages = [], {}, {}
    for scale in (1, args.scale):
        corpus = args.work / f"corpus{scale}x"
        t0 = time.perf_counter()
        files, nbytes = make_corpus(corpus, scale * args.size)
        print(f"corpus {scale}x: {files:,} files, {nbytes / 1e9:.2f} GB ({time.perf_counter() - t0:.0f} s)", flush=True)
        tasks = max(8, round(args.tasks * nbytes / 1e9))  # many more tasks than workers: no idle core at the end
        for name, extra in (
            ("pool", []),
            ("datatrove local", ["--executor", "local", "--tasks", str(tasks), "--workers", "2"]),
        ):
            out = args.work / f"out-{name.split()[0]}-{scale}x"
            wall, peak_sum, peak_anon = measure([*pycpilot, "--source", str(corpus), "--out", str(out), *extra])
            per_core = nbytes / 1e6 / wall / 2
            results[(name, scale)] = (per_core, peak_sum, peak_anon)
            if name != "pool":
                timings = json.loads((out / "manifest.json").read_text())["timings"]
                stages[scale] = {k.removesuffix("_s"): v / (nbytes / 1e9) for k, v in timings.items() if k != "total_s"}
            rows.append([name, f"{scale}x", f"{files:,}", f"{nbytes / 1e9:.2f}", f"{wall:.0f}", f"{per_core:.1f}",
                         f"{peak_sum:.2f}", f"{peak_anon:.2f}"])  # fmt: skip
            print(
                table(
                    HEADERS,
                    rows[-1:],
                ),
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
    print(f"\n{cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(table(HEADERS, rows))
    print("\ndatatrove stages, seconds per GB of corpus:")
    print(table(["corpus", *stages[1]], [[f"{k}x", *(f"{v:.1f}" for v in t.values())] for k, t in stages.items()]))
    s = args.scale
    ratio = results[("datatrove local", 1)][0] / results[("pool", 1)][0]
    print(f"throughput per core, datatrove / pool at 1x: {ratio:.2f}x (target >= 0.8x)")
    for name in ("datatrove local", "pool"):
        grow = results[(name, s)][1] / results[(name, 1)][1]
        anon = results[(name, s)][2] / results[(name, 1)][2]
        target = " (target <= 1.2x)" if name != "pool" else ""
        print(f"peak memory {s}x / 1x, {name}: RSS {grow:.2f}x{target}, without shared pages {anon:.2f}x")


if __name__ == "__main__":
    main()
