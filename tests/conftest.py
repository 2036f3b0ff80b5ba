"""Shared helpers: small Python files written by the tests themselves."""

from __future__ import annotations

import os
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


def write_repos(root: Path, make, repos: int = 4, files: int = 6, stem: str = "m") -> Path:
    """`repos` git repositories of `files` files each under `root`, file f of repository r being make(r, f)."""
    for r in range(repos):
        (root / f"repo{r}" / ".git").mkdir(parents=True)
        for f in range(files):
            write(root / f"repo{r}" / f"{stem}{f}.py", make(r, f))
    return root


@pytest.fixture
def cfg_for(tmp_path: Path):
    """DataConfig with quiet output and one process (fast); tests override what they exercise."""

    def make(*sources: Path | str, **kw) -> DataConfig:
        kw.setdefault("num_proc", 1)
        kw.setdefault("quiet", True)
        kw.setdefault("out", tmp_path / "out")
        return DataConfig(sources=[str(s) for s in sources], **kw)

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A whole tiny pipeline: corpus -> data -> tokenizer (with FIM tokens) -> pack -> 40 training steps.

    Returns the training `--out` folder (final model at its top, checkpoints/ below)."""
    from pycpilot.data import build_dataset
    from pycpilot.pack import PackConfig, pack_dataset
    from pycpilot.tokenizer import TokenizerConfig, train_tokenizer
    from pycpilot.train import TrainConfig, train

    root = tmp_path_factory.mktemp("gcorpus")
    for r in range(4):
        (root / f"repo{r}" / ".git").mkdir(parents=True)
        for f in range(6):
            write(root / f"repo{r}" / f"m{f}.py", good_code(f"g{r}x{f}", extra=f))
    data, tok, packed, out = (root.parent / n for n in ("gdata", "gtok", "gpacked", "gmodel"))
    build_dataset(DataConfig(out=data, sources=[str(root)], num_proc=1, quiet=True, valid_fraction=0.25))
    train_tokenizer(TokenizerConfig(data=data, out=tok, vocab_size=400, quiet=True, compare="none"))
    pack_dataset(PackConfig(data=data, tokenizer=tok, out=packed, context_length=64, quiet=True))
    # 256 positions for blocks of 64: the serve and complete tests need prompts longer than a block
    config = dict(n_layer=2, n_head=2, n_embd=64, n_positions=256, batch_size=8, lr=1e-2, warmup_steps=5,
                  precision="fp32")  # fmt: skip
    train(TrainConfig(packed=packed, out=out, max_steps=40, save_every=20, eval_every=1000, quiet=True, **config))
    return out


@pytest.fixture(scope="session")
def train_pack(tmp_path_factory) -> Path:
    """A small corpus packed in blocks of 32 with a 320-token vocabulary (only read by the tests that use it)."""
    from pycpilot.data import build_dataset
    from pycpilot.pack import PackConfig, pack_dataset
    from pycpilot.tokenizer import TokenizerConfig, train_tokenizer

    root = tmp_path_factory.mktemp("tcorpus")
    for r in range(4):
        (root / f"repo{r}" / ".git").mkdir(parents=True)
        for f in range(6):
            write(root / f"repo{r}" / f"m{f}.py", good_code(f"t{r}x{f}", extra=f))
    data, tok, out = root.parent / "tdata", root.parent / "ttok", root.parent / "tpacked"
    build_dataset(DataConfig(out=data, sources=[str(root)], num_proc=1, quiet=True, valid_fraction=0.25))
    train_tokenizer(TokenizerConfig(data=data, out=tok, vocab_size=320, quiet=True, compare="none"))
    pack_dataset(PackConfig(data=data, tokenizer=tok, out=out, context_length=32, quiet=True))
    return out


@pytest.fixture
def messy_repo(tmp_path: Path) -> Path:
    """One repository holding two good files and one file for each way a file can be dropped."""
    root = tmp_path / "corpus" / "messy"
    (root / ".git").mkdir(parents=True)
    write(root / "good_one.py", good_code("alpha"))
    write(root / "good_two.py", good_code("gamma", extra=20))
    # Equal to good_one.py up to whitespace.
    write(root / "zz_dup.py", good_code("alpha").replace("    ", "\t").replace("\n\n", "\n \n"))
    # A near duplicate of good_two.py: one helper renamed among ~70 distinct tokens.
    write(root / "zz_near.py", good_code("gamma", extra=20).replace("helper_gamma_3(", "helper_gamma_99("))
    from pycpilot.data.decontaminate import load_humaneval

    problem = load_humaneval()[0]
    write(root / "contaminated.py", good_code("delta") + "\n\n" + problem["prompt"] + problem["canonical_solution"])
    write(root / "binary.py", b"x = 1\x00\x01\x02\n")
    write(root / "latin1.py", "# caf\xe9\nx = 1\n".encode("latin-1") + good_code("eps").encode())
    write(root / "empty.py", "")
    write(root / "blank.py", "\n   \n\t\n")
    write(root / "huge.py", good_code("huge") + "\n" + "z = 1\n" * 5000)
    (root / "broken_link.py").symlink_to(root / "missing_target.py")
    (root / "loop_a.py").symlink_to(root / "loop_b.py")
    (root / "loop_b.py").symlink_to(root / "loop_a.py")
    (root / "sub").mkdir()
    (root / "sub" / "back").symlink_to(root, target_is_directory=True)
    os.mkfifo(root / "fifo.py")
    write(root / "autogen.py", "# Automatically generated by tooling, do not edit\n" + good_code("auto"))
    write(root / "long_line.py", good_code("longl") + "\nDATA = '" + "x" * 1200 + "'\n")
    write(
        root / "wide.py",
        "\n".join(f"value_{i} = '{'w' * 150}'  # {i}" for i in range(30)) + "\nfor _ in []:\n    pass\n",
    )
    write(root / "symbols.py", "x = 1\ny = 2\nz = 3\nw = 4\nv = 5\nfor _ in []: pass\n" + "#" * 400 + "\n")
    write(root / "config_like.py", "# Configuration file for the build\n" + good_code("conf"))
    write(root / "no_keywords.py", "\n".join(f"name_{i} = compute({i})" for i in range(20)) + "\n")
    write(root / "few_assign.py", "def f(a):\n    return a + 1\n\n\ndef g(b):\n    return f(b) * 2\n")
    write(root / "py2.py", good_code("oldie") + "\nprint 'hello'\n")
    write(root / "notes.txt", "not python\n")
    return tmp_path / "corpus"
