"""PYCPilot: from a pile of Python code to a trained, evaluated and served code-completion model."""

import os
import sys

# torch's OpenMP threads otherwise spin for a long while after each parallel region (GNU OpenMP's default);
# while generating, that spinning takes the cores the decode step's own threads need (145 -> 99 us per tiny
# token, measured). Training speed is unchanged. It only takes effect if torch is not imported yet.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# Progress bars written to a log or a pipe (not a terminal) redraw every 10 s, not ten times a second: a
# 4-minute training otherwise leaves ~2,400 bar lines in a CI log. tqdm reads TQDM_* defaults from the env.
if not (sys.stderr and sys.stderr.isatty()):
    os.environ.setdefault("TQDM_MININTERVAL", "10")

__version__ = "0.1.0"
