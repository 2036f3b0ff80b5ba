"""The model worker: one thread that owns the model and serves a bounded queue of jobs.

With our decode loop (the native C step, or the same step in torch ops), jobs run side by side on one
DecodeBatch (generate/batch.py: continuous batching and the prompt cache): a new job's prompt runs as soon as
it has slots, and every step advances all rows of all jobs at once, each at its own position, so four requests
cost little more than one (the weights are read once per step). With `--engine hf` (transformers' generate),
or int8 through fbgemm (whose rows are not independent), jobs run one after another through
`Completer.complete_ids`.

Every torch op of the server runs in this one thread (`pycpilot serve` makes it the main thread, the one that
loaded the model; other work, such as logprobs, comes as `call`s): GNU OpenMP gives each thread that opens a
parallel region its own pool, and once the pools hold more threads than there are cores it stops spinning
between regions, which measured 2.5 -> 4.1 ms for a 200-token prompt on 2 cores.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pycpilot.generate.batch import DecodeBatch, Job
from pycpilot.generate.complete import Completer


class Scheduler:
    def __init__(self, completer: Completer, max_batch: int, queue_size: int, prompt_cache: bool = True) -> None:
        self.completer = completer
        fast = completer.fast
        self.batched = fast is not None and fast.rows_independent
        self.max_batch = max_batch if self.batched else 1
        self.queue_size = queue_size
        self.pending: collections.deque[Job] = collections.deque()
        self.calls: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self.prompt_cache = prompt_cache and self.batched
        self.batch = (
            DecodeBatch(completer, self.max_batch, completer.context, self.prompt_cache) if self.batched else None
        )
        self.alone: list[Job] = []  # the job running alone (not batched)
        self.cond = threading.Condition()
        self.stats = {"served": 0, "cancelled": 0, "rejected": 0}
        self.thread: threading.Thread | None = None
        self.own_thread = False  # start() made the thread (else run_here runs in the caller's)
        self.stopping = False
        self.error: str | None = None

    @property
    def active(self) -> list[Job]:
        return self.batch.active if self.batch is not None else self.alone

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
            batch = self.batch
            return {
                "queued": len(self.pending),
                "active_jobs": len(self.active),
                "active_rows": self.max_batch - len(batch.free) if batch is not None else len(self.alone),
                "max_batch": self.max_batch,
                "queue_size": self.queue_size,
                "prompt_cache": self.prompt_cache,
                "worker": "running" if self.thread and self.thread.is_alive() else "stopped",
                **self.stats,
                **(batch.stats if batch is not None else {"steps": 0, "prompt_tokens": 0, "prompt_tokens_cached": 0}),
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
                if self.batch is not None:
                    self._step(admitted)
                else:
                    for job in admitted:
                        self._run_alone(job)
            except Exception as e:  # a bug must not leave requests waiting forever
                self.error = f"{type(e).__name__}: {e}"
                with self.cond:
                    jobs = self.batch.clear() if self.batch is not None else self.alone
                    self.alone = []
                for job in jobs:
                    job.emit("end", None, f"the model worker failed: {self.error}")

    def _admit(self) -> list[Job]:
        """Queued jobs that fit now, in order (a big job is not overtaken forever); called under the lock."""
        admitted: list[Job] = []
        free = len(self.batch.free) if self.batch is not None else 0
        while self.pending:
            job = self.pending[0]
            if self.batch is None and (self.alone or admitted):
                break
            if self.batch is not None and job.params.n > free:
                break
            self.pending.popleft()
            if job.cancelled.is_set():
                self.stats["cancelled"] += 1
                job.emit("end", None, None)
                continue
            free -= job.params.n
            admitted.append(job)
        if self.batch is None:
            self.alone.extend(admitted)
        return admitted

    def _step(self, admitted: list[Job]) -> None:
        """New jobs' prompts into the batch, then one token for every row."""
        assert self.batch is not None
        for job in admitted:
            try:
                self.batch.start(job)
            except Exception as e:  # this prompt's trouble: only this request fails
                self._fail(job, e)
        finished, failed = self.batch.advance()
        for job, error in failed:
            self._fail(job, error)
        for job in finished:
            self._retire(job)

    def _run_alone(self, job: Job) -> None:
        try:
            on_text = (lambda piece: job.emit("text", 0, piece)) if job.stream else None
            result = self.completer.complete_ids(
                job.ids, job.params, job.stoppers, healed=job.healed, on_text=on_text,
                deadline=job.deadline, cancelled=job.cancelled.is_set,
            )  # fmt: skip
        except Exception as e:
            self._fail(job, e)
            return
        for r, completion in enumerate(result):
            job.emit("done", r, completion)
        self._retire(job)

    def _fail(self, job: Job, error: Exception) -> None:
        self.error = f"{type(error).__name__}: {error}"
        with self.cond:
            if job in self.alone:
                self.alone.remove(job)
        job.emit("end", None, f"this request failed: {self.error}")

    def _retire(self, job: Job) -> None:
        with self.cond:
            if job in self.alone:
                self.alone.remove(job)
            self.stats["cancelled" if job.cancelled.is_set() else "served"] += 1
        job.emit("end", None, None)
