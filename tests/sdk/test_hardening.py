"""Bad input, corrupted files and threads: every public entry point returns a result or raises a
`UdrlError`, nothing dies by signal, nothing hangs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import udrl
from udrl import CommandError, UdrlError

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # gguf_mutations, beside this file


@pytest.fixture(scope="module")
def models(tiny_artifacts):
    opened = {name: udrl.load(path, threads=1) for name, path in tiny_artifacts.items()}
    yield opened
    for m in opened.values():
        m.close()


# -- fuzzing ------------------------------------------------------------------------------------

_ALPHABET = ([chr(c) for c in range(0x20, 0x7F)] * 4 + list("\t\n\r\x00\x01\x1b\x7f\u200b\u200d\ufeff\u2028")
             + ["\ud800", "\udfff", "\udc80", "é", "ß", "漢", "😀", "\U0010ffff", "<|sep|>", "<|task:image|>"])
_BAD = [None, True, False, "3", b"3", 3.5, float("nan"), float("inf"), -float("inf"), -1, 0, 1, 2**70, [], {}, object()]


def _text(rng: random.Random) -> object:
    kind = rng.random()
    if kind < 0.05:
        return rng.choice([None, 5, b"poster", ["poster"], ""])
    n = rng.choice([0, 1, 3, 8, 20, 60, 300])
    return "".join(rng.choice(_ALPHABET) for _ in range(n))


def _option(rng: random.Random, good: list) -> object:
    return rng.choice(good) if rng.random() < 0.9 else rng.choice(_BAD)


def _options(rng: random.Random) -> dict:
    pools = {
        "temperature": [0.0, 0.7, 1.5], "top_p": [1.0, 0.9, 0.5], "top_k": [0, 5, 50], "seed": [None, 0, 7],
        "max_tokens": [None, 1, 4, 12], "length_guard": [True, False], "no_repeat_ngram": [0, 2, 3],
        "focus": [None, 0.0, 2.0], "whole_words": [True, False],
    }
    return {k: _option(rng, v) for k, v in pools.items() if rng.random() < 0.5}


def _command(rng: random.Random) -> dict:
    out = {}
    if rng.random() < 0.8:
        out["task"] = _option(rng, ["image", "search", "headline", "tags"] * 2 + ["video"])
    if rng.random() < 0.5:
        out["length"] = _option(rng, [1, 4, 8, 16, 17])
    if rng.random() < 0.3:
        out["reward"] = _option(rng, [0, 1, 2, 3])
    return out


def _call(model: udrl.Model, rng: random.Random) -> str:
    """One random call; returns what it did (a result or a UdrlError), anything else propagates."""
    entry = rng.choice(["generate", "generate", "stream", "batch"])
    try:
        if entry == "generate":
            model.generate(_text(rng), **_command(rng), **_options(rng))
        elif entry == "stream":
            stream = model.stream(_text(rng), **_command(rng), **_options(rng))
            for i, _ in enumerate(stream):
                if rng.random() < 0.2:
                    stream.close()  # an early end must leave the Model usable
        else:
            items: list[object] = [udrl.Request(_text(rng), **_command(rng)) if rng.random() < 0.7 else
                                   {**_command(rng), "query": _text(rng)} for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.1:
                items.append(rng.choice(_BAD + [{"prompt": "x"}, {1: 2}]))
            model.generate_batch(rng.choice([items, items, "poster", None]) if rng.random() < 0.1 else items,
                                 **_options(rng))
        return "result"
    except UdrlError as exc:
        return type(exc).__name__


def test_fuzzed_calls_give_results_or_udrl_errors_on_every_backend(models):
    """2,400 random calls (random Unicode with surrogates and control characters, random types and
    values for every option), fixed seed: each returns or raises a UdrlError subclass."""
    rng = random.Random(20261201)
    outcomes: Counter = Counter()
    for name, model in models.items():
        for _ in range(800):
            outcomes[(name, _call(model, rng))] += 1
        # The Model still works after all of it.
        assert model.generate("poster for a jazz night", task="tags", length=4).text
    assert sum(outcomes.values()) == 2400
    for name in models:  # both kinds of outcome occur on every backend
        assert outcomes[(name, "result")] > 50 and outcomes[(name, "CommandError")] > 50, outcomes


def test_fuzzed_load_arguments(tiny_artifacts, tmp_path):
    rng = random.Random(5)
    paths = [tiny_artifacts["llama"], str(tiny_artifacts["llama"]), tmp_path, tmp_path / "none.gguf", 5, b"x", ""]
    for _ in range(60):
        kwargs = {"path": rng.choice(paths), "backend": rng.choice(["auto", "llama", "onnx", "x", None, 3]),
                  "threads": rng.choice([None, 1, 2, 0, -1, 10**6, 5000, "2", 2.0, True]),
                  "device": rng.choice(["auto", "cpu", "gpu", None])}
        try:
            udrl.load(**kwargs).close()
        except UdrlError:
            pass


def test_queries_that_are_not_text_are_refused_clearly(models):
    m = models["llama"]
    for query, message in [("poster \ud800 night", "lone surrogate U\\+D800 at character 7"),
                           ("\u200b\u200b\u200b", "query is empty"), ("\x00", "control character U\\+0000"),
                           ("jazz\x1bnight", "control character U\\+001B at character 4")]:
        with pytest.raises(CommandError, match=message):
            m.generate(query)


@pytest.mark.parametrize("options, message", [
    (dict(temperature=float("nan")), "temperature must be a finite number"),
    (dict(temperature=float("inf")), "temperature must be a finite number"),
    (dict(seed=-1, temperature=0.7), "seed must be an integer >= 0"),
    (dict(top_k="5"), "top_k must be an integer"),
    (dict(max_tokens=None, no_repeat_ngram=2.0), "no_repeat_ngram must be an integer"),
    (dict(length_guard="yes"), "length_guard must be True or False"),
    (dict(whole_words=1), "whole_words must be True or False"),
    (dict(top_p=float("nan")), "top_p must be a finite number"),
])
def test_bad_options_name_the_option(models, options, message):
    with pytest.raises(CommandError, match=message):
        models["llama"].generate("poster", **options)


def test_bad_batch_items_name_their_index(models):
    m = models["llama"]
    with pytest.raises(CommandError, match="request 1 must be a udrl.Request or a dict, got int") as caught:
        m.generate_batch([udrl.Request("jazz"), 5])
    assert caught.value.index == 1
    with pytest.raises(CommandError, match="request 2: unknown task 'video'") as caught:
        m.generate_batch([udrl.Request("a"), udrl.Request("b"), udrl.Request("c", task="video")])
    assert caught.value.index == 2
    with pytest.raises(CommandError, match="request 0: a request dict has the keys query"):
        m.generate_batch([{"prompt": "jazz"}])
    with pytest.raises(CommandError, match="generate_batch takes a list"):
        m.generate_batch("jazz night")


def test_manifest_readers_refuse_binary_and_broken_files(tiny_artifacts, tmp_path):
    with pytest.raises(udrl.ManifestError, match="not a udrl.json manifest"):
        udrl.load_manifest(tiny_artifacts["llama"])
    assert udrl.read_manifest(tiny_artifacts["llama"]).tasks
    bad = tmp_path / "udrl.json"
    bad.write_bytes(b'{"format": "udrl-manifest", \xff}')
    with pytest.raises(udrl.ManifestError):
        udrl.load_manifest(bad)
    bad.write_text("[" * 100_000)
    with pytest.raises(udrl.ManifestError, match="nested too deeply"):
        udrl.load_manifest(bad)


# -- corrupted GGUF files, in subprocesses ---------------------------------------------------------


def _run_worker(paths: list[str], timeout: float) -> dict[str, dict]:
    """Each file through tests/sdk/gguf_worker.py; a worker that dies (or hangs) is restarted after
    the file it was on, which is recorded with how it ended."""
    results: dict[str, dict] = {}
    pending = list(paths)
    while pending:
        proc = subprocess.Popen([sys.executable, str(HERE / "gguf_worker.py")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            proc.stdin.write("\n".join(pending) + "\n")
            proc.stdin.close()
            current = None
            for line in proc.stdout:
                event = json.loads(line)
                if "start" in event:
                    current = event["start"]
                else:
                    results[event["end"]] = event
                    current = None
            rc = proc.wait()
        finally:
            timer.cancel()
        if current is not None:
            results[current] = {"result": f"died with exit code {rc}"}
        elif rc != 0:
            pytest.fail(f"the GGUF worker exited with {rc} between files")
        pending = [p for p in pending if p not in results]
    return results


def test_mutated_gguf_files_never_kill_the_process(tiny_artifacts, tmp_path):
    """Over 200 mutated copies of a real GGUF (truncated, header bytes flipped, hyperparameters out
    of range, control tokens retyped, lengths that overflow): each is loaded and used in a
    subprocess; none dies by a signal, none raises anything but ManifestError or BackendError."""
    from gguf_mutations import mutated_files

    files = {str(path): what for what, path in mutated_files(Path(tiny_artifacts["llama"]), tmp_path)}
    assert len(files) >= 200
    results = _run_worker(list(files), timeout=300)
    bad = {files[p]: r for p, r in results.items() if r["result"] not in ("ok", "ManifestError", "BackendError")}
    assert not bad, bad
    counts = Counter(r["result"] for r in results.values())
    assert counts["ManifestError"] + counts["BackendError"] >= 0.8 * len(files), counts
    # The mutations named for what llama.cpp aborts on are all refused before it sees them.
    for path, what in files.items():
        if what.startswith(("gpt2.block_count=", "gpt2.attention.layer_norm_epsilon=", "token ")):
            assert results[path]["result"] == "ManifestError", (what, results[path])


# -- streams, locks and threads ------------------------------------------------------------------


def _within(seconds: float, fn, *args):
    """Run ``fn`` on a thread; fail (not hang) if it does not finish in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} did not finish within {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_an_abandoned_stream_blocks_nothing(tiny_artifacts):
    def scenario():
        with udrl.load(tiny_artifacts["llama"]) as m:
            it = m.stream("poster for a jazz night", task="image", length=12)
            first = next(it)
            alone = m.generate("poster for a jazz night", task="image", length=12)  # same thread: no deadlock
            other = _within(10, m.generate, "bakery logo")  # another thread: not blocked
            rest = "".join(it)  # the paused stream resumes where it was
            assert (first + rest).strip() == alone.text and it.result.text == alone.text
            assert other.text
            next(m.stream("jazz", task="tags"))  # and one never finished
        return True

    assert _within(30, scenario)


def test_with_block_left_with_an_unfinished_stream(tiny_artifacts):
    def scenario():
        with udrl.load(tiny_artifacts["llama"]) as m:
            stream = m.stream("poster", task="image", length=12)
            next(stream)
        with pytest.raises(UdrlError, match="closed"):
            next(stream)
        return True

    assert _within(20, scenario)


def test_stream_inside_a_stream_loop_gives_the_same_texts(models):
    m = models["llama"]
    outer_alone = m.generate("poster for a jazz night", task="image", length=10).text
    inner_alone = m.generate("logo for a vegan bakery", task="tags", length=4).text

    def scenario():
        pieces, inners = [], []
        with m.stream("poster for a jazz night", task="image", length=10) as outer:
            for piece in outer:
                pieces.append(piece)
                inners.append("".join(m.stream("logo for a vegan bakery", task="tags", length=4)))
        return "".join(pieces).strip(), inners

    outer, inners = _within(30, scenario)
    assert outer == outer_alone and set(inners) == {inner_alone}


def test_close_during_a_batch_from_another_thread(tiny_artifacts):
    m = udrl.load(tiny_artifacts["llama"])
    batch = [udrl.Request(f"poster for event {i}", "image", 16) for i in range(24)]
    outcome: dict = {}

    def run():
        try:
            outcome["results"] = m.generate_batch(batch)
        except UdrlError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    _within(30, m.close)
    t.join(30)
    assert not t.is_alive()
    assert ("results" in outcome and len(outcome["results"]) == 24) or "closed" in str(outcome["error"])
    with pytest.raises(UdrlError, match="closed"):
        m.generate("poster")


def test_threads_sharing_a_model_get_their_own_texts(models):
    m = models["llama"]
    queries = [f"flyer for a {w} workshop" for w in ("pottery", "bike", "coding", "baking", "yoga", "chess")]
    alone = {q: m.generate(q, task="headline", length=5).text for q in queries}
    got: dict = {}

    def worker(q):
        got[q] = "".join(m.stream(q, task="headline", length=5)).strip()

    threads = [threading.Thread(target=worker, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == alone


# -- batches keep each request's budget ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["llama", "onnx", "torch"])
def test_a_short_request_beside_a_long_prompt_keeps_its_budget(models, backend):
    m = models[backend]
    short = "poster for a summer jazz festival by the sea"
    alone = m.generate(short, task="image", length=16)
    # A long prompt that leaves fewer tokens in the 128-token context than the short request needs.
    probe = m.generate(" ".join(["festival"] * 60), task="image", length=2, max_tokens=1).prompt_tokens
    words = 60 + (128 - (alone.completion_tokens - 6)) - probe
    long_query = " ".join(["festival"] * words)
    long_prompt = m.generate(long_query, task="image", length=2, max_tokens=1).prompt_tokens
    assert 128 - long_prompt < alone.completion_tokens  # the room the old shared cap would have left
    results = m.generate_batch([udrl.Request(long_query, "image", 2), udrl.Request(short, "image", 16)])
    assert results[1].finish_reason == alone.finish_reason
    assert results[1].words == alone.words
    assert results[1].completion_tokens == alone.completion_tokens


# -- the command line ---------------------------------------------------------------------------------


def _udrl(*args: str, stdin: bytes | None = None, shell_tail: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "udrl", *args]
    if shell_tail:
        import shlex

        return subprocess.run(" ".join(map(shlex.quote, command)) + shell_tail, shell=True, capture_output=True,
                              timeout=120, executable="/bin/bash")
    return subprocess.run(command, input=stdin, capture_output=True, timeout=120)


def test_cli_errors_are_one_line_with_a_status_per_kind(tiny_artifacts, tmp_path):
    model = str(tiny_artifacts["llama"])
    bad_utf8 = tmp_path / "bad.txt"
    bad_utf8.write_bytes(b"poster one\n\xff\xfe poster\n")
    bad_line = tmp_path / "lines.txt"
    bad_line.write_text("poster one\n\npost\x00er two\n")
    corrupt = tmp_path / "corrupt.gguf"
    data = bytearray(Path(model).read_bytes())
    data[40:48] = b"\xff" * 8
    corrupt.write_bytes(bytes(data))
    cases = [
        (["generate", "x", "--model", model, "--temperature", "nan"], None, 3, "temperature must be a finite"),
        (["generate", "x", "--model", model, "--seed", "-1", "--temperature", "0.7"], None, 3, "seed must be"),
        (["generate", "--model", model, "--file", str(tmp_path / "missing.txt")], None, 1, "cannot read --file"),
        (["generate", "--model", model, "--file", str(tmp_path)], None, 1, "is a directory"),
        (["generate", "--model", model, "--file", str(bad_utf8)], None, 1, "line 2 of .* is not UTF-8"),
        (["generate", "--model", model, "--file", "-"], b"ok\n\xff\n", 1, "line 2 of standard input is not UTF-8"),
        (["generate", "--model", model, "--file", str(bad_line)], None, 3, "line 3 of .*control character"),
        (["generate", "x", "--model", str(corrupt)], None, 4, "not a valid GGUF file"),
        (["generate", "x", "--model", model, "--threads", "1000000"], None, 1, "threads must be an integer"),
        (["info", str(corrupt)], None, 4, "not a valid GGUF file"),
    ]
    import re

    for args, stdin, status, message in cases:
        done = _udrl(*args, stdin=stdin)
        err = done.stderr.decode()
        assert done.returncode == status, (args, done.returncode, err)
        assert b"Traceback" not in done.stderr and len(err.strip().splitlines()) == 1, (args, err)
        assert re.search(message, err), (args, err)


def test_cli_into_a_closed_pipe(tiny_artifacts):
    done = _udrl("generate", "poster for a jazz night", "--model", str(tiny_artifacts["llama"]), "--json",
                 shell_tail=" | head -c 5")
    assert b"Traceback" not in done.stderr and done.stderr.strip() == b"", done.stderr
    assert done.stdout == b'{"tex'


# -- threads on a busy machine --------------------------------------------------------------------


def test_default_threads_leave_the_cpus_other_processes_use(monkeypatch):
    from udrl import backend_llama

    for others, cpus, want in [(0, 2, 2), (1, 2, 1), (4, 2, 1), (0, 16, 4), (3, 8, 4), (6, 8, 2), (None, 2, 2)]:
        monkeypatch.setattr(backend_llama, "other_runnable_threads", lambda o=others: o)
        assert backend_llama.auto_threads(cpus) == want, (others, cpus)


def test_other_runnable_threads_sees_a_busy_process():
    from udrl.backend_llama import other_runnable_threads
    from udrl.benchmarks.contention import busy_processes

    if other_runnable_threads() is None:
        pytest.skip("this system does not report runnable threads (/proc/loadavg)")
    procs = busy_processes(2, limit_s=20)
    try:
        import time

        time.sleep(0.3)
        assert max(other_runnable_threads() for _ in range(20)) >= 1
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_plain_weight_buffers_where_the_cpu_has_amx(monkeypatch, tiny_artifacts):
    import llama_cpp
    from udrl import backend_llama

    monkeypatch.setattr(backend_llama, "cpu_repacks_for_amx", lambda _: True)
    with backend_llama.plain_weight_buffers(llama_cpp):
        assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is False
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True  # restored
    llm = backend_llama.open_llama(tiny_artifacts["llama"], n_ctx=64, verbose=False)
    llm.eval(llm.tokenize(b" poster", add_bos=False))
    llm.close()
