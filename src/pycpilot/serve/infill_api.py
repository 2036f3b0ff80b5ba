"""POST /infill (llama.cpp's server, for llama.vim and llama.vscode), as a module-level handler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from pycpilot.generate.complete import Completion
from pycpilot.serve.requests import parse_infill
from pycpilot.serve.scheduler import Job
from pycpilot.serve.server import Server, gather, read_body, sse


async def infill(request: Request) -> Response:
    server: Server = request.app.state.server
    cfg = server.cfg
    # Editors' infill wants the rest of the block by default, not the rest of the file.
    scope = "block" if cfg.default_scope == "file" else cfg.default_scope
    s = parse_infill(await read_body(request), server.context, scope)
    submitted = await server.submit([s])
    if isinstance(submitted, Response):
        return submitted
    jobs, cuts, events = submitted
    start = time.perf_counter()
    if s.stream:
        return StreamingResponse(
            _stream_infill(server, jobs[0], cuts[0], events, start), media_type="text/event-stream"
        )
    results = await gather(request, jobs, events)
    if isinstance(results, Response):
        return results
    c = results[0][0]
    return JSONResponse({"content": c.text, "stop": True, **_infill_stats(server, jobs[0], cuts[0], c, start)})


def _infill_stats(server: Server, job: Job, cut: int, c: Completion, start: float) -> dict[str, Any]:
    ms = (time.perf_counter() - start) * 1000
    eos = bool(c.ids) and c.ids[-1] in server.completer.stop_ids
    stop_type = "limit" if c.finish_reason == "length" else "eos" if eos else "word"
    return {
        "model": server.name,
        "tokens_predicted": c.tokens,
        "tokens_evaluated": len(job.ids),
        "truncated": cut > 0,
        "stop_type": stop_type,
        "timings": {
            "prompt_n": len(job.ids),
            "predicted_n": c.tokens,
            "predicted_ms": round(ms, 3),
            "predicted_per_second": round(c.tokens / ms * 1000, 2) if ms > 0 else None,
        },
    }


async def _stream_infill(
    server: Server, job: Job, cut: int, events: asyncio.Queue, start: float
) -> AsyncIterator[bytes]:
    """llama.cpp's streaming: `{"content": piece, "stop": false}` chunks, then one with `"stop": true`."""
    try:
        while True:
            _, kind, _, value = await events.get()
            if kind == "text":
                yield sse({"content": value, "stop": False})
            elif kind == "done":
                yield sse({"content": "", "stop": True, **_infill_stats(server, job, cut, value, start)})
            elif kind == "end":
                if value:
                    yield sse({"error": {"message": str(value), "type": "server_error"}})
                return
    finally:
        job.cancelled.set()
