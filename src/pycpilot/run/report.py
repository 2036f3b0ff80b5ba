"""report.html: one self-contained page (styles inline, the loss curve as an inline PNG) about a run."""

from __future__ import annotations

import base64
import html
import json
import shlex
from pathlib import Path
from typing import Any

from pycpilot.evaluate.humaneval import REFERENCE
from pycpilot.manifest import MANIFEST

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:24px auto;padding:0 16px;color:#1d232b}
h1{font-size:24px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d5dae0}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}pre,code{font:13px ui-monospace,Menlo,Consolas,monospace}
pre{background:#f4f5f7;padding:10px;border-radius:4px;white-space:pre-wrap}.new{background:#dff3e4}
.muted{color:#66707c}img{max-width:100%;border:1px solid #e3e6ea}
"""


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    th = "".join(f'<th class="{"n" if i in numeric else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"n" if i in numeric else ""}">{_e(c)}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _corpus(data: dict[str, Any]) -> str:
    if not data:
        return "<p class=muted>no data stage output</p>"
    seen, kept = data.get("seen", {}), data.get("kept", {})
    total = max(seen.get("bytes", 0), 1)
    rows = [["read", f"{seen.get('files', 0):,}", f"{seen.get('bytes', 0) / 1e6:.1f} MB", ""]]
    rows += [[f"- {f['filter']}", f"{f['files']:,}", f"{f['bytes'] / 1e6:.2f} MB", f"{100 * f['bytes'] / total:.1f}%"]
             for f in data.get("filters", [])]  # fmt: skip
    rows.append(["= kept", f"{kept.get('files', 0):,}", f"{kept.get('bytes', 0) / 1e6:.1f} MB",
                 f"{100 * kept.get('bytes', 0) / total:.1f}%"])  # fmt: skip
    split = data.get("splits", {})
    note = (f"<p>Split by repository: {split.get('train', {}).get('files', 0):,} train files, "
            f"{split.get('valid', {}).get('files', 0):,} valid files.</p>")  # fmt: skip
    return _table(["step", "files", "bytes", "% bytes"], rows, {1, 2, 3}) + note


def _tokenizer(tok: dict[str, Any], init_from: str | None = None) -> str:
    if init_from:
        return f"<p>The model's own, from {_e(init_from)} (--init-from): no tokenizer was trained.</p>"
    if not tok:
        return "<p class=muted>no tokenizer output</p>"
    comparison = tok.get("comparison", {})
    ours, theirs = comparison.get("ours", {}), comparison.get("baseline_figures") or {}
    rows = [["ours", f"{ours.get('vocab_size', '?'):,}", ours.get("valid_tokens_per_byte", "?"),
             " | ".join(ours.get("add_numbers", []))]]  # fmt: skip
    if theirs:
        rows.append([f"baseline: {comparison.get('baseline', '')}", f"{theirs.get('vocab_size', 0):,}",
                     theirs.get("valid_tokens_per_byte", "?"), " | ".join(theirs.get("add_numbers", []))])  # fmt: skip
    return _table(["tokenizer", "vocabulary", "valid tokens per byte", "add_numbers split"], rows, {1, 2})


def _training(model_dir: Path, train: dict[str, Any]) -> str:
    result = train.get("result", {})
    parts = []
    png = model_dir / "loss.png"
    if png.exists():
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f'<img id="loss" alt="loss curves" src="data:image/png;base64,{data}">')
    if result:
        rows = [
            ["steps", f"{result.get('steps', 0):,}"],
            ["tokens", f"{result.get('tokens', 0):,}"],
            ["tokens/s", f"{result.get('tokens_per_s', 0):,.0f}"],
            ["valid loss", f"{result.get('valid_loss', float('nan')):.4f}"],
            ["valid perplexity", f"{result.get('valid_perplexity', float('nan')):.2f}"],
            ["valid bits per byte", f"{result.get('valid_bpb', float('nan')):.3f}"],
        ]
        model = train.get("model", {})
        parts.append(_table(["", "value"], rows, {1}))
        parts.append(f"<p>GPT-2 with {model.get('n_layer')} layers x {model.get('n_embd')}, "
                     f"{model.get('parameters', 0):,} parameters, on {train.get('compute', {}).get('device')} "
                     f"({train.get('compute', {}).get('dtype')}).</p>")  # fmt: skip
        sizing = train.get("sizing", {})
        if sizing.get("line"):
            parts.append(f"<p>Sized to the budget: {_e(sizing['line'])}.</p>")
    return "".join(parts) or "<p class=muted>no training output</p>"


def _headline(out: Path, manifest: dict[str, Any]) -> str:
    """What the budget bought, in one table: the figures a user compares between runs (with --init-from, the
    model it started from too)."""
    train = _read(out / "model" / MANIFEST)
    result, model = train.get("result", {}), train.get("model", {})
    if not result:
        return "<p class=muted>no trained model yet</p>"
    budget = train.get("config", {}).get("max_time") or f"{result.get('steps', 0):,} steps"
    lines = _read(out / "eval" / "lines" / "lines.json").get("summary", {})
    he = next(iter(_read(out / "eval" / "humaneval" / "summary.json").values()), {})
    row = [
        budget,
        f"{result.get('train_seconds', 0) / 60:.1f} min",
        f"{model.get('n_layer')}x{model.get('n_embd')} ({model.get('parameters', 0) / 1e6:.1f}M)",
        f"{result.get('tokens', 0) / 1e6:.1f}M",
        f"{result.get('valid_bpb', float('nan')):.3f}",
        f"{lines['exact_match']:.1f}%" if lines else "-",
        f"{lines['edit_similarity']:.1f}" if lines else "-",
        f"{he['pass@1']:.2f}% of {he.get('tasks')}" if he.get("pass@1") is not None else "-",
    ]
    rows = [row]
    init = train.get("init_from") or {}
    if init:
        before = (manifest.get("stages", {}).get("eval", {}).get("figures") or {}).get("lines_before") or {}
        bpb = init.get("valid_bpb_before")
        rows.append([
            "before fine-tuning", "-", _e(init.get("source", "?")), "-", f"{bpb:.3f}" if bpb is not None else "-",
            f"{before['exact_match']:.1f}%" if before else "-",
            f"{before['edit_similarity']:.1f}" if before else "-", "-",
        ])  # fmt: skip
    head = ["budget", "trained", "model", "tokens", "valid bits/byte", "line exact", "edit sim.", "HumanEval pass@1"]
    return _table(head, rows, {1, 3, 4, 5, 6})


def _evaluation(eval_dir: Path) -> str:
    parts = []
    he = _read(eval_dir / "humaneval" / "summary.json")
    if he:
        rows = [[name, s.get("tasks"), s.get("samples_per_task"), *(f"{s[k]:.2f}" if k in s else "-"
                 for k in ("pass@1", "pass@10", "pass@100"))] for name, s in he.items()]  # fmt: skip
        rows += [[f"{name}, published", 164, 200, *(f"{v:.2f}" for v in ref)] for name, ref in REFERENCE.items()]
        parts.append("<h3>HumanEval (every program run in the sandbox)</h3>")
        parts.append(
            _table(["run", "problems", "samples", "pass@1 %", "pass@10 %", "pass@100 %"], rows, {1, 2, 3, 4, 5})
        )
    lines = _read(eval_dir / "lines" / "lines.json").get("summary", {})
    if lines:
        parses = f"{lines['parses']:.1f}%" if lines.get("parses") is not None else "n/a"
        rows = [
            [
                lines.get("samples"),
                f"{lines.get('exact_match', 0):.1f}%",
                f"{lines.get('edit_similarity', 0):.1f}",
                parses,
            ]
        ]
        parts.append("<h3>Line completion (held-out files)</h3>")
        parts.append(_table(["positions", "exact match", "edit similarity", "file still parses"], rows, {0, 1, 2, 3}))
    return "".join(parts) or "<p class=muted>no evaluation output</p>"


def _completions(eval_dir: Path) -> str:
    shown = json.loads((eval_dir / "completions.json").read_text()) if (eval_dir / "completions.json").exists() else []
    return (
        "".join(
            f'<pre>{_e(c["prompt"])}<span class="new">{_e(c["completion"])}</span></pre>'
            f"<p class=muted>{c['tokens']} tokens in {c['ms']:.0f} ms</p>"
            for c in shown
        )
        or "<p class=muted>none</p>"
    )


def _commands(manifest: dict[str, Any], out: Path) -> str:
    config = manifest.get("config", {})
    argv = ["pycpilot", "run", "--out", str(config.get("out", out))]
    for source in config.get("sources", []):
        argv += ["--source", source]
    argv += ["--preset", str(config.get("preset", "auto"))]
    if config.get("init_from"):
        argv += ["--init-from", str(config["init_from"])]
    for stage, values in (config.get("settings") or {}).items():
        for key, value in values.items():
            argv += [f"--{stage}.{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    model = f"{config.get('out', out)}/model"
    return (f"<pre>{_e(shlex.join(argv))}\npycpilot complete --model {_e(model)} 'def fibonacci(n):'\n"
            f"pycpilot serve --model {_e(model)}   # then open http://127.0.0.1:8000/</pre>")  # fmt: skip


def write_report(out: Path, manifest: dict[str, Any]) -> Path:
    stages = manifest.get("stages", {})
    rows = [
        [name, s.get("status", "-"), f"{s.get('seconds', 0):.1f} s", s.get("summary", "")] for name, s in stages.items()
    ]
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>PYCPilot run report</title>
<style>{STYLE}</style></head><body>
<h1>PYCPilot run: {_e(out.name)}</h1>
<p class=muted>{_e(manifest.get("created", ""))} · {_e(versions)}</p>
<h2>What the budget bought</h2>{_headline(out, manifest)}
<h2>Stages</h2>{_table(["stage", "status", "time", "figures"], rows, {2})}
<h2>Corpus</h2>{_corpus(_read(out / "data" / MANIFEST))}
<h2>Tokenizer</h2>{_tokenizer(_read(out / "tokenizer" / MANIFEST), manifest.get("config", {}).get("init_from"))}
<h2>Training</h2>{_training(out / "model", _read(out / "model" / MANIFEST))}
<h2>Evaluation</h2>{_evaluation(out / "eval")}
<h2>Completions of familiar prompts</h2>{_completions(out / "eval")}
<h2>Reproduce, complete, serve</h2>{_commands(manifest, out)}
</body></html>
"""
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
