"""`RunConfig`: what `pycpilot run` takes, and the per-stage settings it passes on.

Each stage's options are reachable as `--STAGE.OPTION VALUE` on the command line (`--train.max-time 10m`,
`--data.valid-fraction 0.05`), parsed by that stage's own command-line parser, or as sections of a recipe
file (`--recipe run.yaml`: `train: {max_time: 10m}`); the command line wins.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.checks import short
from pycpilot.errors import PycpilotError
from pycpilot.generate.sampling import check_temperature, sampling_setting
from pycpilot.presets import PRESETS
from pycpilot.recipes import check_keys, read_mapping
from pycpilot.settings import check, coerce, setting
from pycpilot.stages import PIPELINE

# the pipeline's, then the run's own evaluation, then (with --export) the model as a GGUF file
STAGES = (*(stage.name for stage in PIPELINE), "eval", "export")
# CodeParrot's familiar prompts (the seed's 7.4.5), completed at the end of a run; like theirs, no final newline.
PROMPTS = [
    'def area_of_rectangle(a: float, b: float):\n    """Return the area of the rectangle."""',
    'def get_urls_from_html(html):\n    """Get all embedded URLs in a HTML string."""',
    "import os\n\n\ndef list_python_files(folder):",
]


@dataclass
class EvalPlan:
    """The `eval` stage of a run: a small HumanEval, line completion and the familiar prompts."""

    humaneval_limit: int = setting(20, help="HumanEval problems (0: skip HumanEval; 164: all)", low=0, high=164)
    n: int = setting(5, help="samples per problem", low=1, high=1000)
    temperature: float = sampling_setting("temperature", 0.2, help="sampling temperature (0: greedy)", high=2)
    lines: int = setting(100, help="line-completion positions in the valid split (0: skip)", low=0)
    allow_weak_sandbox: bool = setting(
        False, help="run HumanEval's generated code without namespaces (limits and a process group only)"
    )

    def validate(self) -> None:
        check(self)
        check_temperature(self.temperature)
        if self.humaneval_limit:  # HumanEval runs generated code: refuse now, not after training, if it cannot
            from pycpilot.evaluate.sandbox import SandboxConfig, sandbox_mode

            sandbox_mode(SandboxConfig(allow_weak_sandbox=self.allow_weak_sandbox))


@dataclass
class RunConfig:
    """`run(RunConfig(...))` is the Python entry point of `pycpilot run`."""

    out: Path = setting(Path("runs/demo"), help="the run folder")
    sources: list[str] = setting(
        help="data source, repeatable (default: stdlib)", factory=lambda: ["stdlib"], flag="--source", metavar="SRC"
    )
    preset: str = setting(
        "auto",
        help="auto: the tiny preset's tokenizer, pack and recipe, with the model sized to --train.max-time",
        choices=("auto", *PRESETS),
    )
    init_from: str | None = setting(
        None,
        help="fine-tune this model instead of training from scratch: a model folder, a `pycpilot train` --out, or "
        "hf:NAME[@REVISION] (no tokenizer is trained: the pack uses the model's)",
        metavar="SRC",
    )
    # stage -> option -> value: --STAGE.OPTION on the command line, or a --recipe file
    settings: dict[str, dict[str, Any]] = setting(help="per-stage settings", factory=dict, cli=False)
    export: str | None = setting(
        None,
        help="last, write the model as export/RUN.gguf for llama.cpp (gguf) or also an Ollama Modelfile (ollama); "
        "--export.type q8_0 and the other `pycpilot export` options apply",
        choices=("gguf", "ollama"),
    )
    serve: bool = setting(False, help="start `pycpilot serve` on the model at the end")
    port: int = setting(8000, help="port for --serve", low=0, high=65535)
    quiet: bool = setting(False, help="only the one-line stage summaries", alias="-q")

    def validate(self) -> None:
        check(self)
        if self.settings.get("export") and not self.export:
            raise PycpilotError("export settings were given without --export gguf|ollama: add it, or drop them")
        if self.init_from:  # before the data stage: a missing or unreachable model fails now, not after it
            from pycpilot.pretrained import source_folder

            source_folder(self.init_from)

    @property
    def data_preset(self) -> str:
        """The preset the tokenizer and pack stages take their vocabulary and context from."""
        return "tiny" if self.preset == "auto" else self.preset

    @property
    def train_preset(self) -> str | None:
        """None lets `--train.max-time` alone size the model (train/sizing.py)."""
        return None if self.preset == "auto" else self.preset

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this run goes through: export only when asked for."""
        return tuple(s for s in STAGES if s != "export" or self.export)

    def stage(self, name: str) -> dict[str, Any]:
        return dict(self.settings.get(name, {}))

    def eval_plan(self) -> EvalPlan:
        plan = EvalPlan(**coerce(EvalPlan, self.stage("eval"), "eval"))
        with stage_flags("eval"):
            plan.validate()
        return plan


@contextlib.contextmanager
def stage_flags(stage: str) -> Iterator[None]:
    """A stage's one-line errors with its options as `run` spells them: --n-layer -> --train.n-layer."""
    try:
        yield
    except PycpilotError as exc:
        raise PycpilotError(re.sub(r"(?<![\w/-])--(?!source)(?=[a-z])", f"--{stage}.", str(exc))) from None


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
