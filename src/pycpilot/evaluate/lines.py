"""`pycpilot eval lines`: line completion, as CodeXGLUE's line-level task measures it.

At sampled positions in held-out files (a seeded choice of lines, cut at a random point after the
indentation), the model sees the file up to the cursor and completes the rest of the line (greedy, `--scope
line`). Reported: exact match (whitespace-trimmed), edit similarity (difflib's ratio x 100, what CodeXGLUE's
fuzzywuzzy `ratio` computes) and the share of completions after which the whole file still parses.
"""

from __future__ import annotations

import difflib
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pycpilot.errors import PycpilotError
from pycpilot.evaluate.texts import HeldOut, check_out, read_texts, write_out
from pycpilot.generate.sampling import SamplingParams, sampling_setting
from pycpilot.manifest import MANIFEST, base_manifest
from pycpilot.settings import check, setting

STAGE = "eval-lines"


@dataclass
class LinesConfig(HeldOut):
    """`evaluate_lines(LinesConfig(...))` is the Python entry point of `pycpilot eval lines`."""

    samples: int = setting(200, help="positions to complete", low=1)
    max_new_tokens: int = sampling_setting("max_new_tokens", 48, help="at most this many new tokens per line")
    seed: int = setting(42, help="seed of the positions", low=0, high=2**32 - 1)
    heal: bool = setting(
        True, help="complete without token healing (by default as `complete` and `serve` do)", negative=True
    )
    out: Path | None = setting(None, help="also write lines.jsonl, the figures (JSON) and a manifest here")
    quiet: bool = setting(False, help="no progress bar or summary line", alias="-q")

    def validate(self) -> None:
        check(self)
        check_out(None if self.out is None else Path(self.out), STAGE)


@dataclass
class Position:
    name: str
    text: str
    cursor: int  # where the model starts writing
    line_end: int  # the end of that line (the newline's index, or len(text))


def pick_positions(texts: list[tuple[str, str]], count: int, seed: int) -> list[Position]:
    """`count` seeded positions: a line with at least 4 visible characters, cut after its indentation."""
    rng = random.Random(seed)
    candidates = []
    for name, text in texts:
        start = 0
        for line in text.split("\n"):
            body = line.strip()
            if len(body) >= 4 and not body.startswith("#"):
                indent = len(line) - len(line.lstrip())
                candidates.append((name, text, start + indent, start + len(line.rstrip())))
            start += len(line) + 1
    if not candidates:
        raise PycpilotError("no line of 4 or more visible characters to complete in --data")
    chosen = rng.sample(candidates, min(count, len(candidates)))
    positions = []
    for name, text, begin, end in chosen:
        cursor = rng.randint(begin, max(begin, end - 1))  # at least one character left to write
        line_end = text.find("\n", cursor)
        positions.append(Position(name, text, cursor, len(text) if line_end < 0 else line_end))
    return positions


def parses(source: str) -> bool:
    """Whether `source` compiles; the compiler's SyntaxWarnings about generated code are not the user's news."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return False
    return True


def evaluate_lines(cfg: LinesConfig) -> dict[str, Any]:
    from pycpilot.generate import Completer

    cfg.validate()
    completer = Completer(cfg.model)
    texts, skipped = read_texts(cfg.data, cfg.split)
    positions = pick_positions(texts, cfg.samples, cfg.seed)
    rows = []
    start = time.perf_counter()
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, scope="line")  # greedy
    for pos in tqdm(positions, desc="lines", unit="line", disable=cfg.quiet, file=sys.stderr):
        target = pos.text[pos.cursor : pos.line_end]
        # The prompt's tail only: Completer cuts long prompts at the token level anyway; this bounds the encoding.
        prompt = pos.text[max(0, pos.cursor - 8 * completer.context) : pos.cursor]
        got = completer.complete(prompt, params, bos=pos.cursor <= len(prompt), heal=cfg.heal)
        text = got.completions[0].text
        original_parses = parses(pos.text)
        rows.append(
            {
                "file": pos.name,
                "cursor": pos.cursor,
                "target": target,
                "completion": text,
                "exact": text.strip() == target.strip(),
                "edit_similarity": 100 * difflib.SequenceMatcher(None, text.strip(), target.strip()).ratio(),
                "parses": parses(pos.text[: pos.cursor] + text + pos.text[pos.line_end :]) if original_parses else None,
            }
        )
    judged = [r["parses"] for r in rows if r["parses"] is not None]
    summary = {
        "model": str(completer.loaded.path),
        "data": str(cfg.data),
        "files": len(texts),
        "skipped": skipped,
        "samples": len(rows),
        "exact_match": 100 * sum(r["exact"] for r in rows) / len(rows),
        "edit_similarity": sum(r["edit_similarity"] for r in rows) / len(rows),
        "parses": 100 * sum(judged) / len(judged) if judged else None,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if cfg.out is not None:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
        manifest = base_manifest(STAGE, config) | {"summary": summary}
        write_out(Path(cfg.out), STAGE, {"lines.json": {"summary": summary, "rows": rows}, MANIFEST: manifest})
    if not cfg.quiet:
        parsed = f"{summary['parses']:.1f}%" if summary["parses"] is not None else "n/a"
        print(
            f"lines: {len(rows)} positions in {len(texts)} files: exact match {summary['exact_match']:.1f}%, "
            f"edit similarity {summary['edit_similarity']:.1f}, file still parses {parsed}"
        )
    return summary
