"""The HTTP side of `pycpilot serve`: FastAPI routes over the model worker (scheduler.py).

POST /v1/completions (OpenAI's legacy Completions), POST /infill (llama.cpp's), GET /v1/models, GET /health,
and GET / (the playground). Requests become jobs in the worker's bounded queue; their events come back to
the event loop through an asyncio queue; a client that goes away cancels its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from pycpilot.generate.complete import Completer, Completion
from pycpilot.generate.text import Stopper
from pycpilot.serve.config import LOOPBACK_ORIGINS, ServeConfig
from pycpilot.serve.guard import Guard, log_gone
from pycpilot.serve.logprobs import logprobs_object
from pycpilot.serve.requests import BadRequest, Sampling, parse_completion, parse_infill
from pycpilot.serve.scheduler import Job, Scheduler

OFF_LOOP_CHARS = 16_384  # prompts longer than this are tokenised in a thread (the tokenizer releases the GIL)
POLL_S = 0.05  # how often a waiting non-streaming request looks for its client having gone


class WorkerError(Exception):
    """Work handed to the model worker failed (or the server is stopping): a 500 naming it."""


def error(status: int, message: str, param: str | None = None, code: str | None = None, **headers: str) -> Response:
    return JSONResponse(BadRequest(message, param, code, status).body(), status_code=status, headers=headers)


class Server:
    """The loaded model, its worker and what the routes share."""

    def __init__(self, cfg: ServeConfig, completer: Completer) -> None:
        self.cfg, self.completer = cfg, completer
        self.name = cfg.served_name()
        self.context = completer.context
        self.scheduler = Scheduler(completer, cfg.max_batch, cfg.queue_size, cfg.prompt_cache)
        # A prompt past the context loses its start in steps of 1/8 of the context, not token by token, so an
        # editor's growing file keeps its first tokens (and the prompt cache its hits) across keystrokes.
        self.cut_step = max(1, self.context // 8) if self.scheduler.prompt_cache else 1
        self.created = int(time.time())
        self.tokenizing = asyncio.Semaphore(max(1, min(4, os.cpu_count() or 1)))  # long prompts at once, off-loop
        completer.tokens("x")  # the tokenizer sets its state on its first call: not from two threads at once

    def job(self, s: Sampling, emit: Any) -> tuple[Job, int]:
        """A worker job for one prompt, and how many prompt tokens were cut to fit the context."""
        ids, cut, max_new, healed = self.completer.prepare(
            s.prompt, s.suffix, s.max_tokens, False, s.heal, self.cut_step
        )
        stoppers = [Stopper(s.prompt, s.stop, s.scope, len(healed)) for _ in range(s.n)]
        deadline = time.monotonic() + s.time_limit_ms / 1000 if s.time_limit_ms else None
        seed = s.seed if s.seed is not None else secrets.randbits(63)
        temperature = s.temperature if s.temperature >= 1e-6 else 0.0
        job = Job(ids, s.n, max_new, temperature, s.top_p, s.top_k, stoppers, seed, emit, s.stream, deadline)
        job.healed = healed
        return job, cut

    async def in_worker(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in the model worker's thread, the only one that runs torch (see scheduler.py); its
        failure comes back as WorkerError."""
        try:
            return await asyncio.wrap_future(self.scheduler.call(functools.partial(fn, *args)))
        except Exception as e:
            raise WorkerError(f"{type(e).__name__}: {e}") from None

    async def submit(self, samplings: list[Sampling]) -> tuple[list[Job], list[int], asyncio.Queue] | Response:
        """Queue one job per prompt, all or none; or the error response (400 for a prompt that cannot fit
        with its suffix, 503 when the queue is full). Long prompts are tokenised off the event loop, so a
        megabyte prompt does not hold up every other request (and /health)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        size = sum(len(s.prompt) + len(s.suffix or "") for s in samplings)
        if not self.scheduler.admit(len(samplings)):  # a full queue refuses before any tokenizing
            return _busy()
        try:
            if size > OFF_LOOP_CHARS:
                async with self.tokenizing:
                    jobs, cuts = await asyncio.to_thread(self._jobs, samplings, loop, events)
            else:
                jobs, cuts = self._jobs(samplings, loop, events)
        except BadRequest as e:
            return error(400, e.message, e.param)
        except Exception as e:  # the tokenizer or the fitting: the prompt, not the server
            return error(400, f"cannot use this prompt: {e}", "prompt")
        for k, job in enumerate(jobs):
            if not self.scheduler.submit(job):
                for earlier in jobs[:k]:
                    earlier.cancelled.set()
                return _busy()
        return jobs, cuts, events

    def _jobs(
        self, samplings: list[Sampling], loop: asyncio.AbstractEventLoop, events: asyncio.Queue
    ) -> tuple[list[Job], list[int]]:
        jobs, cuts = [], []
        for i, s in enumerate(samplings):
            job, cut = self.job(s, _emitter(loop, events, i))
            jobs.append(job)
            cuts.append(cut)
        return jobs, cuts


def _busy() -> Response:
    return error(503, "the server is busy: too many requests are queued", code="overloaded", **{"Retry-After": "1"})


def _emitter(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, index: int) -> Any:
    def emit(kind: str, row: int | None, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            loop.call_soon_threadsafe(events.put_nowait, (index, kind, row, value))

    return emit


class ClientGone(Exception):
    """The client disconnected before its request was whole: nothing to answer, one log line."""


async def read_body(request: Request) -> Any:
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise ClientGone from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal past Python's digit limit
        raise BadRequest(f"the body is not valid JSON: {e}") from None


async def gather(
    request: Request, jobs: list[Job], events: asyncio.Queue
) -> dict[int, dict[int, Completion]] | Response:
    """Wait for every row of every job; cancel them all if the client goes away (then None is not needed)."""
    results: dict[int, dict[int, Completion]] = {i: {} for i in range(len(jobs))}
    ended = 0
    while ended < len(jobs):
        try:
            index, kind, row, value = await asyncio.wait_for(events.get(), POLL_S)
        except asyncio.CancelledError:  # the server is going down under us: the worker may stop these
            for job in jobs:
                job.cancelled.set()
            raise
        except TimeoutError:
            if await request.is_disconnected():
                for job in jobs:
                    job.cancelled.set()
                return Response(status_code=499)
            continue
        if kind == "done":
            results[index][row] = value
        elif kind == "end":
            ended += 1
            if value:  # the worker failed or is stopping
                for job in jobs:
                    job.cancelled.set()
                return error(500, str(value), code="server_error")
    return results


def create_app(cfg: ServeConfig, completer: Completer, start_worker: bool = True) -> FastAPI:
    server = Server(cfg, completer)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_worker:
            server.scheduler.start()
        yield
        server.scheduler.stop()

    app = FastAPI(title="PYCPilot", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server
    # Inside CORS (added last, so outermost): a 401 still carries CORS headers.
    app.add_middleware(Guard, cfg=cfg, error=error)
    origins = [o for o in cfg.cors_origins if o != "*"]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if "*" in cfg.cors_origins else origins,
        allow_origin_regex=None if "*" in cfg.cors_origins else LOOPBACK_ORIGINS,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "x-api-key"],
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), **(exc.headers or {}))  # 405 keeps its Allow

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return error(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> Response:
        log_gone(request.scope)
        return Response(status_code=499)

    @app.exception_handler(WorkerError)
    async def worker_failed(request: Request, exc: WorkerError) -> Response:
        return error(500, f"the model worker failed: {exc}", code="server_error")

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, Any]:
        worker = server.scheduler.health()
        status = "ok" if worker["worker"] == "running" else "error"
        return {"status": status, "model": server.name, "engine": completer.engine, "context": server.context,
                "last_error": server.scheduler.error, **worker}  # fmt: skip

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models() -> dict[str, Any]:
        card = {"id": server.name, "object": "model", "created": server.created, "owned_by": "pycpilot"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
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
            for r in range(s.n):
                c = results[i][r]
                used += c.tokens
                text = (s.prompt if s.echo else "") + c.text
                lp = None
                if s.logprobs is not None:
                    skip = job.stoppers[0].skip
                    lp = await server.in_worker(
                        logprobs_object, completer, job.ids, _kept(completer, c), s.logprobs, s.echo, skip
                    )
                choices.append({"text": text, "index": i * s.n + r, "logprobs": lp, "finish_reason": c.finish_reason})
        prompt_tokens = sum(len(j.ids) for j in jobs)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": used, "total_tokens": prompt_tokens + used}
        body = {**head, "choices": choices, "usage": usage}
        if warning:
            body["warning"] = warning
        return JSONResponse(body)

    @app.post("/infill")
    async def infill(request: Request) -> Response:
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

    @app.api_route("/", methods=["GET", "HEAD"])
    async def playground() -> Response:
        page = files("pycpilot.serve").joinpath("playground.html").read_text(encoding="utf-8")
        return HTMLResponse(page.replace("{{MODEL}}", html.escape(server.name)), headers=_PAGE_HEADERS)

    @app.api_route("/playground.js", methods=["GET", "HEAD"])
    async def playground_js() -> Response:
        script = files("pycpilot.serve").joinpath("playground.js").read_text(encoding="utf-8")
        return Response(script, media_type="text/javascript", headers=_PAGE_HEADERS)

    return app


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _cut_warning(cuts: list[int]) -> str | None:
    if not any(cuts):
        return None
    return f"the prompt was longer than the model's context: its first {max(cuts)} tokens were cut"


def _kept(completer: Completer, c: Completion) -> list[int]:
    """The completion's tokens without the end-of-text that closed it."""
    return c.ids[:-1] if c.ids and c.ids[-1] in completer.stop_ids else list(c.ids)


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n".encode()


async def _stream_openai(
    server: Server,
    samplings: list[Sampling],
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
            yield _sse({**head, "choices": [], "warning": warning})
        for i, s in enumerate(samplings):
            if s.echo and s.prompt:
                for r in range(s.n):
                    yield _sse({**head, "choices": [_chunk(i * s.n + r, s.prompt)]})
        while ended < len(jobs):
            index, kind, row, value = await events.get()
            s, n = samplings[index], samplings[index].n
            if kind == "text":
                yield _sse({**head, "choices": [_chunk(index * n + row, value)]})
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
                        yield _sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
                        break
                yield _sse({**head, "choices": [_chunk(index * n + row, "", value.finish_reason, lp)]})
            elif kind == "end":
                ended += 1
                if value:
                    yield _sse({"error": {"message": str(value), "type": "server_error", "param": None, "code": None}})
                    break
        yield _sse("[DONE]")
    finally:
        for job in jobs:
            job.cancelled.set()  # a no-op for finished jobs; stops the rest when the client left


def _chunk(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}


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
                yield _sse({"content": value, "stop": False})
            elif kind == "done":
                yield _sse({"content": "", "stop": True, **_infill_stats(server, job, cut, value, start)})
            elif kind == "end":
                if value:
                    yield _sse({"error": {"message": str(value), "type": "server_error"}})
                return
    finally:
        job.cancelled.set()
