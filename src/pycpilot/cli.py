"""`pycpilot` command line: one subcommand per pipeline stage, each a thin map onto its entry function."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pycpilot import __version__
from pycpilot.cli_eval import add_complete, add_eval
from pycpilot.cli_run import add_run, stage_options
from pycpilot.cli_serve import add_serve
from pycpilot.errors import Interrupted, PycpilotError
from pycpilot.settings import add_options, given


def _add_data(sub: argparse._SubParsersAction) -> None:
    from pycpilot.data.config import DataConfig

    p = sub.add_parser(
        "data",
        help="collect and clean Python files into a train/valid DatasetDict (seed 7.4.1)",
        description="Collect Python files from one or more sources, clean them with CodeParrot's filters, "
        "split train/valid by repository and save a datasets.DatasetDict (codeparrot-ds schema) "
        "with a manifest.json.",
    )
    add_options(p, DataConfig, required={"out"})
    p.set_defaults(run=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from pycpilot.data import DataConfig, build_dataset

    build_dataset(DataConfig(**given(DataConfig, args)))
    return 0


def _add_tokenizer(sub: argparse._SubParsersAction) -> None:
    from pycpilot.tokenizer.config import TokenizerConfig

    p = sub.add_parser(
        "tokenizer",
        help="train a byte-level BPE code tokenizer on the train split (seed 7.4.2)",
        description="Train a GPT-2-style byte-level BPE (GPT-2's regex, byte alphabet, <|endoftext|>) with "
        "StarCoder's FIM tokens on the train split of a `pycpilot data` folder, save it with save_pretrained "
        "(+ vocab.json, merges.txt, special_tokens_map.json, manifest.json) and compare it with a baseline.",
    )
    add_options(p, TokenizerConfig, required={"data", "out"})
    p.set_defaults(run=_run_tokenizer)


def _run_tokenizer(args: argparse.Namespace) -> int:
    from pycpilot.tokenizer import TokenizerConfig, train_tokenizer

    train_tokenizer(TokenizerConfig(**given(TokenizerConfig, args)))
    return 0


def _add_pack(sub: argparse._SubParsersAction) -> None:
    from pycpilot.pack.config import PackConfig

    p = sub.add_parser(
        "pack",
        help="tokenize the corpus and cut it into blocks of token ids (seed 7.4.3)",
        description="Tokenize every file of a `pycpilot data` folder, append <|endoftext|>, concatenate and cut "
        "into blocks of --context-length tokens (only the last partial block of a split is dropped), with "
        "optional fill-in-the-middle; read the result with pycpilot.pack.PackedDataset.",
    )
    add_options(p, PackConfig, required={"data", "tokenizer", "out"})
    p.set_defaults(run=_run_pack)


def _run_pack(args: argparse.Namespace) -> int:
    from pycpilot.pack import PackConfig, pack_dataset

    pack_dataset(PackConfig(**given(PackConfig, args)))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from pycpilot.train.config import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a GPT-2 from scratch on packed blocks (seed 7.4.4)",
        description="Train transformers' GPT2LMHeadModel from a preset on a `pycpilot pack` folder, on a CPU or, "
        "launched with torchrun / accelerate launch, on several GPUs and nodes. Settings come from the preset, "
        "then --recipe FILE (YAML/JSON), then the options given here. Unset options show (preset).",
    )
    p.add_argument("--recipe", type=Path, help="YAML or JSON file of settings (names as below, - or _)")
    add_options(p, TrainConfig, required={"packed", "out"})
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pycpilot.train import TrainConfig, train
    from pycpilot.train.config import load_recipe

    values = load_recipe(args.recipe) if args.recipe else {}
    values.update(given(TrainConfig, args))
    train(TrainConfig(**values))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycpilot",
        description="PYCPilot: turn Python source code into a trained, evaluated and served code-completion "
        "model. Stages: data -> tokenizer -> pack -> train -> eval -> complete/serve.",
    )
    parser.add_argument("--version", action="version", version=f"pycpilot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data(sub)
    _add_tokenizer(sub)
    _add_pack(sub)
    _add_train(sub)
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
