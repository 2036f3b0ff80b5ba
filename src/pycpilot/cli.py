"""`pycpilot` command line: one subcommand per pipeline stage, each a thin map onto its entry function."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from pycpilot import __version__
from pycpilot.cli_eval import add_complete, add_eval
from pycpilot.cli_run import add_run, stage_options
from pycpilot.cli_serve import add_serve
from pycpilot.errors import Interrupted, PycpilotError
from pycpilot.settings import add_options, given, load_settings
from pycpilot.stages import PIPELINE, Stage


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycpilot",
        description="PYCPilot: turn Python source code into a trained, evaluated and served code-completion "
        "model. Stages: data -> tokenizer -> pack -> train -> eval -> complete/serve.",
    )
    parser.add_argument("--version", action="version", version=f"pycpilot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for stage in PIPELINE:
        add_stage(sub, stage)
    add_complete(sub)
    add_eval(sub)
    add_serve(sub)
    add_run(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    command = "pycpilot"
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        command = f"pycpilot {args.command}"
        if extra and not getattr(args, "takes_stage_options", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if getattr(args, "takes_stage_options", False):
            args.stage_settings = stage_options(extra)
        return args.run(args)
    except Interrupted as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 130
    except PycpilotError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied while writing: the OS's words, one line
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted (no partial output is left behind)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
