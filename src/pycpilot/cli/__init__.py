"""`pycpilot` command line: one subcommand per pipeline stage, each a thin map onto its entry function.

One module per subcommand group: stages.py (data, tokenizer, pack, train), complete.py, eval.py, serve.py,
export.py, run.py; every option comes from a config class's fields (pycpilot/settings.py)."""

from __future__ import annotations

import argparse
import os
import sys

from pycpilot import __version__
from pycpilot.cli.complete import add_complete
from pycpilot.cli.eval import add_eval
from pycpilot.cli.export import add_export
from pycpilot.cli.run import add_run, stage_options
from pycpilot.cli.serve import add_serve
from pycpilot.cli.stages import add_stage
from pycpilot.errors import Interrupted, PycpilotError
from pycpilot.stages import PIPELINE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycpilot",
        description="PYCPilot: turn Python source code into a trained, evaluated and served code-completion "
        "model. Stages: data -> tokenizer -> pack -> train -> eval -> complete/serve/export.",
    )
    parser.add_argument("--version", action="version", version=f"pycpilot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for stage in PIPELINE:
        add_stage(sub, stage)
    add_complete(sub)
    add_eval(sub)
    add_serve(sub)
    add_export(sub)
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
