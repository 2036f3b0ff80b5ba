"""What the routes share: the loaded model and its worker (`Server`), one error shape, reading a body,
waiting for a job's rows, and the server-sent events framing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from pycpilot.generate.batch import Job
from pycpilot.generate.complete import Completer, Completion
from pycpilot.generate.text import Stopper
from pycpilot.serve.config import ServeConfig
from pycpilot.serve.requests import BadRequest, PromptRequest
from pycpilot.serve.scheduler import Scheduler

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

    def job(self, s: PromptRequest, emit: Any) -> tuple[Job, int]:
        """A worker job for one prompt, and how many prompt tokens were cut to fit the context."""
        ids, cut, max_new, healed = self.completer.prepare(
            s.prompt, s.suffix, s.params.max_new_tokens, False, s.heal, self.cut_step
        )
        params = replace(s.params, max_new_tokens=max_new)
        stoppers = [Stopper(s.prompt, params.stop, params.scope, len(healed.decode())) for _ in range(params.n)]
        deadline = time.monotonic() + s.time_limit_ms / 1000 if s.time_limit_ms else None
        return Job(ids, params, stoppers, emit, s.stream, deadline, healed=healed), cut

    async def in_worker(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in the model worker's thread, the only one that runs torch (see scheduler.py); its
        failure comes back as WorkerError."""
        try:
            return await asyncio.wrap_future(self.scheduler.call(functools.partial(fn, *args)))
        except Exception as e:
            raise WorkerError(f"{type(e).__name__}: {e}") from None

    async def submit(self, samplings: list[PromptRequest]) -> tuple[list[Job], list[int], asyncio.Queue] | Response:
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
        self, samplings: list[PromptRequest], loop: asyncio.AbstractEventLoop, events: asyncio.Queue
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


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n".encode()
