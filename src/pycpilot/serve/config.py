"""`ServeConfig`: what `pycpilot serve` takes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pycpilot.errors import PycpilotError
from pycpilot.generate.config import device_setting, engine_setting, threads_setting
from pycpilot.generate.text import SCOPES
from pycpilot.settings import check, setting

LOOPBACK_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"


@dataclass
class ServeConfig:
    """`serve(ServeConfig(...))` is the Python entry point of `pycpilot serve`."""

    model: Path = setting(help="model folder, checkpoint, or training --out")
    host: str = setting("127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    port: int = setting(8000, help="port (0: any free one)", low=0, high=65535)
    api_key: str | None = setting(None, help="require this key (Authorization: Bearer KEY or x-api-key: KEY)")
    cors_origins: list[str] = setting(
        help="also allow browser pages from this origin (repeatable; * for any); loopback pages always may",
        factory=list,
        flag="--cors-origin",
    )
    allowed_hosts: list[str] = setting(
        help="also answer requests naming this host (repeatable; * for any); localhost, IP addresses and --host "
        "always may: other names are refused, which stops DNS rebinding",
        factory=list,
        flag="--allowed-host",
    )
    model_name: str | None = setting(None, help='the name clients use (default: pycpilot-<folder>; never with "gpt")')
    max_batch: int = setting(8, help="rows decoded side by side (a request takes n of them)", low=1, high=256)
    queue_size: int = setting(
        32, help="requests that may wait beyond those running; beyond: 503 + Retry-After", low=1, high=100_000
    )
    max_request_kb: int = setting(1024, help="largest request body in KiB (past it: 413)", low=1, high=1_048_576)
    default_scope: str = setting(
        "file",
        help="where completions stop when a request does not say (file: as OpenAI; /infill uses block)",
        choices=SCOPES,
    )
    engine: str = engine_setting()
    int8: bool = setting(False, help="int8 weights (faster; costs a little accuracy)")
    prompt_cache: bool = setting(
        True,
        help="run every prompt whole (default: reuse the beginning a finished prompt shares with a new one)",
        negative=True,
    )
    threads: int | None = threads_setting()
    device: str = device_setting()
    log_level: str = setting("warning", help="server log", choices=("critical", "error", "warning", "info", "debug"))

    def validate(self) -> None:
        check(self)
        checks = [
            (self.api_key is None or len(self.api_key) >= 8, "--api-key must be at least 8 characters"),
            (self.model_name is None or "gpt" not in self.model_name.lower(), _GPT_NAME),
            (all(o == "*" or re.fullmatch(r"https?://[^/\s]+", o) for o in self.cors_origins), _ORIGIN),
            (all(h == "*" or re.fullmatch(r"[A-Za-z0-9._-]{1,253}", h) for h in self.allowed_hosts), _HOST),
        ]
        for ok, message in checks:
            if not ok:
                raise PycpilotError(message)

    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        folder = Path(self.model).resolve().name or "model"
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder)
        return "pycpilot-" + re.sub("gpt", "", name, flags=re.IGNORECASE).strip("-._")


_GPT_NAME = '--model-name must not contain "gpt": clients switch to chat-style prompts on that word'
_HOST = "--allowed-host takes a host name like example.lan (no scheme, port or path) or *"
_ORIGIN = "--cors-origin takes an origin like https://example.com (scheme and host, no path) or *"
