"""The model worker: one thread that owns the model and serves a bounded queue of jobs.

With our decode loop (the native C step, or the same step in torch ops), jobs run side by side (continuous
batching): each row of a job has a slot in one KV cache, a new job's prompt runs as soon as it has slots, and
every step advances all rows of all jobs at once, each at its own position, so four requests cost little more
than one (the weights are read once per step).
Each job samples with its own generator exactly as `Completer.complete` does, so a seeded request gives the
same text alone or among others.

Prompt cache: a slot keeps the keys and values of the last prompt it ran after its job ends. An editor sends
nearly the same prompt at every keystroke, so a new job takes the free slot whose cached prompt shares the
longest beginning with its own and runs only the rest. Only prompt positions are reused (computed by the same
torch ops as a fresh prompt), never those the decode step wrote.

With `--engine hf` (transformers' generate), jobs run one after another through `Completer.complete`.

Every torch op of the server runs in this one thread (`pycpilot serve` makes it the main thread, the one that
loaded the model; other work, such as logprobs, comes as `call`s): GNU OpenMP gives each thread that opens a
parallel region its own pool, and once the pools hold more threads than there are cores it stops spinning
between regions, which measured 2.5 -> 4.1 ms for a 200-token prompt on 2 cores.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from pycpilot.generate.complete import Completer, Completion
from pycpilot.generate.decode import sample_next
from pycpilot.generate.native import NativeStep
from pycpilot.generate.text import Stopper


@dataclass
class Job:
    """One prompt's `n` completions. `emit` is called from the worker thread with ("text", row, piece) while
    streaming, ("done", row, Completion) as each row ends, and ("end", None, None) once all have."""

    ids: list[int]
    n: int
    max_new: int
    temperature: float
    top_p: float
    top_k: int
    stoppers: list[Stopper]
    seed: int
    emit: Callable[[str, int | None, Any], None]
    stream: bool = False
    deadline: float | None = None  # time.monotonic()
    cancelled: threading.Event = field(default_factory=threading.Event)
    healed: bytes = b""  # token healing: the first new token must start with these bytes
    # worker state
    slots: list[int] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)
    done: list[Completion | None] = field(default_factory=list)
    shown: list[int] = field(default_factory=list)
    logits: torch.Tensor | None = None
    generator: torch.Generator | None = None


def _text_to(job: Job, row: int) -> Callable[[str], None]:
    return lambda piece: job.emit("text", row, piece)


class Scheduler:
    def __init__(self, completer: Completer, max_batch: int, queue_size: int, prompt_cache: bool = True) -> None:
        self.completer = completer
        self.fast = completer.fast
        self.batched = self.fast is not None and self.fast.rows_independent
        self.max_batch = max_batch if self.batched else 1
        self.queue_size = queue_size
        self.pending: collections.deque[Job] = collections.deque()
        self.calls: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self.active: list[Job] = []
        self.free = list(range(self.max_batch))
        self.prompt_cache = prompt_cache and self.batched
        self.cached: list[list[int]] = [[] for _ in range(self.max_batch)]  # the prompt each slot holds
        self.cond = threading.Condition()
        self.stats = {"served": 0, "cancelled": 0, "rejected": 0, "steps": 0, "prompt_tokens": 0,
                      "prompt_tokens_cached": 0}  # fmt: skip
        self.thread: threading.Thread | None = None
        self.own_thread = False  # start() made the thread (else run_here runs in the caller's)
        self.stopping = False
        self.error: str | None = None
        self.step: NativeStep | None = None  # the C step; None: the same step in torch ops (step_rows)
        if self.batched:
            assert self.fast is not None
            self.cache = self.fast.new_cache(self.max_batch, completer.context, zero=self.fast.lib is None)
            if self.fast.lib is not None:
                self.step = NativeStep(self.fast.lib, self.fast, self.cache, self.fast.threads)

    # ---- the request side (event loop threads) ----

    def submit(self, job: Job) -> bool:
        """Queue `job`; False when the queue is full (the caller answers 503)."""
        with self.cond:
            if len(self.pending) >= self.queue_size or self.stopping:
                self.stats["rejected"] += 1
                return False
            self.pending.append(job)
            self.cond.notify()
            return True

    def admit(self, jobs: int) -> bool:
        """Whether `jobs` more would fit in the queue now (checked before the work of preparing them; submit
        checks again); a refusal counts as rejected."""
        with self.cond:
            if len(self.pending) + jobs <= self.queue_size and not self.stopping:
                return True
            self.stats["rejected"] += 1
            return False

    def health(self) -> dict[str, Any]:
        with self.cond:
            return {
                "queued": len(self.pending),
                "active_jobs": len(self.active),
                "active_rows": self.max_batch - len(self.free) if self.batched else len(self.active),
                "max_batch": self.max_batch,
                "queue_size": self.queue_size,
                "prompt_cache": self.prompt_cache,
                "worker": "running" if self.thread and self.thread.is_alive() else "stopped",
                **self.stats,
            }

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` in the worker thread between steps (torch work from other threads: see the docstring)."""
        future: Future = Future()
        with self.cond:
            if self.stopping:
                future.set_exception(RuntimeError("the server is shutting down"))
                return future
            self.calls.append((fn, future))
            self.cond.notify()
        return future

    def start(self) -> None:
        """The worker in a thread of its own."""
        self.thread = threading.Thread(target=self._run, name="pycpilot-model", daemon=True)
        self.own_thread = True
        self.thread.start()

    def run_here(self) -> None:
        """The worker in the calling thread, until `stop`."""
        self.thread = threading.current_thread()
        try:
            self._run()
        finally:
            self.thread = None  # /health: stopped

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            for job in [*self.pending, *self.active]:
                job.cancelled.set()  # a job mid-generation (run alone) ends at its next token
            self.cond.notify_all()
        if self.thread is not None and self.own_thread and self.thread is not threading.current_thread():
            self.thread.join(timeout=10)

    # ---- the worker thread ----

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and not self.active and not self.pending and not self.calls:
                    # Waking now and then lets a signal that landed on another thread (uvloop's, torch's) reach
                    # its Python handler, which runs only in the main thread, which this may be (`run_here`).
                    self.cond.wait(timeout=0.25)
                if self.stopping:
                    for job in [*self.pending, *self.active]:
                        job.emit("end", None, "the server is shutting down")
                    for _, future in self.calls:
                        if future.set_running_or_notify_cancel():  # one its caller gave up on stays cancelled
                            future.set_exception(RuntimeError("the server is shutting down"))
                    return
                calls, self.calls = list(self.calls), collections.deque()
                admitted = self._admit()
            for fn, future in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except Exception as e:
                        future.set_exception(e)
            try:
                if self.batched:
                    for job in admitted:
                        try:
                            self._prefill(job)
                        except Exception as e:  # this prompt's trouble: only this request fails
                            self._fail(job, e)
                    self._advance()
                else:
                    for job in admitted:
                        try:
                            self._run_alone(job)
                        except Exception as e:
                            self._fail(job, e)
            except Exception as e:  # a bug must not leave requests waiting forever
                self.error = f"{type(e).__name__}: {e}"
                with self.cond:
                    jobs, self.active = self.active, []
                    self.free = list(range(self.max_batch))
                for job in jobs:
                    job.emit("end", None, f"the model worker failed: {self.error}")

    def _admit(self) -> list[Job]:
        """Move queued jobs in while their rows fit (in order: a big job is not overtaken forever)."""
        admitted = []
        while self.pending and (not self.batched or self.pending[0].n <= len(self.free)):
            if not self.batched and (self.active or admitted):
                break
            job = self.pending.popleft()
            if job.cancelled.is_set():
                self.stats["cancelled"] += 1
                job.emit("end", None, None)
                continue
            if self.batched:
                job.slots = self._take_slots(job.ids, job.n)
            self.active.append(job)
            admitted.append(job)
        return admitted

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
        rest = ranked[: n - 1]
        for slot in (first, *rest):
            self.free.remove(slot)
        return [first, *rest]

    def _run_alone(self, job: Job) -> None:
        on_text = (lambda piece: job.emit("text", 0, piece)) if job.stream else None
        result = self.completer.complete_ids(
            job.ids, job.n, job.max_new, job.temperature, job.top_p, job.top_k, job.stoppers, job.seed,
            on_text=on_text, deadline=job.deadline, cancelled=job.cancelled.is_set,
            first=self.completer.first_mask(job.healed),
        )  # fmt: skip
        for r, completion in enumerate(result):
            job.emit("done", r, completion)
        self._retire(job)

    def _prefill(self, job: Job) -> None:
        """The prompt once into the first slot, copied to the job's other slots; the first logits."""
        assert self.fast is not None
        first = job.slots[0]
        done = self._shared(first, job.ids)
        for slot in job.slots:
            self.cached[slot] = []  # until the prompt is in every one of them
        logits = self.fast.step(torch.tensor([job.ids[done:]]), done, self.cache.row(first))
        self.stats["prompt_tokens"] += len(job.ids)
        self.stats["prompt_tokens_cached"] += done
        for slot in job.slots[1:]:
            for c in (*self.cache.keys, *self.cache.values):
                c[slot, :, : len(job.ids)] = c[first, :, : len(job.ids)]
        for slot in job.slots:
            self.cached[slot] = list(job.ids)
        job.logits = logits.expand(job.n, -1).clone()
        first = self.completer.first_mask(job.healed)
        if first is not None:
            job.logits.masked_fill_(~first[: job.logits.shape[-1]].to(job.logits.device), float("-inf"))
        job.generator = torch.Generator(job.logits.device).manual_seed(job.seed)
        job.rows = [[] for _ in range(job.n)]
        job.done = [None] * job.n
        job.shown = [0] * job.n

    def _advance(self) -> None:
        """Sample every active row's next token, finish what ended, then one step for the rest."""
        step_rows: list[tuple[Job, int]] = []
        for job in list(self.active):
            assert job.logits is not None
            try:
                token = sample_next(job.logits, job.temperature, job.top_k, job.top_p, job.generator).tolist()
            except Exception as e:
                self._fail(job, e)
                continue
            out_of_time = job.cancelled.is_set() or (job.deadline is not None and time.monotonic() > job.deadline)
            for r in range(job.n):
                if job.done[r] is not None:
                    continue
                job.rows[r].append(token[r])
                last = len(job.rows[r]) == job.max_new or out_of_time
                job.done[r] = self.completer.finish_row(job.rows[r], job.stoppers[r], last)
                if job.stream and not job.cancelled.is_set():
                    job.shown[r] = self.completer.stream_row(
                        job.rows[r], job.done[r], job.stoppers[r], job.shown[r], _text_to(job, r)
                    )
                if job.done[r] is not None:
                    if not job.cancelled.is_set():
                        job.emit("done", r, job.done[r])
                    with self.cond:
                        self.free.append(job.slots[r])
                else:
                    step_rows.append((job, r))
            if all(d is not None for d in job.done):
                self._retire(job)
        if not step_rows:
            return
        assert self.fast is not None
        ids = [job.rows[r][-1] for job, r in step_rows]
        pos = [len(job.ids) + len(job.rows[r]) - 1 for job, r in step_rows]
        slots = [job.slots[r] for job, r in step_rows]
        if self.step is not None:
            logits = self.step.run_rows(ids, pos, slots)
        else:
            logits = self.fast.step_rows(ids, pos, slots, self.cache)
        self.stats["steps"] += 1
        for k, (job, r) in enumerate(step_rows):
            assert job.logits is not None
            job.logits[r] = logits[k]

    def _fail(self, job: Job, error: Exception) -> None:
        self.error = f"{type(error).__name__}: {error}"
        with self.cond:
            if job in self.active:
                self.active.remove(job)
            self.free.extend(slot for slot, done in zip(job.slots, job.done or [None] * job.n, strict=False)
                             if done is None)  # fmt: skip
        job.emit("end", None, f"this request failed: {self.error}")

    def _retire(self, job: Job) -> None:
        with self.cond:
            if job in self.active:
                self.active.remove(job)
            self.stats["cancelled" if job.cancelled.is_set() else "served"] += 1
        job.emit("end", None, None)
