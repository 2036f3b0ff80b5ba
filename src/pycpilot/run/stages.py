"""The five stages as `pycpilot run` drives them: the config each gets, how it runs, the figures it reports."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycpilot.manifest import MANIFEST
from pycpilot.run.config import stage_flags
from pycpilot.settings import coerce


@dataclass
class Folders:
    root: Path

    def __getattr__(self, name: str) -> Path:
        names = {"data": "data", "tokenizer": "tokenizer", "packed": "packed", "model": "model", "eval": "eval"}
        if name not in names:
            raise AttributeError(name)
        return self.root / names[name]


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _build(config_cls: type, given: dict[str, Any], fixed: dict[str, Any], stage: str) -> Any:
    """The stage's config from a run's settings, checked (types, choices, bounds) before any stage runs."""
    values = coerce(config_cls, given, stage, fixed=set(fixed), fixed_why="is set by `pycpilot run` itself")
    config = config_cls(**{**values, **fixed})
    with stage_flags(stage):
        config.validate()
    return config


class Data:
    @staticmethod
    def config(cfg: Any, f: Folders) -> Any:
        from pycpilot.data import DataConfig

        return _build(DataConfig, cfg.stage("data"), {"out": f.data, "sources": cfg.sources, "overwrite": True,
                                                       "quiet": cfg.quiet}, "data")  # fmt: skip

    @staticmethod
    def run(config: Any, cfg: Any, f: Folders, resume: bool) -> dict[str, Any]:
        from pycpilot.data import build_dataset

        m = build_dataset(config).manifest
        return {"seen_files": m["seen"]["files"], "seen_bytes": m["seen"]["bytes"], "kept_files": m["kept"]["files"],
                "kept_bytes": m["kept"]["bytes"], "train_files": m["splits"]["train"]["files"],
                "valid_files": m["splits"]["valid"]["files"]}  # fmt: skip

    @staticmethod
    def summary(x: dict[str, Any]) -> str:
        return (f"{x['kept_files']:,} of {x['seen_files']:,} files kept ({x['kept_bytes'] / 1e6:.1f} MB); "
                f"{x['train_files']:,} train, {x['valid_files']:,} valid")  # fmt: skip

    @staticmethod
    def finished(f: Folders) -> bool:
        return _manifest(f.data).get("stage") == "data"

    resumable = finished


class Tokenizer:
    @staticmethod
    def config(cfg: Any, f: Folders) -> Any:
        from pycpilot.tokenizer import TokenizerConfig

        given = {"preset": cfg.data_preset, **cfg.stage("tokenizer")}
        return _build(TokenizerConfig, given, {"data": f.data, "out": f.tokenizer, "overwrite": True,
                                               "quiet": cfg.quiet}, "tokenizer")  # fmt: skip

    @staticmethod
    def run(config: Any, cfg: Any, f: Folders, resume: bool) -> dict[str, Any]:
        from pycpilot.tokenizer import train_tokenizer

        m = train_tokenizer(config).manifest
        ours = m["comparison"]["ours"]
        return {"vocab_size": m["vocab_size"], "valid_tokens_per_byte": ours.get("valid_tokens_per_byte")}

    @staticmethod
    def summary(x: dict[str, Any]) -> str:
        return f"vocabulary {x['vocab_size']:,}, {x['valid_tokens_per_byte']} tokens per byte on valid"

    @staticmethod
    def finished(f: Folders) -> bool:
        return _manifest(f.tokenizer).get("stage") == "tokenizer"

    resumable = finished


class Pack:
    @staticmethod
    def config(cfg: Any, f: Folders) -> Any:
        from pycpilot.pack import PackConfig

        given = {"preset": cfg.data_preset, **cfg.stage("pack")}
        return _build(PackConfig, given, {"data": f.data, "tokenizer": f.tokenizer, "out": f.packed,
                                          "overwrite": True, "quiet": cfg.quiet}, "pack")  # fmt: skip

    @staticmethod
    def run(config: Any, cfg: Any, f: Folders, resume: bool) -> dict[str, Any]:
        from pycpilot.pack import pack_dataset

        m = pack_dataset(config).manifest
        train = m["splits"]["train"]
        return {"tokens": train["tokens"], "blocks": train["blocks"], "context_length": m["context_length"],
                "valid_blocks": m["splits"]["valid"]["blocks"]}  # fmt: skip

    @staticmethod
    def summary(x: dict[str, Any]) -> str:
        return (f"{x['tokens']:,} train tokens in {x['blocks']:,} blocks of {x['context_length']}, "
                f"{x['valid_blocks']:,} valid blocks")  # fmt: skip

    @staticmethod
    def finished(f: Folders) -> bool:
        return _manifest(f.packed).get("stage") == "pack"

    resumable = finished


class Train:
    @staticmethod
    def config(cfg: Any, f: Folders) -> Any:
        from pycpilot.train import TrainConfig

        given = {"preset": cfg.train_preset, **cfg.stage("train")}
        if not any(given.get(k) for k in ("max_time", "max_steps", "epochs")) and cfg.preset in ("auto", "tiny"):
            given["max_time"] = "4m"  # the demo's budget: the whole run stays under 10 minutes on 2 cores
        given.setdefault("save_every", 200)  # an interrupted run resumes from at most 200 steps back
        return _build(TrainConfig, given, {"packed": f.packed, "out": f.model, "quiet": cfg.quiet}, "train")

    @staticmethod
    def run(config: Any, cfg: Any, f: Folders, resume: bool) -> dict[str, Any]:
        from pycpilot.train import train

        config.resume, config.overwrite = resume, not resume
        manifest = train(config).manifest
        result, model = manifest["result"], manifest["model"]
        figures = {k: result[k] for k in ("steps", "tokens", "train_seconds", "tokens_per_s", "valid_loss",
                                          "valid_perplexity", "valid_bpb", "stopped_by") if k in result}  # fmt: skip
        figures["model"] = f"{model['n_layer']}x{model['n_embd']}"
        figures["parameters"] = model["parameters"]
        figures["budget"] = config.max_time
        if "sizing" in manifest:
            figures["sizing"] = manifest["sizing"]["line"]
        return figures

    @staticmethod
    def summary(x: dict[str, Any]) -> str:
        model = f"GPT-2 {x['model']} ({x['parameters'] / 1e6:.1f}M), " if "model" in x else ""
        budget = f" in {x['budget']}" if x.get("budget") else ""
        return (f"{model}{x['steps']:,} steps{budget}, {x['tokens_per_s']:,.0f} tokens/s; valid {x['valid_bpb']:.3f} "
                f"bits per byte, perplexity {x['valid_perplexity']:.1f}")  # fmt: skip

    @staticmethod
    def finished(f: Folders) -> bool:
        return _manifest(f.model).get("status") == "done"

    @staticmethod
    def resumable(f: Folders) -> bool:
        from pycpilot.train import checkpoint

        # Only whole checkpoints count: with every one damaged, training starts over instead of failing for ever.
        return checkpoint.newest_whole(f.model / "checkpoints")[0] is not None


class Eval:
    @staticmethod
    def config(cfg: Any, f: Folders) -> Any:
        return dataclasses.asdict(cfg.eval_plan())

    @staticmethod
    def run(config: dict[str, Any], cfg: Any, f: Folders, resume: bool) -> dict[str, Any]:
        from pycpilot.evaluate.humaneval import HumanEvalConfig, evaluate_humaneval
        from pycpilot.evaluate.lines import LinesConfig, evaluate_lines
        from pycpilot.generate import Completer
        from pycpilot.manifest import write_json_atomic
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

    @staticmethod
    def summary(x: dict[str, Any]) -> str:
        parts = []
        if "humaneval" in x:
            h = x["humaneval"]
            parts.append(f"HumanEval pass@1 {h['pass@1']:.2f}% ({h['tasks']} problems x {h['samples_per_task']})")
        if "lines" in x:
            parts.append(
                f"lines exact {x['lines']['exact_match']:.1f}%, edit similarity {x['lines']['edit_similarity']:.1f}"
            )
        ms = [c["ms"] for c in x.get("completions", [])]
        if ms:
            parts.append(f"{len(ms)} completions, {sum(ms) / len(ms):.0f} ms each")
        return "; ".join(parts)

    @staticmethod
    def finished(f: Folders) -> bool:
        return (f.eval / "completions.json").exists()

    resumable = finished


def config_class(stage: str) -> type:
    """The config dataclass whose `setting` fields are the stage's options."""
    if stage == "data":
        from pycpilot.data.config import DataConfig as cls
    elif stage == "tokenizer":
        from pycpilot.tokenizer.config import TokenizerConfig as cls
    elif stage == "pack":
        from pycpilot.pack.config import PackConfig as cls
    elif stage == "train":
        from pycpilot.train.config import TrainConfig as cls
    else:
        from pycpilot.run.config import EvalPlan as cls
    return cls


STAGE_RUNNERS: dict[str, Any] = {"data": Data, "tokenizer": Tokenizer, "pack": Pack, "train": Train, "eval": Eval}
