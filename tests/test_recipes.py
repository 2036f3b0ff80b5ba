"""Recipe files: aliases, huge files, non-text keys and huge values give one line, quickly and in little memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pycpilot.errors import PycpilotError
from pycpilot.recipes import read_mapping
from pycpilot.run.config import load_run_recipe
from pycpilot.settings import coerce
from pycpilot.train.config import TrainConfig, load_recipe

from conftest import write


def _bomb(levels: int = 9, width: int = 9) -> str:
    """Nested YAML aliases: a few hundred bytes that expand to width**levels items."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    lines.append(f"train: {{lr: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_in_one_line_quickly_and_in_little_memory(tmp_path: Path) -> None:
    bomb = write(tmp_path / "bomb.yaml", _bomb())
    assert bomb.stat().st_size < 1000
    # In a child with 1.5 GB of address space (the bomb's message alone took 3.7 GB) and a time limit.
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29)); "
        "from pycpilot.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["run", "--recipe", str(bomb), "--out", str(tmp_path / "run"), "-q"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "aliases (*name) are not allowed" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    with pytest.raises(PycpilotError, match="aliases"):
        load_recipe(write(tmp_path / "train.yaml", "x: &v 1\nlr: *v\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {3: 4}\n", r"recipe .*, train: setting names must be text, not int 3"),
        ("{1: {lr: 3}}\n", r"setting names must be text, not int 1"),
        ("[1, 2]\n", r"must be a mapping of settings, not a list"),
        ("train: {lr: [1, 2\n", r"is not valid YAML: "),
        ("\xff\n", r"not UTF-8"),
    ],
)
def test_malformed_run_recipes_are_one_line(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(PycpilotError, match=message):
        load_run_recipe(path)


def test_a_huge_recipe_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = write(tmp_path / "big.yaml", "train:\n" + "  # padding\n" * 200_000)
    with pytest.raises(PycpilotError, match=r"big.yaml is over [\d,]+ bytes: too large for a recipe"):
        read_mapping(path)


def test_messages_show_a_short_prefix_never_the_whole_value(tmp_path: Path) -> None:
    huge = ["y" * 1000] * 10_000
    with pytest.raises(PycpilotError) as caught:
        coerce(TrainConfig, {"lr": huge}, "train")
    assert "a list of 10,000 items" in str(caught.value) and len(str(caught.value)) < 200
    with pytest.raises(PycpilotError) as caught:
        load_recipe(write(tmp_path / "t.yaml", f"batch_size: {'z' * 5000}\n"))
    assert "(5,000 characters)" in str(caught.value) and len(str(caught.value)) < 300
    with pytest.raises(PycpilotError, match="setting names must be text"):
        load_recipe(write(tmp_path / "k.yaml", "3: 4\n"))
    with pytest.raises(PycpilotError, match=r"batch_size must be int or null, not inf"):
        load_recipe(write(tmp_path / "inf.yaml", "batch_size: .inf\n"))
