"""Starting real servers for the tests: `pycpilot serve` as a process, or the app in this process (for the
tests that must hold the model worker back)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def start_process(model: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`pycpilot serve --port 0 ...`; returns the process and its base URL once /health answers."""
    exe = str(Path(sys.executable).with_name("pycpilot"))
    proc = subprocess.Popen(
        [exe, "serve", "--model", str(model), "--port", "0", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r"at (http://[^/]+)/", line)
    if not found:
        proc.kill()
        raise AssertionError(f"serve did not start: {line}{proc.stderr.read()}")
    base = found.group(1)
    wait_healthy(base)
    return proc, base


def wait_healthy(base: str, timeout: float = 60.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} never became healthy")


class InProcess:
    """The app on uvicorn in a thread of this process, on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        from pycpilot.serve.run import bind

        self.sock = bind("127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        wait_healthy(self.base)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
