"""Sampling HumanEval completions from a model, as CodeParrot's evaluation does.

Each prompt is stripped and preceded by the end-of-text token (the model saw files start after one), sampled
with top-p 0.95 up to 256 new tokens, and cut at a new top-level statement (`\\nclass`, `\\ndef`, `\\n#`, `\\n@`,
`\\nprint`, `\\nif`), at a dedent out of the function, or at EOS. Seeds derive from `--seed`, the temperature's
and the problem's index, so a run is reproducible sample for sample.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from pycpilot.evaluate.passk import summarize
from pycpilot.generate import Completer
from pycpilot.generate.sampling import SamplingParams

if TYPE_CHECKING:  # humaneval.py calls this module: only the type comes back
    from pycpilot.evaluate.humaneval import HumanEvalConfig


def sample_humaneval(
    cfg: HumanEvalConfig,
    problems: dict[str, Any],
    score: Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]], float]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of every (temperature, problem, sample), scored, and the pass@k summary per temperature."""
    completer = Completer(cfg.model)  # type: ignore[arg-type]
    tasks = list(problems)[: cfg.limit] if cfg.limit else list(problems)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for t_index, temperature in enumerate(cfg.temperatures):
        samples = []
        start = time.perf_counter()
        new_tokens = 0
        bar = tqdm(tasks, desc=f"humaneval T={temperature}", unit="problem", disable=cfg.quiet, file=sys.stderr)
        for p_index, task in enumerate(bar):
            prompt = problems[task]["prompt"].strip()
            for first in range(0, cfg.n, cfg.batch_size):
                seed = (((cfg.seed * 1009 + t_index) * 1009 + p_index) * 1009 + first) % 2**63  # what torch takes
                params = SamplingParams(
                    n=min(cfg.batch_size, cfg.n - first),
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=temperature,
                    top_p=cfg.top_p,
                    scope="block",
                    seed=seed,
                )
                out = completer.complete(prompt, params, bos=True)
                new_tokens += sum(c.tokens for c in out.completions)
                samples += [
                    {"task_id": task, "temperature": temperature, "completion": c.text} for c in out.completions
                ]
            bar.set_postfix(tokens_per_s=f"{new_tokens / max(time.perf_counter() - start, 1e-9):,.0f}")
        bar.close()
        sampling_s = time.perf_counter() - start
        scored, sandbox_s = score(samples)
        rows += scored
        summary[f"T={temperature}"] = summarize(scored) | {
            "sampling_seconds": round(sampling_s, 2),
            "new_tokens_per_s": round(new_tokens / max(sampling_s, 1e-9), 1),
            "sandbox_seconds": round(sandbox_s, 2),
            "engine": completer.engine,
        }
    return rows, summary
