"""The native (C) decode step: the same numbers as the torch step, threads, int8, and a clear fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pycpilot.errors import PycpilotError
from pycpilot.generate import Completer
from pycpilot.generate import native as native_module
from pycpilot.generate.decode import FastGPT2

PROMPT = "class Store:\n    def __init__(self, size):\n        self.size = size\n"


@pytest.fixture(scope="module")
def model(tiny_run: Path):
    return Completer(tiny_run, engine="torch").model


def _decode_logits(fast: FastGPT2, ids: list[int], new: list[list[int]]) -> list[torch.Tensor]:
    """Prompt through torch into row 0, copied to every row; then one step per entry of `new` (a token per row)."""
    cache = fast.new_cache(len(new[0]), len(ids) + len(new))
    fast.step(torch.tensor([ids]), 0, cache.row(0))
    cache.copy_row(0, len(ids))
    return [fast.step(torch.tensor(tokens)[:, None], len(ids) + i, cache) for i, tokens in enumerate(new)]


def test_the_native_step_computes_what_the_torch_step_does(model) -> None:
    native, plain = FastGPT2(model), FastGPT2(model, native=False)
    assert native.lib is not None, native.native_note
    assert plain.lib is None
    ids = list(range(5, 60))
    new = [[7, 100, 200], [8, 9, 10], [11, 50, 12]]  # three rows that differ
    for a, b in zip(_decode_logits(native, ids, new), _decode_logits(plain, ids, new), strict=True):
        assert a.shape == (3, model.config.vocab_size)
        assert torch.allclose(a, b, atol=2e-5, rtol=1e-5)
        assert not torch.equal(a[0], a[1])


def test_bad_ids_and_positions_raise_instead_of_reading_out_of_bounds(model) -> None:
    fast = FastGPT2(model)
    cache = fast.new_cache(1, 8)
    fast.step(torch.tensor([[1, 2, 3]]), 0, cache)
    with pytest.raises(IndexError, match="vocabulary"):
        fast.step(torch.tensor([[model.config.vocab_size]]), 3, cache)
    with pytest.raises(IndexError, match="vocabulary"):
        fast.step(torch.tensor([[-1]]), 3, cache)
    with pytest.raises(IndexError, match="past the cache"):
        fast.step(torch.tensor([[4]]), 8, cache)


def test_threads_split_the_work_without_changing_a_bit(model) -> None:
    ids, new = list(range(3, 40)), [[5, 6], [7, 8], [9, 10]]
    one = _decode_logits(FastGPT2(model, threads=1), ids, new)
    two = _decode_logits(FastGPT2(model, threads=2), ids, new)
    three = _decode_logits(FastGPT2(model, threads=3), ids, new)  # more threads than cores still works
    for a, b, c in zip(one, two, three, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


class _WithoutVnni:
    """The built library, claiming no int8 x int8 kernel: the C step takes its weight-only int8 path."""

    def __init__(self, lib) -> None:
        self.lib = lib

    def __getattr__(self, name: str):
        return getattr(self.lib, name)

    def pyc_int8_activations(self) -> int:
        return 0


def test_thread_counts_that_shrink_and_grow_between_steps(model) -> None:
    """The pool keeps its threads; a step with fewer must not leave one behind to take a part twice later."""
    ids, new = list(range(3, 30)), [[5], [6], [7]]
    want = _decode_logits(FastGPT2(model, threads=1), ids, new)
    for threads in (4, 2, 4, 1, 3):
        got = _decode_logits(FastGPT2(model, threads=threads), ids, new)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True)), threads


def test_a_cache_folder_others_can_write_is_not_loaded_from(fresh_build) -> None:
    fresh_build.mkdir(parents=True)
    fresh_build.chmod(0o777)
    lib, why = native_module.load_library()
    assert lib is None and "others can write to it" in why


@pytest.mark.parametrize("kernel", ["weights only", "int8 activations"])
def test_int8_native_step_stays_the_dequantised_model(kernel: str, model, monkeypatch) -> None:
    """int8 rows in C give what torch gives with the dequantised weights (the prompt's path): to float rounding
    with int8 weights only, and close when the activations are int8 too (VNNI); both near fp32."""
    lib, why = native_module.load_library()
    assert lib is not None, why
    if kernel == "weights only":
        monkeypatch.setattr("pycpilot.generate.decode.load_library", lambda: (_WithoutVnni(lib), ""))
    elif not lib.pyc_int8_activations():
        pytest.skip("this CPU has no AVX512-VNNI: the C step keeps int8 weights with float activations")
    fast8, fp32 = FastGPT2(model, int8=True), FastGPT2(model)
    assert fast8.lib is not None and fast8.native_layers[0]["attn"].q is not None
    assert fast8.int8_activations == (kernel == "int8 activations")
    ids = list(range(20, 70))
    stepped = _decode_logits(fast8, ids[:-1], [[ids[-1]]])[0]
    whole = fast8.step(torch.tensor([ids]), 0, fast8.new_cache(1, len(ids)))  # torch on dequantised weights
    if kernel == "weights only":
        assert torch.allclose(stepped, whole, atol=1e-4)
    else:
        assert torch.nn.functional.cosine_similarity(stepped, whole).item() > 0.999
        assert not torch.allclose(stepped, whole, atol=1e-4)  # the activations really were rounded
    exact = _decode_logits(fp32, ids[:-1], [[ids[-1]]])[0]
    assert torch.nn.functional.cosine_similarity(stepped, exact).item() > 0.99 and not torch.equal(stepped, exact)


def test_a_forked_child_runs_the_step_after_the_parent_used_its_threads(model) -> None:
    fast = FastGPT2(model, threads=2)
    ids = list(range(5, 30))
    cache = fast.new_cache(1, len(ids) + 2)
    fast.step(torch.tensor([ids]), 0, cache)
    parent = fast.step(torch.tensor([[9]]), len(ids), cache)  # the pool's threads now exist in this process
    pid = os.fork()
    if pid == 0:  # the child: the parent's threads are gone; a step must not wait for them
        try:
            child = cache.native.run(torch.tensor([[9]]), len(ids))
            os._exit(0 if torch.equal(child, parent) else 3)
        except BaseException:
            os._exit(4)
    deadline = 30.0
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung in the native step")


@pytest.fixture()
def fresh_build(monkeypatch, tmp_path: Path):
    """load_library() forgets its cached answer and builds into an empty folder."""
    monkeypatch.setenv("PYCPILOT_CACHE", str(tmp_path / "cache"))
    native_module.load_library.cache_clear()
    yield tmp_path / "cache" / "native"
    native_module.load_library.cache_clear()


def test_without_a_compiler_auto_falls_back_and_native_says_why(fresh_build, monkeypatch, tiny_run: Path) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    auto = Completer(tiny_run)
    assert auto.engine == "torch" and auto.complete("def", max_new_tokens=3).completions
    with pytest.raises(PycpilotError, match=r"native engine is not available here: .*does not run"):
        Completer(tiny_run, engine="native")


def test_a_failing_compile_is_reported_and_nothing_half_written_stays(fresh_build, monkeypatch, tmp_path) -> None:
    fake = tmp_path / "badcc"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo badcc 1.0; exit 0; }\necho 'fatal: no' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    lib, why = native_module.load_library()
    assert lib is None and why == "compiling gpt2_step.c and sample_rows.c failed: fatal: no"
    assert not any(fresh_build.iterdir())  # the temporary output was removed


def test_a_corrupt_cached_library_is_rebuilt(fresh_build, monkeypatch) -> None:
    monkeypatch.setenv("PYCPILOT_NATIVE", "1")
    lib, why = native_module.load_library()
    assert lib is not None, why
    built = next(fresh_build.glob("*.so"))
    garbage = built.with_suffix(".tmp")
    garbage.write_bytes(b"\x7fELF garbage")
    os.replace(garbage, built)  # a new file: the library this process mapped stays intact
    # A new process (this one would be handed the library it already mapped under that name).
    code = "from pycpilot.generate.native import load_library; lib, why = load_library(); print(lib is not None, why)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "True", done.stderr
    assert built.stat().st_size > 1000


def test_the_switch_turns_it_off(fresh_build, monkeypatch, tiny_run: Path) -> None:
    monkeypatch.setenv("PYCPILOT_NATIVE", "0")
    assert Completer(tiny_run).engine == "torch"
    with pytest.raises(PycpilotError, match="PYCPILOT_NATIVE=0"):
        Completer(tiny_run, engine="native")


def test_cli_engine_and_threads(tiny_run: Path) -> None:
    base = [
        str(Path(sys.executable).with_name("pycpilot")),
        "complete",
        "--model",
        str(tiny_run),
        "--max-new-tokens",
        "4",
    ]
    out = subprocess.run([*base, "--threads", "2", "def"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "native engine" in out.stderr
    bad = subprocess.run([*base, "--threads", "0", "def"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--threads must be between 1 and 64" in bad.stderr
