"""What every request passes before a route sees it: the Host check, the API key, the body's type and size.

The security model (README, "Serving"): by default the server listens on loopback only, so other machines
cannot reach it. A web page in the user's browser still can, two ways, and both are closed here:
- a cross-origin POST that needs no preflight (a form's or `text/plain` body): the JSON routes accept only
  `Content-Type: application/json`, which a page can send cross-origin only after a preflight that CORS refuses
  for origins other than loopback pages and `--cors-origin`;
- DNS rebinding (a page's own host name re-pointed at 127.0.0.1, so it is same-origin and may read answers):
  such requests carry the attacker's name in `Host`, and only names this server answers to are accepted
  (IP literals, `localhost`, the `--host` it listens on and `--allowed-host`).
`--api-key` then protects the API from everyone else as well.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
from typing import Any

from pycpilot.serve.config import ServeConfig

OPEN_PATHS = {"/", "/playground.js", "/health"}  # no API key needed: the page asks for it, health says little
JSON_ROUTES = {"/v1/completions", "/infill"}
LOG = logging.getLogger("uvicorn.error")  # uvicorn's own log: follows --log-level


def log_gone(scope: dict) -> None:
    """One line for a client that disconnected before its request was whole (never a traceback)."""
    client = scope.get("client")
    who = f"{client[0]}:{client[1]}" if client else "a client"
    LOG.warning("%s left while sending %s %s: request dropped", who, scope.get("method"), scope.get("path"))


def allowed_hosts(cfg: ServeConfig) -> set[str] | None:
    """Host names (lower case, no port) this server answers to; None: any (`--allowed-host '*'`)."""
    if "*" in cfg.allowed_hosts:
        return None
    names = {"localhost", cfg.host.lower().strip("[]"), *(h.lower() for h in cfg.allowed_hosts)}
    if _is_wildcard(cfg.host):  # listening on every address: the machine's own names reach it too
        names.add(socket.gethostname().lower())  # not getfqdn: a DNS lookup that can hang offline
    return names


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def host_name(header: str) -> str:
    """`Host` without its port: 'example.com:8000' -> 'example.com', '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_ok(header: str | None, names: set[str] | None) -> bool:
    if names is None or not header:  # no Host: HTTP/1.0 tools; browsers always send one
        return True
    name = host_name(header)
    try:
        ipaddress.ip_address(name)
        return True  # an address, not a name: DNS rebinding needs a name
    except ValueError:
        pass
    return name in names or name.endswith(".localhost")  # browsers resolve *.localhost to loopback themselves


def is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


def authorized(headers: dict[str, str], key: str) -> bool:
    given = headers.get("x-api-key", "")
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


class Guard:
    """Host, API key, body type and size, as plain ASGI (so the routes still see the client leave): a body
    without a Content-Length is read here up to the cap, then replayed."""

    def __init__(self, app: Any, cfg: ServeConfig, error: Any) -> None:
        self.app, self.cfg, self.error = app, cfg, error
        self.limit = cfg.max_request_kb * 1024
        self.hosts = allowed_hosts(cfg)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not host_ok(headers.get("host"), self.hosts):
            shown = host_name(headers.get("host", ""))[:100]
            message = f"this server does not answer to the host name {shown!r} (start it with --allowed-host {shown})"
            return await self.error(400, message, code="host_not_allowed")(scope, receive, send)
        if scope["method"] == "OPTIONS":  # CORS preflights: the CORS layer answers
            return await self.app(scope, receive, send)
        key = self.cfg.api_key
        if key and scope["path"] not in OPEN_PATHS and not authorized(headers, key):
            message = "a valid API key is needed: Authorization: Bearer KEY or x-api-key: KEY"
            return await self.error(401, message, code="invalid_api_key")(scope, receive, send)
        if scope["method"] == "POST" and scope["path"] in JSON_ROUTES and not is_json(headers.get("content-type")):
            message = "the body must be JSON sent with Content-Type: application/json"
            return await self.error(415, message, code="unsupported_media_type")(scope, receive, send)
        too_large = self.error(413, f"the request body is larger than {self.cfg.max_request_kb} KiB", code="too_large")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                return await too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                log_gone(scope)
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_large(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
