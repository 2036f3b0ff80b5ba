"""Subcommand `serve`: its options come from ServeConfig's fields; the work is in pycpilot.serve."""

from __future__ import annotations

import argparse

from pycpilot.settings import add_options, given


def add_serve(sub: argparse._SubParsersAction) -> None:
    from pycpilot.serve.config import ServeConfig

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI-compatible, llama.cpp /infill, playground)",
        description="Serve a model for editors: POST /v1/completions (OpenAI's Completions API: the openai "
        "client, Continue, Tabby), POST /infill (llama.cpp's: llama.vim, llama.vscode), GET /v1/models, "
        "GET /health, and a playground page at /.",
    )
    add_options(p, ServeConfig, required={"model"})
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pycpilot.serve import ServeConfig, serve

    serve(ServeConfig(**given(ServeConfig, args)))
    return 0
