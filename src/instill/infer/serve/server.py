"""`instill serve`: an OpenAI-compatible HTTP API (FastAPI + uvicorn) and a chat page for the tuned model.

    POST /v1/chat/completions   chat; `stream: true` sends server-sent events ending in `data: [DONE]`
    POST /v1/completions        raw prompt, no template
    GET  /v1/models             the base and every adapter, by name (the `model` of a request)
    GET  /health, GET /metrics  liveness; batching counters (batch sizes, tokens, queue)
    GET  /                      the chat page (static/chat.html, no external files)

Every error is JSON in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 bad
request or prompt too long, 401 missing/wrong API key, 404 unknown model or path, 429 queue full (with
Retry-After), 500 generation failed (the server keeps serving). Generation runs in a batcher
(`continuous.ContinuousBatcher`, or static `batching.Batcher`; `build_batcher` picks); each request is
one `rows.Row`, whose text events are handed to the event loop as they come.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from instill.errors import DataError, TemplateError
from instill.infer.serve.batching import BaseBatcher, Batcher, QueueFull
from instill.infer.serve.continuous import ContinuousBatcher, continuous_reason
from instill.infer.serve.protocol import ChatCompletionRequest, CompletionRequest
from instill.infer.serve.rows import Row, generate_rows
from instill.infer.serve.served import ServedModel, ServedModels
from instill.infer.serve.toolcalls import ToolCallSplitter

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class APIError(Exception):
    """An error answered in OpenAI's JSON shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(error_body(err.message, err.type, err.code, err.param), err.status, headers=err.headers)


@dataclass
class Limits:
    """Server-side bounds and defaults for a request's generation settings."""

    max_tokens: int = 512  # most tokens one answer may have; the default when a request gives none
    temperature: float = 0.0  # when a request gives none (0 = greedy)
    top_p: float = 1.0
    top_k: int | None = None  # None: no top-k cut
    repetition_penalty: float | None = None  # None: the model's generation_config value
    skip_special_tokens: bool = True


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """A warning when the server listens beyond this machine without an API key."""
    if host in LOCAL_HOSTS or api_key:
        return None
    return (f"listening on {host} without an API key: anyone who can reach this port can use the model "
            "(set --api-key or INSTILL_API_KEY, or bind 127.0.0.1)")


BATCHING = ("continuous", "static")


def build_batcher(served: ServedModels, batching: str = "continuous", max_batch: int = 8, max_queue: int = 64,
                  window_s: float = 0.01) -> tuple[BaseBatcher, str | None]:
    """The batcher for `served` and, when continuous batching was asked for but cannot run, why not."""
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, not {batching!r}")
    reason = continuous_reason(served.model, served.media) if batching == "continuous" else None
    if batching == "continuous" and reason is None:
        return ContinuousBatcher(served.model, served.pad_id, served.multi_adapter, max_batch, max_queue,
                                 window_s), None
    return Batcher(lambda rows: generate_rows(served.model, rows, served.pad_id, served.multi_adapter, served.media),
                   max_batch=max_batch, max_queue=max_queue, window_s=window_s), reason


def build_app(served: ServedModels, batcher: BaseBatcher, api_key: str | None = None,
              limits: Limits | None = None) -> FastAPI:
    """The FastAPI application; `batcher` (from `build_batcher`) runs generation on `served`."""
    limits = limits or Limits()
    app = FastAPI(title="instill serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served, app.state.batcher = served, batcher

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        # pydantic names the union branch it tried (e.g. `str`, `list[TextPart]`); the user needs the field
        loc = [p for p in loc if not any(c in p for c in "[]") and p not in ("str", "int", "float", "bool")]
        param = ".".join(loc) or None
        msg = first.get("msg", "invalid request").removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            msg, param = "the request body is not valid JSON", None
        elif first.get("type") == "extra_forbidden":
            msg = f"unknown field '{param}'"
        elif first.get("type") == "missing":
            msg = f"'{param}' is required" if param else "a JSON request body is required"
        else:
            msg = f"{param}: {msg}" if param else msg
        return _error_response(APIError(400, msg, code="invalid_value", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return _error_response(APIError(err.status_code, str(err.detail), code=code))

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        return _error_response(APIError(500, f"internal error: {type(err).__name__}: {err}", "server_error",
                                        "internal_error"))

    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    guarded = [Depends(authorized)]

    @app.get("/", include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(resources.files("instill.infer.serve").joinpath("static/chat.html").read_text("utf-8"))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": list(served.models)}

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> dict:
        return {**batcher.stats.as_dict(), "queued": batcher.queued, "running": batcher.running,
                "max_concurrency": batcher.max_batch, "max_queue": batcher.max_queue, "batching": batcher.kind}

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": served.created, "owned_by": "instill",
             "root": m.source, "max_model_len": served.context} for name, m in served.models.items()]}

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        model = _model(served, body.model)
        tools = body.tool_list()
        try:
            prompt = await run_in_threadpool(model.chat_prompt, body.conversation(), tools, body.chat_template_kwargs,
                                             body.images())
        except TemplateError as err:
            raise APIError(400, str(err), code="template_error", param="messages") from None
        except DataError as err:  # an image the model cannot read, or a text-only model
            raise APIError(400, str(err), code="invalid_image", param="messages") from None
        job = _Job.start(model, prompt, body, limits, served, batcher, chat=True, images=tuple(body.images()))
        if body.stream:
            return EventSourceResponse(_chat_stream(job, body.include_usage, tools is not None))
        return await _chat_answer(job, request, tools is not None)

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request):
        model = _model(served, body.model)
        prompt = await run_in_threadpool(model.text_prompt, body.prompt)
        job = _Job.start(model, prompt, body, limits, served, batcher, chat=False)
        if body.stream:
            return EventSourceResponse(_text_stream(job, body.include_usage))
        return await _text_answer(job, request)

    return app


def _model(served: ServedModels, name: str) -> ServedModel:
    if name not in served.models:
        raise APIError(404, f"the model '{name}' does not exist; this server has: {', '.join(served.models)}",
                       code="model_not_found", param="model")
    return served.models[name]


@dataclass
class _Job:
    """One request in flight: its row in the batcher and the queue its events arrive on."""

    id: str
    model: ServedModel
    row: Row
    events: asyncio.Queue
    batcher: BaseBatcher
    created: int

    @classmethod
    def start(cls, model: ServedModel, prompt: list[int], body: Any, limits: Limits, served: ServedModels,
              batcher: BaseBatcher, chat: bool, images: tuple[str, ...] = ()) -> _Job:
        n_prompt, room = len(prompt), served.context - len(prompt)
        if body.max_tokens is not None and body.max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens is {body.max_tokens}, but this server allows at most "
                                f"{limits.max_tokens}", code="invalid_value", param="max_tokens")
        max_tokens = body.max_tokens or min(limits.max_tokens, room)
        if n_prompt + max_tokens > served.context or room < 1:
            raise APIError(400, f"this model's maximum context length is {served.context} tokens, but the "
                                f"prompt has {n_prompt} tokens and {max_tokens} more were asked for the answer "
                                f"({n_prompt + max_tokens} in all); shorten the messages or lower max_tokens",
                           code="context_length_exceeded", param="messages" if chat else "prompt")
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is closed: the server is shutting down
                pass

        temperature = limits.temperature if body.temperature is None else body.temperature
        row = Row(prompt, model.tokenizer, model.chat_stop_ids if chat else model.text_stop_ids, max_tokens, emit,
                  adapter=model.adapter, temperature=temperature,
                  top_p=limits.top_p if body.top_p is None else body.top_p, seed=body.seed, stop=tuple(body.stop),
                  top_k=limits.top_k if body.top_k is None else max(body.top_k, 0) or None,  # vLLM's -1 / 0: no cut
                  repetition_penalty=limits.repetition_penalty if body.repetition_penalty is None
                  else body.repetition_penalty, skip_special_tokens=limits.skip_special_tokens, images=images)
        try:
            batcher.submit(row)
        except QueueFull as err:
            raise APIError(429, str(err), "rate_limit_exceeded", "queue_full",
                           headers={"Retry-After": str(err.retry_after)}) from None
        prefix = "chatcmpl" if chat else "cmpl"
        return cls(f"{prefix}-{uuid.uuid4().hex}", model, row, events, batcher, int(time.time()))

    def usage(self) -> dict:
        n = len(self.row.prompt)
        return {"prompt_tokens": n, "completion_tokens": self.row.tokens, "total_tokens": n + self.row.tokens}

    async def next(self) -> tuple[str, Any]:
        return await self.events.get()

    async def collect(self, request: Request) -> tuple[str, str]:
        """(text, finish_reason) of a non-streamed answer; cancels the row if the client goes away."""
        parts: list[str] = []
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(self.events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():  # nobody to answer; nginx calls this 499
                        raise APIError(499, "client closed the request", code="client_closed") from None
                    continue
                if kind == "text":
                    parts.append(value)
                elif kind == "end":
                    return "".join(parts), value
                else:
                    raise APIError(500, value, "server_error", "generation_failed")
        finally:
            self.batcher.cancel(self.row)  # no-op when finished


async def _chat_answer(job: _Job, request: Request, with_tools: bool) -> dict:
    text, finish = await job.collect(request)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if with_tools:
        splitter = ToolCallSplitter(job.model.template.tool_format)
        content = splitter.feed(text)
        rest, calls = splitter.finish()
        content += rest
        if calls:
            message = {"role": "assistant", "content": content or None, "tool_calls": calls}
            finish = "tool_calls"
    return {"id": job.id, "object": "chat.completion", "created": job.created, "model": job.model.name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": job.usage()}


async def _text_answer(job: _Job, request: Request) -> dict:
    text, finish = await job.collect(request)
    return {"id": job.id, "object": "text_completion", "created": job.created, "model": job.model.name,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": job.usage()}


def _sse(data: Any) -> bytes:
    """One server-sent event. The endpoints return `EventSourceResponse(stream)` themselves rather than
    being `yield` endpoints, so that errors found before the first token (404, 429 ...) are plain JSON
    responses; json.dumps never writes a newline, so a single `data:` line is always the whole event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _outputs(job: _Job) -> AsyncIterator[tuple[str, Any]]:
    """The row's outputs as the batcher sends them, up to and including its end (or its error)."""
    while True:
        kind, value = await job.next()
        yield kind, value
        if kind != "text":
            return


async def _events(job: _Job, head: dict, include_usage: bool, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body's events, then the usage chunk (when asked) and `[DONE]`; a client that disconnects cancels the
    stream, and so its row."""
    try:
        async with aclosing(body):
            async for event in body:
                yield event
        if include_usage:
            yield _sse({**head, "choices": [], "usage": job.usage()})
        yield _sse("[DONE]")
    finally:
        job.batcher.cancel(job.row)


def _failed(message: str) -> bytes:
    return _sse(error_body(message, "server_error", "generation_failed"))


def _chat_stream(job: _Job, include_usage: bool, with_tools: bool) -> AsyncIterator[bytes]:
    """chat.completion.chunk events: the role, the text (tool calls split out at the end), the finish reason."""
    head = {"id": job.id, "object": "chat.completion.chunk", "created": job.created, "model": job.model.name}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return _sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    async def body() -> AsyncIterator[bytes]:
        splitter = ToolCallSplitter(job.model.template.tool_format) if with_tools else None
        yield chunk({"role": "assistant", "content": ""})
        async for kind, value in _outputs(job):
            if kind == "text":
                content = splitter.feed(value) if splitter else value
                if content:
                    yield chunk({"content": content})
            elif kind == "end":
                finish = value
                if splitter:
                    rest, calls = splitter.finish()
                    if rest:
                        yield chunk({"content": rest})
                    for i, call in enumerate(calls or []):
                        yield chunk({"tool_calls": [{"index": i, **call}]})
                    finish = "tool_calls" if calls else finish
                yield chunk({}, finish)
            else:
                yield _failed(value)

    return _events(job, head, include_usage, body())


def _text_stream(job: _Job, include_usage: bool) -> AsyncIterator[bytes]:
    """text_completion events: the text, then the finish reason."""
    head = {"id": job.id, "object": "text_completion", "created": job.created, "model": job.model.name}

    def chunk(text: str, finish: str | None = None) -> bytes:
        return _sse({**head, "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]})

    async def body() -> AsyncIterator[bytes]:
        async for kind, value in _outputs(job):
            yield chunk(value) if kind == "text" else chunk("", value) if kind == "end" else _failed(value)

    return _events(job, head, include_usage, body())


KEEP_ALIVE_S = 75  # seconds an idle HTTP/1.1 connection stays open (nginx's default)


def run_server(served: ServedModels, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
               max_concurrency: int = 8, max_queue: int = 64, limits: Limits | None = None,
               log_level: str = "info", batching: str = "continuous") -> None:
    """Serve until Ctrl-C: uvicorn on host:port, up to `max_concurrency` requests generating together."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from instill.console import say

    batcher, reason = build_batcher(served, batching, max_concurrency, max_queue)
    if reason:
        say(f"static batching: continuous batching cannot serve this model ({reason})")
    app = build_app(served, batcher, api_key, limits)
    log_config = {**LOGGING_CONFIG, "loggers": {**LOGGING_CONFIG["loggers"],
                                                "instill.serve": {"handlers": ["default"], "level": "INFO",
                                                                  "propagate": False}}}
    try:
        # open streams get a few seconds to finish on Ctrl-C; then they are cut. An idle keep-alive connection is
        # kept longer than clients keep theirs (httpx/openai 5 s, aiohttp 15 s; uvicorn's own default is 5 s), so a
        # client never sends on a connection the server is closing (the soak saw 3 of 11,202 requests lost so)
        uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config, timeout_graceful_shutdown=5,
                    timeout_keep_alive=KEEP_ALIVE_S)
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises it again for the caller
        pass
    finally:
        batcher.close()
    stats = batcher.stats
    say(f"server stopped: {stats.requests} requests in {stats.batches} batches (largest {max(stats.batch_sizes, default=0)}),"
        f" {stats.tokens:,} tokens generated, {stats.rejected} refused (queue full)")
