"""`udrl serve`: a local HTTP server for one model, OpenAI-shaped, on FastAPI + uvicorn.

Every request goes to the Model's continuous-batching scheduler (scheduler.py), so concurrent
clients decode together. Endpoints:

- ``POST /v1/completions``: OpenAI's legacy completions shape; the design request is ``prompt``,
  with ``task``, ``length``, ``reward`` and ``focus`` as extra fields. ``finish_reason`` is
  ``stop`` when the model ended or the length guard reached the requested words, ``length`` when
  the token budget (``max_tokens``) ran out. ``stream: true`` sends server-sent events.
- ``POST /v1/generate``: the SDK's own request and `GenerationResult` as JSON (SSE with ``stream``).
- ``GET /v1/models``: the model and its commands (tasks, length range, reward levels).
- ``GET /health``.

Bad requests get 400 and a JSON error naming the field (OpenAI's ``{"error": {...}}`` shape);
bodies over `ServerConfig.max_body_bytes` get 413, bodies not sent as JSON 415; with an API key, a request without it gets
401. A client that disconnects mid-stream cancels its request at the next token. SIGTERM stops
accepting connections, lets the requests in flight finish and exits 0 (uvicorn's shutdown).
Needs the ``server`` extra: ``pip install 'udrl-edge[server]'``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import re
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from .backends import require
from .errors import CommandError, UdrlError
from .generate import DEFAULTS
from .model import Model, load

for _module in ("fastapi", "uvicorn", "pydantic"):
    require(_module, "server")

# Imported after the check, which names the extra to install.
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_QUERY_CHARS = 4000  # far past any context the shipped models have; the SDK refuses what does not fit
MAX_PROMPTS = 64  # prompts of one completions request


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How `udrl serve` runs."""

    model: str | None = None  # artifact path; None: the bundled default
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None  # when set, every /v1 request must send "Authorization: Bearer <key>"
    threads: int | None = None
    parallel: int = 8  # requests decoded together
    max_body_bytes: int = 64 * 1024
    # Seconds an idle connection stays open. Longer than clients keep one in their pool (httpx and
    # the openai client: 5 s, uvicorn's own default too): a request sent on a connection the
    # server is closing at that moment fails with a reset (httpx.ReadError) instead of an answer.
    keep_alive_s: int = 75
    log_level: str = "warning"


Real = StrictFloat | StrictInt


class _Sampling(BaseModel):
    """Decoding options both endpoints take (as `Model.generate`)."""

    model_config = ConfigDict(extra="forbid")

    task: StrictStr = "image"
    length: StrictInt | None = None
    reward: StrictInt | None = None
    focus: Real | None = DEFAULTS.focus
    temperature: Real = DEFAULTS.temperature
    top_p: Real = DEFAULTS.top_p
    top_k: StrictInt = DEFAULTS.top_k
    seed: StrictInt | None = DEFAULTS.seed
    max_tokens: StrictInt | None = DEFAULTS.max_tokens
    length_guard: StrictBool = DEFAULTS.length_guard
    no_repeat_ngram: StrictInt = DEFAULTS.no_repeat_ngram
    whole_words: StrictBool = DEFAULTS.whole_words
    stream: StrictBool = False

    def options(self) -> dict[str, Any]:
        """The keyword arguments of `Model.generate` / `Model.stream` (the command and the options)."""
        return {name: getattr(self, name) for name in _Sampling.model_fields if name != "stream"}


class CompletionRequest(_Sampling):
    """OpenAI's completions request, with udrl's command fields; ``model`` is accepted and ignored
    (one server serves one model)."""

    prompt: StrictStr | list[StrictStr]
    model: StrictStr | None = None
    n: Literal[1] = 1
    stop: None = None  # not supported: the length guard and the model's end decide where to stop
    stream_options: dict[str, StrictBool] | None = None
    user: StrictStr | None = None


class GenerateRequest(_Sampling):
    """The SDK's request: ``query`` and the options of `Model.generate`."""

    query: StrictStr


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status_code=status)


def _param_of(message: str, fields: tuple[str, ...], query_field: str) -> str | None:
    """The request field an SDK error message names ("unknown task 'x'", "length must be ..."):
    the first word of the message that is a field; the SDK's "query" is ``query_field`` here."""
    for word in re.findall(r"[a-z_]+", message):
        if word == "query":
            return query_field
        if word in fields:
            return word
    return None


# Messages for fields OpenAI has and udrl does not do, instead of the validator's "should be 1".
_UNSUPPORTED = {
    "n": "n must be 1: one completion per prompt (send a list of prompts for several)",
    "stop": "stop sequences are not supported: the length guard and the model's own end decide where an "
            "output stops; leave stop out",
}


class _Guard:
    """ASGI middleware in front of the app: the API key (401) and the body limit (413), checked
    before the app sees a request. The body is read here, bounded, and handed on whole."""

    def __init__(self, app: Any, config: ServerConfig):
        self.app, self.config = app, config

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, key = self.config.max_body_bytes, self.config.api_key
        headers = dict(scope.get("headers") or [])
        if key and scope["path"].startswith("/v1"):
            sent = headers.get(b"authorization", b"")
            if not hmac.compare_digest(sent, f"Bearer {key}".encode()):
                await _error(401, "a valid API key is required: send 'Authorization: Bearer <key>'",
                             kind="authentication_error")(scope, receive, send)
                return
        kind = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if scope["method"] == "POST" and not (kind == b"application/json" or kind.endswith(b"+json")):
            await _error(415, f"the body must be JSON sent as Content-Type: application/json, got "
                              f"{kind.decode('latin-1')!r}", kind="invalid_request_error")(scope, receive, send)
            return
        too_long = _error(413, f"the request body is over {limit} bytes", kind="request_too_large")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await too_long(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await too_long(scope, receive, send)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect a streaming response waits for

        await self.app(scope, replay, send)


def create_app(model: Model, config: ServerConfig = ServerConfig()) -> Any:
    """The ASGI app serving ``model`` (which the caller keeps open and closes). The Model computes
    on a thread of its own (`Model.start_batching_thread`): the event loop only hands requests
    over and pieces back."""
    model.start_batching_thread()
    app = FastAPI(title="udrl", version="1", docs_url=None, redoc_url=None)
    model_id = model.path.name
    created = int(time.time())
    fields = tuple(CompletionRequest.model_fields) + ("query",)
    counts = {"served": 0, "cancelled": 0}  # requests ended, by whether they ran to their end

    def count(ticket: Any) -> None:  # on the Model's batching thread; one writer
        counts["cancelled" if ticket.job.stats.finish_reason == "cancelled" else "served"] += 1

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = where[0] if where else None
        if first.get("type") == "json_invalid":
            return _error(400, "the body is not valid JSON", None)
        if first.get("type") == "extra_forbidden":
            return _error(400, f"unknown field {param!r}; allowed: {', '.join(sorted(fields))}", param)
        if param in _UNSUPPORTED:
            return _error(400, _UNSUPPORTED[param], param)
        if first.get("type") == "missing":
            return _error(400, f"the field {param!r} is required", param)
        return _error(400, f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid')}", param)

    @app.exception_handler(CommandError)
    async def refused(request: Request, exc: CommandError) -> JSONResponse:
        query_field = "prompt" if request.url.path.endswith("/completions") else "query"
        return _error(400, str(exc), _param_of(str(exc), fields, query_field))

    @app.exception_handler(StarletteHTTPException)
    async def not_there(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), kind="invalid_request_error")

    @app.exception_handler(UdrlError)
    async def failed(_: Request, exc: UdrlError) -> JSONResponse:
        return _error(503, str(exc), kind="server_error")

    @app.get("/health")
    async def health() -> dict:
        """Liveness, and the requests in flight and served so far (no API key needed)."""
        return {"status": "ok", "model": model_id, "in_flight": model.in_flight, **counts}

    @app.get("/v1/models")
    async def models() -> dict:
        c = model.commands
        return {"object": "list", "data": [{
            "id": model_id, "object": "model", "created": created, "owned_by": "udrl",
            "backend": model.backend, "tasks": list(c.tasks), "length": {"min": c.length_min, "max": c.length_max},
            "reward_levels": c.reward_levels, "default_length": c.default_length}]}

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest) -> Any:
        feed = _Feed(model, _query(body.query, "query"), body.options(), count)  # a bad request raises here: 400
        if body.stream:
            return _event_stream(_generate_events(feed))
        return (await _finish(feed)).to_dict()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not 1 <= len(prompts) <= MAX_PROMPTS:
            raise CommandError(f"prompt must be a string or a list of 1 to {MAX_PROMPTS} strings, "
                               f"got a list of {len(prompts)}")
        if body.stream and len(prompts) != 1:
            raise CommandError("prompt must be one string when stream is true")
        feeds = []
        try:
            for p in prompts:
                feeds.append(_Feed(model, _query(p, "prompt"), body.options(), count))
        except UdrlError:
            for feed in feeds:
                feed.cancel()
            raise
        ident = f"cmpl-{uuid.uuid4().hex}"
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return _event_stream(_completion_events(feeds[0], ident, model_id, usage))
        results = await asyncio.gather(*(_finish(feed) for feed in feeds))
        return {
            "id": ident, "object": "text_completion", "created": int(time.time()), "model": model_id,
            "choices": [{"text": r.text, "index": i, "logprobs": None, "finish_reason": _openai_finish(r.finish_reason)}
                        for i, r in enumerate(results)],
            "usage": _usage(results),
        }

    return _Guard(app, config)


def _query(text: str, field: str) -> str:
    if len(text) > MAX_QUERY_CHARS:
        raise CommandError(f"{field} is {len(text)} characters; at most {MAX_QUERY_CHARS} are allowed")
    return text


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """Server-sent events, one ``data:`` line per item. Starlette cancels ``events`` when the
    client disconnects; unlike sse-starlette, nothing cuts a stream at shutdown, so SIGTERM lets
    streams in flight finish."""

    async def lines() -> AsyncIterator[bytes]:
        async for data in events:
            yield f"data: {data}\n\n".encode()

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _openai_finish(reason: str) -> str:
    """OpenAI's meaning: "length" is a budget cut; the model's end and the length guard are "stop"."""
    return "length" if reason == "max_tokens" else "stop"


def _usage(results: list) -> dict:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


_END = object()


class _Feed:
    """One request on the Model's batching thread, its pieces handed to this event loop."""

    def __init__(self, model: Model, query: str, options: dict[str, Any], on_done: Any):
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, item)

        def done(ticket: Any) -> None:
            on_done(ticket)
            put(_END)

        self.ticket = model.submit(query, **options, on_piece=put, on_done=done)

    async def pieces(self) -> AsyncIterator[str]:
        while (item := await self.queue.get()) is not _END:
            yield item

    def cancel(self) -> None:
        self.ticket.cancel()


async def _finish(feed: _Feed) -> Any:
    try:
        async for _ in feed.pieces():
            pass
    finally:
        if not feed.ticket.done:  # the client went away (the handler was cancelled)
            feed.cancel()
    return feed.ticket.result()


async def _generate_events(feed: _Feed) -> AsyncIterator[str]:
    try:
        async for piece in feed.pieces():
            yield json.dumps({"piece": piece}, ensure_ascii=False)
        yield json.dumps({"result": feed.ticket.result().to_dict()}, ensure_ascii=False)
        yield "[DONE]"
    finally:
        if not feed.ticket.done:  # disconnected mid-stream: free the slot at the next token
            feed.cancel()


async def _completion_events(feed: _Feed, ident: str, model_id: str, usage: bool) -> AsyncIterator[str]:
    def chunk(text: str, finish: str | None) -> dict:
        return {"id": ident, "object": "text_completion", "created": int(time.time()), "model": model_id,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    try:
        async for piece in feed.pieces():
            yield json.dumps(chunk(piece, None), ensure_ascii=False)
        result = feed.ticket.result()
        last = chunk("", _openai_finish(result.finish_reason))
        if usage:
            last["usage"] = _usage([result])
        yield json.dumps(last, ensure_ascii=False)
        yield "[DONE]"
    finally:
        if not feed.ticket.done:
            feed.cancel()


def serve(config: ServerConfig = ServerConfig(), on_ready: Callable[[], None] | None = None) -> None:
    """Load the model and serve it until SIGINT or SIGTERM (then finish what is in flight);
    ``on_ready()`` is called once the model is loaded and the address checked."""
    _check_address(config.host, config.port)
    with load(config.model, threads=config.threads, parallel=config.parallel) as model:
        server = uvicorn.Server(uvicorn.Config(create_app(model, config), host=config.host, port=config.port,
                                               timeout_keep_alive=config.keep_alive_s, log_level=config.log_level,
                                               access_log=False, lifespan="off"))
        if on_ready is not None:
            on_ready()
        # uvicorn handles SIGTERM gracefully, then raises it again once done; with this handler in
        # place (uvicorn restores it before), that last raise ends the process with status 0.
        previous = signal.signal(signal.SIGTERM, lambda *_: None)
        try:
            server.run()
        finally:
            signal.signal(signal.SIGTERM, previous)


def _check_address(host: str, port: int) -> None:
    """Refuse, with a one-line `UdrlError`, an address this machine cannot listen on (uvicorn
    would log it and exit)."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise UdrlError(f"--port must be from 0 to 65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UdrlError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UdrlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
