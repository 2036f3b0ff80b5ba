"""POST /v1/completions (OpenAI's legacy Completions API) and GET /v1/models, as module-level handlers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from pycpilot.generate.complete import Completer, Completion
from pycpilot.serve.logprobs import logprobs_object
from pycpilot.serve.requests import PromptRequest, parse_completion
from pycpilot.serve.scheduler import Job
from pycpilot.serve.server import Server, WorkerError, gather, read_body, sse


async def models(request: Request) -> dict[str, Any]:
    server: Server = request.app.state.server
    card = {"id": server.name, "object": "model", "created": server.created, "owned_by": "pycpilot"}
    return {"object": "list", "data": [card]}


async def completions(request: Request) -> Response:
    server: Server = request.app.state.server
    cfg, completer = server.cfg, server.completer
    body = await read_body(request)
    samplings, model = parse_completion(body, server.name, server.context, cfg.max_batch, cfg.default_scope)
    submitted = await server.submit(samplings)
    if isinstance(submitted, Response):
        return submitted
    jobs, cuts, events = submitted
    head = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    warning = _cut_warning(cuts)
    if samplings[0].stream:
        return StreamingResponse(
            _stream_openai(server, samplings, jobs, events, head, warning), media_type="text/event-stream"
        )
    results = await gather(request, jobs, events)
    if isinstance(results, Response):
        return results
    choices, used = [], 0
    for i, (s, job) in enumerate(zip(samplings, jobs, strict=True)):
        for r in range(s.params.n):
            c = results[i][r]
            used += c.tokens
            text = (s.prompt if s.echo else "") + c.text
            lp = None
            if s.logprobs is not None:
                skip = job.stoppers[0].skip
                lp = await server.in_worker(
                    logprobs_object, completer, job.ids, _kept(completer, c), s.logprobs, s.echo, skip
                )
            index = i * s.params.n + r
            choices.append({"text": text, "index": index, "logprobs": lp, "finish_reason": c.finish_reason})
    prompt_tokens = sum(len(j.ids) for j in jobs)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": used, "total_tokens": prompt_tokens + used}
    body = {**head, "choices": choices, "usage": usage}
    if warning:
        body["warning"] = warning
    return JSONResponse(body)


def _cut_warning(cuts: list[int]) -> str | None:
    if not any(cuts):
        return None
    return f"the prompt was longer than the model's context: its first {max(cuts)} tokens were cut"


def _kept(completer: Completer, c: Completion) -> list[int]:
    """The completion's tokens without the end-of-text that closed it."""
    return c.ids[:-1] if c.ids and c.ids[-1] in completer.stop_ids else list(c.ids)


async def _stream_openai(
    server: Server,
    samplings: list[PromptRequest],
    jobs: list[Job],
    events: asyncio.Queue,
    head: dict[str, Any],
    warning: str | None,
) -> AsyncIterator[bytes]:
    """Server-sent events: text pieces as they are decided, a last chunk per choice with its finish reason
    (and its logprobs), then `data: [DONE]`. Leaving early (client gone) cancels the jobs."""
    ended = 0
    try:
        if warning:
            yield sse({**head, "choices": [], "warning": warning})
        for i, s in enumerate(samplings):
            if s.echo and s.prompt:
                for r in range(s.params.n):
                    yield sse({**head, "choices": [_chunk(i * s.params.n + r, s.prompt)]})
        while ended < len(jobs):
            index, kind, row, value = await events.get()
            s, n = samplings[index], samplings[index].params.n
            if kind == "text":
                yield sse({**head, "choices": [_chunk(index * n + row, value)]})
            elif kind == "done":
                lp = None
                if s.logprobs is not None:
                    try:
                        lp = await server.in_worker(
                            logprobs_object,
                            server.completer, jobs[index].ids, _kept(server.completer, value), s.logprobs, False,
                            jobs[index].stoppers[0].skip,
                        )  # fmt: skip
                    except WorkerError as e:
                        yield sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
                        break
                yield sse({**head, "choices": [_chunk(index * n + row, "", value.finish_reason, lp)]})
            elif kind == "end":
                ended += 1
                if value:
                    yield sse({"error": {"message": str(value), "type": "server_error", "param": None, "code": None}})
                    break
        yield sse("[DONE]")
    finally:
        for job in jobs:
            job.cancelled.set()  # a no-op for finished jobs; stops the rest when the client left


def _chunk(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
