"""Settings declared once: the command line, recipes and checks all come from the config fields."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from pycpilot.cli import build_parser
from pycpilot.data.config import DataConfig
from pycpilot.errors import PycpilotError
from pycpilot.evaluate.humaneval import HumanEvalConfig
from pycpilot.evaluate.lines import LinesConfig
from pycpilot.evaluate.perplexity import PerplexityConfig
from pycpilot.generate.config import CompleteConfig
from pycpilot.pack.config import PackConfig
from pycpilot.run.config import EvalPlan, RunConfig
from pycpilot.serve.config import ServeConfig
from pycpilot.settings import check, coerce, given, option, parse_options, specs
from pycpilot.tokenizer.config import TokenizerConfig
from pycpilot.train.config import TrainConfig

DERIVED = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "pack": PackConfig,
    "train": TrainConfig,
    "serve": ServeConfig,
    "eval perplexity": PerplexityConfig,
    "eval lines": LinesConfig,
    "eval humaneval": HumanEvalConfig,
    "complete": CompleteConfig,
    "run": RunConfig,
}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in command.split():  # `eval lines`: a subcommand of a subcommand
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subs.choices[name]
    return parser


@pytest.mark.parametrize("command", sorted(DERIVED))
def test_every_field_is_an_option_with_its_help_and_no_second_default(command: str) -> None:
    cls, sub = DERIVED[command], _subparser(command)
    actions = {a.dest: a for a in sub._actions}
    for f, spec in [(f, s) for f, s in specs(cls) if s.cli]:
        action = actions[f.name]
        assert spec.positional or option(f, spec) in action.option_strings
        assert spec.help in (action.help or "")
        assert action.default is argparse.SUPPRESS  # the dataclass's default is the only one
        if spec.choices:
            assert list(action.choices) == list(spec.choices)
    options = {a.dest for a in sub._actions if a.dest not in ("help", "recipe")}
    assert options == {f.name for f, s in specs(cls) if s.cli}  # and no option without a field


def test_options_not_given_keep_the_dataclass_defaults(tmp_path: Path) -> None:
    args = build_parser().parse_args(["pack", "--data", "d", "--tokenizer", "t", "--out", "o", "--fim-rate", "0.1"])
    values = given(PackConfig, args)
    assert values == {"data": Path("d"), "tokenizer": Path("t"), "out": Path("o"), "fim_rate": 0.1}
    config = PackConfig(**values)
    defaults = PackConfig(data=Path("d"), tokenizer=Path("t"), out=Path("o"))
    assert dataclasses.replace(defaults, fim_rate=0.1) == config
    args = build_parser().parse_args(["data", "--out", "o", "--no-near-dedup", "--max-file-size", "500k"])
    assert given(DataConfig, args) == {"out": Path("o"), "near_dedup": False, "max_file_size": 500_000}
    args = build_parser().parse_args(["train", "--packed", "p", "--out", "o", "--no-zero-init"])
    assert given(TrainConfig, args)["zero_init"] is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PackConfig(data=Path(), tokenizer=Path(), out=Path(), fim_rate=1.5), "--fim-rate must be between 0 and 1"),
        (PackConfig(data=Path(), tokenizer=Path(), out=Path(), dtype="int8"), "--dtype must be one of auto, uint16"),
        (DataConfig(out=Path(), valid_fraction=1.0), r"--valid-fraction must be in \[0, 1\), not 1.0"),
        (DataConfig(out=Path(), near_dedup_threshold=0), r"--near-dedup-threshold must be in \(0, 1\], not 0"),
        (TrainConfig(packed=Path(), out=Path(), lr=0.0), r"--lr must be above 0, not 0.0"),
        (TrainConfig(packed=Path(), out=Path(), n_layer=True), "--n-layer must be between 1 and 1,024, not True"),
        (EvalPlan(n=0), "--n must be between 1 and 1,000, not 0"),
    ],
)
def test_checks_come_from_the_fields(config: object, message: str) -> None:
    with pytest.raises(PycpilotError, match=message):
        check(config)


def test_recipes_are_typed_by_the_fields() -> None:
    values = coerce(TrainConfig, {"lr": "3e-3", "batch-size": 8.0, "max_time": "6m", "tokenizer": "tok"}, "r")
    assert values == {"lr": 0.003, "batch_size": 8, "max_time": "6m", "tokenizer": Path("tok")}
    for bad, words in [
        ({"batch_size": 8.5}, "r: batch_size must be int or null, not 8.5"),
        ({"compile": "yes"}, "r: compile must be bool, not 'yes'"),
        ({"fim_splits": "train"}, None),
        ({"packed": "x"}, "r: packed is given on the command line"),
        ({"nope": 1}, "r: unknown setting 'nope'"),
    ]:
        if words is None:  # a list field given a string
            with pytest.raises(PycpilotError, match="must be a list of strings"):
                coerce(PackConfig, bad, "r")
            continue
        with pytest.raises(PycpilotError, match=words):
            coerce(TrainConfig, bad, "r", fixed={"packed"})


def test_run_stage_options_parse_with_the_stage_fields() -> None:
    assert parse_options(TrainConfig, ["--n-layer", "3", "--no-zero-init"], "--train.*") == {
        "n_layer": 3,
        "zero_init": False,
    }
    with pytest.raises(PycpilotError, match=r"--train\.\*: argument --lr: invalid float value: 'x'"):
        parse_options(TrainConfig, ["--lr", "x"], "--train.*")
    with pytest.raises(PycpilotError, match="unrecognized arguments: --out"):
        parse_options(TrainConfig, ["--out", "x"], "--train.*", skip={"out"})


def test_the_command_line_is_built_without_torch_or_datasets() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from pycpilot.cli import build_parser; build_parser(); "
        "print(sorted({'torch', 'datasets'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_train_config_names_the_optimizers_and_schedules_optim_knows() -> None:
    from pycpilot.train import config, optim

    assert config.OPTIMIZERS == optim.OPTIMIZERS and config.SCHEDULES == optim.SCHEDULES
