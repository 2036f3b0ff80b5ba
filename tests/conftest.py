"""Shared helpers: small Python files written by the tests themselves."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pycpilot.data import DataConfig


def good_code(name: str, extra: int = 0) -> str:
    """A plausible, distinct source file that passes every default filter."""
    body = textwrap.dedent(f'''
        """Helpers for {name}."""
        import math


        class {name.title()}Store:
            def __init__(self, size):
                self.size = size
                self.items = []
                self.total_{name} = 0

            def add_{name}(self, value):
                self.items.append(value)
                self.total_{name} = self.total_{name} + value
                return len(self.items)


        def mean_{name}(values):
            total = 0
            for value in values:
                total = total + value
            count = len(values)
            return total / count if count else math.nan
        ''')
    for i in range(extra):
        body += f"\n\ndef helper_{name}_{i}(x):\n    y = x * {i}\n    return y + {i}\n"
    return body


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def cfg_for(tmp_path: Path):
    """DataConfig with quiet output and one process (fast); tests override what they exercise."""

    def make(*sources: Path | str, **kw) -> DataConfig:
        kw.setdefault("num_proc", 1)
        kw.setdefault("quiet", True)
        kw.setdefault("out", tmp_path / "out")
        return DataConfig(sources=[str(s) for s in sources], **kw)

    return make
