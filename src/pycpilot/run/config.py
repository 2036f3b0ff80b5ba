"""`RunConfig`: what `pycpilot run` takes, and the per-stage settings it passes on.

Each stage's options are reachable as `--STAGE.OPTION VALUE` on the command line (`--train.max-time 10m`,
`--data.valid-fraction 0.05`), parsed by that stage's own command-line parser, or as sections of a recipe
file (`--recipe run.yaml`: `train: {max_time: 10m}`); the command line wins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycpilot.checks import short
from pycpilot.errors import PycpilotError
from pycpilot.recipes import check_keys, read_mapping

STAGES = ("data", "tokenizer", "pack", "train", "eval")
# CodeParrot's familiar prompts (the seed's 7.4.5), completed at the end of a run; like theirs, no final newline.
PROMPTS = [
    'def area_of_rectangle(a: float, b: float):\n    """Return the area of the rectangle."""',
    'def get_urls_from_html(html):\n    """Get all embedded URLs in a HTML string."""',
    "import os\n\n\ndef list_python_files(folder):",
]


@dataclass
class EvalPlan:
    """The `eval` stage of a run: a small HumanEval, line completion and the familiar prompts."""

    humaneval_limit: int = 20  # problems (0: skip HumanEval; 164: all)
    n: int = 5  # samples per problem
    temperature: float = 0.2
    lines: int = 100  # line-completion positions in the valid split (0: skip)
    allow_weak_sandbox: bool = False

    def validate(self) -> None:
        checks = [
            (0 <= self.humaneval_limit <= 164, "--eval.humaneval-limit must be between 0 and 164"),
            (self.n >= 1, "--eval.n must be at least 1"),
            (
                self.temperature == 0 or 1e-6 <= self.temperature <= 2,
                "--eval.temperature must be 0 (greedy) or between 1e-06 and 2",
            ),
            (self.lines >= 0, "--eval.lines must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise PycpilotError(message)
        if self.humaneval_limit:  # HumanEval runs generated code: refuse now, not after training, if it cannot
            from pycpilot.evaluate.sandbox import SandboxConfig, sandbox_mode

            sandbox_mode(SandboxConfig(allow_weak_sandbox=self.allow_weak_sandbox))


@dataclass
class RunConfig:
    out: Path = Path("runs/demo")
    sources: list[str] = field(default_factory=lambda: ["stdlib"])
    # auto: the tiny preset's tokenizer, pack and recipe, and a model sized to the training budget
    preset: str = "auto"
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> option -> value
    serve: bool = False  # start `pycpilot serve` on the model at the end
    port: int = 8000
    quiet: bool = False

    @property
    def data_preset(self) -> str:
        """The preset the tokenizer and pack stages take their vocabulary and context from."""
        return "tiny" if self.preset == "auto" else self.preset

    @property
    def train_preset(self) -> str | None:
        """None lets `--train.max-time` alone size the model (train/sizing.py)."""
        return None if self.preset == "auto" else self.preset

    def stage(self, name: str) -> dict[str, Any]:
        return dict(self.settings.get(name, {}))

    def eval_plan(self) -> EvalPlan:
        names = {f.name for f in dataclasses.fields(EvalPlan)}
        given = self.stage("eval")
        unknown = sorted(set(given) - names)
        if unknown:
            raise PycpilotError(f"unknown eval setting {short(unknown[0])}: eval takes {', '.join(sorted(names))}")
        check_types(EvalPlan, given, "eval")
        plan = EvalPlan(**given)
        plan.validate()
        return plan


_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "Path": (str, Path)}


def check_types(config_cls: type, values: dict[str, Any], stage: str) -> None:
    """Recipe values of the wrong type (`n: "5"`) as a one-line error, before a stage trips over them."""
    annotations = {f.name: str(f.type) for f in dataclasses.fields(config_cls)}
    for name, value in values.items():
        kinds = [k.strip() for k in annotations.get(name, "").split("|")]
        if value is None and "None" in kinds:
            continue
        if "list[str]" in kinds:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                continue
            raise PycpilotError(f"{stage}.{name} must be a list of strings, not {short(value)}")
        allowed = tuple(t for k in kinds for t in _KINDS.get(k, ()))
        if not allowed:
            continue  # a type this check does not know: the stage checks it
        if isinstance(value, bool) and bool not in allowed:
            allowed = ()
        if not isinstance(value, allowed):
            raise PycpilotError(f"{stage}.{name} must be {' or '.join(kinds)}, not {short(value)}")


def load_run_recipe(path: Path) -> dict[str, dict[str, Any]]:
    """A YAML or JSON recipe: a mapping of stage name -> {option: value} (names with - or _)."""
    data = read_mapping(path)
    if not all(isinstance(v, dict) for v in data.values()):
        raise PycpilotError(f"recipe {path} must map stage names ({', '.join(STAGES)}) to settings")
    unknown = sorted(set(data) - set(STAGES))
    if unknown:
        raise PycpilotError(f"recipe {path}: unknown stage {short(unknown[0])} (stages: {', '.join(STAGES)})")
    for stage, values in data.items():
        check_keys(values, f"recipe {path}, {stage}")
    return {stage: {k.replace("-", "_"): v for k, v in values.items()} for stage, values in data.items()}
