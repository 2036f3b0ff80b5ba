"""Subcommand `export`: its options are ExportConfig's fields; the work is in pycpilot.export."""

from __future__ import annotations

import argparse

from pycpilot.cli.command import add_command


def add_export(sub: argparse._SubParsersAction) -> None:
    from pycpilot.export.config import ExportConfig

    add_command(
        sub,
        "export",
        ExportConfig,
        "pycpilot.export.write:export_model",
        help="write a model as one GGUF file for llama.cpp, Ollama and LM Studio",
        description="Write a trained model (a model folder, one of its checkpoints or a training --out) as a GGUF "
        "file with its tokenizer and FIM tokens (llama.cpp's `gpt2` architecture), and with --format ollama a "
        "Modelfile beside it.",
        required={"model", "out"},
    )
