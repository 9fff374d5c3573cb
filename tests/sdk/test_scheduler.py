"""Continuous batching: requests join and leave at token boundaries, keep their own budgets and
rules, and give the texts they give alone."""

from __future__ import annotations

import threading

import pytest
import udrl
from udrl.backends import BackendOptions, open_backend
from udrl.commands import make_command
from udrl.errors import UdrlError
from udrl.generate import GenerationOptions, Job, result_of
from udrl.scheduler import Scheduler

REQUESTS = [
    ("poster for a summer jazz festival by the sea", "image", 16),
    ("logo for a vegan bakery", "tags", 3),
    ("flyer for a lost golden retriever named biscuit", "headline", 5),
    ("menu for a mexican taqueria with vegetarian options", "search", 2),
    ("certificate for a chess tournament winner", "image", 9),
]


@pytest.fixture(scope="module")
def alone(tiny_artifacts):
    with udrl.load(tiny_artifacts["llama"]) as m:
        yield {(q, t, n): m.generate(q, task=t, length=n) for q, t, n in REQUESTS}


def _job(backend, query, task, length, **options):
    return Job(backend, query, make_command(backend.manifest, task, length, None), GenerationOptions(**options))


def test_requests_join_free_slots_and_leave_when_done(tiny_artifacts, alone):
    backend = open_backend(tiny_artifacts["llama"], "llama", BackendOptions(parallel=2))
    try:
        scheduler = Scheduler(backend)
        jobs = [_job(backend, *r) for r in REQUESTS]
        for job in jobs:
            scheduler.submit(job)
        widths, ended_at = [], {}
        step = 0
        while not scheduler.idle:
            for job in scheduler.step():
                ended_at[id(job)] = step
            widths.append(len(scheduler.running))
            step += 1
        assert max(widths) == 2  # never more than the slots
        # The third request joined at the step after the first one ended, not after the longest.
        first_end = min(ended_at[id(j)] for j in jobs[:2])
        assert ended_at[id(jobs[2])] > first_end
        assert all(j.done for j in jobs)
        for job, request in zip(jobs, REQUESTS):
            got, want = result_of(job), alone[request]
            assert (got.text, got.completion_tokens, got.finish_reason) == \
                   (want.text, want.completion_tokens, want.finish_reason)
    finally:
        backend.close()


def test_a_cancelled_request_frees_its_slot_at_the_next_step(tiny_artifacts, alone):
    backend = open_backend(tiny_artifacts["llama"], "llama", BackendOptions(parallel=1))
    try:
        scheduler = Scheduler(backend)
        long_job = _job(backend, "poster for a summer jazz festival by the sea", "image", 16)
        short = _job(backend, *REQUESTS[1])
        scheduler.submit(long_job)
        scheduler.submit(short)
        scheduler.step()
        scheduler.step()
        assert list(scheduler.running.values()) == [long_job] and list(scheduler.waiting) == [short]
        scheduler.cancel(long_job)
        ended = scheduler.step()
        assert ended == [long_job] and long_job.stats.finish_reason == "cancelled"
        assert long_job.stats.completion_tokens == 2
        assert list(scheduler.running.values()) == [short]  # joined in the same step
        while not scheduler.idle:
            scheduler.step()
        assert result_of(short).text == alone[REQUESTS[1]].text
    finally:
        backend.close()


def test_each_request_keeps_its_own_options_beside_the_others(tiny_artifacts):
    variants = [dict(max_tokens=3), dict(focus=0.0), dict(no_repeat_ngram=0), dict(length_guard=False),
                dict(temperature=0.9, seed=7), dict()]
    with udrl.load(tiny_artifacts["llama"], parallel=8) as m:
        want = [m.generate(q, task=t, length=n, **o) for (q, t, n), o in zip(REQUESTS * 2, variants)]
        tickets = [m.submit(q, task=t, length=n, **o) for (q, t, n), o in zip(REQUESTS * 2, variants)]
        got = [t.result() for t in tickets]
    assert [(g.text, g.finish_reason, g.completion_tokens) for g in got] == \
           [(w.text, w.finish_reason, w.completion_tokens) for w in want]
    assert got[0].completion_tokens <= 3


def test_submit_from_many_threads_streams_each_its_own_pieces(tiny_artifacts, alone):
    with udrl.load(tiny_artifacts["llama"], parallel=4) as m:
        pieces: dict[int, list[str]] = {i: [] for i in range(15)}
        results: dict[int, str] = {}

        def client(i: int) -> None:
            q, t, n = REQUESTS[i % len(REQUESTS)]
            ticket = m.submit(q, task=t, length=n, on_piece=pieces[i].append)
            results[i] = ticket.result().text

        threads = [threading.Thread(target=client, args=(i,)) for i in range(15)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for i in range(15):
        want = alone[REQUESTS[i % len(REQUESTS)]].text
        assert results[i] == want and "".join(pieces[i]).strip() == want


def test_a_failing_callback_ends_only_its_own_request(tiny_artifacts, alone):
    def explode(piece: str) -> None:
        raise ValueError("the app's callback failed")

    with udrl.load(tiny_artifacts["llama"]) as m:
        bad = m.submit(REQUESTS[0][0], task="image", length=16, on_piece=explode)
        good = m.submit(REQUESTS[1][0], task="tags", length=3)
        with pytest.raises(ValueError, match="callback failed"):
            bad.result()
        assert good.result().text == alone[REQUESTS[1]].text
        assert m.generate(REQUESTS[1][0], task="tags", length=3).text == alone[REQUESTS[1]].text


def test_waiting_on_the_model_inside_its_callback_is_refused_not_a_deadlock(tiny_artifacts):
    errors: list[BaseException] = []

    def reenter(piece: str) -> None:
        try:
            m.generate("bakery logo", task="tags")
        except UdrlError as exc:
            errors.append(exc)

    with udrl.load(tiny_artifacts["llama"]) as m:
        done = threading.Event()
        outer = threading.Thread(target=lambda: (m.submit("poster", task="image", length=6, on_piece=reenter)
                                                 .result(), done.set()))
        outer.start()
        outer.join(30)
        assert done.is_set(), "the Model deadlocked"
    assert errors and "callback" in str(errors[0])


def test_with_its_own_thread_a_model_decodes_what_nobody_waits_for(tiny_artifacts, alone):
    with udrl.load(tiny_artifacts["llama"]) as m:
        m.start_batching_thread()
        ended = threading.Event()
        texts: list[str] = []
        m.submit(REQUESTS[1][0], task="tags", length=3,
                 on_done=lambda ticket: (texts.append(ticket.job.stats.text), ended.set()))
        assert ended.wait(30)
        assert texts == [alone[REQUESTS[1]].text]
        assert m.generate(REQUESTS[3][0], task="search", length=2).text == alone[REQUESTS[3]].text


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_backends_without_slots_run_submitted_requests_one_at_a_time(tiny_artifacts, backend):
    with udrl.load(tiny_artifacts[backend], backend=backend) as m:
        want = [m.generate(q, task=t, length=n).text for q, t, n in REQUESTS]
        tickets = [m.submit(q, task=t, length=n) for q, t, n in REQUESTS]
        assert [t.result().text for t in tickets] == want
