"""One SamplingParams, validated once, and one decode loop that `complete` and `serve` share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pycpilot.cli import build_parser
from pycpilot.errors import PycpilotError
from pycpilot.evaluate.humaneval import HumanEvalConfig
from pycpilot.evaluate.lines import LinesConfig
from pycpilot.generate.config import CompleteConfig
from pycpilot.generate.sampling import SAMPLING_FIELDS, SamplingParams
from pycpilot.serve.requests import parse_completion, parse_infill
from pycpilot.settings import specs

if TYPE_CHECKING:
    from pycpilot.generate import Completer
    from pycpilot.generate.batch import Job


def test_sampling_params_are_keyword_only_frozen_and_checked_when_made() -> None:
    with pytest.raises(TypeError):
        SamplingParams(16)  # type: ignore[misc]
    p = SamplingParams(max_new_tokens=16, stop=["\n"])
    assert p.stop == ("\n",) and p.greedy
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 1.0  # type: ignore[misc]
    for bad, words in [
        (dict(max_new_tokens=0), "--max-new-tokens must be at least 1"),
        (dict(temperature=1e-9), "--temperature must be 0 (greedy) or a finite number >= 1e-06"),
        (dict(temperature=float("nan")), "--temperature must be"),
        (dict(top_p=0.0), "--top-p must be in (0, 1]"),
        (dict(top_k=-1), "--top-k must be at least 0"),
        (dict(n=257), "-n must be between 1 and 256"),
        (dict(seed=-1), "--seed must be between 0 and"),
        (dict(scope="page"), "--scope must be one of line, block, file"),
        (dict(stop=[""]), "--stop strings must not be empty"),
    ]:
        with pytest.raises(
            PycpilotError, match="^" + words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
        ):
            SamplingParams(**bad)
    # a changed copy is checked again
    with pytest.raises(PycpilotError):
        dataclasses.replace(p, max_new_tokens=0)


def test_every_sampling_option_is_declared_once(tmp_path: Path) -> None:
    """complete's options are SamplingParams' own fields; eval's reuse them with their own defaults."""
    ours = {f.name: spec for f, spec in specs(SamplingParams)}
    complete = {f.name: (f, spec) for f, spec in specs(CompleteConfig)}
    for name in SAMPLING_FIELDS:
        f, spec = complete[name]
        assert spec == ours[name], name
        assert (f.default if f.default is not dataclasses.MISSING else tuple(f.default_factory())) == getattr(
            SamplingParams(), name
        )
    cfg = CompleteConfig(model=tmp_path, temperature=0.5, top_k=5, n=3, stop=["x"], scope="line")
    assert cfg.sampling() == SamplingParams(temperature=0.5, top_k=5, n=3, stop=("x",), scope="line")
    humaneval = {f.name: spec for f, spec in specs(HumanEvalConfig)}
    assert humaneval["top_p"].help == ours["top_p"].help and humaneval["batch_size"].high == ours["n"].high
    assert {f.name: spec for f, spec in specs(LinesConfig)}["max_new_tokens"].low == ours["max_new_tokens"].low
    # `pycpilot complete --help` shows SamplingParams' help
    complete_help = build_parser()._subparsers._group_actions[0].choices["complete"].format_help()  # type: ignore
    assert " ".join(ours["top_p"].help.split()) in " ".join(complete_help.split())


def test_a_request_becomes_sampling_params() -> None:
    body = {"prompt": ["a", "b"], "max_tokens": 7, "temperature": 0, "top_p": 0.5, "n": 2, "stop": "\n", "seed": 3}
    requests, _ = parse_completion(body, "m", 64, 8, "file")
    assert [r.prompt for r in requests] == ["a", "b"]
    assert requests[0].params == SamplingParams(max_new_tokens=7, top_p=0.5, n=2, stop=("\n",), seed=3, scope="file")
    near_zero = parse_completion({"prompt": "a", "temperature": 1e-9}, "m", 64, 8, "file")[0][0].params
    assert near_zero.greedy  # OpenAI clients send tiny temperatures for greedy
    unseeded = {parse_completion({"prompt": "a"}, "m", 64, 8, "file")[0][0].params.seed for _ in range(4)}
    assert len(unseeded) > 1  # a request without a seed gets a fresh one
    infill = parse_infill({"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 5}, 64, "line")
    assert infill.params.max_new_tokens == 5 and infill.params.scope == "line" and infill.params.n == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["complete", "-n", "0"], "-n must be between 1 and 256, not 0"),
        (["complete", "-n", "257"], "-n must be between 1 and 256, not 257"),
        (["complete", "--top-p", "0"], "--top-p must be in (0, 1], not 0.0"),
        (["complete", "--top-p", "1.5"], "--top-p must be in (0, 1], not 1.5"),
        (["complete", "--temperature", "-1"], "--temperature must be at least 0, not -1.0"),
        (["eval", "humaneval", "-n", "0"], "-n must be between 1 and 10,000, not 0"),
        (["eval", "humaneval", "--top-p", "0"], "--top-p must be in (0, 1], not 0.0"),
        (["eval", "humaneval", "--top-p", "1.5"], "--top-p must be in (0, 1], not 1.5"),
        (["eval", "humaneval", "--temperature", "-1"], "--temperature must be 0 (greedy) or a finite number >= 1e-06"),
        (["eval", "humaneval", "--batch-size", "0"], "--batch-size must be between 1 and 256, not 0"),
    ],
)
def test_bad_sampling_values_are_one_line_errors(
    args: list[str], message: str, tiny_run: Path, tmp_path, capsys
) -> None:
    from pycpilot.cli import main

    where = ["--out", str(tmp_path / "o")] if args[0] == "eval" else ["x = "]
    assert main([*args, "--model", str(tiny_run), *where]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"pycpilot {args[0]}: error: {message}"]
    assert not (tmp_path / "o").exists()


def test_complete_is_one_job_alone_on_the_servers_loop(tiny_run: Path) -> None:
    """The same job gives the same rows alone (complete) and beside another job in one batch (serve)."""
    from pycpilot.generate import Completer
    from pycpilot.generate.batch import DecodeBatch

    completer = Completer(tiny_run)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, n=2, seed=6, scope="file")
    alone = completer.complete("def add(a, b):\n", params)
    assert [c.finish_reason for c in alone.completions] == ["length", "length"]

    batch = DecodeBatch(completer, 4, completer.context)
    got: dict[tuple[int, int | None], object] = {}

    def job(prompt: str, p: SamplingParams, k: int) -> Job:
        return _job(completer, prompt, p, lambda kind, row, v: got.__setitem__((k, row), v) if kind == "done" else None)

    batch.start(job("class A:\n", SamplingParams(max_new_tokens=5, scope="file"), 0))  # a neighbour, shorter
    batch.advance()
    batch.start(job("def add(a, b):\n", params, 1))  # joins one step later, at other positions
    while batch.active:
        batch.advance()
    assert [got[(1, r)].ids for r in range(2)] == [c.ids for c in alone.completions]  # type: ignore[attr-defined]
    assert got[(0, 0)].tokens == 5 and sorted(batch.free) == [0, 1, 2, 3]  # type: ignore[attr-defined]


def test_a_row_that_stops_early_frees_its_slot_for_the_next_job(tiny_run: Path) -> None:
    from pycpilot.generate import Completer
    from pycpilot.generate.batch import DecodeBatch

    completer = Completer(tiny_run)
    batch = DecodeBatch(completer, 3, completer.context)
    got: dict[tuple[int, int | None], object] = {}

    def job(prompt: str, p: SamplingParams, k: int) -> Job:
        return _job(completer, prompt, p, lambda kind, row, v: got.__setitem__((k, row), v) if kind == "done" else None)

    long = SamplingParams(max_new_tokens=12, temperature=0.9, n=2, seed=4, scope="file")
    short = job("x = 1\n", SamplingParams(max_new_tokens=3, scope="file"), 0)
    batch.start(short)
    batch.start(job("def f():\n", long, 1))
    assert batch.free == []
    for _ in range(3):
        batch.advance()
    assert (0, 0) in got and batch.free == short.slots and (1, 0) not in got  # the short row is done, its slot free
    late = SamplingParams(max_new_tokens=6, temperature=0.9, n=1, seed=8, scope="file")
    batch.start(job("import os\n", late, 2))  # takes the freed slot while job 1 goes on
    while batch.active:
        batch.advance()
    assert got[(2, 0)].ids == completer.complete("import os\n", late).completions[0].ids  # type: ignore[attr-defined]
    assert [got[(1, r)].ids for r in range(2)] == [  # type: ignore[attr-defined]
        c.ids for c in completer.complete("def f():\n", long).completions
    ]


def test_a_row_that_stops_while_its_siblings_go_on_frees_its_slot(tiny_run: Path, monkeypatch) -> None:
    """One row of a job ends early: its slot serves the next job at once, the sibling row draws on unchanged
    and the finished row is not drawn for any more."""
    from pycpilot.generate import Completer
    from pycpilot.generate import batch as batch_module
    from pycpilot.generate.batch import DecodeBatch
    from pycpilot.generate.text import Stopper

    class EndsAfter(Stopper):  # ends its row at its `calls`-th token
        def __init__(self, calls: int) -> None:
            super().__init__("", [], "line")
            self.left = calls

        def cut(self, text: str) -> int | None:
            self.left -= 1
            return len(text) if self.left <= 0 else None

    completer = Completer(tiny_run)
    batch = DecodeBatch(completer, 3, completer.context)
    got: dict[tuple[int, int | None], object] = {}
    params = SamplingParams(max_new_tokens=12, temperature=0.9, n=2, seed=4, scope="file")
    pair = _job(
        completer, "def f():\n", params, lambda kind, row, v: got.__setitem__((0, row), v) if kind == "done" else None
    )
    pair.stoppers[0] = EndsAfter(3)
    batch.start(pair)
    drawn: list[int] = []  # rows per draw() call
    real_draw, real_rows = batch_module.draw, batch_module.draw_rows  # the torch and the C sampler
    monkeypatch.setattr(batch_module, "draw", lambda x, *a, **k: drawn.append(len(x)) or real_draw(x, *a, **k))
    monkeypatch.setattr(batch_module, "draw_rows", lambda lib, x, *a: drawn.append(len(x)) or real_rows(lib, x, *a))
    for _ in range(3):
        batch.advance()
    assert (0, 0) in got and (0, 1) not in got and len(batch.free) == 2 and pair.slots[0] in batch.free
    late = SamplingParams(max_new_tokens=6, temperature=0.9, n=2, seed=8, scope="file")
    batch.start(
        _job(
            completer,
            "import os\n",
            late,
            lambda kind, row, v: got.__setitem__((1, row), v) if kind == "done" else None,
        )
    )
    batch.advance()
    assert drawn[-1] == 3  # the sibling and the new job's two rows, not the finished row
    while batch.active:
        batch.advance()
    alone = completer.complete("def f():\n", params).completions
    assert got[(0, 0)].ids == alone[0].ids[:3] and got[(0, 1)].ids == alone[1].ids  # type: ignore[attr-defined]
    assert [got[(1, r)].ids for r in range(2)] == [c.ids for c in completer.complete("import os\n", late).completions]  # type: ignore[attr-defined]


def test_complete_takes_params_or_keywords_not_both(tiny_run: Path) -> None:
    from pycpilot.generate import Completer

    completer = Completer(tiny_run)
    a = completer.complete("def f(", SamplingParams(max_new_tokens=4, scope="file"))
    b = completer.complete("def f(", max_new_tokens=4, scope="file")
    assert [c.ids for c in a.completions] == [c.ids for c in b.completions]
    with pytest.raises(TypeError, match="not both"):
        completer.complete("def f(", SamplingParams(), max_new_tokens=4)


def _job(completer: Completer, prompt: str, p: SamplingParams, emit: Callable[[str, int | None, Any], None]) -> Job:
    """A Job for `prompt` as `complete` makes it: tokens fitted to the context, one stopper per row."""
    from pycpilot.generate.batch import Job
    from pycpilot.generate.text import Stopper

    ids, _, max_new, _ = completer.prepare(prompt, None, p.max_new_tokens, False)
    p = dataclasses.replace(p, max_new_tokens=max_new)
    return Job(ids, p, [Stopper(prompt, p.stop, p.scope, 0) for _ in range(p.n)], emit)
