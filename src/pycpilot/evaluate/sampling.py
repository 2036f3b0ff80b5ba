"""Sampling HumanEval completions from a model, as CodeParrot's evaluation does.

Each prompt is stripped and preceded by the end-of-text token (the model saw files start after one), sampled
with top-p 0.95 up to 256 new tokens, and cut at a new top-level statement (`\\nclass`, `\\ndef`, `\\n#`, `\\n@`,
`\\nprint`, `\\nif`), at a dedent out of the function, or at EOS.

The samples of all problems go through one decode batch of `--batch-size` rows, kept full: as rows finish, the
next problem's samples take the free rows (a problem's samples that start together share one prompt pass).
Each sample has its own seed, from `--seed`, the temperature's and the problem's index and its own number, so
a run is reproducible sample for sample whatever the batch size (with our decode loop; transformers'
engine, for models that are not GPT-2, seeds each problem's batch).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from pycpilot.evaluate.passk import summarize
from pycpilot.generate import Completer
from pycpilot.generate.batch import Completion, DecodeBatch, Job, gc_paused
from pycpilot.generate.draw import row_seed
from pycpilot.generate.sampling import SamplingParams
from pycpilot.generate.text import Stopper

if TYPE_CHECKING:  # humaneval.py calls this module: only the type comes back
    from pycpilot.evaluate.humaneval import HumanEvalConfig


@dataclass
class _Problem:
    index: int
    task: str
    prompt: str
    ids: list[int]
    max_new: int
    next_sample: int = 0
    done: dict[int, Completion] = field(default_factory=dict)


def sample_humaneval(
    cfg: HumanEvalConfig,
    problems: dict[str, Any],
    score: Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]], float]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of every (temperature, problem, sample), scored, and the pass@k summary per temperature."""
    completer = Completer(cfg.model, device=cfg.device)  # type: ignore[arg-type]
    tasks = list(problems)[: cfg.limit] if cfg.limit else list(problems)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    total = len(cfg.temperatures) * len(tasks) * cfg.n  # one bar: its ETA is the whole evaluation's sampling
    bar = tqdm(total=total, desc="humaneval", unit=" samples", disable=cfg.quiet, file=sys.stderr)
    try:
        for t_index, temperature in enumerate(cfg.temperatures):
            todo = []
            for p_index, task in enumerate(tasks):
                prompt = problems[task]["prompt"].strip()
                ids, _, max_new, _ = completer.prepare(prompt, None, cfg.max_new_tokens, bos=True)
                todo.append(_Problem(p_index, task, prompt, ids, max_new))
            start = time.perf_counter()
            counts = _sample_all(completer, cfg, temperature, t_index, todo, bar)
            sampling_s = time.perf_counter() - start
            samples = [
                {"task_id": p.task, "temperature": temperature, "completion": p.done[i].text}
                for p in todo
                for i in range(cfg.n)
            ]
            scored, sandbox_s = score(samples)
            rows += scored
            summary[f"T={temperature}"] = summarize(scored) | {
                "sampling_seconds": round(sampling_s, 2),
                "new_tokens_per_s": round(counts["generated"] / max(sampling_s, 1e-9), 1),
                "kept_tokens_per_s": round(counts["kept"] / max(sampling_s, 1e-9), 1),
                "sandbox_seconds": round(sandbox_s, 2),
                "engine": completer.engine,
                "device": str(completer.device),
            }
    finally:
        bar.close()
    return rows, summary


def sample_seed(seed: int, t_index: int, p_index: int, sample: int) -> int:
    """The seed of one sample: the same whichever samples share its batch."""
    return row_seed((((seed * 1009 + t_index) * 1009 + p_index) * 1009) % 2**63, sample)


def _sample_all(
    completer: Completer, cfg: HumanEvalConfig, temperature: float, t_index: int, todo: list[_Problem], bar: tqdm
) -> dict[str, int]:
    """Fill `done` of every problem with its `cfg.n` samples; the counts of generated and kept tokens."""
    counts = {"generated": 0, "kept": 0}
    start = time.perf_counter()

    def finished(problem: _Problem, sample: int, c: Completion) -> None:
        problem.done[sample] = c
        counts["generated"] += c.tokens
        counts["kept"] += len(completer.tokens(c.text)) if c.text else 0
        bar.update(1)
        elapsed = max(time.perf_counter() - start, 1e-9)
        rates = f"{counts['generated'] / elapsed:,.0f} tok/s generated, {counts['kept'] / elapsed:,.0f} kept"
        bar.set_postfix_str(f"T={temperature}: {rates}")

    def params(n: int, problem: _Problem) -> SamplingParams:
        return SamplingParams(n=n, max_new_tokens=problem.max_new, temperature=temperature, top_p=cfg.top_p,
                              scope="block", seed=cfg.seed)  # fmt: skip

    if completer.fast is None:  # transformers' generate: one problem's batch at a time
        for p in todo:
            for first in range(0, cfg.n, cfg.batch_size):
                n = min(cfg.batch_size, cfg.n - first)
                seed = sample_seed(cfg.seed, t_index, p.index, first)
                prm = _with_seed(params(n, p), seed)
                out = completer.complete_ids(p.ids, prm, _stoppers(p, prm))
                for i, c in enumerate(out):
                    finished(p, first + i, c)
        return counts
    _run_queue(completer, cfg, t_index, todo, params, finished)
    return counts


def _with_seed(params: SamplingParams, seed: int) -> SamplingParams:
    return replace(params, seed=seed)


def _stoppers(problem: _Problem, params: SamplingParams) -> list[Stopper]:
    return [Stopper(problem.prompt, list(params.stop), params.scope) for _ in range(params.n)]


def _run_queue(
    completer: Completer,
    cfg: HumanEvalConfig,
    t_index: int,
    todo: list[_Problem],
    params: Callable[[int, _Problem], SamplingParams],
    finished: Callable[[_Problem, int, Completion], None],
) -> None:
    """One decode batch kept full: whenever rows are free, the next samples (of one problem at a time) start."""
    queue = deque(todo)
    length = max(len(p.ids) + p.max_new for p in todo)
    batch = DecodeBatch(completer, min(cfg.batch_size, len(todo) * cfg.n), length)
    with gc_paused():
        while queue or batch.active:
            while queue and batch.free:
                p = queue[0]
                n = min(len(batch.free), cfg.n - p.next_sample)
                first = p.next_sample
                p.next_sample += n
                if p.next_sample == cfg.n:
                    queue.popleft()
                seeds = [sample_seed(cfg.seed, t_index, p.index, first + i) for i in range(n)]

                def emit(kind: str, row: int | None, value: Any, p: _Problem = p, first: int = first) -> None:
                    if kind == "done":
                        finished(p, first + int(row or 0), value)

                prm = params(n, p)
                batch.start(Job(p.ids, prm, _stoppers(p, prm), emit, seeds=seeds))
            batch.advance_or_raise()
