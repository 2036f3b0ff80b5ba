"""Subcommand `serve`: its options come from ServeConfig's fields; the work is in pycpilot.serve."""

from __future__ import annotations

import argparse

from pycpilot.cli.command import add_command


def add_serve(sub: argparse._SubParsersAction) -> None:
    from pycpilot.serve.config import ServeConfig

    add_command(
        sub,
        "serve",
        ServeConfig,
        "pycpilot.serve.run:serve",
        help="serve a model over HTTP (OpenAI-compatible, llama.cpp /infill, playground)",
        description="Serve a model for editors: POST /v1/completions (OpenAI's Completions API: the openai "
        "client, Continue, Tabby), POST /infill (llama.cpp's: llama.vim, llama.vscode), GET /v1/models, "
        "GET /health, and a playground page at /.",
        required={"model"},
    )
