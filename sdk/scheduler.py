"""Continuous batching: many requests decoded side by side, joining and leaving at token boundaries.

A `Scheduler` holds the requests (`generate.Job`) waiting and running on one backend. Each call to
`Scheduler.step` is one token boundary: finished and cancelled requests have left, waiting ones
join free slots (their prompts are prefilled in the same forward pass as the running requests'
next tokens), and every running request takes one token. Each request keeps its own KV-cache
sequence, token budget and decoding rules, so a greedy result is the same request's result alone
(up to the rounding of a batched matrix product where two tokens are nearly tied: measured in the
README). `Model.generate_batch` runs a Scheduler to the end; `Model.submit` and `udrl serve` feed
one from many threads through a `Batcher`, its background loop.

Backends with KV-cache slots (llama.cpp) decode up to ``slots`` requests per forward pass; any
other backend runs through one slot, one request after another, interleaved at token boundaries.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backends import Backend
from .errors import UdrlError
from .generate import GenerationResult, Job, result_of


class _OneSlot:
    """`decode_slots` for a backend without slots: one sequence at a time, through its own
    prefill and step. When something else has used the backend in between (a static batch,
    `Scheduler.invalidate`), the next step prefills the sequence again."""

    slots = 1

    def __init__(self, backend: Backend):
        self.backend, self.ids, self.stale = backend, [], False

    def clear_slot(self, slot: int) -> None:
        self.ids = []

    def decode_slots(self, work: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        (_, tokens), = work
        self.ids += tokens
        if len(self.ids) == len(tokens) or self.stale:
            self.stale = False
            return self.backend.prefill(self.ids)[None]
        return self.backend.step(tokens[-1])[None]


class Scheduler:
    """Requests waiting and running on one backend; `step` advances all of them by one token.
    Not thread-safe by itself: `Batcher` (or the caller) serialises calls."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.slotted: Any = backend if backend.slots > 0 else _OneSlot(backend)
        self.waiting: collections.deque[Job] = collections.deque()
        self.running: dict[int, Job] = {}
        self.cancelled: set[int] = set()  # ids of jobs to drop at the next step

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def invalidate(self) -> None:
        """Something else has used the backend since the last step (a static batch): a backend
        without slots prefills its running sequence again at the next step."""
        if isinstance(self.slotted, _OneSlot):
            self.slotted.stale = True

    def submit(self, job: Job) -> None:
        """Queue a request (already checked by `Job`); it joins at the next step with a free slot."""
        self.waiting.append(job)

    def cancel(self, job: Job) -> None:
        """Drop a request at the next step, freeing its slot (its result: finish_reason "cancelled")."""
        self.cancelled.add(id(job))

    def step(self) -> list[Job]:
        """One token boundary; returns the requests that ended in it (``job.done``)."""
        ended: list[Job] = []
        for slot, job in list(self.running.items()):
            if id(job) in self.cancelled:
                del self.running[slot]
                job.finish("cancelled")
                ended.append(job)
        for job in [j for j in self.waiting if id(j) in self.cancelled]:
            self.waiting.remove(job)
            job.finish("cancelled")
            ended.append(job)
        self.cancelled.clear()
        work: list[tuple[int, list[int]]] = [(slot, [job.next_token]) for slot, job in self.running.items()
                                             if job.next_token is not None]
        joined: list[Job] = []
        free = [s for s in range(self.slotted.slots) if s not in self.running]
        while self.waiting and free:
            slot, job = free.pop(0), self.waiting.popleft()
            self.slotted.clear_slot(slot)
            self.running[slot] = job
            work.append((slot, job.prompt))
            joined.append(job)
        if not work:
            return ended
        logits = self.slotted.decode_slots(work)
        for job in joined:
            job.prefilled()
        for (slot, _), row in zip(work, logits):
            job = self.running[slot]
            if job.advance(row) is None:
                del self.running[slot]
                ended.append(job)
        return ended

    def run(self, jobs: Sequence[Job]) -> None:
        """Submit ``jobs`` and step until every one has ended."""
        for job in jobs:
            self.submit(job)
        while not self.idle:
            self.step()


class Ticket:
    """One request handed to a `Batcher`: wait for its `result`, or `cancel` it. ``on_piece``
    (given to `Batcher.submit`) receives its text pieces as they decode, on the Batcher's thread."""

    def __init__(self, job: Job, batcher: Batcher, on_piece: Callable[[str], None] | None,
                 on_done: Callable[[Ticket], None] | None):
        self.job, self._batcher = job, batcher
        self.on_piece, self.on_done = on_piece, on_done
        self._ended = threading.Event()
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request has ended (True) or ``timeout`` seconds passed (False)."""
        return self._ended.wait(timeout)

    def result(self, timeout: float | None = None) -> GenerationResult:
        """The `GenerationResult`, once the request has ended (finish_reason "cancelled" if it was
        cancelled); raises what stopped it if the backend failed, TimeoutError after ``timeout``."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"the request has not ended within {timeout} s")
        if self.error is not None:
            raise self.error
        return result_of(self.job)

    def cancel(self) -> None:
        """Stop decoding this request at the next token boundary and free its slot."""
        self._batcher.cancel(self)


class Batcher:
    """A thread that runs a `Scheduler`, and every other use of its backend (`call`): requests
    submitted from any thread decode together. All of a Model's compute happens on this one thread
    because llama.cpp's OpenMP build runs about 3 times slower per token once a second thread has
    called it (libgomp keeps a team of workers per calling thread, and with more workers than
    CPUs they stop spinning at barriers; measured in the README)."""

    def __init__(self, backend: Backend):
        self.scheduler = Scheduler(backend)
        self._wake = threading.Condition()
        self._tickets: dict[int, Ticket] = {}
        self._calls: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future]] = collections.deque()
        self._closing: UdrlError | None = None
        self._thread = threading.Thread(target=self._loop, name="udrl-batcher", daemon=True)
        self._thread.start()

    @property
    def on_own_thread(self) -> bool:
        """Whether the caller is this Batcher's thread (inside an ``on_piece`` or ``on_done``)."""
        return threading.current_thread() is self._thread

    def submit(self, job: Job, on_piece: Callable[[str], None] | None = None,
               on_done: Callable[[Ticket], None] | None = None) -> Ticket:
        """Queue ``job``; ``on_piece(text)`` gets each piece and ``on_done(ticket)`` the end, both on
        the Batcher's thread (keep them short)."""
        ticket = Ticket(job, self, on_piece, on_done)
        with self._wake:
            if self._closing is not None:
                raise self._closing
            self._tickets[id(job)] = ticket
            self.scheduler.submit(job)
            self._wake.notify()
        return ticket

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the Batcher's thread between two steps and return what it returns (a
        static batch on a backend's batch axis); running requests continue after it."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            if self._closing is not None:
                raise self._closing
            self._calls.append((fn, future))
            self._wake.notify()
        return future.result()

    def cancel(self, ticket: Ticket) -> None:
        with self._wake:
            if not ticket.done:
                self.scheduler.cancel(ticket.job)
                self._wake.notify()

    @property
    def pending(self) -> int:
        """Requests waiting or running."""
        with self._wake:
            return len(self._tickets)

    def close(self, drain: bool = True, reason: str = "this model is closed") -> None:
        """Stop the thread: after the requests in flight end (``drain``), or cancelling them (their
        tickets then raise `UdrlError` with ``reason``). Further submissions raise it at once."""
        with self._wake:
            self._closing = UdrlError(reason)
            if not drain:
                for ticket in self._tickets.values():
                    ticket.error = ticket.error or UdrlError(reason)
                    self.scheduler.cancel(ticket.job)
            self._wake.notify()
        if not self.on_own_thread:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self.scheduler.idle and not self.scheduler.cancelled and not self._calls \
                        and self._closing is None:
                    self._wake.wait()
                if self.scheduler.idle and not self._calls and self._closing is not None:
                    return
                calls = list(self._calls)
                self._calls.clear()
                running = list(self.scheduler.running.values())
            for fn, future in calls:
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 -- handed to the caller, who re-raises it
                    future.set_exception(exc)
                self.scheduler.invalidate()
            try:
                with self._wake:  # submissions and cancellations land between steps, never inside one
                    ended = self.scheduler.step()
            except Exception as exc:  # noqa: BLE001 -- a backend failure ends the requests in flight, not the loop
                with self._wake:
                    jobs = running + list(self.scheduler.waiting) + list(self.scheduler.running.values())
                    self.scheduler.waiting.clear()
                    self.scheduler.running.clear()
                ended = []
                for job in {id(j): j for j in jobs}.values():
                    if not job.done:
                        job.finish("cancelled")
                    ended.append(job)
                for job in ended:
                    self._end(job, exc)
                continue
            with self._wake:
                live = [self._tickets[id(j)] for j in self.scheduler.running.values() if id(j) in self._tickets]
            for ticket in live:
                self._deliver(ticket)
            for job in ended:
                self._end(job, None)

    def _deliver(self, ticket: Ticket) -> None:
        pieces = ticket.job.take_pieces()
        if ticket.on_piece is None:
            return
        try:
            for piece in pieces:
                ticket.on_piece(piece)
        except Exception as exc:  # noqa: BLE001 -- a caller's callback failed: that request stops, the loop does not
            ticket.error = exc
            ticket.on_piece = None
            self.cancel(ticket)

    def _end(self, job: Job, error: BaseException | None) -> None:
        with self._wake:
            ticket = self._tickets.pop(id(job), None)
        if ticket is None:
            return
        self._deliver(ticket)
        ticket.error = ticket.error or error
        ticket._ended.set()
        if ticket.on_done is not None:
            try:
                ticket.on_done(ticket)
            except Exception:  # the request has ended either way; the loop serves the others
                logging.getLogger("udrl").exception("on_done callback of a udrl request failed")
