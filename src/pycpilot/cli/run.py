"""Subcommand `run`: argument parsing only (the work is in pycpilot.run). `--STAGE.OPTION VALUE` settings are
parsed by that stage's own subcommand parser, so they take exactly what `pycpilot STAGE` takes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pycpilot.checks import short
from pycpilot.errors import PycpilotError
from pycpilot.settings import add_options, given, parse_options

# Set by `pycpilot run` itself for every stage: not options of a run.
FIXED = {"out", "data", "tokenizer", "packed", "overwrite", "resume", "quiet", "preset", "sources", "model", "format"}


def add_run(sub: argparse._SubParsersAction) -> None:
    from pycpilot.run.config import RunConfig

    p = sub.add_parser(
        "run",
        help="the whole pipeline in one go: data -> tokenizer -> pack -> train -> eval (-> serve)",
        description="Run every stage into one folder (data/, tokenizer/, packed/, model/, eval/, report.html, "
        "manifest.json). Run it again: finished stages whose inputs and settings are unchanged are skipped, an "
        "interrupted training resumes, a changed setting redoes that stage and those after it. Any stage "
        "option is reachable as --STAGE.OPTION VALUE (e.g. --train.max-time 10m, --data.valid-fraction 0.05, "
        "--eval.humaneval-limit 164) or in a --recipe file.",
    )
    p.add_argument("--recipe", type=Path, help="YAML/JSON file: {stage: {option: value}}; options given here win")
    add_options(p, RunConfig)
    p.set_defaults(run=_run_run, takes_stage_options=True)


def stage_options(extra: list[str]) -> dict[str, dict[str, Any]]:
    """--STAGE.OPTION [VALUE] arguments -> {stage: {field: value}}, parsed with the stage's own options."""
    from pycpilot.run.config import STAGES
    from pycpilot.run.stages import config_class

    grouped: dict[str, list[str]] = {}
    current: str | None = None
    for arg in extra:
        if arg.startswith("--") and "." in arg.split("=", 1)[0]:
            stage, _, option = arg[2:].partition(".")
            if stage not in STAGES:
                raise PycpilotError(f"{arg}: unknown stage {short(stage)} ({', '.join(STAGES)})")
            name = option.split("=", 1)[0].replace("-", "_")
            if name in FIXED or name == "source":
                raise PycpilotError(f"--{stage}.{option.split('=', 1)[0]} is set by `pycpilot run` itself")
            current = stage
            grouped.setdefault(stage, []).append("--" + option)
        elif current is not None and not arg.startswith("--"):
            grouped[current].append(arg)
        else:
            raise PycpilotError(f"unrecognized argument {short(arg)}: stage options are written --STAGE.OPTION VALUE")
    return {
        stage: parse_options(config_class(stage), argv, f"--{stage}.*", skip=FIXED) for stage, argv in grouped.items()
    }


def _run_run(args: argparse.Namespace) -> int:
    from pycpilot.run import RunConfig, run
    from pycpilot.run.config import load_run_recipe

    settings = load_run_recipe(args.recipe) if args.recipe else {}
    for stage, values in args.stage_settings.items():
        settings.setdefault(stage, {}).update(values)
    run(RunConfig(**given(RunConfig, args), settings=settings))
    return 0
