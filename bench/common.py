"""Helpers shared by the benchmarks (run as `python bench/NAME.py`, so this imports as `common`)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name, for the table header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# A child's ru_maxrss starts from the RSS of the process that forked it (Linux carries the old memory's high-water
# mark over exec), so a child of a benchmark that holds a lot of memory would report the benchmark's peak.
# This launcher, a bare interpreter of ~10 MiB, starts the command, waits for it with wait4 and prints the
# command's own ru_maxrss (KiB on Linux) and wall seconds.
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
print(proc.returncode, usage.ru_maxrss, time.perf_counter() - start)
"""
