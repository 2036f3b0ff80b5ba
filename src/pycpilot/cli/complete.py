"""Subcommand `complete`: its options come from CompleteConfig's fields; the work is in pycpilot.generate."""

from __future__ import annotations

import argparse

from pycpilot.cli.command import add_command


def add_complete(sub: argparse._SubParsersAction) -> None:
    from pycpilot.generate.config import CompleteConfig

    add_command(
        sub,
        "complete",
        CompleteConfig,
        "pycpilot.generate.complete:complete",
        help="complete code with a trained model",
        description="Complete a prompt (an argument, --file or stdin) with a model folder, one of its "
        "checkpoints, a run still training (its newest checkpoint) or any local HF causal LM.",
        required={"model"},
    )
