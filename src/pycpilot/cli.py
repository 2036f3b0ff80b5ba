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


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _size(text: str) -> int:
    """'1MB', '500k', '2000' -> bytes."""
    units = {"k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "b": 1, "": 1}
    t = text.strip().lower()
    number = t.rstrip("kmgb")
    try:
        return int(float(number) * units[t[len(number) :]])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1MB, 500k or 2000)") from None


def _add_data(sub: argparse._SubParsersAction) -> None:
    from pycpilot.data.config import DataConfig

    d = DataConfig(out=Path("."))
    p = sub.add_parser(
        "data",
        help="collect and clean Python files into a train/valid DatasetDict (seed 7.4.1)",
        description="Collect Python files from one or more sources, clean them with CodeParrot's filters, "
        "split train/valid by repository and save a datasets.DatasetDict (codeparrot-ds schema) "
        "with a manifest.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="SRC",
        help="repeatable: 'stdlib' (this interpreter's standard library; the default), 'site-packages' "
        "(the packages installed here, one repository each, licence from their metadata; PYCPilot left out) "
        "or site-packages:PATH (those of another site-packages folder or virtualenv), a folder of "
        "code/repositories, a datasets save_to_disk folder, a .parquet or .jsonl(.gz) file, or "
        "hf:NAME[@SPLIT] to load_dataset(NAME) from the hub (streaming)",
    )
    io.add_argument("--out", required=True, type=Path, help="output folder (a DatasetDict + manifest.json)")
    io.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    io.add_argument(
        "--include-vendored",
        action="store_true",
        help="also walk virtualenvs, site-packages and dist-packages inside folder sources",
    )
    io.add_argument(
        "--max-file-size",
        type=_size,
        default=d.max_file_size,
        help="skip files larger than this (bytes; 1MB, 500k also work)",
    )
    io.add_argument("--num-proc", type=int, default=d.num_proc, help="worker processes")
    io.add_argument("--seed", type=int, default=d.seed, help="seed for the split and the probabilistic filters")
    io.add_argument(
        "--valid-fraction",
        type=float,
        default=d.valid_fraction,
        help="share of files in the valid split (whole repositories are moved)",
    )
    io.add_argument("-q", "--quiet", action="store_true", help="no progress bar or tables")

    dd = p.add_argument_group("deduplication")
    dd.add_argument(
        "--no-exact-dedup", dest="exact_dedup", action="store_false", help="keep files that are equal up to whitespace"
    )
    dd.add_argument(
        "--no-near-dedup", dest="near_dedup", action="store_false", help="skip MinHash LSH near-duplicate removal"
    )
    dd.add_argument(
        "--near-dedup-threshold",
        type=float,
        default=d.near_dedup_threshold,
        help="Jaccard similarity of code-token sets at which a file counts as a near duplicate",
    )
    dd.add_argument("--num-perm", type=int, default=d.num_perm, help="MinHash permutations")
    dd.add_argument(
        "--min-dedup-tokens",
        type=int,
        default=d.min_dedup_tokens,
        help="files with fewer distinct code tokens are not near-deduplicated",
    )

    f = p.add_argument_group("filters")
    f.add_argument(
        "--no-heuristics",
        dest="heuristics",
        action="store_false",
        help="turn off all line-length/alphanumeric/auto-generated/config/keyword/assignment filters",
    )
    f.add_argument("--max-line-length", type=int, default=d.max_line_length, help="drop files with a longer line")
    f.add_argument(
        "--max-mean-line-length",
        type=float,
        default=d.max_mean_line_length,
        help="drop files whose mean line length is above this",
    )
    f.add_argument(
        "--min-alnum-fraction",
        type=float,
        default=d.min_alnum_fraction,
        help="drop files with a smaller fraction of alphanumeric characters",
    )
    f.add_argument(
        "--min-assignments",
        type=int,
        default=d.min_assignments,
        help="drop files with fewer '=' characters (CodeParrot: 5)",
    )
    f.add_argument(
        "--config-test-proba",
        type=float,
        default=d.config_test_proba,
        help="probability of dropping a config or test file (0 keeps them all)",
    )
    f.add_argument(
        "--no-keyword-proba",
        type=float,
        default=d.no_keyword_proba,
        help="probability of dropping a file with no def/class/for/while (0 keeps them all)",
    )
    f.add_argument(
        "--no-syntax-check",
        dest="syntax_check",
        action="store_false",
        help="keep files that do not compile as Python 3",
    )
    f.add_argument(
        "--no-decontaminate",
        dest="decontaminate",
        action="store_false",
        help="keep files containing HumanEval prompts or solutions",
    )
    f.add_argument(
        "--keywords",
        type=_csv,
        default=[],
        help="comma-separated: keep only files mentioning one (codeparrot-ds used pandas,sklearn,matplotlib,seaborn)",
    )
    f.add_argument(
        "--licenses",
        type=lambda t: [x.lower() for x in _csv(t)],
        default=[],
        help="comma-separated: keep only these licenses where the source records one",
    )
    p.set_defaults(run=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from pycpilot.data import DataConfig, build_dataset

    values = {k: v for k, v in _fields(DataConfig, args).items() if v is not None}
    values["sources"] = args.source or ["stdlib"]
    build_dataset(DataConfig(**values))
    return 0


def _add_tokenizer(sub: argparse._SubParsersAction) -> None:
    from pycpilot.presets import PRESETS
    from pycpilot.tokenizer.config import SEED_VOCAB_SIZE, TokenizerConfig

    d = TokenizerConfig(data=Path("."), out=Path("."))
    p = sub.add_parser(
        "tokenizer",
        help="train a byte-level BPE code tokenizer on the train split (seed 7.4.2)",
        description="Train a GPT-2-style byte-level BPE (GPT-2's regex, byte alphabet, <|endoftext|>) with "
        "StarCoder's FIM tokens on the train split of a `pycpilot data` folder, save it with save_pretrained "
        "(+ vocab.json, merges.txt, special_tokens_map.json, manifest.json) and compare it with a baseline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="a `pycpilot data` output folder")
    p.add_argument("--out", required=True, type=Path, help="output tokenizer folder")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help=f"vocabulary size, special tokens included (default: the preset's, else {SEED_VOCAB_SIZE:,})",
    )
    p.add_argument("--preset", choices=list(PRESETS), default=None, help="take the vocabulary size from a preset")
    p.add_argument(
        "--base",
        default=None,
        metavar="NAME_OR_DIR",
        help="retrain this tokenizer's pipeline with train_new_from_iterator (e.g. gpt2, needs internet)",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="NAME_OR_DIR",
        help="baseline tokenizer for the comparison; default: the same BPE without the FIM tokens; 'none' skips it",
    )
    p.add_argument("--min-frequency", type=int, default=d.min_frequency, help="a merge must be seen this often")
    p.add_argument("--batch-files", type=int, default=d.batch_files, help="files per batch fed to the trainer")
    p.add_argument(
        "--model-max-length",
        type=int,
        default=d.model_max_length,
        help="longest context models using this tokenizer take (GPT-2: 1024)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or comparison output")
    p.set_defaults(run=_run_tokenizer)


def _run_tokenizer(args: argparse.Namespace) -> int:
    from pycpilot.tokenizer import TokenizerConfig, train_tokenizer

    train_tokenizer(TokenizerConfig(**_fields(TokenizerConfig, args)))
    return 0


def _add_pack(sub: argparse._SubParsersAction) -> None:
    from pycpilot.pack.config import SEED_CONTEXT_LENGTH, PackConfig
    from pycpilot.presets import PRESETS

    d = PackConfig(data=Path("."), tokenizer=Path("."), out=Path("."))
    p = sub.add_parser(
        "pack",
        help="tokenize the corpus and cut it into blocks of token ids (seed 7.4.3)",
        description="Tokenize every file of a `pycpilot data` folder, append <|endoftext|>, concatenate and cut "
        "into blocks of --context-length tokens (only the last partial block of a split is dropped), with "
        "optional fill-in-the-middle; read the result with pycpilot.pack.PackedDataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="a `pycpilot data` output folder")
    p.add_argument("--tokenizer", required=True, type=Path, help="a `pycpilot tokenizer` output folder")
    p.add_argument("--out", required=True, type=Path, help="output folder ({split}.bin + manifest.json)")
    p.add_argument(
        "--context-length",
        type=int,
        default=None,
        help=f"tokens per block (default: the preset's, else {SEED_CONTEXT_LENGTH})",
    )
    p.add_argument("--preset", choices=list(PRESETS), default=None, help="take the context length from a preset")
    p.add_argument(
        "--fim-rate",
        type=float,
        default=d.fim_rate,
        help="share of train files laid out fill-in-the-middle (0: plain left-to-right)",
    )
    p.add_argument(
        "--fim-spm-rate",
        type=float,
        default=d.fim_spm_rate,
        help="share of FIM files in SPM order (suffix first) rather than PSM",
    )
    p.add_argument(
        "--fim-splits",
        type=_csv,
        default=d.fim_splits,
        help="comma-separated splits that get FIM (valid stays plain for comparable perplexity)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed for the FIM choices (per file)")
    p.add_argument(
        "--dtype",
        choices=["auto", "uint16", "uint32"],
        default=d.dtype,
        help="storage type of token ids (auto: uint16 when the vocabulary fits)",
    )
    p.add_argument(
        "--encoder",
        choices=["auto", "tiktoken", "tokenizers"],
        default=d.encoder,
        help="auto: tiktoken when it is exact for this tokenizer (checked as it runs), else tokenizers",
    )
    p.add_argument("--threads", type=int, default=d.threads, help="encoder threads")
    p.add_argument("--batch-files", type=int, default=d.batch_files, help="files encoded per batch")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary output")
    p.set_defaults(run=_run_pack)


def _run_pack(args: argparse.Namespace) -> int:
    from pycpilot.pack import PackConfig, pack_dataset

    pack_dataset(PackConfig(**_fields(PackConfig, args)))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from pycpilot.presets import PRESETS

    p = sub.add_parser(
        "train",
        help="train a GPT-2 from scratch on packed blocks (seed 7.4.4)",
        description="Train transformers' GPT2LMHeadModel from a preset on a `pycpilot pack` folder, on a CPU or, "
        "launched with torchrun / accelerate launch, on several GPUs and nodes. Settings come from the preset, "
        "then --recipe FILE (YAML/JSON), then the options given here. Unset options show (preset).",
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--packed", required=True, type=Path, help="a `pycpilot pack` output folder")
    io.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: the one the pack was made with)")
    io.add_argument("--out", required=True, type=Path, help="model folder: final model, checkpoints/, metrics")
    io.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="model and training defaults (tiny's; with --max-time alone, the model is sized to the budget)",
    )
    io.add_argument("--recipe", type=Path, help="YAML or JSON file of settings (names as below, - or _)")
    io.add_argument("--resume", action="store_true", default=None, help="continue from the newest checkpoint")
    io.add_argument("--overwrite", action="store_true", default=None, help="start over in an existing --out")
    io.add_argument("-q", "--quiet", action="store_true", default=None, help="no progress bar or summary")
    m = p.add_argument_group("model")
    m.add_argument("--n-layer", type=int, help="transformer blocks (preset)")
    m.add_argument("--n-head", type=int, help="attention heads (preset)")
    m.add_argument("--n-embd", type=int, help="width (preset)")
    m.add_argument("--n-positions", type=int, help="position embeddings (preset's context, at least the block)")
    m.add_argument("--dropout", type=float, help="dropout everywhere (preset)")
    o = p.add_argument_group("optimiser and schedule")
    o.add_argument(
        "--optimizer",
        choices=["adamw", "muon"],
        help="adamw, or muon: Muon for the blocks' weight matrices and AdamW for the rest (preset)",
    )
    o.add_argument(
        "--lr", type=float, help="AdamW's peak learning rate (with muon: embeddings, norms, biases) (preset)"
    )
    o.add_argument("--muon-lr", type=float, help="Muon's peak learning rate for the blocks' matrices (preset)")
    o.add_argument("--muon-weight-decay", type=float, help="Muon's decoupled weight decay (0)")
    o.add_argument("--schedule", choices=["cosine", "wsd"], help="cosine, or wsd: warmup, stable, decay (preset)")
    o.add_argument("--decay", type=float, help="wsd: the last share of the run, spent decaying (preset)")
    o.add_argument(
        "--zero-init",
        action=argparse.BooleanOptionalAction,
        help="start the blocks' output projections at zero (preset)",
    )
    o.add_argument("--min-lr-ratio", type=float, help="the schedule ends, and stays, at lr x this (preset)")
    o.add_argument("--warmup-steps", type=int, help="linear warmup steps (preset)")
    o.add_argument("--weight-decay", type=float, help="AdamW decay on weight matrices only (preset)")
    o.add_argument("--beta1", type=float, help="AdamW beta1 (0.9)")
    o.add_argument("--beta2", type=float, help="AdamW beta2 (preset)")
    o.add_argument("--grad-clip", type=float, help="clip the gradient norm to this; 0 turns it off (1.0)")
    o.add_argument(
        "--seq-warmup",
        type=float,
        help="share of training on shorter rows (block/4, then block/2) before whole blocks (preset)",
    )
    b = p.add_argument_group("batch and budget")
    b.add_argument("--batch-size", type=int, help="blocks per micro-batch per process (preset)")
    b.add_argument("--grad-accum", type=int, help="micro-batches per optimiser step (1)")
    b.add_argument("--epochs", type=float, help="passes over the train blocks (preset, unless --max-time/--max-steps)")
    b.add_argument("--max-steps", type=int, help="optimiser steps; the schedule spans them")
    b.add_argument(
        "--max-time",
        help="wall-clock budget such as 6m, 90s or 1h30m: the schedule spans it; without --preset, sizes or "
        "steps, the model is chosen for it (measured here, see README)",
    )
    b.add_argument("--seed", type=int, help="seed for the initial weights and the data order (42)")
    e = p.add_argument_group("evaluation, checkpoints, logging")
    e.add_argument("--eval-every", type=int, help="steps between valid evaluations (200)")
    e.add_argument(
        "--eval-blocks",
        type=int,
        help="valid blocks per evaluation, spread over the split (default: 256 during training, all at the end)",
    )
    e.add_argument("--save-every", type=int, help="steps between checkpoints (default: epoch ends and the end)")
    e.add_argument("--keep-last", type=int, help="checkpoints kept (3)")
    e.add_argument("--log-every", type=int, help="steps between metric lines (10)")
    sp = p.add_argument_group("speed and memory")
    sp.add_argument(
        "--fsdp",
        choices=["auto", "on", "off"],
        help="with several processes, shard weights, gradients and optimiser state (FSDP) instead of copying "
        "them (DDP); auto: for the large preset",
    )
    sp.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="mixed precision (auto: bf16 on GPUs and on CPUs with native bf16 such as AVX512-BF16, else fp32)",
    )
    sp.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (~30 s first)")
    sp.add_argument("--grad-checkpointing", action="store_true", default=None, help="recompute activations")
    sp.add_argument(
        "--no-memory-check",
        dest="memory_check",
        action="store_false",
        default=None,
        help="start even when the memory estimate says the run will not fit",
    )
    sp.add_argument(
        "--recompute-attention",
        choices=["auto", "on", "off"],
        help="keep only q, k, v of attention with dropout on a CPU and recompute the rest in backward "
        "(auto: when it would keep over 1 GiB)",
    )
    sp.add_argument("--loss-chunk", type=int, help="tokens per chunk of the fused output layer + loss (2048)")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pycpilot.train import TrainConfig, train
    from pycpilot.train.config import load_recipe

    values = load_recipe(args.recipe) if args.recipe else {}
    values.update({k: v for k, v in _fields(TrainConfig, args).items() if v is not None})
    train(TrainConfig(**values))
    return 0


def _fields(config_cls: type, args: argparse.Namespace) -> dict:
    """The parsed options that are fields of `config_cls`."""
    names = config_cls.__dataclass_fields__  # type: ignore[attr-defined]
    return {k: v for k, v in vars(args).items() if k in names}


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
            args.stage_settings = stage_options(parser, extra)
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
