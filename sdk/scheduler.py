"""Continuous batching: many requests decoded side by side, joining and leaving at token boundaries.

A `Scheduler` holds the requests (`generate.Job`) waiting and running on one backend. Each call to
`Scheduler.step` is one token boundary: finished and cancelled requests have left, waiting ones
join free slots (each prompt prefilled in a forward pass of its own, `LlamaSequences.decode`), and
every running request takes one token, all in one forward pass. Each request keeps its own KV-cache
sequence, token budget and decoding rules, so a greedy result is the same request's result alone
(up to the rounding of a batched matrix product where two tokens are nearly tied: measured in the
README). A `Batcher` feeds one Scheduler from many threads: every request of a `Model` goes
through it (`generate`, `stream`, `generate_batch`, `submit`, and `udrl serve`).

Backends with KV-cache slots (llama.cpp) decode up to ``slots`` requests per forward pass; any
other backend runs through one slot, one request after another, interleaved at token boundaries.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
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


class Ticket:
    """One request handed to a `Batcher`: wait for its `result`, or `cancel` it. ``on_piece`` and
    ``on_done`` (given to `Batcher.submit`) receive its pieces and its end on the thread that is
    computing at the time."""

    def __init__(self, job: Job, batcher: Batcher, on_piece: Callable[[str], None] | None,
                 on_done: Callable[[Ticket], None] | None):
        self.job, self._batcher = job, batcher
        self.on_piece, self.on_done = on_piece, on_done
        self.done = False
        self.error: BaseException | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request has ended (True) or ``timeout`` seconds passed (False),
        computing on this thread if no other thread is."""
        return self._batcher.drive(lambda: self.done, timeout)

    def result(self, timeout: float | None = None) -> GenerationResult:
        """The `GenerationResult`, once the request has ended (finish_reason "cancelled" if it was
        cancelled); raises what stopped it if the backend failed, TimeoutError after ``timeout``."""
        if not self.wait(timeout):
            raise TimeoutError(f"the request has not ended within {timeout} s")
        if self.error is not None:
            raise self.error
        return result_of(self.job)

    def cancel(self) -> None:
        """Stop decoding this request at the next token boundary and free its slot."""
        self._batcher.cancel(self)


class Batcher:
    """Runs a `Scheduler` for one backend, and every other use of it (`call`): requests submitted
    from any thread decode together. The scheduler is stepped by a thread that waits for a result
    (leader and followers: the first waiter computes, for everybody, until its own request has
    ended, then the next waiter takes over), or, after `start_thread`, by a thread of its own.

    Why the waiting thread and not always a thread of its own: llama.cpp's OpenMP build keeps a
    team of worker threads per thread that calls it, and once the teams hold more threads than
    there are CPUs, libgomp stops spinning at barriers and every token gets about 3 times slower
    (measured: `udrl bench --serve`). A program that calls llama.cpp itself on its main thread
    (the teacher in `udrl eval`) and udrl from a thread of udrl's would slow both down; computing
    on the caller keeps a single-threaded program on one team. A server, whose requests arrive on
    an event loop, uses `start_thread`."""

    def __init__(self, backend: Backend):
        self.scheduler = Scheduler(backend)
        self._wake = threading.Condition()
        self._tickets: dict[int, Ticket] = {}
        self._calls: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future]] = collections.deque()
        self._closing: UdrlError | None = None
        self._driver: threading.Thread | None = None  # the thread stepping the scheduler now
        self._thread: threading.Thread | None = None  # a thread of its own (`start_thread`), if any
        self._last_driver: threading.Thread | None = None
        self._shared = False  # more than one thread has computed: each frees its workers when it stops

    def submit(self, job: Job, on_piece: Callable[[str], None] | None = None,
               on_done: Callable[[Ticket], None] | None = None) -> Ticket:
        """Queue ``job``; ``on_piece(text)`` gets each piece and ``on_done(ticket)`` the end (keep
        them short). It decodes while some thread waits (`Ticket.result`, `drive`) or on the
        Batcher's own thread."""
        ticket = Ticket(job, self, on_piece, on_done)
        with self._wake:
            if self._closing is not None:
                raise self._closing
            self._tickets[id(job)] = ticket
            self.scheduler.submit(job)
            self._wake.notify_all()
        return ticket

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the computing thread between two steps and return what it returns (a
        static batch on a backend's batch axis); running requests continue after it."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            if self._closing is not None:
                raise self._closing
            self._calls.append((fn, future))
            self._wake.notify_all()
        self.drive(future.done)
        return future.result()

    def cancel(self, ticket: Ticket) -> None:
        with self._wake:
            if not ticket.done:
                self.scheduler.cancel(ticket.job)
                self._wake.notify_all()

    @property
    def pending(self) -> int:
        """Requests waiting or running."""
        with self._wake:
            return len(self._tickets)

    @property
    def computing_here(self) -> bool:
        """Whether the caller is the thread stepping the scheduler (inside ``on_piece``/``on_done``)."""
        return self._driver is threading.current_thread()

    def start_thread(self) -> None:
        """Step the scheduler on a thread of its own from now on, so that submitted requests decode
        with nobody waiting for them (what `udrl serve` does); waiting threads then only wait."""
        with self._wake:
            if self._thread is not None or self._closing is not None:
                return
            computed_here = self._last_driver is threading.current_thread()
            self._thread = threading.Thread(target=self._run_thread, name="udrl-batcher", daemon=True)
            self._thread.start()
        if computed_here:  # this thread's workers would slow the Batcher's down
            self.scheduler.backend.release_threads()

    def _run_thread(self) -> None:
        self.drive(lambda: self._closing is not None and self._idle())

    def _idle(self) -> bool:
        return self.scheduler.idle and not self.scheduler.cancelled and not self._calls

    def drive(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        """Return once ``until()`` holds (True) or ``timeout`` seconds passed (False). Meanwhile
        step the scheduler on this thread whenever no other thread does and there is work."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        if self._driver is me:
            raise UdrlError("a udrl Model cannot be waited on inside its own on_piece or on_done callback; "
                            "submit() there and take the result later")
        while True:
            with self._wake:
                while True:
                    if until():
                        return True
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    own = self._thread is None or self._thread is me
                    if own and self._driver is None and not self._idle():
                        self._driver = me
                        self._shared = self._shared or (self._last_driver not in (None, me))
                        self._last_driver = me
                        break
                    self._wake.wait(left)
            try:
                while not until() and (deadline is None or time.monotonic() < deadline):
                    if not self._step():
                        break
            finally:
                with self._wake:
                    handing_over = self._shared or not self._idle()
                if handing_over:  # another thread may compute next: one team of workers at a time
                    self.scheduler.backend.release_threads()
                with self._wake:
                    self._driver = None
                    self._wake.notify_all()

    def _step(self) -> bool:
        """One round on the computing thread: pending calls, then one scheduler step, then the
        pieces and ends it produced. False when there was nothing to do."""
        with self._wake:
            if self._idle():
                return False
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
        except Exception as exc:  # noqa: BLE001 -- a backend failure ends the requests in flight, not the Model
            with self._wake:
                jobs = running + list(self.scheduler.waiting) + list(self.scheduler.running.values())
                self.scheduler.waiting.clear()
                self.scheduler.running.clear()
            for job in {id(j): j for j in jobs}.values():
                if not job.done:
                    job.finish("cancelled")
                self._end(job, exc)
            return True
        with self._wake:
            live = [self._tickets[id(j)] for j in self.scheduler.running.values() if id(j) in self._tickets]
        for ticket in live:
            self._deliver(ticket)
        for job in ended:
            self._end(job, None)
        return True

    def close(self, drain: bool = True, reason: str = "this model is closed") -> None:
        """Refuse further requests; end the ones in flight (``drain``) or cancel them (their tickets
        then raise `UdrlError` with ``reason``), and stop the Batcher's own thread."""
        with self._wake:
            self._closing = UdrlError(reason)
            if not drain:
                for ticket in self._tickets.values():
                    ticket.error = ticket.error or UdrlError(reason)
                    self.scheduler.cancel(ticket.job)
            self._wake.notify_all()
            thread = self._thread
        if self.computing_here:
            return  # inside a callback: the computing thread finishes the cancellations itself
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        else:
            self.drive(self._idle)

    def _deliver(self, ticket: Ticket) -> None:
        pieces = ticket.job.take_pieces()
        if ticket.on_piece is None:
            return
        try:
            for piece in pieces:
                ticket.on_piece(piece)
        except Exception as exc:  # noqa: BLE001 -- a caller's callback failed: that request stops, the others do not
            ticket.error = exc
            ticket.on_piece = None
            self.cancel(ticket)

    def _end(self, job: Job, error: BaseException | None) -> None:
        with self._wake:
            ticket = self._tickets.pop(id(job), None)
        if ticket is None:
            return
        self._deliver(ticket)
        with self._wake:
            ticket.error = ticket.error or error
            ticket.done = True
            self._wake.notify_all()
        if ticket.on_done is not None:
            try:
                ticket.on_done(ticket)
            except Exception:  # the request has ended either way; the others go on
                logging.getLogger("udrl").exception("on_done callback of a udrl request failed")
