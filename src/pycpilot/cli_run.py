"""Subcommand `run`: argument parsing only (the work is in pycpilot.run). `--STAGE.OPTION VALUE` settings are
parsed by that stage's own subcommand parser, so they take exactly what `pycpilot STAGE` takes."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError

# What each stage's own parser requires; placeholders, replaced by the run's own folders.
_REQUIRED = {
    "data": ["--out", "x"],
    "tokenizer": ["--data", "x", "--out", "x"],
    "pack": ["--data", "x", "--tokenizer", "x", "--out", "x"],
    "train": ["--packed", "x", "--out", "x"],
}
_FIXED = {"out", "data", "tokenizer", "packed", "overwrite", "resume", "quiet", "preset", "source", "recipe"}


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the whole pipeline in one go: data -> tokenizer -> pack -> train -> eval (-> serve)",
        description="Run every stage into one folder (data/, tokenizer/, packed/, model/, eval/, report.html, "
        "manifest.json). Run it again: finished stages whose inputs and settings are unchanged are skipped, an "
        "interrupted training resumes, a changed setting redoes that stage and those after it. Any stage "
        "option is reachable as --STAGE.OPTION VALUE (e.g. --train.max-time 10m, --data.valid-fraction 0.05, "
        "--eval.humaneval-limit 164) or in a --recipe file.",
    )
    p.add_argument("--source", dest="sources", action="append", help="data source, repeatable (default: stdlib)")
    p.add_argument(
        "--preset",
        default="auto",
        choices=["auto", "tiny", "small", "medium", "large"],
        help="auto (default): the tiny preset's tokenizer, pack and recipe, with the model sized to --train.max-time",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="the run folder (runs/demo)")
    p.add_argument("--recipe", type=Path, help="YAML/JSON file: {stage: {option: value}}; options given here win")
    p.add_argument("--serve", action="store_true", help="start `pycpilot serve` on the model at the end")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (8000)")
    p.add_argument("-q", "--quiet", action="store_true", help="only the one-line stage summaries")
    p.set_defaults(run=_run_run, takes_stage_options=True)


def stage_options(parser: argparse.ArgumentParser, extra: list[str]) -> dict[str, dict[str, Any]]:
    """--STAGE.OPTION [VALUE] arguments -> {stage: {field: value}}, each checked by that stage's parser."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    grouped: dict[str, list[str]] = {}
    current: str | None = None
    for arg in extra:
        if arg.startswith("--") and "." in arg.split("=", 1)[0]:
            stage, _, option = arg[2:].partition(".")
            if stage not in (*_REQUIRED, "eval"):
                raise PycpilotError(f"{arg}: unknown stage {stage!r} (data, tokenizer, pack, train, eval)")
            current = stage
            grouped.setdefault(stage, []).append("--" + option)
        elif current is not None and not arg.startswith("--"):
            grouped[current].append(arg)
        else:
            raise PycpilotError(f"unrecognized argument {arg!r}: stage options are written --STAGE.OPTION VALUE")
    settings: dict[str, dict[str, Any]] = {}
    for stage, argv in grouped.items():
        if stage == "eval":
            settings[stage] = _eval_options(argv)
            continue
        sub = subparsers.choices[stage]
        settings[stage] = _parsed_difference(sub, stage, argv)
    return settings


def _parsed_difference(sub: argparse.ArgumentParser, stage: str, argv: list[str]) -> dict[str, Any]:
    def fail(message: str) -> None:
        raise PycpilotError(f"--{stage}.*: {message}")

    sub.error = fail  # type: ignore[method-assign]  # one line, not usage + exit
    base = vars(sub.parse_args(_REQUIRED[stage]))
    given = vars(sub.parse_args(_REQUIRED[stage] + argv))
    changed = {k: v for k, v in given.items() if base.get(k) != v or k in _explicit(sub, argv)}
    fixed = sorted(k for k in changed if k in _FIXED)
    if fixed:
        raise PycpilotError(f"--{stage}.{fixed[0].replace('_', '-')} is set by `pycpilot run` itself")
    return {k: v for k, v in changed.items() if k not in ("run", "takes_stage_options")}


def _explicit(sub: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the options written in argv (a value equal to the default still counts)."""
    names = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {a.dest for a in sub._actions if any(s in names for s in a.option_strings)}


def _eval_options(argv: list[str]) -> dict[str, Any]:
    from pycpilot.run.config import EvalPlan

    types = {f.name: f.type for f in dataclasses.fields(EvalPlan)}
    out: dict[str, Any] = {}
    it = iter(argv)
    for arg in it:
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in types:
            raise PycpilotError(f"--eval.{arg[2:]}: unknown (eval takes {', '.join(sorted(types))})")
        kind = str(types[name])
        if kind == "bool":  # a flag; --eval.NAME=false turns it off
            out[name] = "=" not in arg or arg.split("=", 1)[1].lower() in ("1", "true", "yes", "on")
            continue
        raw = arg.split("=", 1)[1] if "=" in arg else next(it, None)
        if raw is None:
            raise PycpilotError(f"--eval.{name.replace('_', '-')} needs a value")
        try:
            out[name] = int(raw) if kind == "int" else float(raw)
        except ValueError:
            raise PycpilotError(f"--eval.{name.replace('_', '-')} must be a number, not {raw!r}") from None
    return out


def _run_run(args: argparse.Namespace) -> int:
    from pycpilot.run import RunConfig, run
    from pycpilot.run.config import load_run_recipe

    settings = load_run_recipe(args.recipe) if args.recipe else {}
    for stage, values in args.stage_settings.items():
        settings.setdefault(stage, {}).update(values)
    cfg = RunConfig(
        out=args.out, sources=args.sources or ["stdlib"], preset=args.preset, settings=settings,
        serve=args.serve, port=args.port, quiet=args.quiet,
    )  # fmt: skip
    run(cfg)
    return 0
