"""Subcommands `data`, `tokenizer`, `pack` and `train`: one per stage of stages.PIPELINE, options from its
config class, `--recipe` for a file of them."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from pycpilot.settings import add_options, given, load_settings
from pycpilot.stages import Stage


def add_stage(sub: argparse._SubParsersAction, stage: Stage) -> None:
    """`pycpilot STAGE`: the stage config's fields as options, --recipe for a file of them."""
    p = sub.add_parser(stage.name, help=stage.help, description=stage.description)
    p.add_argument(
        "--recipe", type=Path, help="YAML or JSON file of these settings (names as below, - or _); options win"
    )
    add_options(p, stage.config_class(), required=stage.required)
    p.set_defaults(run=functools.partial(_run_stage, stage))


def _run_stage(stage: Stage, args: argparse.Namespace) -> int:
    cls = stage.config_class()
    values = load_settings(cls, args.recipe, fixed=stage.required) if args.recipe else {}
    values.update(given(cls, args))
    stage.entry()(cls(**values))
    return 0
