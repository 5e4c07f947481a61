"""The engine service of a sealed worker: the real backend, driven over the pipe.

Runs inside the worker (``seal.py engine``): the only process that imports
onnxruntime-genai or LiteRT-LM. One engine per worker, any number of sessions.
Requests run one at a time on the main thread; :class:`~assistant.engines.protocol.Cancel`
runs at once on the reader thread, so a turn stops within a token of the request.

Test-only, read at start: ``ENCLAVE_TEST_DECODE_DELAY_S`` (seconds) sleeps before each
decoding step of a token-level backend, to act like a slow machine; tests that cancel
mid-answer set it (``slow_decoding`` in tests/conftest.py). It replaces patching
``GenaiSession._decode_step`` in the test process, which cannot reach this one. (LiteRT-LM
decodes in its own native thread: a delay here would only postpone noticing a cancel.)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assistant.core.events import Done, Error, GenerationOptions, TextDelta
from assistant.engines.base import Engine, Session, TokenSession
from assistant.engines.protocol import (
    CODEC,
    Cancel,
    CloseSession,
    Count,
    Decode,
    Encode,
    Generate,
    Held,
    Loaded,
    LoadLitert,
    LoadOnnx,
    NativeCount,
    Opened,
    OpenSession,
    Render,
    RenderTools,
    ResetCancel,
    Score,
    Scores,
    StreamError,
    Text,
    Tokens,
)
from assistant.privacy import offline
from assistant.privacy.worker import Ack, Reply, Server, failure_of

DECODE_DELAY_ENV = "ENCLAVE_TEST_DECODE_DELAY_S"


class EngineService:
    """Holds the backend and its sessions inside the worker."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.engine: Engine | None = None
        self.sessions: dict[int, Session] = {}
        self.delay = float(os.environ.get(DECODE_DELAY_ENV, "0") or 0)

    # -- requests
    def urgent(self, request: Any) -> bool:
        """Cancels act at once, on the reader thread, beside a running turn."""
        if isinstance(request, Cancel | ResetCancel):
            session = self.sessions.get(request.session)
            if session is not None and isinstance(request, Cancel):
                session.cancel()
            elif session is not None:
                session.reset_cancel()
            return True
        return False

    def cancel_all(self) -> None:
        """The front end is gone: stop decoding for nobody."""
        for session in list(self.sessions.values()):
            session.cancel()

    def handle(self, request: Any, reply: Reply) -> None:
        match request:
            case LoadOnnx() | LoadLitert():
                reply(self.load(request), end=True)
            case OpenSession(session=sid, capacity=capacity):
                session = self._engine().open_session(capacity)
                if self.delay and isinstance(session, TokenSession):
                    session._decode_step = _slowed(session._decode_step, self.delay)  # type: ignore[method-assign,assignment]
                self.sessions[sid] = session
                reply(Opened(session.capacity), end=True)
            case Generate():
                self.generate(request, reply)
            case CloseSession(session=sid):
                closing = self.sessions.pop(sid, None)
                if closing is not None:
                    closing.close()
                reply(Ack(), end=True)
            case Encode() | Decode() | Render() | RenderTools():
                reply(self._tokenizer(request), end=True)
            case Score(session=sid, tokens=tokens):
                reply(Scores(self.sessions[sid].score(tokens)), end=True)
            case NativeCount(session=sid):
                counter = getattr(self.sessions[sid], "native_token_count", None)
                reply(Count(int(counter()) if callable(counter) else self.sessions[sid].token_count), end=True)
            case _:
                raise ValueError(f"the engine worker does not handle {type(request).__name__}")

    def _tokenizer(self, request: Encode | Decode | Render | RenderTools) -> Tokens | Text:
        tokenizer = self._engine().tokenizer
        match request:
            case Encode(text=text):
                return Tokens(tokenizer.encode(text))
            case Decode(ids=ids):
                return Text(tokenizer.decode(ids))
            case Render(messages=messages, add_generation_prompt=add):
                return Text(tokenizer.render(messages, add))
            case RenderTools(messages_json=messages_json, tools_json=tools_json, add_generation_prompt=add):
                return Text(tokenizer.render_tools(json.loads(messages_json), json.loads(tools_json), add))

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("no model is loaded in this worker")
        return self.engine

    def load(self, request: LoadOnnx | LoadLitert) -> Loaded:
        if self.engine is not None:
            raise RuntimeError("this worker already holds a model")
        if isinstance(request, LoadOnnx):
            from assistant.engines.onnx_genai import OnnxGenaiEngine

            engine: Engine = OnnxGenaiEngine(
                Path(request.path),
                request.name,
                threads=request.threads or None,
                device=request.device,
                kv_cache=request.kv_cache,
            )
        else:
            from assistant.engines.litert_lm import LitertEngine

            # An unverified bundle is not probe-loaded in yet another child: this
            # worker is that child (a crafted bundle's abort ends only it).
            engine = LitertEngine(
                Path(request.path),
                request.name,
                cache_dir=Path(request.cache_dir),
                threads=request.threads or None,
                max_tokens=request.max_tokens,
                verified=True,
                device=request.device,
                completion=request.completion,
            )
        offline.opt_out()  # the libraries' own opt-outs, now that they are loaded
        self.engine = engine
        return Loaded(engine.name, engine.info, engine.capabilities)

    def generate(self, request: Generate, reply: Reply) -> None:
        engine = self._engine()
        session = self.sessions[request.session]
        if tuple(request.eos) != tuple(engine.info.eos_token_ids):
            engine.info.eos_token_ids = tuple(request.eos)
        done = False
        try:
            for event in session.generate(request.prompt, request.options, request.messages):
                match event:
                    case TextDelta():
                        reply(event)
                        self.server.streamed()
                    case Done():
                        # The front end's copy of the held tokens, before it sees Done.
                        reply(Held(session.tokens))
                        done = True
                        reply(event)
                    case Error(error=exc):
                        failure = failure_of(exc)
                        reply(StreamError(failure.kind, failure.message, failure.hint))
                    case _:
                        reply(event)
        finally:
            if not done:  # a failure: the cache was emptied or is unknown
                reply(Held(session.tokens))
        reply(Ack(), end=True)

    def idle(self, interrupted: Callable[[], bool]) -> None:
        """Between requests: let each session make room for its next turn (the ONNX
        engine's growing KV cache re-reads the conversation now rather than when the
        user's next message is waiting)."""
        for session in list(self.sessions.values()):
            if interrupted():
                return
            session.prepare_next(interrupted)

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def _slowed(step: Callable[[GenerationOptions], int], delay: float) -> Callable[[GenerationOptions], int]:
    def slow(options: GenerationOptions) -> int:
        time.sleep(delay)
        return step(options)

    return slow


def serve(server: Server) -> None:
    # A cancel is read by the pipe thread, which needs the GIL while the main thread
    # decodes. Measured with the tiny test model (2,300 tok/s): with Python's default
    # 5 ms switch interval a cancel took 5-25 ms to stop the turn; at 0.5 ms, 0.5-4 ms
    # (under one token of SmolLM2 at ~100 tok/s). A SIGUSR1 nudge on top changed
    # nothing measurable at 500 tok/s, so there is none.
    sys.setswitchinterval(0.0005)
    service = EngineService(server)

    try:
        server.run(CODEC, service.handle, service.urgent, service.cancel_all, service.idle)
    finally:
        service.close()
