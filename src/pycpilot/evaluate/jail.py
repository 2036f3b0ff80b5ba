"""The host's end of a jail: start the launcher (isolation.py, run as `-c` source), send it programs one by one
through its stdin and read each answer from its stdout (length-prefixed JSON frames), kill it when it hangs.
sandbox.py decides what runs and in which isolation; this module only talks to one jail.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pycpilot.evaluate import isolation

STARTUP_S = 30.0  # a jail that is not ready by then is broken, not slow
GRACE_S = 10.0  # on top of the timeout: the jail kills and cleans up by itself, the host only guards against a hang
# Everything a program sees of the environment: no variable of the parent leaks.
JAIL_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class JailError(Exception):
    pass


def interpreter() -> str:
    # The base interpreter, not the venv's launcher: programs get the standard library and nothing installed.
    return os.path.realpath(sys.executable)


@functools.cache
def jail_source() -> str:
    return Path(isolation.__file__).read_text(encoding="utf-8")


class Jail:
    """The host's end of one jail: a launcher process in its own session, talked to through its pipes."""

    def __init__(self, settings: dict[str, Any]) -> None:
        argv = [interpreter(), "-s", "-S", "-P", "-B", "-c", jail_source(), isolation.SIGNATURE, json.dumps(settings)]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=JAIL_ENV,
            cwd="/",
            start_new_session=True,
        )
        try:
            hello = self._receive(STARTUP_S)
        except TimeoutError:
            hello = None
        if not hello or not hello.get("ready"):
            raise JailError(self._why())

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        """One answer frame; None at end of file; TimeoutError past `timeout`."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout

        def read(n: int) -> bytes | None:
            data = bytearray()
            while len(data) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise TimeoutError
                chunk = os.read(fd, n - len(data))
                if not chunk:
                    return None
                data += chunk
            return bytes(data)

        header = read(4)
        body = read(struct.unpack(">I", header)[0]) if header else None
        return json.loads(body) if body else None

    def run(self, program: bytes, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(struct.pack(">I", len(program)) + program)
            self.proc.stdin.flush()
        except OSError as exc:
            raise JailError(self._why()) from exc
        answer = self._receive(timeout)
        if answer is None:
            raise JailError(self._why())
        return answer

    def _why(self) -> str:
        """The jail's last words (the launcher prints one line on stderr when it cannot build the jail)."""
        self.kill()
        assert self.proc.stderr is not None
        lines = self.proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        code = self.proc.returncode
        return lines[-1] if lines else f"the jail stopped (exit status {code})"

    def kill(self) -> None:
        # The launcher leads its own session; the jail's init dies with it (parent-death signal) and takes every
        # process of the pid namespace along. Once reaped, its pid may belong to someone else: no signal then.
        if self.proc.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # end of file: the jail kills what is left and exits
            self.proc.wait(timeout=5)
        self.kill()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def encode(program: str | bytes) -> bytes:
    # surrogatepass: any str encodes; lone surrogates become invalid UTF-8 that the program's compile reports.
    return program if isinstance(program, bytes) else program.encode("utf-8", "surrogatepass")


def count_leftovers() -> int:
    """Processes of any jail still alive (found by the signature in their command line); 0 after a run."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            count += isolation.SIGNATURE.encode() in cmdline.split(b"\0")
    return count
