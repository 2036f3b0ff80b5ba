"""`run(RunConfig(...))`: every stage into one folder, skipping what is already done.

data/ -> tokenizer/ -> packed/ -> model/ (with checkpoints/) -> eval/ (-> export/) -> report.html, and
manifest.json, which records each finished stage's fingerprint (settings, inputs, the stages before it), time
and figures.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.manifest import MANIFEST, base_manifest, write_json_atomic
from pycpilot.run.config import RunConfig
from pycpilot.run.fingerprint import fingerprint, settings_of, source_signature, why
from pycpilot.run.stages import STAGE_RUNNERS, Folders

_LAYOUT = {"data", "tokenizer", "packed", "model", "eval", "export", "report.html"}


def _load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.exists():
        # Stage folders of the same layout (an earlier `make demo` ran the stages one by one) are adopted.
        if out.exists() and any(p.name not in _LAYOUT for p in out.iterdir()):
            raise PycpilotError(f"{out} is not empty and is not a `pycpilot run` folder (no manifest.json): "
                                "choose another --out")  # fmt: skip
        return {"stages": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PycpilotError(f"{path} is unreadable ({e}): remove it to start the run over") from None
    if not isinstance(manifest, dict) or manifest.get("stage") != "run":
        raise PycpilotError(f"{out} holds the output of another stage, not a `pycpilot run` folder")
    manifest.setdefault("stages", {})
    return manifest


def _say(line: str) -> None:
    print(line, flush=True)  # flushed: a forked child (a sampler, the sandbox) must not print it again


def run(cfg: RunConfig, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Run (or finish) the pipeline into `cfg.out`; returns the run's manifest."""
    start = time.perf_counter()
    cfg.validate()
    out = Path(cfg.out).resolve()
    manifest = _load_manifest(out)
    folders = Folders(out)
    manifest |= base_manifest("run", {"out": str(cfg.out), "sources": cfg.sources, "preset": cfg.preset,
                                      "init_from": cfg.init_from, "settings": cfg.settings})  # fmt: skip
    previous = ""  # the output id of the stage before: new each time that stage runs, so what follows runs too
    stages = cfg.stages
    configs = {name: STAGE_RUNNERS[name].config(cfg, folders) for name in stages}  # bad settings: before any work
    _check_across(configs)
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(stages, 1):
        runner = STAGE_RUNNERS[name]
        config = configs[name]
        settings = settings_of(config)
        inputs = source_signature(cfg.sources) if name == "data" else [f"stage {stages[i - 2]} {previous}"]
        fp = fingerprint(name, settings, inputs)
        record = manifest["stages"].get(name) or {}
        head = f"run: [{i}/{len(stages)}] {name}"
        same = record.get("status") == "done" and record.get("fingerprint") == fp
        if name == "tokenizer" and cfg.init_from:  # the model brings its own
            say(f"{head}: skipped: the pack uses {cfg.init_from}'s tokenizer (--init-from)")
            manifest["stages"][name] = {"status": "skipped", "fingerprint": fp, "summary": "the model's own"}
            previous = fingerprint(name, {"init_from": cfg.init_from}, inputs)[:16]
            continue
        if same and runner.finished(folders):
            say(f"{head}: unchanged, skipped ({record.get('summary', '')})")
            previous = record.get("output", fp)
            continue
        resume = name == "train" and record.get("status") == "started" and record.get("fingerprint") == fp
        resume = resume and runner.resumable(folders)
        if resume:
            reason = "resuming the interrupted training"
        elif same:
            reason = "its output is missing or incomplete"
        else:
            reason = why(record if record.get("status") == "done" else None, settings, inputs)
        say(f"{head}: running ({reason})")
        manifest["stages"][name] = {"status": "started", "fingerprint": fp, "settings": settings, "inputs": inputs}
        write_json_atomic(out / MANIFEST, manifest)
        began = time.perf_counter()
        figures = runner.run(config, cfg, folders, resume)
        seconds = time.perf_counter() - began
        summary = runner.summary(figures)
        output = uuid.uuid4().hex[:16]
        manifest["stages"][name] |= {"status": "done", "seconds": round(seconds, 2), "figures": figures,
                                     "summary": summary, "output": output}  # fmt: skip
        write_json_atomic(out / MANIFEST, manifest)
        say(f"{head} done in {_clock(seconds)}: {summary}")
        previous = output
    from pycpilot.run.report import write_report

    write_report(out, manifest)
    total = time.perf_counter() - start
    manifest["last_seconds"] = round(total, 2)
    write_json_atomic(out / MANIFEST, manifest)
    bought = _bought(manifest["stages"])
    if bought:
        say(f"run: {bought}")
    say(f"run: finished in {_clock(total)}; report: {out / 'report.html'}")
    say(f"run: complete with `pycpilot complete --model {cfg.out}/model 'def fibonacci(n):'`, "
        f"serve with `pycpilot serve --model {cfg.out}/model`")  # fmt: skip
    if cfg.serve:
        from pycpilot.serve import ServeConfig, serve

        serve(ServeConfig(model=folders.model, port=cfg.port))
    return manifest


def _check_across(configs: dict[str, Any]) -> None:
    """Settings of different stages that must agree (each stage's own were checked as it was configured)."""
    positions, context = configs["train"].n_positions, configs["pack"].resolved_context_length()
    if positions is not None and positions < context:
        raise PycpilotError(
            f"train.n_positions {positions} is shorter than pack.context_length {context}: the model could not "
            "read a whole block"
        )
    vocab = configs["tokenizer"].resolved_vocab_size()  # with --init-from, the pack checks the model's
    if configs["pack"].dtype == "uint16" and vocab > 1 << 16:
        raise PycpilotError(
            f"pack.dtype uint16 cannot hold token ids of a {vocab:,}-token vocabulary: use auto or uint32"
        )


def _clock(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _bought(stages: dict[str, Any]) -> str:
    """One line: the budget, the model it bought, and how useful that model is."""
    train = stages.get("train", {}).get("figures") or {}
    if "valid_bpb" not in train:
        return ""
    ev = stages.get("eval", {}).get("figures") or {}
    spent = train.get("budget") or f"{train.get('steps', 0):,} steps"
    model = train.get("model", "?")
    what = f"fine-tuning {train['init_from']}" if train.get("init_from") else "training"
    parts = [f"{spent} of {what} bought GPT-2 {model}: valid {train['valid_bpb']:.3f} bits per byte"]
    if train.get("valid_bpb_before"):
        parts[0] += f" (from {train['valid_bpb_before']:.3f})"
    if "lines" in ev:
        lines = ev["lines"]
        exact, similar = lines["exact_match"], lines["edit_similarity"]
        before = f" (from {ev['lines_before']['exact_match']:.1f}%)" if "lines_before" in ev else ""
        parts.append(f"line completion {exact:.1f}% exact{before}, edit similarity {similar:.1f}")
    if "humaneval" in ev:
        parts.append(f"HumanEval pass@1 {ev['humaneval']['pass@1']:.2f}%")
    return "; ".join(parts)
