"""`pycpilot eval perplexity`: loss, perplexity and bits per byte over whole files.

Each file is scored as the model saw files in training, `<|endoftext|> file <|endoftext|>`: every token of the
file and the closing end-of-text is predicted. A file longer than the context is read in windows that slide by
half a context, and every token is scored once, with at least half a context before it (HF's stride recipe).
Bits per byte divide by the files' UTF-8 bytes, so models with different tokenizers compare fairly.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pycpilot.errors import PycpilotError
from pycpilot.evaluate.texts import HeldOut, check_out, read_texts, write_out
from pycpilot.manifest import MANIFEST, base_manifest
from pycpilot.settings import check, setting

STAGE = "eval-perplexity"


@dataclass
class PerplexityConfig(HeldOut):
    """`evaluate_perplexity(PerplexityConfig(...))` is the Python entry point of `pycpilot eval perplexity`."""

    stride: int | None = setting(
        None, help="tokens a window moves by past the context (default: half the context)", low=1
    )
    limit: int | None = setting(None, help="the first N files only", low=1)
    out: Path | None = setting(None, help="also write the figures (JSON) and a manifest here")
    quiet: bool = setting(False, help="no progress bar or summary line", alias="-q")

    def validate(self) -> None:
        check(self)
        check_out(None if self.out is None else Path(self.out), STAGE)


def _windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored target) over positions 0..n-1; targets 1..n-1 are each scored once."""
    spans, scored = [], 1
    begin = 0
    while scored < n:
        end = min(begin + context, n)
        spans.append((begin, end, scored))
        scored = end
        begin = max(min(end - (context - stride), end - 1), 0)  # at least one token of context
    return spans


def file_nll(forward: Any, ids: list[int], context: int, stride: int) -> float:
    """Summed negative log-likelihood (nats) of ids[1:] given what precedes each, window by window."""
    import torch

    total = 0.0
    x_all = torch.tensor(ids)
    for begin, end, first in _windows(len(ids), context, stride):
        x = x_all[begin:end][None]
        logits = forward(x)[0].float()  # [end - begin, vocab]
        targets = x_all[first:end]
        preds = logits[first - 1 - begin : end - 1 - begin]
        total += torch.nn.functional.cross_entropy(preds, targets, reduction="sum").item()
    return total


def evaluate_perplexity(cfg: PerplexityConfig) -> dict[str, Any]:
    import torch

    from pycpilot.generate import Completer

    cfg.validate()
    completer = Completer(cfg.model)
    context = completer.context
    stride = cfg.stride or max(context // 2, 1)
    if not 1 <= stride <= context:
        raise PycpilotError(f"--stride must be between 1 and the context ({context})")
    texts, skipped = read_texts(cfg.data, cfg.split)
    texts = texts[: cfg.limit] if cfg.limit else texts
    fast, model, eos = completer.fast, completer.model, completer.tokenizer.eos_token_id

    def forward(x: torch.Tensor) -> torch.Tensor:  # logits on the CPU, whatever device runs the model
        if fast is not None:
            return fast.step(x, 0, fast.new_cache(1, x.shape[1]), every=True).cpu()
        with torch.inference_mode():
            return model(x.to(completer.device)).logits.cpu()

    start = time.perf_counter()
    nll, tokens, n_bytes = 0.0, 0, 0
    bar = tqdm(texts, desc="perplexity", unit="file", disable=cfg.quiet, file=sys.stderr)
    for _name, text in bar:
        ids = [eos, *completer.tokens(text), eos]  # a special token's spelling in a file is text, as in training
        nll += file_nll(forward, ids, context, stride)
        tokens += len(ids) - 1
        n_bytes += len(text.encode("utf-8"))
        bar.set_postfix(bpb=f"{nll / math.log(2) / max(n_bytes, 1):.3f}")
    bar.close()
    loss = nll / max(tokens, 1)
    summary = {
        "model": str(completer.loaded.path),
        "data": str(cfg.data),
        "files": len(texts),
        "skipped": skipped,
        "tokens": tokens,
        "bytes": n_bytes,
        "loss": loss,
        "perplexity": math.exp(min(loss, 50)),
        "bits_per_byte": nll / math.log(2) / max(n_bytes, 1),
        "context": context,
        "stride": stride,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if cfg.out is not None:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
        manifest = base_manifest(STAGE, config) | {"summary": summary}
        write_out(Path(cfg.out), STAGE, {"perplexity.json": summary, MANIFEST: manifest})
    if not cfg.quiet:
        print(
            f"perplexity: {summary['files']:,} files ({skipped} skipped), {tokens:,} tokens, {n_bytes:,} bytes: "
            f"loss {loss:.4f}, perplexity {summary['perplexity']:.2f}, {summary['bits_per_byte']:.4f} bits per byte"
        )
    return summary
