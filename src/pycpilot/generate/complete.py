"""`pycpilot complete`: complete code with a trained model (seed 7.4.5), the engine `eval` and `serve` share.

`Completer(path).complete(prompt, ...)` returns `n` completions. The fast decoder (decode.py) runs plain
GPT-2 models; anything else, or `engine="hf"`, goes through transformers' `generate` with the same settings.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pycpilot.errors import PycpilotError
from pycpilot.generate.batch import Completion, DecodeBatch, Job, gc_paused
from pycpilot.generate.config import CompleteConfig
from pycpilot.generate.decode import FastGPT2, Unsupported
from pycpilot.generate.heal import Healing
from pycpilot.generate.load import load_model
from pycpilot.generate.sampling import SamplingParams
from pycpilot.generate.text import Stopper, TokenText, safe_stream_length
from pycpilot.tokenizer.specials import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

MAX_PROMPT_BYTES = 16 * 2**20  # a prompt file or stdin; only its last context's worth of tokens is used anyway


@dataclass
class Result:
    completions: list[Completion]
    prompt_tokens: int
    prompt_cut: int  # tokens dropped from the left of a prompt longer than the context allows
    seconds: float
    engine: str


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str, engine: str, int8: bool) -> torch.device:
    """auto: a CUDA GPU when there is one (and the engine and int8 allow it), else the CPU; one-line errors."""
    if device not in DEVICES:
        raise PycpilotError(f"--device must be one of {', '.join(DEVICES)}")
    cpu_only = engine == "native" or int8  # the C step and the int8 kernels are a CPU's
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and not cpu_only else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise PycpilotError("--device cuda: this torch sees no CUDA GPU (see the README's GPU install)")
        if cpu_only:
            raise PycpilotError("--device cuda runs the torch or hf engine; --engine native and --int8 are CPU-only")
    return torch.device(device)


class Completer:
    """A loaded model, ready to complete; one per process (`serve` keeps one)."""

    def __init__(
        self,
        model: Path | str,
        int8: bool = False,
        engine: str = "auto",
        threads: int | None = None,
        device: str = "auto",
    ) -> None:
        self.device = resolve_device(device, engine, int8)
        self.loaded = load_model(model)
        self.model, self.tokenizer = self.loaded.model.to(self.device), self.loaded.tokenizer
        self.text = TokenText(self.tokenizer)
        self.context = int(getattr(self.model.config, "n_positions", 0) or self.tokenizer.model_max_length)
        self.fast: FastGPT2 | None = None
        self.engine = "hf"
        if int8 and engine == "hf":
            raise PycpilotError("--int8 needs our decode loop (engine auto, native or torch), not hf")
        if engine != "hf":
            try:
                native = engine != "torch" and self.device.type == "cpu"  # the C step is a CPU's
                self.fast = FastGPT2(self.model, int8=int8, native=native, threads=threads)
            except Unsupported:
                if int8 or engine != "auto":
                    raise
        if self.fast is not None:
            if engine == "native" and self.fast.lib is None:
                raise PycpilotError(f"the native engine is not available here: {self.fast.native_note}")
            self.engine = ("native" if self.fast.lib is not None else "torch") + ("-int8" if int8 else "")
        if self.device.type != "cpu":
            self.engine += f"-{self.device.type}"
        vocab = self.tokenizer.get_vocab()
        self.fim = [vocab.get(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)]
        self.stop_ids = set(self.tokenizer.all_special_ids)
        self.healing = Healing(self.text, self.model.config.vocab_size)

    def tokens(self, text: str) -> list[int]:
        """Ids of `text` as data: a special token's spelling in it is plain text, as `pack` encoded training files."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []

    def _parts(self, prompt: str, suffix: str | None) -> tuple[list[int], list[int], list[int]]:
        """(head, prompt ids, tail): with a suffix, the PSM frame around the prompt (each part encoded alone)."""
        ids = self.tokens(prompt)
        if suffix is None:
            return [], ids, []
        if None in self.fim:
            raise PycpilotError("this model's tokenizer has no fill-in-the-middle tokens: complete without a suffix")
        prefix_id, suffix_id, middle_id = self.fim
        return [prefix_id], ids, [suffix_id, *self.tokens(suffix), middle_id]  # type: ignore[list-item]

    def encode(self, prompt: str, suffix: str | None) -> list[int]:
        """Prompt ids; with a suffix, the PSM layout the model was trained on (each part encoded alone)."""
        head, ids, tail = self._parts(prompt, suffix)
        return [*head, *ids, *tail]

    def _fit(self, prompt: str, suffix: str | None, bos: bool, room: int, cut_step: int = 1) -> tuple[list[int], int]:
        """The prompt's ids in at most `room` tokens, and how many were dropped: the start of the prompt goes
        first (the leading end-of-text with it), then the end of the suffix; the FIM tokens always stay.
        `cut_step`: the start is cut in multiples of it, so a prompt that keeps growing at its end keeps the
        same first tokens for a while (what serve's prompt cache reuses); never when that would leave fewer
        than `cut_step` tokens of it (a short prefix before a long suffix: those are the cursor's)."""
        head, ids, tail = self._parts(prompt, suffix)
        left = [self.tokenizer.eos_token_id, *ids] if bos else ids
        over = len(head) + len(left) + len(tail) - room
        if over <= 0:
            return [*head, *left, *tail], 0
        rounded = -(-over // cut_step) * cut_step
        drop = rounded if rounded + cut_step <= len(left) else min(over, len(left))
        if drop >= over:
            return [*head, *left[drop:], *tail], drop
        rest = over - drop  # only with a suffix: cut its end, nearest the cursor stays
        if rest:
            if rest > len(tail) - 2:
                raise PycpilotError(f"the model's context ({self.context} tokens) is too short to fill in the middle")
            tail = [*tail[: len(tail) - 1 - rest], tail[-1]]
        return [*head, *left[drop:], *tail], over

    def prepare(
        self, prompt: str, suffix: str | None, max_new_tokens: int, bos: bool, heal: bool = False, cut_step: int = 1
    ) -> tuple[list[int], int, int, bytes]:
        """(prompt ids fitted to the context, how many tokens were cut, max new tokens that still fit, the
        healed bytes: with `heal`, the prompt's last token is given back, see heal.py)."""
        max_new_tokens = min(max_new_tokens, self.context - 1)
        room = max(self.context - max_new_tokens, self.context // 2, 1)
        ids, cut = self._fit(prompt, suffix, bos, room, cut_step)
        healed = b""
        if heal:
            ids, healed = self.healing.give_back(ids, suffix is not None)
        ids = ids or [self.tokenizer.eos_token_id]
        return ids, cut, min(max_new_tokens, self.context - len(ids)), healed

    def first_mask(self, healed: bytes) -> torch.Tensor | None:
        """Which tokens may come first after healing `healed` bytes (heal.py)."""
        return self.healing.first_mask(healed)

    def complete(
        self,
        prompt: str,
        params: SamplingParams | None = None,
        *,
        suffix: str | None = None,
        bos: bool = False,
        heal: bool = False,
        on_text: Callable[[str], None] | None = None,
        deadline: float | None = None,
        cancelled: Callable[[], bool] | None = None,
        **sampling: Any,
    ) -> Result:
        """`params.n` completions of `prompt` (`params`, or SamplingParams made from the `sampling` keywords);
        `on_text` gets the first one's text piece by piece as it is decided.

        `bos`: start with the end-of-text token, as files started in training (CodeParrot's HumanEval does).
        `deadline` (time.monotonic) and `cancelled` end every row early, as "length".
        The prompt and the new tokens share the context: a prompt too long for it loses its start, but keeps at
        least half the context, and `max_new_tokens` shrinks to what is left."""
        if params is None:
            params = SamplingParams(**sampling)
        elif sampling:
            raise TypeError("give SamplingParams or sampling keywords, not both")
        start = time.perf_counter()
        ids, cut, max_new, healed = self.prepare(prompt, suffix, params.max_new_tokens, bos, heal)
        params = replace(params, max_new_tokens=max_new)
        stoppers = [Stopper(prompt, params.stop, params.scope, len(healed.decode())) for _ in range(params.n)]
        outs = self.complete_ids(
            ids, params, stoppers, healed=healed, on_text=on_text, deadline=deadline, cancelled=cancelled
        )
        return Result(outs, len(ids), cut, time.perf_counter() - start, self.engine)

    def complete_ids(
        self,
        ids: list[int],
        params: SamplingParams,
        stoppers: list[Stopper],
        *,
        healed: bytes = b"",
        on_text: Callable[[str], None] | None = None,
        deadline: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        """`complete` after the prompt is fitted (`prepare`, which also says the `healed` bytes): the
        completions of prompt ids `ids`, one job alone on the decode loop (or transformers' generate)."""
        if self.fast is None:
            from pycpilot.generate.hf import generate_hf

            def late() -> bool:
                return (deadline is not None and time.monotonic() > deadline) or bool(cancelled and cancelled())

            return generate_hf(self, ids, params, stoppers, late=late, healed=healed, on_text=on_text)
        out: list[Completion | None] = [None] * params.n

        def collect(kind: str, row: int | None, value: Any) -> None:
            if kind == "done":
                out[row] = value  # type: ignore[index]
            elif kind == "text" and row == 0 and on_text is not None:
                on_text(value)

        job = Job(ids, params, stoppers, collect, on_text is not None, deadline, healed=healed, give_up=cancelled)
        with gc_paused():
            batch = DecodeBatch(self, params.n, len(ids) + params.max_new_tokens)
            batch.start(job)
            while batch.active:
                batch.advance_or_raise()
        return [c for c in out if c is not None]

    def finish_row(self, new: list[int], stopper: Stopper, length_done: bool) -> Completion | None:
        """The completion if row `new` is finished (EOS/special, a stop, or out of tokens), else None."""
        ended = bool(new) and new[-1] in self.stop_ids
        if not (ended or length_done or stopper.stops or stopper.scope != "file"):
            return None  # only EOS or the length can end it: no need to look at the text yet
        text = self.text.decode(new[:-1] if ended else new, stopper.row)[stopper.skip :]
        where = stopper.cut(text)
        if where is not None:
            return Completion(text[:where], "stop", len(new), list(new))
        if ended:
            return Completion(text, "stop", len(new), list(new))
        if length_done:
            return Completion(text, "length", len(new), list(new))
        return None

    def stream_row(
        self, row: list[int], done: Completion | None, stopper: Stopper, shown: int, on_text: Callable[[str], None]
    ) -> int:
        """Hand `on_text` what of row `row` is decided since `shown` characters; the new count."""
        text = done.text if done is not None else self.text.decode(row, stopper.row)[stopper.skip :]
        upto = len(text) if done is not None else safe_stream_length(text, stopper)
        if upto > shown:
            on_text(text[shown:upto])
            return upto
        return shown


def read_prompt(cfg: CompleteConfig) -> str:
    if cfg.prompt is not None:
        return cfg.prompt
    if cfg.file is not None:
        try:
            with open(cfg.file, "rb") as f:  # not stat: a FIFO (`--file <(...)`) has no size
                data = f.read(MAX_PROMPT_BYTES + 1)
        except OSError as exc:
            raise PycpilotError(f"cannot read {cfg.file}: {exc.strerror or exc}") from None
        where = str(cfg.file)
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise PycpilotError("give a prompt, --file FILE, or text on stdin")
        data = sys.stdin.buffer.read(MAX_PROMPT_BYTES + 1)
        where = "stdin"
    if len(data) > MAX_PROMPT_BYTES:
        raise PycpilotError(f"{where} holds more than {MAX_PROMPT_BYTES // 2**20} MiB: too long for a prompt")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PycpilotError(f"{where} is not UTF-8 text") from None


def complete(cfg: CompleteConfig) -> Result:
    """Complete the prompt of `cfg`, printing completions (the first one streamed) unless quiet."""
    cfg.validate()
    prompt = read_prompt(cfg)
    completer = Completer(cfg.model, int8=cfg.int8, engine=cfg.engine, threads=cfg.threads, device=cfg.device)
    out = sys.stdout
    streaming = cfg.stream and not cfg.quiet and completer.fast is not None and cfg.n == 1

    def show(piece: str) -> None:
        out.write(piece)
        out.flush()

    result = completer.complete(
        prompt, cfg.sampling(), suffix=cfg.suffix, heal=cfg.heal, on_text=show if streaming else None
    )
    if not cfg.quiet:
        for i, c in enumerate(result.completions):
            if i or not streaming:
                if cfg.n > 1:
                    out.write(f"\n--- completion {i + 1} of {cfg.n} ({c.finish_reason}, {c.tokens} tokens) ---\n")
                out.write(c.text)
        out.write("\n")
        new = sum(c.tokens for c in result.completions)
        note = f", prompt cut by {result.prompt_cut} tokens on the left" if result.prompt_cut else ""
        empty = sum(not c.text.strip() for c in result.completions)
        if empty:
            note += (
                f"; {empty} of {cfg.n} completions are empty (the model ended the {cfg.scope} at once: "
                "try --scope file, or sampling with --temperature)"
            )
        print(
            f"complete: {completer.loaded.note}, {result.engine} engine, {result.prompt_tokens} prompt tokens, "
            f"{new} new in {result.seconds * 1000:.0f} ms ({new / max(result.seconds, 1e-9):,.0f} tokens/s){note}",
            file=sys.stderr,
        )
    return result
