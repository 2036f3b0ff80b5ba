"""The `native` decode step: gpt2_step.c, compiled once per machine with the system C compiler, called through
ctypes on the torch tensors' memory (nothing copied per step).

Built on first use into ~/.cache/pycpilot/native (or $PYCPILOT_CACHE), keyed by the source, the compiler and
this CPU's flags (it is compiled for the CPU it runs on), written to a temporary name and renamed. Without a
compiler, or with PYCPILOT_NATIVE=0, `load_library` says why and the caller keeps the torch step.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("gpt2_step.c")
SOURCES = (SOURCE, Path(__file__).with_name("sample_rows.c"))  # compiled into one library
ACTIVATIONS = {"gelu_pytorch_tanh": 0, "gelu_new": 0, "gelu": 1, "relu": 2}  # what gpt2_step.c computes
P = ctypes.c_void_p
I64 = ctypes.c_int64


class _Linear(ctypes.Structure):
    _fields_ = [("w", P), ("q", P), ("scale", P), ("qsum", P), ("bias", P), ("n_in", I64), ("n_out", I64)]


class _Layer(ctypes.Structure):
    _fields_ = [
        ("ln1_w", P), ("ln1_b", P), ("ln2_w", P), ("ln2_b", P),
        ("attn", _Linear), ("proj", _Linear), ("fc", _Linear), ("out", _Linear),
        ("keys", P), ("values", P),
    ]  # fmt: skip


class _Model(ctypes.Structure):
    _fields_ = [
        ("n_layer", I64), ("n_head", I64), ("d", I64), ("vocab", I64), ("cache_len", I64), ("batch", I64),
        ("act", ctypes.c_int), ("eps", ctypes.c_float),
        ("wte", P), ("wpe", P), ("lnf_w", P), ("lnf_b", P),
        ("head", _Linear), ("layers", ctypes.POINTER(_Layer)),
        ("x", P), ("h", P), ("qkv", P), ("a", P), ("ff", P), ("scores", P), ("logits", P),
        ("xq", P), ("xscale", P), ("scratch_threads", I64),
    ]  # fmt: skip


def _cpu_key() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        flags = platform.processor()
    return flags


@cache
def load_library() -> tuple[Any, str]:
    """(the loaded library or None, why not)."""
    if os.environ.get("PYCPILOT_NATIVE", "1") == "0":
        return None, "PYCPILOT_NATIVE=0"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None, "no C compiler (cc/gcc) on PATH"
    flags = ["-O3", "-march=native", "-fopenmp-simd", "-fPIC", "-shared", "-fno-math-errno", "-pthread"]
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{compiler} does not run: {e}"
    texts = [source.read_text() for source in SOURCES]
    key = hashlib.sha256("\0".join([*texts, version, " ".join(flags), _cpu_key()]).encode()).hexdigest()
    folder = Path(os.environ.get("PYCPILOT_CACHE") or Path.home() / ".cache" / "pycpilot") / "native"
    target = folder / f"gpt2_step-{key[:16]}.so"
    unsafe = _unsafe_folder(folder)
    if unsafe:
        return None, unsafe
    lib, why = None, ""
    for _attempt in range(2):  # a cached library that does not load (truncated, foreign) is built again
        if not target.exists():
            why = _build(compiler, flags, folder, target)
            if why:
                return None, why
        try:
            lib = ctypes.CDLL(str(target))
            break
        except OSError as e:
            why = f"cannot load {target}: {e}"
            target.unlink(missing_ok=True)
    if lib is None:
        return None, why
    lib.pyc_step.argtypes = [ctypes.POINTER(_Model), P, P, P, I64, ctypes.c_int]
    lib.pyc_step.restype = ctypes.c_int
    lib.pyc_int8_activations.restype = ctypes.c_int
    lib.pyc_sample.argtypes = [P, I64, I64, P, P, P, P, ctypes.c_double, P, P]
    lib.pyc_sample.restype = ctypes.c_int
    return lib, ""


def _unsafe_folder(folder: Path) -> str:
    """'' if code may be loaded from `folder` (made here 0700 if missing), else why not: a library that someone
    else can write would run their code in this process."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except OSError as e:
        return f"cannot use {folder}: {e.strerror or e}"
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        return f"{folder} belongs to another user or others can write to it: not loading code from it"
    return ""


def _build(compiler: str, flags: list[str], folder: Path, target: Path) -> str:
    """Compile to a temporary name, then rename: '' when built, else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".so.tmp")
        os.close(fd)
        try:
            plain = [f for f in flags if f not in ("-march=native", "-fopenmp-simd")]  # a compiler may not know them
            for tuned in (flags, plain):
                done = subprocess.run(
                    [compiler, *tuned, "-o", tmp, *map(str, SOURCES), "-lm"],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if done.returncode == 0:
                    break
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                return f"compiling {' and '.join(s.name for s in SOURCES)} failed: {last}"
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot build the native step in {folder}: {e}"
    return ""


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeLinear:
    """A matrix as the C step reads it: [out, in] rows, fp32, or int8 with one scale per row."""

    def __init__(self, rows: torch.Tensor, bias: torch.Tensor | None, int8: bool, int8_activations: bool) -> None:
        rows = rows.detach().float().contiguous()  # [out, in]; shared, not copied, when it already is
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.n_in, self.n_out = rows.shape[1], rows.shape[0]
        if int8:
            self.scale = (rows.abs().amax(dim=1) / 127).clamp(min=1e-12)
            self.q = torch.round(rows / self.scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            self.qsum = self.q.sum(dim=1, dtype=torch.int32) if int8_activations else None
            self.w = None
        else:
            self.w, self.q, self.scale, self.qsum = rows, None, None, None

    def dequantized(self) -> torch.Tensor:
        """[in, out] fp32 of what the step computes with (the prompt runs through torch with it)."""
        if self.q is None:
            assert self.w is not None
            return self.w.t()
        assert self.scale is not None
        return (self.q.float() * self.scale[:, None]).t().contiguous()

    def struct(self) -> _Linear:
        return _Linear(
            _ptr(self.w), _ptr(self.q), _ptr(self.scale), _ptr(self.qsum), _ptr(self.bias), self.n_in, self.n_out
        )


class NativeStep:
    """The C step bound to one KV cache (its pointers and work buffers).

    `run(ids, pos)`: one token per cache row, all at `pos` -> logits [batch, V]. `run_rows(ids, pos, slots)`:
    any subset of rows, each at its own position (a server's requests side by side) -> logits [rows, V]."""

    def __init__(self, lib: Any, fast: Any, cache: Any, threads: int) -> None:
        self.lib, self.threads = lib, threads
        batch, heads, length, _ = cache.keys[0].shape
        d = fast.d
        dff = fast.native_layers[0]["fc"].n_out
        f32 = {"dtype": torch.float32}
        int8_path = fast.native_head.qsum is not None
        self.buffers = {
            "x": torch.empty(batch, d, **f32),
            "h": torch.empty(batch, d, **f32),
            "qkv": torch.empty(batch, 3 * d, **f32),
            "a": torch.empty(batch, d, **f32),
            "ff": torch.empty(batch, dff, **f32),
            "scores": torch.empty(batch * heads * length, **f32),
            "logits": torch.empty(0, **f32),  # replaced by each step's own output tensor
            "xq": torch.empty(threads * batch * max(d, dff) if int8_path else 0, dtype=torch.uint8),
            "xscale": torch.empty(threads * batch if int8_path else 0, **f32),
        }
        self.layers = (_Layer * fast.n_layer)()
        for i, (parts, keys, values) in enumerate(zip(fast.native_layers, cache.keys, cache.values, strict=True)):
            ln1, ln2 = fast.layers[i]["ln_1"], fast.layers[i]["ln_2"]
            self.layers[i] = _Layer(
                ln1[0].data_ptr(), ln1[1].data_ptr(), ln2[0].data_ptr(), ln2[1].data_ptr(),
                parts["attn"].struct(), parts["proj"].struct(), parts["fc"].struct(), parts["out"].struct(),
                keys.data_ptr(), values.data_ptr(),
            )  # fmt: skip
        b = self.buffers
        self.model = _Model(
            fast.n_layer, heads, d, fast.vocab, length, batch,
            ACTIVATIONS[fast.config.activation_function], fast.eps,
            fast.wte.data_ptr(), fast.wpe.data_ptr(), fast.ln_f[0].data_ptr(), fast.ln_f[1].data_ptr(),
            fast.native_head.struct(), self.layers,
            *(b[k].data_ptr() for k in ("x", "h", "qkv", "a", "ff", "scores", "logits")),
            b["xq"].data_ptr() if int8_path else None, b["xscale"].data_ptr() if int8_path else None, threads,
        )  # fmt: skip
        self.max_positions = min(fast.max_positions, length)
        self.batch, self.vocab = batch, fast.vocab
        self.ids, self.pos, self.slots = ((ctypes.c_int64 * batch)() for _ in range(3))
        self.every_slot = list(range(batch))
        self.cache = cache  # the pointers above are into its tensors: keep them alive

    def run(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        return self.run_rows(ids.reshape(-1).tolist(), [pos] * self.batch, self.every_slot)

    def run_rows(self, ids: list[int], pos: list[int], slots: list[int]) -> torch.Tensor:
        rows = len(ids)
        if not (0 < rows <= self.batch and len(pos) == rows and len(slots) == rows and len(set(slots)) == rows):
            raise IndexError(f"{rows} rows for a cache of {self.batch} (one position and one distinct slot each)")
        for r in range(rows):
            if pos[r] >= self.max_positions:
                raise IndexError(f"position {pos[r]} past the cache or the model's context ({self.max_positions})")
            self.ids[r], self.pos[r], self.slots[r] = ids[r], pos[r], slots[r]
        # A fresh tensor per step, written by the C step itself: a torch copy of 5+ rows would be large enough
        # for torch to wake its OpenMP threads, which then spin on the cores the step's threads need.
        out = torch.empty(rows, self.vocab, dtype=torch.float32)
        self.model.logits = out.data_ptr()
        code = self.lib.pyc_step(ctypes.byref(self.model), self.ids, self.pos, self.slots, rows, self.threads)
        if code != 0:
            raise IndexError(
                {-2: "position past the cache", -3: "token id outside the vocabulary"}.get(code, f"bad rows ({code})")
            )
        return out
