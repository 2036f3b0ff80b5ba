"""The HTTP side of `pycpilot serve`: the FastAPI app, its guards and error handlers, and its routes.

POST /v1/completions (OpenAI's legacy Completions, openai_api.py), POST /infill (llama.cpp's, infill_api.py),
GET /v1/models, GET /health, and GET / (the playground). Requests become jobs in the worker's bounded queue
(server.py); their events come back to the event loop through an asyncio queue; a client that goes away
cancels its job.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from pycpilot.generate.complete import Completer
from pycpilot.serve.config import LOOPBACK_ORIGINS, ServeConfig
from pycpilot.serve.guard import Guard, log_gone
from pycpilot.serve.infill_api import infill
from pycpilot.serve.openai_api import completions, models
from pycpilot.serve.requests import BadRequest
from pycpilot.serve.server import ClientGone, Server, WorkerError, error

_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
GET = ["GET", "HEAD"]


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
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(ClientGone, _client_gone)
    app.add_exception_handler(WorkerError, _worker_failed)
    app.add_api_route("/health", health, methods=GET)
    app.add_api_route("/v1/models", models, methods=GET)
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    app.add_api_route("/infill", infill, methods=["POST"])
    app.add_api_route("/", playground, methods=GET)
    app.add_api_route("/playground.js", playground_js, methods=GET)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error(exc.status_code, str(exc.detail), **(exc.headers or {}))  # 405 keeps its Allow


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return error(exc.status, exc.message, exc.param, exc.code)


async def _client_gone(request: Request, exc: Exception) -> Response:
    log_gone(request.scope)
    return Response(status_code=499)


async def _worker_failed(request: Request, exc: Exception) -> Response:
    return error(500, f"the model worker failed: {exc}", code="server_error")


async def health(request: Request) -> dict[str, Any]:
    server: Server = request.app.state.server
    worker = server.scheduler.health()
    status = "ok" if worker["worker"] == "running" else "error"
    return {"status": status, "model": server.name, "engine": server.completer.engine, "context": server.context,
            "last_error": server.scheduler.error, **worker}  # fmt: skip


async def playground(request: Request) -> Response:
    server: Server = request.app.state.server
    page = files("pycpilot.serve").joinpath("playground.html").read_text(encoding="utf-8")
    return HTMLResponse(page.replace("{{MODEL}}", html.escape(server.name)), headers=_PAGE_HEADERS)


async def playground_js(request: Request) -> Response:
    script = files("pycpilot.serve").joinpath("playground.js").read_text(encoding="utf-8")
    return Response(script, media_type="text/javascript", headers=_PAGE_HEADERS)
