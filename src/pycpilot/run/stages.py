"""The stages as `pycpilot run` drives them: the config each gets, how it runs, the figures it reports.

Four are the pipeline's (stages.py: each stage's config class, entry function and input folders); the fifth,
`eval`, is the run's own plan (HumanEval, line completion, the familiar prompts); the sixth, `export`, runs only
with --export (the model as export/RUN.gguf).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.manifest import MANIFEST
from pycpilot.run.config import stage_flags
from pycpilot.settings import coerce
from pycpilot.stages import BY_NAME


@dataclass
class Folders:
    root: Path

    def of(self, stage: str) -> Path:
        """A stage's output folder in the run (train's is model/)."""
        return self.root / (BY_NAME[stage].folder if stage in BY_NAME else stage)

    def __getattr__(self, name: str) -> Path:
        if name not in ("data", "tokenizer", "packed", "model", "eval", "export"):
            raise AttributeError(name)
        return self.root / name


def _manifest(folder: Path) -> dict[str, Any]:
    return _manifest_file(folder / MANIFEST)


def _manifest_file(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def config_class(stage: str) -> type:
    """The config dataclass whose `setting` fields are the stage's options."""
    if stage == "eval":
        from pycpilot.run.config import EvalPlan

        return EvalPlan
    if stage == "export":
        from pycpilot.export.config import ExportConfig

        return ExportConfig
    return BY_NAME[stage].config_class()


def gguf_path(f: Folders) -> Path:
    """Where a run's export goes: export/RUN.gguf (the run folder's name names the model)."""
    return f.export / f"{f.root.name}.gguf"


def _export_config(cfg: Any, f: Folders) -> Any:
    from pycpilot.export.config import ExportConfig

    fixed = {"model": f.model, "out": gguf_path(f), "format": cfg.export, "overwrite": True, "quiet": cfg.quiet}
    values = coerce(ExportConfig, cfg.stage("export"), "export", fixed=set(fixed),
                    fixed_why="is set by `pycpilot run` itself")  # fmt: skip
    config = ExportConfig(**{**values, **fixed})
    with stage_flags("export"):
        config.validate()
    if cfg.init_from:  # the architecture and tokenizer are SRC's: refuse now what export would refuse then
        from pycpilot.export.write import check_exportable
        from pycpilot.pretrained import source_folder

        check_exportable(source_folder(cfg.init_from)[0], f"--export with --init-from {cfg.init_from}")
    return config


def build_config(name: str, cfg: Any, f: Folders) -> Any:
    """The stage's config from the run's settings and folders, checked (types, choices, bounds) before any
    stage runs."""
    if name == "eval":
        return dataclasses.asdict(cfg.eval_plan())
    if name == "export":
        return _export_config(cfg, f)
    stage = BY_NAME[name]
    given = cfg.stage(name)
    fixed: dict[str, Any] = {"out": f.of(name), "quiet": cfg.quiet}
    fixed |= {field: f.of(source) for field, source in stage.inputs.items()}
    if name == "data":
        fixed["sources"] = cfg.sources
        if given.get("executor") == "slurm":
            raise PycpilotError(
                "run cannot wait for Slurm jobs: run `pycpilot data --executor slurm` first, then train from its "
                "output with the stage commands (or use --data.executor local or ray)"
            )
    if name in ("tokenizer", "pack"):
        given = {"preset": cfg.data_preset, **given}
    if name == "pack" and cfg.init_from:
        fixed["tokenizer"] = cfg.init_from  # the model's own tokenizer (a copy with FIM tokens if it lacks them)
    if name == "train":  # resume or overwrite: decided when it runs
        given = {"preset": cfg.train_preset, **given}
        if not any(given.get(k) for k in ("max_time", "max_steps", "epochs")) and cfg.preset in ("auto", "tiny"):
            given["max_time"] = "4m"  # the demo's budget: the whole run stays under 10 minutes on 2 cores
        given.setdefault("save_every", 200)  # an interrupted run resumes from at most 200 steps back
        if cfg.init_from:
            fixed["init_from"] = cfg.init_from
    else:
        fixed["overwrite"] = True
    cls = stage.config_class()
    values = coerce(cls, given, name, fixed=set(fixed), fixed_why="is set by `pycpilot run` itself")
    config = cls(**{**values, **fixed})
    with stage_flags(name):
        config.validate()
    return config


def _data_figures(m: dict[str, Any], config: Any) -> dict[str, Any]:
    return {"seen_files": m["seen"]["files"], "seen_bytes": m["seen"]["bytes"], "kept_files": m["kept"]["files"],
            "kept_bytes": m["kept"]["bytes"], "train_files": m["splits"]["train"]["files"],
            "valid_files": m["splits"]["valid"]["files"]}  # fmt: skip


def _tokenizer_figures(m: dict[str, Any], config: Any) -> dict[str, Any]:
    ours = m["comparison"]["ours"]
    return {"vocab_size": m["vocab_size"], "valid_tokens_per_byte": ours.get("valid_tokens_per_byte")}


def _pack_figures(m: dict[str, Any], config: Any) -> dict[str, Any]:
    train = m["splits"]["train"]
    return {"tokens": train["tokens"], "blocks": train["blocks"], "context_length": m["context_length"],
            "valid_blocks": m["splits"]["valid"]["blocks"]}  # fmt: skip


def _train_figures(m: dict[str, Any], config: Any) -> dict[str, Any]:
    result, model = m["result"], m["model"]
    figures = {k: result[k] for k in ("steps", "tokens", "train_seconds", "tokens_per_s", "valid_loss",
                                      "valid_perplexity", "valid_bpb", "stopped_by") if k in result}  # fmt: skip
    figures["model"] = f"{model['n_layer']}x{model['n_embd']}"
    figures["parameters"] = model["parameters"]
    figures["budget"] = config.max_time
    if "sizing" in m:
        figures["sizing"] = m["sizing"]["line"]
    if "init_from" in m:
        figures["init_from"] = m["init_from"]["source"]
        figures["valid_bpb_before"] = m["init_from"].get("valid_bpb_before")
    return figures


def _data_summary(x: dict[str, Any]) -> str:
    return (f"{x['kept_files']:,} of {x['seen_files']:,} files kept ({x['kept_bytes'] / 1e6:.1f} MB); "
            f"{x['train_files']:,} train, {x['valid_files']:,} valid")  # fmt: skip


def _tokenizer_summary(x: dict[str, Any]) -> str:
    return f"vocabulary {x['vocab_size']:,}, {x['valid_tokens_per_byte']} tokens per byte on valid"


def _pack_summary(x: dict[str, Any]) -> str:
    return (f"{x['tokens']:,} train tokens in {x['blocks']:,} blocks of {x['context_length']}, "
            f"{x['valid_blocks']:,} valid blocks")  # fmt: skip


def _train_summary(x: dict[str, Any]) -> str:
    model = f"GPT-2 {x['model']} ({x['parameters'] / 1e6:.1f}M), " if "model" in x else ""
    budget = f" in {x['budget']}" if x.get("budget") else ""
    before = f" ({x['valid_bpb_before']:.3f} before fine-tuning)" if x.get("valid_bpb_before") else ""
    return (f"{model}{x['steps']:,} steps{budget}, {x['tokens_per_s']:,.0f} tokens/s; valid {x['valid_bpb']:.3f} "
            f"bits per byte{before}, perplexity {x['valid_perplexity']:.1f}")  # fmt: skip


def _eval_summary(x: dict[str, Any]) -> str:
    parts = []
    if "humaneval" in x:
        h = x["humaneval"]
        parts.append(f"HumanEval pass@1 {h['pass@1']:.2f}% ({h['tasks']} problems x {h['samples_per_task']})")
    if "lines" in x:
        parts.append(
            f"lines exact {x['lines']['exact_match']:.1f}%, edit similarity {x['lines']['edit_similarity']:.1f}"
        )
    if "lines_before" in x:
        parts.append(f"before fine-tuning {x['lines_before']['exact_match']:.1f}% exact")
    ms = [c["ms"] for c in x.get("completions", [])]
    if ms:
        parts.append(f"{len(ms)} completions, {sum(ms) / len(ms):.0f} ms each")
    return "; ".join(parts)


def _export_figures(m: dict[str, Any], config: Any) -> dict[str, Any]:
    return {"file": str(config.out), "bytes": m["gguf"]["bytes"], "type": config.type,
            "modelfile": str(config.out.with_name(m["modelfile"])) if m.get("modelfile") else None}  # fmt: skip


def _export_summary(x: dict[str, Any]) -> str:
    line = f"{x['file']} ({x['bytes'] / 1e6:,.1f} MB, {x['type']})"
    name = Path(x["file"]).stem
    return line + (f", Ollama: `ollama create {name} -f {x['modelfile']}`" if x.get("modelfile") else "")


_FIGURES = {"data": _data_figures, "tokenizer": _tokenizer_figures, "pack": _pack_figures, "train": _train_figures,
            "export": _export_figures}  # fmt: skip
_SUMMARIES = {"data": _data_summary, "tokenizer": _tokenizer_summary, "pack": _pack_summary, "train": _train_summary,
              "eval": _eval_summary, "export": _export_summary}  # fmt: skip


@dataclass(frozen=True)
class StageRunner:
    """One stage as the pipeline drives it: its config, its run (-> figures), its summary, whether it is done."""

    name: str

    def config(self, cfg: Any, f: Folders) -> Any:
        return build_config(self.name, cfg, f)

    def run(self, config: Any, cfg: Any, f: Folders, resume: bool) -> dict[str, Any]:
        if self.name == "eval":
            return _run_eval(config, cfg, f)
        if self.name == "train":
            config.resume, config.overwrite = resume, not resume
        if self.name == "export":
            from pycpilot.export.write import export_model

            return _export_figures(export_model(config), config)
        manifest = BY_NAME[self.name].entry()(config).manifest
        return _FIGURES[self.name](manifest, config)

    def summary(self, figures: dict[str, Any]) -> str:
        return _SUMMARIES[self.name](figures)

    def finished(self, f: Folders) -> bool:
        if self.name == "eval":
            return (f.eval / "completions.json").exists()
        if self.name == "export":  # the file, its manifest and the Modelfile the manifest names
            path = gguf_path(f)
            m = _manifest_file(path.with_name(path.name + ".json"))
            modelfile = m.get("modelfile")
            whole = path.is_file() and (not modelfile or (path.parent / str(modelfile)).is_file())
            return whole and m.get("stage") == "export"
        m = _manifest(f.of(self.name))
        return m.get("stage") == self.name and (self.name != "train" or m.get("status") == "done")

    def resumable(self, f: Folders) -> bool:
        if self.name != "train":
            return self.finished(f)
        from pycpilot.train import checkpoint

        # Only whole checkpoints count: with every one damaged, training starts over instead of failing for ever.
        return checkpoint.newest_whole(f.model / "checkpoints")[0] is not None


def _run_eval(config: dict[str, Any], cfg: Any, f: Folders) -> dict[str, Any]:
    """HumanEval, line completion and the familiar prompts, on the run's model."""
    from pycpilot.evaluate.humaneval import HumanEvalConfig, evaluate_humaneval
    from pycpilot.evaluate.lines import LinesConfig, evaluate_lines
    from pycpilot.generate import Completer
    from pycpilot.manifest import write_json_atomic
    from pycpilot.pretrained import source_folder
    from pycpilot.run.config import PROMPTS

    f.eval.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    if config["humaneval_limit"]:
        he = HumanEvalConfig(
            out=f.eval / "humaneval", model=f.model, n=config["n"], temperatures=[config["temperature"]],
            limit=config["humaneval_limit"], overwrite=True, quiet=cfg.quiet,
            allow_weak_sandbox=config["allow_weak_sandbox"],
        )  # fmt: skip
        summary = evaluate_humaneval(he)
        figures["humaneval"] = next(iter(summary.values()))
    if config["lines"]:
        lines = LinesConfig(model=f.model, data=f.data, samples=config["lines"], out=f.eval / "lines",
                            quiet=cfg.quiet)  # fmt: skip
        if (f.eval / "lines").exists():
            import shutil

            shutil.rmtree(f.eval / "lines")
        figures["lines"] = evaluate_lines(lines)
        if cfg.init_from:  # the same positions with the model as it was before fine-tuning
            before = dataclasses.replace(lines, model=Path(source_folder(cfg.init_from)[0]), out=None)
            figures["lines_before"] = evaluate_lines(before)
    completer = Completer(f.model)
    shown = []
    for prompt in PROMPTS:
        started = time.perf_counter()
        got = completer.complete(prompt, max_new_tokens=64, heal=True)
        ms = round((time.perf_counter() - started) * 1000, 1)
        c = got.completions[0]
        shown.append({"prompt": prompt, "completion": c.text, "ms": ms, "tokens": c.tokens})
    write_json_atomic(f.eval / "completions.json", shown)
    if not cfg.quiet:
        for s in shown:
            print(f"{s['prompt']}{s['completion']}\n    [{s['tokens']} tokens in {s['ms']:.0f} ms]\n", flush=True)
    figures["completions"] = shown
    return figures


STAGE_RUNNERS: dict[str, StageRunner] = {
    name: StageRunner(name) for name in ("data", "tokenizer", "pack", "train", "eval", "export")
}
