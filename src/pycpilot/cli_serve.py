"""Subcommand `serve`: argument parsing only; the work is in pycpilot.serve."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI-compatible, llama.cpp /infill, playground)",
        description="Serve a model for editors: POST /v1/completions (OpenAI's Completions API: the openai "
        "client, Continue, Tabby), POST /infill (llama.cpp's: llama.vim, llama.vscode), GET /v1/models, "
        "GET /health, and a playground page at /.",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder, checkpoint, or training --out")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free one)")
    p.add_argument("--api-key", help="require this key (Authorization: Bearer KEY or x-api-key: KEY)")
    p.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        default=[],
        help="also allow browser pages from this origin (repeatable; * for any); loopback pages always may",
    )
    p.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        default=[],
        help="also answer requests naming this host (repeatable; * for any); localhost, IP addresses and --host "
        "always may: other names are refused, which stops DNS rebinding",
    )
    p.add_argument("--model-name", help='the name clients use (default pycpilot-<folder>; never with "gpt")')
    p.add_argument("--max-batch", type=int, default=8, help="rows decoded side by side (8)")
    p.add_argument("--queue-size", type=int, default=32, help="requests that may wait; beyond: 503 (32)")
    p.add_argument("--max-request-kb", type=int, default=1024, help="largest request body in KiB (1024)")
    p.add_argument(
        "--default-scope",
        choices=["line", "block", "file"],
        default="file",
        help="where completions stop when a request does not say (file: as OpenAI; /infill uses block)",
    )
    p.add_argument("--engine", choices=["auto", "native", "torch", "hf"], default="auto", help="decoder (auto)")
    p.add_argument("--int8", action="store_true", help="int8 weights (faster; costs a little accuracy)")
    p.add_argument(
        "--no-prompt-cache",
        dest="prompt_cache",
        action="store_false",
        help="run every prompt whole (default: reuse the beginning a finished prompt shares with a new one)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the model runs: auto (a CUDA GPU if torch sees one, else the CPU), cpu or cuda",
    )
    p.add_argument("--threads", type=int, default=None, help="threads of the native step (default: torch's)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="warning")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pycpilot.serve import ServeConfig, serve

    names = ServeConfig.__dataclass_fields__
    serve(ServeConfig(**{k: v for k, v in vars(args).items() if k in names}))
    return 0
