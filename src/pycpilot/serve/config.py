"""`ServeConfig`: what `pycpilot serve` takes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pycpilot.errors import PycpilotError
from pycpilot.generate.complete import ENGINES
from pycpilot.generate.text import SCOPES

LOOPBACK_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"


@dataclass
class ServeConfig:
    model: Path
    host: str = "127.0.0.1"  # loopback only unless asked
    port: int = 8000
    api_key: str | None = None  # then every API call needs `Authorization: Bearer KEY` or `x-api-key: KEY`
    cors_origins: list[str] = field(default_factory=list)  # beyond loopback pages; "*" for any
    # Host names beyond localhost, IP addresses and --host that requests may name ("*": any; see guard.py)
    allowed_hosts: list[str] = field(default_factory=list)
    model_name: str | None = None  # default: pycpilot-<folder name>, never containing "gpt"
    max_batch: int = 8  # rows decoded side by side (a request takes n of them)
    queue_size: int = 32  # requests waiting beyond those running; past it: 503 + Retry-After
    max_request_kb: int = 1024  # request bodies past this get 413
    default_scope: str = "file"  # requests without "scope": OpenAI's behaviour (stops, EOS, max_tokens only)
    engine: str = "auto"
    int8: bool = False
    prompt_cache: bool = True  # a new prompt reuses a finished one's shared beginning (see scheduler.py)
    threads: int | None = None
    device: str = "auto"  # auto: a CUDA GPU when torch sees one (torch engine), else the CPU
    log_level: str = "warning"

    def validate(self) -> None:
        checks = [
            (0 <= self.port <= 65535, "--port must be between 0 and 65535 (0: any free port)"),
            (1 <= self.max_batch <= 256, "--max-batch must be between 1 and 256"),
            (1 <= self.queue_size <= 100_000, "--queue-size must be between 1 and 100000"),
            (self.threads is None or 1 <= self.threads <= 64, "--threads must be between 1 and 64"),
            (1 <= self.max_request_kb <= 1_048_576, "--max-request-kb must be between 1 and 1048576"),
            (self.default_scope in SCOPES, f"--default-scope must be one of {', '.join(SCOPES)}"),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
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
