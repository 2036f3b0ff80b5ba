"""The decode loop: rows of one or more jobs in one KV cache, advanced together one token per step.

`pycpilot complete` runs one job alone on it; `serve`'s worker keeps it open and lets jobs join and leave
between steps (continuous batching). Each row has a slot of the cache and its own position, so a row's tokens
do not depend on which rows run beside it, and each row samples from its own stream of numbers (seeded from the
job's seed and the row's number, or given per row; draw.py): a seeded sample gives the same text alone or among
others. Rows finish through `Completer.finish_row` (stops, scope, EOS, length), the routine transformers' engine
(hf.py) uses too.

Prompt cache (serve): a slot keeps the keys and values of the last prompt it ran after its job ends, and a new
job takes the free slot whose prompt shares the longest beginning with its own, running only the rest. Only
prompt positions are reused (computed by the same torch ops as a fresh prompt), never those the step wrote.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pycpilot.generate.draw import draw, draw_rows, row_seed, uniform, uniforms
from pycpilot.generate.native import NativeStep
from pycpilot.generate.sampling import SamplingParams
from pycpilot.generate.text import Stopper

if TYPE_CHECKING:
    from pycpilot.generate.complete import Completer


@dataclass
class Completion:
    text: str
    finish_reason: str  # stop (a stop string, the scope or EOS) or length
    tokens: int  # new tokens generated for it
    ids: list[int] = field(default_factory=list, repr=False)  # those tokens (a final EOS included)


@dataclass
class Job:
    """One prompt's `params.n` completions. `emit` gets ("text", row, piece) while streaming, ("done", row,
    Completion) as each row ends and, from serve's worker, ("end", None, error or None) once all have."""

    ids: list[int]
    params: SamplingParams  # max_new_tokens already fitted to what the context leaves (Completer.prepare)
    stoppers: list[Stopper]
    emit: Callable[[str, int | None, Any], None]
    stream: bool = False
    deadline: float | None = None  # time.monotonic(): rows still going then end as "length"
    cancelled: threading.Event = field(default_factory=threading.Event)
    healed: bytes = b""  # token healing: the first new token must start with these bytes
    give_up: Callable[[], bool] | None = None  # a caller's own check (complete's `cancelled`): rows end as length
    # decode state
    slots: list[int] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)
    done: list[Completion | None] = field(default_factory=list)
    shown: list[int] = field(default_factory=list)
    logits: torch.Tensor | None = None
    seeds: list[int] | None = None  # each row's stream (eval's samples); default: draw.row_seed(params.seed, row)
    settings: tuple[torch.Tensor, ...] = ()  # temperature, top-k, top-p per row, for draw()

    def out_of_time(self) -> bool:
        late = self.deadline is not None and time.monotonic() > self.deadline
        return late or self.cancelled.is_set() or bool(self.give_up and self.give_up())

    def finished(self) -> bool:
        return all(d is not None for d in self.done)


class DecodeBatch:
    """`slots` rows of `length` positions over a Completer's fast decoder (the C step, else torch ops)."""

    def __init__(self, completer: Completer, slots: int, length: int, prompt_cache: bool = False) -> None:
        assert completer.fast is not None
        self.completer, self.fast = completer, completer.fast
        # step_rows reads each slot up to the longest row and masks the rest: fresh memory must hold no NaN
        self.cache = self.fast.new_cache(slots, length, zero=self.fast.lib is None)
        self.native = NativeStep(self.fast.lib, self.fast, self.cache, self.fast.threads) if self.fast.lib else None
        self.free = list(range(slots))
        self.prompt_cache = prompt_cache
        self.cached: list[list[int]] = [[] for _ in range(slots)]  # the prompt each slot holds
        self.active: list[Job] = []
        self.stats = {"steps": 0, "prompt_tokens": 0, "prompt_tokens_cached": 0}

    def start(self, job: Job) -> None:
        """Give `job` its slots and run its prompt; the job then advances with the others. On an error the
        slots are free again and the job is not in the batch."""
        job.slots = self._take_slots(job.ids, job.params.n)
        job.done = [None] * job.params.n
        try:
            self._prefill(job)
        except BaseException:
            self.free.extend(job.slots)
            raise
        self.active.append(job)

    def _shared(self, slot: int, ids: list[int]) -> int:
        """How many leading tokens of `ids` slot `slot` holds already, leaving at least the last two to run: the
        last gives the first logits, and with two the rest runs through the torch ops of any prompt (one alone
        would take the C decode step, whose int8 activations differ from torch's)."""
        if not self.prompt_cache:
            return 0
        cached, limit = self.cached[slot], min(len(self.cached[slot]), len(ids) - 2)
        k = 0
        while k < limit and cached[k] == ids[k]:
            k += 1
        return k

    def _take_slots(self, ids: list[int], n: int) -> list[int]:
        """The free slot whose cached prompt shares the most with `ids` first, then the least useful ones."""
        ranked = sorted(self.free, key=lambda slot: self._shared(slot, ids))
        first = ranked.pop()
        taken = [first, *ranked[: n - 1]]
        for slot in taken:
            self.free.remove(slot)
        return taken

    @torch.inference_mode()
    def _prefill(self, job: Job) -> None:
        """The prompt once into the first slot, copied to the job's other slots; the first logits."""
        first, length = job.slots[0], len(job.ids)
        done = self._shared(first, job.ids)
        for slot in job.slots:
            self.cached[slot] = []  # until the prompt is in every one of them
        logits = self.fast.step(torch.tensor([job.ids[done:]]), done, self.cache.row(first))
        self.stats["prompt_tokens"] += length
        self.stats["prompt_tokens_cached"] += done
        for slot in job.slots[1:]:
            for c in (*self.cache.keys, *self.cache.values):
                c[slot, :, :length] = c[first, :, :length]
        for slot in job.slots:
            self.cached[slot] = list(job.ids)
        job.logits = logits.expand(job.params.n, -1).clone()
        allowed = self.completer.first_mask(job.healed)
        if allowed is not None:
            job.logits.masked_fill_(~allowed[: job.logits.shape[-1]].to(job.logits.device), float("-inf"))
        device, n, p = job.logits.device, job.params.n, job.params
        if job.seeds is None:
            job.seeds = [row_seed(p.seed, r) for r in range(n)]
        job.settings = (
            torch.full((n,), p.temperature, device=device),
            torch.full((n,), p.top_k, dtype=torch.long, device=device),
            torch.full((n,), p.top_p, device=device),
        )
        job.rows = [[] for _ in range(job.params.n)]
        job.shown = [0] * job.params.n

    @torch.inference_mode()
    def advance(self) -> tuple[list[Job], list[tuple[Job, Exception]]]:
        """Sample every active row's next token, finish what ended, then one step for the rest. Returns the
        jobs that finished (every row done) and those that failed, both out of the batch and their slots free."""
        finished, failed, step_rows = [], [], []
        completer = self.completer
        tokens = self._draw_all(failed)
        for job in list(self.active):
            p = job.params
            token = tokens[id(job)]
            late = job.out_of_time()
            for r in range(p.n):
                if job.done[r] is not None:
                    continue
                job.rows[r].append(token[r])
                last = len(job.rows[r]) == p.max_new_tokens or late
                done = job.done[r] = completer.finish_row(job.rows[r], job.stoppers[r], last)
                if job.stream and not job.cancelled.is_set():
                    job.shown[r] = completer.stream_row(job.rows[r], done, job.stoppers[r], job.shown[r], _to(job, r))
                if done is None:
                    step_rows.append((job, r))
                    continue
                if not job.cancelled.is_set():
                    job.emit("done", r, done)
                self.free.append(job.slots[r])
            if job.finished():
                self.active.remove(job)
                finished.append(job)
        if step_rows:
            ids = [job.rows[r][-1] for job, r in step_rows]
            pos = [len(job.ids) + len(job.rows[r]) - 1 for job, r in step_rows]
            slots = [job.slots[r] for job, r in step_rows]
            if self.native is not None:
                logits = self.native.run_rows(ids, pos, slots)
            elif len(slots) == len(self.cached) and len(set(pos)) == 1:
                # Every slot at one position (`complete`'s rows): torch's batched step, ~1.4x the per-row one.
                by_slot = [0] * len(slots)
                for slot, token in zip(slots, ids, strict=True):
                    by_slot[slot] = token
                out = self.fast.step(torch.tensor(by_slot)[:, None], pos[0], self.cache)
                logits = out if slots == sorted(slots) else out[torch.tensor(slots)]
            else:
                logits = self.fast.step_rows(ids, pos, slots, self.cache)
            self.stats["steps"] += 1
            k = 0
            while k < len(step_rows):  # each job's rows stand together, in row order
                job = step_rows[k][0]
                end = k + 1
                while end < len(step_rows) and step_rows[end][0] is job:
                    end += 1
                if end - k == job.params.n:  # every row still going: the step's output rows themselves
                    job.logits = logits[k:end]
                else:
                    assert job.logits is not None
                    for i in range(k, end):
                        job.logits[step_rows[i][1]] = logits[i]
                k = end
        return finished, failed

    def _draw_all(self, failed: list[tuple[Job, Exception]]) -> dict[int, list[int]]:
        """Every active row's next token, all jobs in one call of draw() (per call it costs about as much for
        one row as for many); if that fails, job by job, so that only the job that fails leaves the batch."""
        jobs = list(self.active)
        try:
            return {id(job): tokens for job, tokens in zip(jobs, self._draw(jobs), strict=True)}
        except Exception:
            out = {}
            for job in jobs:
                try:
                    out[id(job)] = self._draw([job])[0]
                except Exception as e:
                    self.leave(job)
                    failed.append((job, e))
            return out

    def _draw(self, jobs: list[Job]) -> list[list[int]]:
        """Each job's next token per row, -1 for its rows already done (only the others are drawn)."""
        live = [[r for r in range(j.params.n) if j.done[r] is None] for j in jobs]
        greedy = all(j.params.greedy for j in jobs)
        if self.fast.lib is not None:
            drawn = iter(self._draw_native(jobs, live, greedy))
        else:
            drawn = iter(self._draw_torch(jobs, live, greedy))
        out = []
        for job, rows in zip(jobs, live, strict=True):
            tokens = [-1] * job.params.n
            for r in rows:
                tokens[r] = next(drawn)
            out.append(tokens)
        return out

    def _draw_native(self, jobs: list[Job], live: list[list[int]], greedy: bool) -> list[int]:
        """The live rows drawn in C where their logits lie, the settings as lists: no torch op per step."""
        at, temperature, top_k, top_p, u = [], [], [], [], []
        for job, rows in zip(jobs, live, strict=True):
            assert job.logits is not None and job.seeds is not None
            if job.logits.dtype != torch.float32 or job.logits.stride(-1) != 1:
                job.logits = job.logits.float().contiguous()
            p, base, stride = job.params, job.logits.data_ptr(), job.logits.stride(0) * 4
            for r in rows:
                at.append(base + r * stride)
                u.append(0.0 if greedy else uniform(job.seeds[r], len(job.rows[r])))  # where it is in its stream
            temperature += [p.temperature] * len(rows)
            top_k += [p.top_k] * len(rows)
            top_p += [p.top_p] * len(rows)
        return draw_rows(self.fast.lib, at, self.fast.vocab, temperature, top_k, top_p, u)

    def _draw_torch(self, jobs: list[Job], live: list[list[int]], greedy: bool) -> list[int]:
        """The live rows gathered into one tensor and drawn by torch ops (a GPU, or no compiler)."""
        parts = []
        for job, rows in zip(jobs, live, strict=True):
            assert job.logits is not None
            if len(rows) == job.params.n:
                parts.append((job.logits, *job.settings))
            else:
                at = torch.tensor(rows, device=job.logits.device)
                parts.append((job.logits[at], *(s[at] for s in job.settings)))
        logits, *settings = parts[0] if len(parts) == 1 else [torch.cat(x) for x in zip(*parts, strict=True)]
        if greedy:
            u = torch.zeros(len(logits))
        else:  # a row's token count is where it is in its stream
            seeds = [j.seeds[r] for j, rows in zip(jobs, live, strict=True) for r in rows]  # type: ignore[index]
            steps = [len(j.rows[r]) for j, rows in zip(jobs, live, strict=True) for r in rows]
            u = uniforms(seeds, steps, logits.device)
        return draw(logits, *settings, u).tolist()

    def advance_or_raise(self) -> None:
        """One step for callers whose jobs are all their own: a job that failed raises its error."""
        _, failed = self.advance()
        for _, error in failed:
            raise error

    def leave(self, job: Job) -> None:
        """Take `job` out of the batch, its unfinished rows' slots free again."""
        if job in self.active:
            self.active.remove(job)
        self.free.extend(slot for slot, done in zip(job.slots, job.done, strict=False) if done is None)

    def clear(self) -> list[Job]:
        """Every job out (after a failure of the step itself); returns them."""
        jobs, self.active = self.active, []
        self.free = list(range(len(self.cached)))
        return jobs


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection while decoding: each step makes a few tensors, and a full collection over the heap
    of a loaded model (tens of ms) would land in the middle of a completion."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _to(job: Job, row: int) -> Callable[[str], None]:
    return lambda piece: job.emit("text", row, piece)
