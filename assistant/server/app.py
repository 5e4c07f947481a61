"""The HTTP layer of ``enclave serve``: a Starlette app in front of :class:`~assistant.app.serving.ModelServer`.

It only asks, shows and forwards: every decision (token, Host, queue, slots, audit) is the
app layer's. Requests pass, outermost first: the Host check (421 for a foreign name: DNS
rebinding), CORS (only when origins are listed), the bearer token (401), then the routes,
which read a bounded body (413), parse it (400 with the JSON error's position) and stream
the answer as server-sent events ending in ``data: [DONE]``. A client that disconnects
cancels its generation through a watcher on the ASGI ``receive`` channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from assistant.app.access import Binding, TokenKeeper, cors_origins, host_allowed
from assistant.app.serving import Caller, Cancelled, Job, ModelServer, Piece, RefusalReason, Served, ToolCallDelta
from assistant.core.errors import (
    Busy,
    ContextExhausted,
    EnclaveError,
    EngineUnavailable,
    InvalidRequest,
    ModelNotInstalled,
    ModelUnknown,
    NotALanguageModel,
    NotSupported,
)
from assistant.core.events import TextDelta
from assistant.server import wire

log = logging.getLogger(__name__)

#: What the disconnect watcher tolerates being drained after a too-large body, so the
#: client reads the 413 instead of a reset connection: 4x the limit, then the connection closes.
DRAIN_FACTOR = 4


class Refused(Exception):
    """A request refused by the HTTP layer, with its status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        reason: RefusalReason,
        message: str,
        kind: str,
        code: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.kind = kind
        self.code = code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(wire.error_json(self.message, self.kind, self.code), self.status, headers=self.headers)


def error_response(exc: BaseException, prompt_field: str = "messages") -> JSONResponse:
    """An app-layer error in OpenAI's shape, with the status a client acts on;
    ``prompt_field`` names what holds the prompt (``prompt`` on /v1/completions)."""
    headers: dict[str, str] = {}
    if isinstance(exc, EnclaveError):
        message = f"{exc.message} {exc.hint}".strip()
    else:
        message = "Enclave failed on this request (an internal error); the server log has the details."
    param = exc.param if isinstance(exc, InvalidRequest) else None
    if isinstance(exc, Busy):
        status, kind, code = 429, "rate_limit_error", "queue_full"
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, ContextExhausted):
        status, kind, code, param = 400, "invalid_request_error", "context_length_exceeded", prompt_field
        # The engine's hint names CLI flags; an API client can shorten what it sends.
        message = (
            f"{exc.message} Send fewer or shorter messages, or a smaller max_tokens; the server's window is "
            "the context_window setting (`enclave config set context_window N`, then restart it)."
        )
    elif isinstance(exc, NotSupported):
        status, kind, code = 400, "invalid_request_error", "unsupported"
    elif isinstance(exc, InvalidRequest):
        status, kind, code = 400, "invalid_request_error", "invalid_request"
    elif isinstance(exc, ModelUnknown | ModelNotInstalled | NotALanguageModel):
        status, kind, code, param = 404, "invalid_request_error", "model_not_found", "model"
        if isinstance(exc, NotALanguageModel):  # its hint names --model; an API client chooses in the request
            message = f"{exc.message} Send a chat model's id as `model` (GET /v1/models lists them, with their kind)."
    elif isinstance(exc, EngineUnavailable):
        status, kind, code = 503, "server_error", "engine_unavailable"
    else:
        status, kind, code = 500, "server_error", "internal_error"
    return JSONResponse(wire.error_json(message, kind, code, param), status, headers=headers)


# --------------------------------------------------------------------------- guards (pure ASGI)
class HostGuard:
    """Refuses a Host header that does not name this server (421), before anything else runs."""

    def __init__(self, app: ASGIApp, server: ModelServer, where: Binding) -> None:
        self.app = app
        self.server = server
        self.where = where

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = _header(scope, b"host")
            if not host_allowed(host, self.where, self.server.settings.serve_allowed_hosts):
                self.server.refused("foreign_host", path=scope.get("path", ""), detail=f"Host: {host}")
                refusal = Refused(
                    421,
                    "foreign_host",
                    f"This server answers to localhost and the loopback address, not to {host or 'an empty Host'}.",
                    "invalid_request_error",
                    "misdirected_request",
                )
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TokenGuard:
    """Requires ``Authorization: Bearer <token>`` (401 otherwise) and names the caller."""

    def __init__(self, app: ASGIApp, server: ModelServer, keeper: TokenKeeper) -> None:
        self.app = app
        self.server = server
        self.keeper = keeper

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = _header(scope, b"authorization") or ""
        scheme, _, presented = value.partition(" ")
        token = self.keeper.check(presented.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            reason: RefusalReason = "bad_token" if presented else "no_token"
            self.server.refused(reason, path=scope.get("path", ""))
            said = "was not accepted" if presented else "is missing"
            refusal = Refused(
                401,
                reason,
                f"The API token {said}. Send `Authorization: Bearer <token>`; `enclave serve token` prints it.",
                "authentication_error",
                "invalid_api_key",
                {"WWW-Authenticate": 'Bearer realm="enclave"'},
            )
            await refusal.response()(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = Caller(token.id)
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


# --------------------------------------------------------------------------- helpers
async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, at most ``limit`` bytes (413 beyond, 400 when malformed)."""
    too_large = Refused(
        413,
        "body_too_large",
        f"The request body is over the {limit // 1024} KiB limit.",
        "invalid_request_error",
        "request_too_large",
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit * DRAIN_FACTOR:
        raise too_large
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit * DRAIN_FACTOR:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise too_large
    try:
        data = json.loads(b"".join(chunks))
    except json.JSONDecodeError as exc:
        raise Refused(
            400,
            "malformed_json",
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            "invalid_request_error",
            "invalid_json",
        ) from exc
    except UnicodeDecodeError as exc:
        raise Refused(
            400, "malformed_json", "The request body is not UTF-8 text.", "invalid_request_error", "invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise Refused(
            400,
            "malformed_json",
            f"The request body must be a JSON object, not {type(data).__name__}.",
            "invalid_request_error",
            "invalid_json",
        )
    return data


async def _until_disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so ``receive`` now only
    reports the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _watch(request: Request, job: Job) -> asyncio.Task[None]:
    """Cancel ``job`` when its client disconnects."""
    task = asyncio.ensure_future(_until_disconnected(request))
    task.add_done_callback(lambda t: None if t.cancelled() else job.cancel())
    return task


def _caller(request: Request) -> Caller:
    caller = request.scope.get("state", {}).get("caller")
    assert isinstance(caller, Caller), "TokenGuard names the caller of every request"
    return caller


StreamFormat = Callable[[Piece | Served], list[str]]


async def _respond(
    request: Request,
    job: Job,
    stream: bool,
    whole: Callable[[Served, str, int], dict[str, Any]],
    pieces: Callable[[str], StreamFormat],
    prefix: str,
) -> Response:
    """Wait for the first event (so errors before the answer keep their status), then answer
    as one JSON object or as server-sent events."""
    ident = f"{prefix}-{uuid.uuid4().hex[:24]}"
    watcher = _watch(request, job)
    events = job.events()
    try:
        first = await anext(events)
    except Cancelled:
        watcher.cancel()
        return Response(status_code=499)  # nobody is listening; the status is for the log
    except BaseException:
        watcher.cancel()
        raise
    if not stream:
        try:
            item = first
            while not isinstance(item, Served):  # the pieces add up to Served.text
                item = await anext(events)
        finally:
            watcher.cancel()
        return JSONResponse(whole(item, ident, int(time.time())))
    return StreamingResponse(
        _sse(first, events, pieces(ident), job, watcher),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    first: Piece | Served,
    events: AsyncIterator[Piece | Served],
    format_item: StreamFormat,
    job: Job,
    watcher: asyncio.Task[None],
) -> AsyncIterator[str]:
    try:
        item = first
        while True:
            for event in format_item(item):
                yield event
            if isinstance(item, Served):
                break
            item = await anext(events)
    except EnclaveError as exc:  # after the answer began, an error can only be an event
        body = json.loads(bytes(error_response(exc).body))
        yield wire.sse(body)
    finally:
        job.cancel()  # a no-op when it finished; stops decoding when the client went away
        watcher.cancel()
    yield wire.sse("[DONE]")


def _chat_stream(model_id: str, include_usage: bool) -> Callable[[str], StreamFormat]:
    def for_request(ident: str) -> StreamFormat:
        created = int(time.time())
        started = [False]

        def format_item(item: Piece | Served) -> list[str]:
            out: list[str] = []
            if not started[0]:
                started[0] = True
                out.append(wire.sse(wire.chat_chunk(ident, created, model_id, {"role": "assistant", "content": ""})))
            if isinstance(item, TextDelta):
                out.append(wire.sse(wire.chat_chunk(ident, created, model_id, {"content": item.text})))
                return out
            if isinstance(item, ToolCallDelta):
                delta = wire.tool_call_chunk(item.index, item.arguments, item.id, item.name)
                out.append(wire.sse(wire.chat_chunk(ident, created, model_id, delta)))
                return out
            last = wire.chat_chunk(ident, created, item.model.id, {}, wire.finish_of(item))
            last["enclave"] = wire.enclave_json(item)
            out.append(wire.sse(last))
            if include_usage:
                usage = {**wire.chat_chunk(ident, created, item.model.id, {}), "choices": []}
                usage["usage"] = wire.usage_json(item)
                out.append(wire.sse(usage))
            return out

        return format_item

    return for_request


def _completion_stream(model_id: str, include_usage: bool) -> Callable[[str], StreamFormat]:
    def for_request(ident: str) -> StreamFormat:
        created = int(time.time())

        def format_item(item: Piece | Served) -> list[str]:
            if isinstance(item, TextDelta):
                return [wire.sse(wire.completion_chunk(ident, created, model_id, item.text))]
            if isinstance(item, ToolCallDelta):
                return []  # completions never call tools
            last = wire.completion_chunk(ident, created, item.model.id, "", wire.FINISH[item.finish_reason])
            last["enclave"] = wire.enclave_json(item)
            out = [wire.sse(last)]
            if include_usage:
                usage = {**wire.completion_chunk(ident, created, item.model.id, ""), "choices": []}
                usage["usage"] = wire.usage_json(item)
                out.append(wire.sse(usage))
            return out

        return format_item

    return for_request


def _guarded(
    server: ModelServer, handler: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` with Enclave's refusals as API errors (refusals recorded in the audit log)."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as exc:
            server.refused(exc.reason, token_id=_caller(request).token_id, path=request.url.path, detail=exc.message)
            return exc.response()
        except Busy as exc:
            server.refused("queue_full", token_id=_caller(request).token_id, path=request.url.path)
            return error_response(exc)
        except InvalidRequest as exc:
            server.refused(
                "invalid_request", token_id=_caller(request).token_id, path=request.url.path, detail=exc.message
            )
            return error_response(exc)
        except EnclaveError as exc:
            return error_response(exc, "prompt" if request.url.path.rstrip("/").endswith("/v1/completions") else "messages")

    return guarded


def _middleware(server: ModelServer, keeper: TokenKeeper, where: Binding) -> list[Middleware]:
    """The Host check first, CORS only for the origins configured, then the token check."""
    middleware = [Middleware(HostGuard, server=server, where=where)]
    origins = cors_origins(server.settings)
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
                max_age=600,
            )
        )
    middleware.append(Middleware(TokenGuard, server=server, keeper=keeper))
    return middleware


# --------------------------------------------------------------------------- the app
def create_app(server: ModelServer, keeper: TokenKeeper, where: Binding) -> Starlette:
    """The API app: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""
    settings = server.settings
    limit = settings.serve_max_body_kib * 1024

    def endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        return _guarded(server, handler)

    async def list_models(request: Request) -> Response:
        models = await asyncio.to_thread(server.listed, _caller(request))
        return JSONResponse({"object": "list", "data": [wire.model_json(m) for m in models]})

    async def get_model(request: Request) -> Response:
        wanted = request.path_params["model_id"]
        for model in await asyncio.to_thread(server.listed, _caller(request), wanted):
            return JSONResponse(wire.model_json(model))
        raise ModelUnknown(f"No model is called {wanted!r}.", "GET /v1/models lists the model ids.")

    async def chat(request: Request) -> Response:
        parsed, streaming = wire.parse_chat(await _read_json(request, limit))
        job = server.chat(parsed, _caller(request))
        model_id = parsed.model or settings.model
        return await _respond(
            request,
            job,
            streaming.stream,
            wire.chat_json,
            _chat_stream(model_id, streaming.include_usage),
            "chatcmpl",
        )

    async def complete(request: Request) -> Response:
        parsed, streaming = wire.parse_completion(await _read_json(request, limit))
        job = server.complete(parsed, _caller(request))
        model_id = parsed.model or settings.model
        return await _respond(
            request,
            job,
            streaming.stream,
            wire.completion_json,
            _completion_stream(model_id, streaming.include_usage),
            "cmpl",
        )

    async def embeddings(request: Request) -> Response:
        parsed, as_base64, dimensions = wire.parse_embeddings(await _read_json(request, limit))
        result = await server.embed(parsed, _caller(request))
        if dimensions is not None and dimensions != len(result.vectors[0]):
            raise NotSupported(
                f"{result.model.id} writes {len(result.vectors[0])}-dimensional vectors; it cannot shorten them.",
                "Leave `dimensions` out.",
                param="dimensions",
            )
        return JSONResponse(wire.embeddings_json(result, as_base64))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = "Method not allowed here." if status == 405 else f"There is no endpoint {request.url.path}."
        body = wire.error_json(
            f"{message} Endpoints: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.",
            "invalid_request_error",
            "not_found",
        )
        return JSONResponse(body, status)

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("unexpected failure on %s", request.url.path, exc_info=exc)
        return error_response(exc)

    middleware = _middleware(server, keeper, where)
    routes = [
        Route("/v1/models", endpoint(list_models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", endpoint(get_model), methods=["GET"]),
        Route("/v1/chat/completions", endpoint(chat), methods=["POST"]),
        Route("/v1/completions", endpoint(complete), methods=["POST"]),
        Route("/v1/embeddings", endpoint(embeddings), methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found, 405: not_found, Exception: internal},
    )
