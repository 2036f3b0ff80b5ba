"""pass@k over HumanEval's tasks from per-sample pass/fail rows (Chen et al., 2021)."""

from __future__ import annotations

from typing import Any

import numpy as np

KS = (1, 10, 100)


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator of Chen et al. (2021): 1 - C(n - c, k) / C(n, k), as a stable product."""
    if n - correct < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - correct + 1, n + 1)))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """pass@k (in %) over tasks from per-sample rows; a k is reported only where every task has n >= k."""
    per_task: dict[str, list[bool]] = {}
    for row in rows:
        per_task.setdefault(row["task_id"], []).append(bool(row["passed"]))
    n_min = min(len(v) for v in per_task.values())
    scores = {
        f"pass@{k}": round(100 * float(np.mean([pass_at_k(len(v), sum(v), k) for v in per_task.values()])), 2)
        for k in KS
        if n_min >= k
    }
    return {
        "tasks": len(per_task),
        "samples": len(rows),
        "samples_per_task": n_min,
        "passed": sum(bool(r["passed"]) for r in rows),
        **scores,
    }
