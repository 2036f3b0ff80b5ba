"""OpenAI's `logprobs` object for a finished completion: one forward pass over prompt + completion.

Scored after the fact rather than kept per step, so every engine and the batched worker give it alike; the
numbers are the model's own (log-softmax of the logits, before temperature), as OpenAI reports them.
"""

from __future__ import annotations

from typing import Any

import torch

from pycpilot.generate.complete import Completer


@torch.inference_mode()
def logprobs_object(
    completer: Completer, prompt_ids: list[int], new_ids: list[int], top: int, echo: bool, healed: int = 0
) -> dict[str, Any]:
    """`tokens`, `token_logprobs`, `top_logprobs` and `text_offset` of the new tokens (and of the prompt's
    with `echo`; its first token has no logprob). `healed`: characters of the first new token that repeat the
    prompt (token healing): left out of its text unless the prompt is echoed."""
    ids = prompt_ids + new_ids
    x = torch.tensor([ids], device=completer.device)
    if completer.fast is not None:
        logits = completer.fast.step(x, 0, completer.fast.new_cache(1, len(ids)), every=True)[0]
    else:
        logits = completer.model(x).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    first = 0 if echo else len(prompt_ids)
    tokens, token_lp, top_lp, offsets = [], [], [], []
    offset = 0
    for i in range(first, len(ids)):
        text = completer.tokenizer.decode([ids[i]])
        if i == len(prompt_ids) and not echo:
            text = text[healed:]
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        if i == 0:
            token_lp.append(None)
            top_lp.append(None)
            continue
        row = logp[i - 1]
        token_lp.append(round(row[ids[i]].item(), 6))
        if top:
            values, index = row.topk(top)
            alternatives = {}
            for v, j in zip(values.tolist(), index.tolist(), strict=True):
                alternatives.setdefault(completer.tokenizer.decode([j]), round(v, 6))
            top_lp.append(alternatives)
        else:
            top_lp.append(None)
    return {"tokens": tokens, "token_logprobs": token_lp, "top_logprobs": top_lp, "text_offset": offsets}
