"""The `hf` engine: transformers' `generate` with the same SamplingParams, stops and streaming as our loop.

For models our decoder does not run (not plain GPT-2) and for comparison (`--engine hf`). Rows finish through
the same `Completer.finish_row`, token by token, so stops, finish reasons and token counts agree with batch.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from pycpilot.generate.batch import Completion
from pycpilot.generate.sampling import SamplingParams
from pycpilot.generate.text import Stopper

if TYPE_CHECKING:
    from pycpilot.generate.complete import Completer


class _Stream(BaseStreamer):
    """The new tokens as generate makes them: streamed text, and the row that _Stops looks at."""

    def __init__(self, completer: Completer, stopper: Stopper, on_text: Callable[[str], None] | None) -> None:
        self.completer, self.stopper, self.on_text = completer, stopper, on_text
        self.prompt_seen = False
        self.row: list[int] = []
        self.shown = 0

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate hands over the prompt first
            self.prompt_seen = True
            return
        self.row.extend(value.reshape(-1).tolist())
        if self.on_text is not None:
            self.shown = self.completer.stream_row(self.row, None, self.stopper, self.shown, self.on_text)

    def end(self) -> None:
        pass


class _Stops(StoppingCriteria):
    """A stop string or the scope's end ends generation as our loop does, not at max_new_tokens."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        s = self.stream
        ended = bool(s.row) and s.completer.finish_row(s.row, s.stopper, False) is not None
        return torch.full((input_ids.shape[0],), ended, dtype=torch.bool, device=input_ids.device)


class _FirstToken(LogitsProcessor):
    """Token healing: only tokens that start with the healed bytes may come first."""

    def __init__(self, allowed: torch.Tensor | None, prompt_length: int) -> None:
        self.allowed, self.prompt_length = allowed, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.allowed is None or input_ids.shape[1] != self.prompt_length:
            return scores
        return scores.masked_fill(~self.allowed[: scores.shape[-1]].to(scores.device), float("-inf"))


class _OutOfTime(StoppingCriteria):
    def __init__(self, late: Callable[[], bool]) -> None:
        self.late = late

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.late(), dtype=torch.bool, device=input_ids.device)


def generate_hf(
    completer: Completer,
    ids: list[int],
    params: SamplingParams,
    stoppers: list[Stopper],
    *,
    late: Callable[[], bool],
    healed: bytes = b"",
    on_text: Callable[[str], None] | None = None,
) -> list[Completion]:
    """`params.n` completions of prompt ids `ids`; `late()` true ends every row as "length"."""
    n, sampling = params.n, not params.greedy
    single = n == 1 or not sampling  # generate's streamer and our stop check take one row
    stream = _Stream(completer, stoppers[0], on_text)
    torch.manual_seed(params.seed)
    extra: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
    device = completer.device
    with torch.inference_mode():
        out = completer.model.generate(
            torch.tensor([ids], device=device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            num_return_sequences=n if sampling else 1,  # greedy rows are all the same: generate cannot repeat one
            pad_token_id=completer.tokenizer.eos_token_id,
            eos_token_id=sorted(completer.stop_ids),
            stopping_criteria=StoppingCriteriaList([_OutOfTime(late), *([_Stops(stream)] if single else [])]),
            logits_processor=LogitsProcessorList([_FirstToken(completer.first_mask(healed), len(ids))]),
            streamer=stream if single else None,
            **(extra if sampling else {}),
        )
    out = out.expand(n, -1)
    results = []
    for r in range(n):
        new = out[r, len(ids) :].tolist()
        end = next((i + 1 for i, t in enumerate(new) if t in completer.stop_ids), len(new))
        # Token by token, as our loop decides: the same stop, finish reason and token count.
        done = Completion("", "length", 0, [])
        for k in range(1, end + 1):
            if (found := completer.finish_row(new[:k], stoppers[r], k == end)) is not None:
                done = found
                break
        results.append(done)
    if on_text is not None:
        completer.stream_row(results[0].ids, results[0], stoppers[0], stream.shown, on_text)  # the rest, as decided
    return results
