"""Serving: the use cases behind ``enclave serve``, Enclave's OpenAI-compatible API.

The HTTP front end (:mod:`assistant.server`) turns JSON into the request records below
and formats what comes back; every decision is made here, once:

* **who may ask** — :mod:`assistant.app.access` (the bearer token, the Host header, the
  listening address);
* **which model and which KV cache** — a :class:`ModelServer` keeps each loaded model's
  sessions as *slots* (:class:`SlotPool`), chosen by the request's history and token
  prefix and evicted by bytes, so a client that resends a whole conversation prefills
  only its new message;
* **when** — one worker thread per model with a bounded queue (:class:`Lane`; a full
  queue is :class:`~assistant.core.errors.Busy`, HTTP 429), and a cancel that reaches
  the decoding loop within a token (:class:`Job`);
* **what is kept** — every request is audited (token id, model, sha256, documents,
  token counts, outcome; never the text), and API conversations are saved to the
  history only when ``serve_save_history`` is on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, TypeVar

from assistant.app.access import Binding, ServerToken
from assistant.app.personas import load_persona
from assistant.app.tools import (
    ArgumentsDelta,
    CallStarted,
    CallStream,
    ContentDelta,
    StreamItem,
    Tool,
    ToolCall,
    ToolFormat,
    check_calls,
    template_messages,
    tool_format,
    tool_grammar,
)
from assistant.app.turns import Assistant, Conversation, TurnCollector
from assistant.catalog.manifests import InstalledModel
from assistant.core.errors import (
    Busy,
    ContextExhausted,
    EnclaveError,
    EngineError,
    InvalidRequest,
    ModelNotInstalled,
    ModelUnknown,
    NotSupported,
)
from assistant.core.events import (
    Constraint,
    Done,
    Error,
    FinishReason,
    GenerationOptions,
    TextDelta,
    Usage,
    json_constraint,
)
from assistant.core.records import Message
from assistant.core.settings import Settings
from assistant.engines import ENGINE_NAMES
from assistant.engines.base import CompletionTokenizer, Engine, Session
from assistant.storage.audit import AuditLog

log = logging.getLogger(__name__)

T = TypeVar("T")

#: KV bytes per token assumed when an engine cannot tell (LiteRT-LM): SmolLM2-135M's
#: measured layout, 2 x 30 layers x 3 KV heads x 64 x 4 B = 46 KB, rounded up.
FALLBACK_KV_BYTES_PER_TOKEN = 48 * 1024
#: A refused request (bad token, foreign Host, …) is audited at most once per this many
#: seconds per reason, with a count of those not written: a page hammering the port
#: must not fill the disk with audit entries (each is a synchronous transaction).
REFUSAL_AUDIT_INTERVAL_S = 1.0

ModelKind = Literal["chat", "base", "embedding"]  # base: a language model without chat tuning
Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
Endpoint = Literal["chat", "completions", "embeddings", "models"]
#: Why a request was refused before it reached a model.
RefusalReason = Literal[
    "no_token", "bad_token", "foreign_host", "body_too_large", "malformed_json", "invalid_request", "queue_full"
]


class Cancelled(EnclaveError):
    """A job was cancelled (its client went away) before it ran."""


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Caller:
    """Who sent a request, as the audit log names them."""

    token_id: str


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    #: An assistant message's calls (its content may then be empty).
    tool_calls: tuple[ToolCall, ...] = ()
    #: A ``tool`` message: the call it answers.
    tool_call_id: str | None = None

    @property
    def is_tool_turn(self) -> bool:
        """A tool result, or an assistant message that calls tools."""
        return self.role == "tool" or bool(self.tool_calls)

    def as_message(self) -> Message:
        return {"role": self.role, "content": self.content}

    def as_openai(self) -> dict[str, Any]:
        """The message in OpenAI's shape (what chat templates with tools take)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.as_json() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True)
class Sampling:
    """A request's sampling fields; None: the setting's value (Enclave's default is greedy,
    ``temperature`` 0, unlike OpenAI's 1: reproducible answers unless a client asks)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


ResponseFormatKind = Literal["text", "json_object", "json_schema"]


@dataclass(frozen=True)
class ResponseFormat:
    kind: ResponseFormatKind
    #: The JSON Schema, as JSON text (``json_schema`` only).
    schema: str | None = None


ToolChoice = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    messages: tuple[ChatMessage, ...]
    sampling: Sampling = Sampling()
    response_format: ResponseFormat | None = None
    #: The functions offered (used only with models whose template has a tool-call format).
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"
    #: The function a ``named`` tool_choice names.
    tool_name: str | None = None
    #: More than one call in an answer (OpenAI's default).
    parallel_tool_calls: bool = True
    #: Enclave's extension: answer from these document collections (empty: all of them);
    #: None: documents off.
    documents: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CompletionRequest:
    model: str | None
    prompt: str
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str | None
    inputs: tuple[str, ...]


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ServedModel:
    """A model the API offers: ``id`` is the name for the model's first installed engine,
    ``name@engine`` for the others."""

    id: str
    name: str
    engine: str
    kind: ModelKind
    sha256: str
    created: int
    context_window: int | None = None
    dimensions: int | None = None
    #: Output can be constrained to a JSON Schema (``response_format``); known once loaded.
    constrained: bool | None = None
    #: The chat template's tool-call format (``hermes``, …), "" for none; known once loaded.
    tool_format: str | None = None


@dataclass(frozen=True)
class Citation:
    """One passage an answer from documents was given, and what the answer did with it."""

    n: int
    path: str
    page: int | None
    line_start: int
    line_end: int
    unit: str
    heading: str
    collection: str
    text: str
    #: The answer names it as [n].
    cited: bool
    #: Answer sentences whose words and figures it contains.
    supports: int

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Citation:
        return cls(
            n=int(entry["n"]),
            path=str(entry["path"]),
            page=entry.get("page"),
            line_start=int(entry["line_start"]),
            line_end=int(entry["line_end"]),
            unit=str(entry.get("unit", "lines")),
            heading=str(entry.get("heading", "")),
            collection=str(entry.get("collection", "")),
            text=str(entry.get("text", "")),
            cited=bool(entry.get("cited")),
            supports=int(entry.get("supports", 0)),
        )


@dataclass(frozen=True)
class Served:
    """A finished generation: the last item of a :class:`Job`'s events."""

    model: ServedModel
    text: str
    finish_reason: FinishReason
    usage: Usage | None
    citations: tuple[Citation, ...] | None = None
    notices: tuple[str, ...] = ()
    conversation_id: int | None = None
    #: The calls the answer is (then ``text`` is empty and the client runs them).
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens the KV cache already held (not run through the model)."""
        return 0 if self.usage is None else self.usage.prompt_tokens - self.usage.prefilled_tokens


@dataclass(frozen=True)
class Embeddings:
    model: ServedModel
    vectors: tuple[tuple[float, ...], ...]
    tokens: int


# --------------------------------------------------------------------------- queue
class Lane:
    """One model's worker: requests run one at a time (two decodes on two cores would each
    run at half speed and both answer late), and at most ``depth`` wait; more are refused
    with :class:`Busy` instead of piling up."""

    def __init__(self, name: str, depth: int) -> None:
        self.name = name
        self.depth = max(0, depth)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"enclave-serve-{name}")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting

    @property
    def admitted(self) -> int:
        with self._lock:
            return self._admitted

    def submit(self, work: Callable[[Callable[[], None]], T]) -> Future[T]:
        """Queue ``work``; it is called with a ``release`` function that gives its place in
        the queue back (idempotent; called for it when it returns), so that a job can free
        its place before it hands over its last result: a client that sends its next
        request the moment it has the answer must find the queue free."""
        with self._lock:
            if self._admitted > self.depth:
                raise Busy(
                    f"The model {self.name} is busy: one request is running and {self.depth} are waiting.",
                    "Retry in a moment, or raise serve_queue (`enclave config set serve_queue N`).",
                )
            self._admitted += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self._admitted -= 1

        def run() -> T:
            try:
                return work(release)
            finally:
                release()

        return self._pool.submit(run)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call: its start (``id`` and ``name``), then its arguments."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


Piece = TextDelta | ToolCallDelta
JobItem = TextDelta | ToolCallDelta | Served | BaseException


class Job:
    """One queued generation. Its events (``TextDelta`` pieces, then one :class:`Served`)
    cross from the model's worker thread to the event loop; :meth:`cancel` (a client that
    went away) stops decoding within a token, or the job before it starts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: asyncio.Queue[JobItem] = asyncio.Queue()
        self._lock = threading.Lock()
        self._cancelled = False
        self._session: Session | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._session is not None:
                self._session.cancel()

    def _attach(self, session: Session) -> bool:
        """The worker starts decoding on ``session``; False when already cancelled."""
        with self._lock:
            if self._cancelled:
                return False
            self._session = session
            return True

    def _detach(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            # A cancel that arrived after the last token must not stop the slot's next request.
            session.reset_cancel()

    def _put(self, item: JobItem) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            self.cancel()

    async def events(self) -> AsyncIterator[Piece | Served]:
        """Text pieces, then the :class:`Served` result. Errors raise here: before the first
        piece, so a front end can still answer with an error status.

        Pieces that queued up while the consumer was busy come out as one: on two loaded
        cores the event loop can fall behind the decoder, and one chunk per backlog instead
        of one per token keeps the server's and the client's work per token from growing.
        """
        pending: JobItem | None = None
        while True:
            item = pending if pending is not None else await self._items.get()
            pending = None
            if isinstance(item, TextDelta):
                pieces = [item.text]
                while not self._items.empty():
                    following = self._items.get_nowait()
                    if not isinstance(following, TextDelta):
                        pending = following
                        break
                    pieces.append(following.text)
                if len(pieces) > 1:
                    item = TextDelta("".join(pieces))
            elif isinstance(item, ToolCallDelta):
                # The same for a call's arguments (its start, with id and name, stays its own piece).
                args = [item.arguments]
                while not self._items.empty():
                    following = self._items.get_nowait()
                    if not (
                        isinstance(following, ToolCallDelta) and following.index == item.index and following.id is None
                    ):
                        pending = following
                        break
                    args.append(following.arguments)
                if len(args) > 1:
                    item = replace(item, arguments="".join(args))
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Served):
                return

    async def result(self) -> Served:
        async for item in self.events():
            if isinstance(item, Served):
                return item
        raise AssertionError("a job always ends with Served or an error")


class StopScanner:
    """Cuts streamed text at the first stop sequence, holding back only what could still
    turn out to be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hit = False
        self._pending = ""

    def push(self, text: str) -> str:
        if not self.stops or self.hit:
            return "" if self.hit else text
        buffer = self._pending + text
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit = True
            self._pending = ""
            return buffer[: min(found)]
        keep = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:n]):
                    keep = n
                    break
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out


# --------------------------------------------------------------------------- KV slots
@dataclass(eq=False)
class Slot:
    """A kept KV session (inside a conversation) and what the client will resend to continue it."""

    conv: Conversation
    #: The messages the cache stands for, as the client sees them (its history, its last
    #: message and the answer); empty when unknown (a completion, a cancelled answer).
    transcript: list[Message] = field(default_factory=list)
    used: float = field(default_factory=time.monotonic)

    @property
    def session(self) -> Session:
        return self.conv.session


class SlotPool:
    """One model's kept sessions, chosen like llama.cpp's slots and evicted by bytes.

    A request takes, in this order: the slot whose transcript it continues (the same
    conversation, one message further); else the slot whose cached tokens it mostly shares
    (at least ``SIMILARITY`` of them: a regenerated or edited last message, where the cache
    survives nearly whole); else a new slot while the byte budget allows; else the slot with
    the longest common prefix (a shared system prompt), or the least recently used one. A
    session's cost is counted as its whole capacity, what its KV cache can reach:
    onnxruntime-genai preallocates the buffer at ``max_length`` (the window with
    ``kv_cache = "window"``; with ``grow`` a kept conversation's cache grows to it).
    """

    #: llama.cpp's default ``slot_prompt_similarity``: reusing a slot evicts the rest of
    #: its conversation, so it is reused only when at least half of it survives.
    SIMILARITY = 0.5

    def __init__(self, engine: Engine, window: int, budget_bytes: int, make: Callable[[], Conversation]) -> None:
        self.engine = engine
        self._make = make
        per_token = engine.info.kv_bytes_per_token or FALLBACK_KV_BYTES_PER_TOKEN
        self.slot_bytes = per_token * window
        self.limit = max(1, budget_bytes // max(1, self.slot_bytes))
        self.slots: list[Slot] = []

    def take(self, messages: Sequence[Message] | None, tokens: Callable[[], list[int]]) -> tuple[Slot, bool]:
        """The slot for a request; ``(slot, continues)``: whether the request continues the
        slot's transcript (same conversation). ``messages`` is the request's history before
        its new message (None for a completion); ``tokens`` gives its prompt tokens,
        computed only when needed."""
        if messages is not None:
            best: Slot | None = None
            for slot in self.slots:
                n = len(slot.transcript)
                if n and list(messages[:n]) == slot.transcript and (best is None or n > len(best.transcript)):
                    best = slot
            if best is not None:
                return self._use(best, keep=True), True
        prompt = tokens() if self.slots else []
        shared = {id(s): s.session.common_prefix(prompt) for s in self.slots}
        similar = [
            s for s in self.slots if s.session.token_count and shared[id(s)] >= self.SIMILARITY * s.session.token_count
        ]
        if similar:
            return self._use(max(similar, key=lambda s: shared[id(s)])), False
        if len(self.slots) < self.limit:
            slot = Slot(self._make())
            self.slots.append(slot)
            return slot, False
        longest = max(self.slots, key=lambda s: (shared[id(s)], s.used))
        if shared[id(longest)] == 0:
            longest = min(self.slots, key=lambda s: s.used)
        return self._use(longest), False

    @staticmethod
    def _use(slot: Slot, keep: bool = False) -> Slot:
        slot.used = time.monotonic()
        if not keep:
            slot.transcript = []
        return slot

    def close(self) -> None:
        for slot in self.slots:
            slot.conv.close()
        self.slots.clear()


# --------------------------------------------------------------------------- the server
@dataclass
class _Refusals:
    last: dict[str, float] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelServer:
    """The served models, their queues and KV slots, and the audit of every request.

    Methods that queue work (:meth:`chat`, :meth:`complete`, :meth:`embed`) are called from
    the event loop and return at once; the work runs in the model's :class:`Lane`.
    """

    def __init__(self, settings: Settings, assistant: Assistant | None = None) -> None:
        # An API client manages its own context: a conversation that does not fit is an
        # error it can act on (400 context_length_exceeded), never turns dropped silently.
        self.settings = replace(settings, context_policy="stop")
        self.assistant = assistant or Assistant(self.settings)
        self._lanes: dict[str, Lane] = {}
        self._pools: dict[tuple[str, str], SlotPool] = {}
        self._lock = threading.Lock()  # the lanes (held briefly, on the event loop)
        self._load_lock = threading.RLock()  # loading models and the embedder (seconds)
        self._embedder: Any = None
        self._library: Any = None
        self._refusals = _Refusals()

    # -- what is offered
    def models(self) -> list[ServedModel]:
        """Installed chat models (one entry per engine) and the document-search embedder."""
        from assistant.retrieval.embed import CONFIG_NAME, EMBEDDER_NAME

        catalog = self.assistant.catalog
        out: list[ServedModel] = []
        for model in catalog.installed():
            created = int(model.manifest_path.stat().st_mtime)
            if model.kind == "embedding":
                if model.name != EMBEDDER_NAME:
                    continue
                try:
                    dim = int(json.loads((model.path / CONFIG_NAME).read_text(encoding="utf-8"))["dim"])
                except (OSError, ValueError, KeyError, TypeError):
                    dim = None
                out.append(
                    ServedModel(model.name, model.name, model.engine, "embedding", model.sha256, created, None, dim)
                )
                continue
            pool = self._pools.get((model.name, model.engine))
            out.append(
                ServedModel(
                    id=self.model_id(model),
                    name=model.name,
                    engine=model.engine,
                    kind="chat" if model.chat else "base",
                    sha256=model.sha256,
                    created=created,
                    context_window=min(self.settings.context_window, int(model.manifest.get("context_length") or 0))
                    or self.settings.context_window,
                    constrained=None if pool is None else pool.engine.capabilities.constrained,
                    tool_format=None if pool is None else _tool_format_of(pool.engine),
                )
            )
        return out

    def listed(self, caller: Caller, wanted: str | None = None) -> list[ServedModel]:
        """``GET /v1/models`` (or one model, ``wanted``): :meth:`models`, audited like every request."""
        started = time.perf_counter()
        models = self.models()
        found = [m for m in models if wanted is None or m.id == wanted]
        outcome = "ok" if found or wanted is None else "model_not_found"
        self._audit_request(caller, "models", wanted or "", "", "", outcome, started)
        return found

    def model_id(self, model: InstalledModel) -> str:
        try:
            first = self.assistant.catalog.find(model.name)
        except EnclaveError:
            first = model
        return model.name if first.engine == model.engine else f"{model.name}@{model.engine}"

    def resolve(self, model_id: str | None) -> InstalledModel:
        """The installed chat model an API model id names (``name`` or ``name@engine``;
        none: the default model)."""
        ident = model_id or self.settings.model
        name, _, engine = ident.partition("@")
        if engine and engine not in ENGINE_NAMES:
            raise ModelUnknown(
                f"No engine is called {engine!r} (in the model id {ident!r}).",
                f"Engines: {', '.join(ENGINE_NAMES)}; GET /v1/models lists the model ids.",
            )
        return self.assistant.catalog.find_language_model(name, engine or None)

    def served(self, model: InstalledModel, engine: Engine | None = None) -> ServedModel:
        return ServedModel(
            id=self.model_id(model),
            name=model.name,
            engine=model.engine,
            kind="chat" if model.chat else "base",
            sha256=model.sha256,
            created=int(model.manifest_path.stat().st_mtime),
            context_window=None if engine is None else min(self.settings.context_window, engine.info.context_length),
            constrained=None if engine is None else engine.capabilities.constrained,
            tool_format=None if engine is None else _tool_format_of(engine),
        )

    # -- queues
    def admitted(self, model_id: str | None = None) -> int:
        """Requests for a model now running or waiting in its queue."""
        model = self.resolve(model_id)
        return self._lane(f"{model.name}@{model.engine}").admitted

    def _lane(self, key: str) -> Lane:
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(key, self.settings.serve_queue)
            return lane

    def _load(self, model: InstalledModel) -> tuple[Engine, SlotPool]:
        """The loaded engine and its slots (in the model's lane thread)."""
        with self._load_lock:
            _, engine = self.assistant.load(model.name, model.engine)
            key = (model.name, model.engine)
            pool = self._pools.get(key)
            if pool is None:
                window = min(self.settings.context_window, engine.info.context_length)

                def make() -> Conversation:
                    conv = Conversation(self.settings, model, engine, system="", messages=[])
                    conv.audit = self.assistant.audit
                    return conv

                pool = self._pools[key] = SlotPool(engine, window, self.settings.serve_kv_mib << 20, make)
            return engine, pool

    def warm(self, model_id: str | None = None) -> Future[None]:
        """Load a model in its lane now, so the first request does not wait for it."""
        model = self.resolve(model_id)

        def load(release: Callable[[], None]) -> None:
            self._load(model)

        return self._lane(f"{model.name}@{model.engine}").submit(load)

    # -- chat
    def chat(self, request: ChatRequest, caller: Caller) -> Job:
        """Queue a chat completion; raises :class:`Busy` when the model's queue is full and
        model errors (unknown, not installed) at once."""
        model = self.resolve(request.model)
        messages = [m.as_message() for m in request.messages]
        if not messages or messages[-1]["role"] not in ("user", "tool"):
            raise InvalidRequest(
                'The last message must be the user\'s (role "user") or a tool result (role "tool").',
                "End `messages` with the question to answer.",
                param="messages",
            )
        if request.tool_choice == "named" and request.tool_name not in {t.name for t in request.tools}:
            raise InvalidRequest(
                f"`tool_choice` names the function {request.tool_name!r}, which is not in `tools`.",
                "Name one of the functions offered.",
                param="tool_choice",
            )
        job = Job(asyncio.get_running_loop())
        started = time.perf_counter()

        def run(release: Callable[[], None]) -> None:
            work = partial(self._chat, job, request, messages, model)
            # How many functions were offered and how they could be used; never their names or text.
            extra = {"tools": len(request.tools), "tool_choice": request.tool_choice} if request.tools else None
            self._run(job, caller, "chat", model, started, work, release, extra)

        self._lane(f"{model.name}@{model.engine}").submit(run)
        return job

    def _chat(self, job: Job, request: ChatRequest, messages: list[Message], model: InstalledModel) -> Served:
        engine, pool = self._load(model)
        if _wants_tools(request, engine):
            return self._chat_tools(job, request, model, engine, pool)
        constraint = self._constraint(request.response_format, engine, model)
        options = self._options(request.sampling, constraint)
        system, history, user = _split(messages)
        if not system and model.chat:
            # No system message: the persona setting's, as `enclave ask` uses (SmolLM2 answers
            # "What is the capital of France?" with Paris under it, and rambles under its
            # template's own default); a client's system message replaces it. A base model
            # gets none: it would only continue the persona's text ("You are Enclave, …").
            system = load_persona(self.settings, self.settings.persona)
        tok = engine.tokenizer
        slot, continues = pool.take(messages[:-1], lambda: tok.encode(tok.render(messages, add_generation_prompt=True)))
        conv = slot.conv
        conv.system, conv.messages = system, history
        if self.settings.serve_save_history:
            # A request that continues the slot's transcript continues its stored conversation.
            conv.attach(self.assistant.store, conv.id if continues else None)
        if request.documents is not None:
            library = self.library()
            try:
                conv.use_documents(library, list(request.documents) or None)
            except EnclaveError as exc:
                raise InvalidRequest(exc.message, exc.hint, param="enclave.documents") from exc
            if not conv.collections:
                raise InvalidRequest(
                    "There are no indexed documents to answer from.",
                    "Add some with `enclave docs add PATH`.",
                    param="enclave.documents",
                )
        else:
            conv.use_documents(None)
        slot.transcript = []
        collector = TurnCollector(conv)
        text, reason = self._decode(job, conv.session, conv.stream(user, options), collector, request.sampling.stop)
        result = collector.result()
        if reason != "cancelled" and result.error is None:
            slot.transcript = [*messages, {"role": "assistant", "content": text}]
        if result.error is not None:
            raise result.error
        if constraint is not None and reason == "stop":
            fmt = request.response_format
            _check_json(text, model, json.loads(fmt.schema) if fmt is not None and fmt.schema else None)
        conversation_id = None
        if self.settings.serve_save_history and reason not in ("cancelled", "error"):
            result.text, result.finish_reason = text, reason
            try:
                conv.save_turn(result, user)
                conversation_id = conv.id
            except EnclaveError as exc:
                result.notices.append(f"Not saved: {exc.message}")
        citations = None if result.citations is None else tuple(Citation.from_entry(c) for c in result.citations)
        return Served(
            self.served(model, engine),
            text,
            reason,
            collector.usage,
            citations,
            tuple(result.notices),
            conversation_id,
        )

    def _chat_tools(
        self, job: Job, request: ChatRequest, model: InstalledModel, engine: Engine, pool: SlotPool
    ) -> Served:
        """A chat turn with tools: the model's template renders them, a Lark grammar keeps the
        answer to text or well-formed calls (:mod:`assistant.app.tools`)."""
        fmt = _tool_support(request, model, engine)
        wire_messages = [m.as_openai() for m in request.messages]
        if wire_messages[0]["role"] != "system":
            wire_messages.insert(0, {"role": "system", "content": load_persona(self.settings, self.settings.persona)})
        tok = engine.tokenizer
        prompt = tok.render_tools(template_messages(wire_messages), [t.as_json() for t in request.tools])
        tokens = tok.encode(prompt)
        slot, _ = pool.take(None, lambda: tokens)
        slot.transcript = []
        room = slot.session.capacity - len(tokens)
        if room < 1:
            raise ContextExhausted(needed=len(tokens), window=slot.session.capacity)
        max_tokens = max(1, min(self._max_tokens(request.sampling), room))
        notices: tuple[str, ...] = ()
        fmt_json = request.response_format is not None and request.response_format.kind != "text"
        if fmt_json:  # tool_choice "none" (checked): the tools are shown, the answer is JSON
            constraint = self._constraint(request.response_format, engine, model)
        else:
            grammar = tool_grammar(
                fmt,
                request.tools,
                request.tool_choice,
                named=request.tool_name,
                parallel=request.parallel_tool_calls,
                max_tokens=max_tokens,
            )
            constraint, notices = Constraint("lark", grammar.lark), grammar.notices
        options = replace(self._options(request.sampling, constraint), max_tokens=max_tokens)
        stream = CallStream(fmt, [t.name for t in request.tools])
        text, reason, usage = self._decode_tools(job, slot.session, tokens, options, stream, request.sampling.stop)
        calls = tuple(stream.calls)
        if stream.mode == "calls" and reason == "length":
            raise EngineError(
                f"{model.name} stopped at the token limit ({max_tokens}) in the middle of a tool call.",
                "Raise max_tokens, or offer functions with smaller parameters (maxLength, maxItems).",
            )
        if calls and reason == "stop":
            check_calls(calls, request.tools, model.name)
        if fmt_json and reason == "stop":
            fmt_ = request.response_format
            _check_json(text, model, json.loads(fmt_.schema) if fmt_ is not None and fmt_.schema else None)
        return Served(
            self.served(model, engine), "" if calls else text, reason, usage, notices=notices, tool_calls=calls
        )

    def _decode_tools(
        self,
        job: Job,
        session: Session,
        tokens: list[int],
        options: GenerationOptions,
        stream: CallStream,
        stops: Sequence[str],
    ) -> tuple[str, FinishReason, Usage | None]:
        """Decode a tool turn, forwarding content (cut at stop sequences) and call pieces to
        ``job``: (the content sent, the finish reason, the usage)."""
        forward = _Forwarder(job, session, StopScanner(stops))
        usage: Usage | None = None
        reason: FinishReason = "error"
        if not job._attach(session):
            return "", "cancelled", None
        try:
            for event in session.generate(tokens, options):
                match event:
                    case TextDelta(text=piece):
                        forward(stream.push(piece))
                    case Usage():
                        usage = event
                    case Done(reason=done):
                        reason = done
                    case Error(error=error):
                        raise error
        finally:
            job._detach()
        if forward.scanner.hit:
            return "".join(forward.sent), "stop", usage
        if reason != "cancelled":
            forward(stream.finish())
            forward.flush()
        return "".join(forward.sent), reason, usage

    # -- completions
    def complete(self, request: CompletionRequest, caller: Caller) -> Job:
        """Queue a plain-text completion (the prompt as written, no chat template)."""
        model = self.resolve(request.model)
        job = Job(asyncio.get_running_loop())
        started = time.perf_counter()

        def run(release: Callable[[], None]) -> None:
            work = partial(self._complete, job, request, model)
            self._run(job, caller, "completions", model, started, work, release)

        self._lane(f"{model.name}@{model.engine}").submit(run)
        return job

    def _complete(self, job: Job, request: CompletionRequest, model: InstalledModel) -> Served:
        engine, pool = self._load(model)
        messages: list[dict[str, str]] | None = None
        if not engine.capabilities.token_level:
            if model.chat:
                raise NotSupported(
                    f"The {engine.name} engine works on chat messages only; it cannot continue raw text.",
                    f"Use /v1/chat/completions with {model.name}, or an onnx build (or a base model) for /v1/completions.",
                    param="model",
                )
            # A message-level base bundle renders one user message as the text itself
            # (litert_lm.COMPLETION_TEMPLATE: the start token, then the prompt as written).
            messages = [{"role": "user", "content": request.prompt}]
        # A base model's completion starts with its start token, as llama.cpp's does (the
        # engines' tokenizers never add it; a chat model's raw text is left as written).
        # Assistant.load gave a base model its CompletionTokenizer, which holds it.
        start = engine.tokenizer.start if isinstance(engine.tokenizer, CompletionTokenizer) else ""
        tokens = engine.tokenizer.encode(start + request.prompt) if request.prompt else []
        if not tokens:
            raise InvalidRequest("The prompt is empty.", "Send some text to continue.", param="prompt")
        slot, _ = pool.take(None, lambda: tokens)
        slot.transcript = []
        room = slot.session.capacity - len(tokens)
        if room < 1:
            raise ContextExhausted(needed=len(tokens), window=slot.session.capacity)
        options = slot.conv.options(room, self._options(request.sampling, None))
        usage_box: list[Usage] = []

        def events() -> Any:
            for event in slot.session.generate(tokens, options, messages=messages):
                if isinstance(event, Usage):
                    usage_box.append(event)
                yield event

        collector = TurnCollector(slot.conv)
        text, reason = self._decode(job, slot.session, events(), collector, request.sampling.stop)
        if collector.error is not None:
            raise collector.error
        return Served(self.served(model, engine), text, reason, usage_box[0] if usage_box else None)

    # -- embeddings
    async def embed(self, request: EmbeddingRequest, caller: Caller) -> Embeddings:
        from assistant.retrieval.embed import EMBEDDER_NAME

        if request.model not in (None, EMBEDDER_NAME):
            raise ModelUnknown(
                f"No embedding model is called {request.model!r}.",
                f"The embedding model is {EMBEDDER_NAME} (GET /v1/models lists it).",
            )
        started = time.perf_counter()

        def run(release: Callable[[], None]) -> Embeddings:
            served: ServedModel | None = None
            outcome: str = "ok"
            tokens = 0
            try:
                embedder = self.embedder()
                served = ServedModel(
                    EMBEDDER_NAME, EMBEDDER_NAME, "onnx", "embedding", embedder.sha256, 0, None, embedder.dim
                )
                tokens = sum(embedder.count_tokens(t) for t in request.inputs)
                vectors = embedder.embed(list(request.inputs))
                return Embeddings(served, tuple(tuple(float(x) for x in row) for row in vectors), tokens)
            except BaseException as exc:
                outcome = _outcome(exc)
                raise
            finally:
                self._audit_request(
                    caller,
                    "embeddings",
                    EMBEDDER_NAME,
                    "onnx",
                    served.sha256 if served else "",
                    outcome,
                    started,
                    inputs=len(request.inputs),
                    prompt_tokens=tokens,
                )

        return await asyncio.wrap_future(self._lane("embedder").submit(run))

    def embedder(self) -> Any:
        """The document-search embedder, loaded once (in the embedder lane)."""
        from assistant.retrieval.embed import EMBEDDER_NAME, load_embedder

        with self._load_lock:
            if self._embedder is None:
                embedder = load_embedder(self.settings)
                if embedder is None:
                    raise ModelNotInstalled(
                        f"The embedding model {EMBEDDER_NAME} is not built yet.",
                        f"Build it with `enclave models build {EMBEDDER_NAME}` (about 30 s, once).",
                    )
                self._embedder = embedder
            return self._embedder

    def library(self) -> Any:
        """The document library (opened once; its embedder is the one /v1/embeddings serves)."""
        from assistant.retrieval import open_library

        with self._load_lock:
            if self._library is None:
                try:
                    embedder = self.embedder()
                except ModelNotInstalled:
                    embedder = None  # keyword search only, as the CLI does without the embedder
                self._library = open_library(self.settings, self.assistant.store, embedder)
            return self._library

    # -- shared by chat and completions
    def _max_tokens(self, sampling: Sampling) -> int:
        return sampling.max_tokens if sampling.max_tokens is not None else self.settings.max_tokens

    def _options(self, sampling: Sampling, constraint: Constraint | None) -> GenerationOptions:
        s = self.settings
        return GenerationOptions(
            max_tokens=self._max_tokens(sampling),
            temperature=s.temperature if sampling.temperature is None else sampling.temperature,
            top_p=s.top_p if sampling.top_p is None else sampling.top_p,
            top_k=s.top_k,
            seed=s.seed if sampling.seed is None else sampling.seed,
            constraint=constraint,
        )

    @staticmethod
    def _constraint(fmt: ResponseFormat | None, engine: Engine, model: InstalledModel) -> Constraint | None:
        if fmt is None or fmt.kind == "text":
            return None
        if not engine.capabilities.constrained:
            raise NotSupported(
                f"The {engine.name} engine cannot constrain {model.name}'s output to JSON yet "
                "(no constrained decoding), and unconstrained output would not be guaranteed to parse.",
                "Send the request without `response_format`, or use an engine with constrained decoding "
                "(GET /v1/models shows `constrained` for loaded models).",
                param="response_format",
            )
        if fmt.kind == "json_object":
            return json_constraint()
        return json_constraint(fmt.schema)

    def _decode(
        self,
        job: Job,
        session: Session,
        events: Any,
        collector: TurnCollector,
        stops: Sequence[str],
    ) -> tuple[str, FinishReason]:
        """Forward a generation's text to ``job``, cutting at stop sequences; the text sent
        and the finish reason. A stop sequence cancels decoding within the same token."""
        scanner = StopScanner(stops)
        parts: list[str] = []
        reason: FinishReason = "error"
        if not job._attach(session):
            return "", "cancelled"
        try:
            for event in events:
                collector.feed(event)
                match event:
                    case TextDelta(text=piece):
                        out = scanner.push(piece)
                        if out:
                            parts.append(out)
                            job._put(TextDelta(out))
                        if scanner.hit:
                            session.cancel()
                    case Done(reason=done):
                        reason = done
                    case Error():
                        reason = "error"
        finally:
            job._detach()
        if scanner.hit:
            reason = "stop"
        elif reason != "cancelled":
            tail = scanner.flush()
            if tail:
                parts.append(tail)
                job._put(TextDelta(tail))
        return "".join(parts), reason

    def _run(
        self,
        job: Job,
        caller: Caller,
        endpoint: Endpoint,
        model: InstalledModel,
        started: float,
        work: Callable[[], Served],
        release: Callable[[], None],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Run one job in its lane: skip it when cancelled while waiting, audit it, free its
        place in the queue, then hand its result or error to the event loop (so the audit
        entry exists by the time the client has the answer)."""
        if job.cancelled:  # the client went away while it waited
            release()
            job._put(Cancelled("The request was cancelled before it started."))
            return
        served: Served | None = None
        result: Served | BaseException
        try:
            served = result = work()
            outcome: str = served.finish_reason
        except BaseException as exc:
            result, outcome = exc, _outcome(exc)
            if not isinstance(exc, EnclaveError):
                log.exception("serving %s failed", endpoint)
        self._audit_request(
            caller, endpoint, model.name, model.engine, model.sha256, outcome, started, served=served, **(extra or {})
        )
        release()
        job._put(result)

    # -- audit
    @property
    def audit(self) -> AuditLog:
        return self.assistant.audit

    def _audit_request(
        self,
        caller: Caller,
        endpoint: Endpoint,
        model: str,
        engine: str,
        sha256: str,
        outcome: str,
        started: float,
        served: Served | None = None,
        **extra: Any,
    ) -> None:
        """One entry per request: who, which model, what came of it; never the text."""
        detail: dict[str, Any] = {
            "token": caller.token_id,
            "endpoint": endpoint,
            "model": model,
            "engine": engine,
            "sha256": sha256,
            "outcome": outcome,
            "ms": round((time.perf_counter() - started) * 1000, 1),
            **extra,
        }
        if served is not None and served.usage is not None:
            detail.update(
                prompt_tokens=served.usage.prompt_tokens,
                cached_tokens=served.cached_tokens,
                completion_tokens=served.usage.completion_tokens,
            )
        elif served is not None:  # cancelled before the model ran: nothing was generated
            detail.update(prompt_tokens=0, cached_tokens=0, completion_tokens=0)
        if served is not None and served.citations is not None:
            detail["documents"] = [
                {
                    "n": c.n,
                    "collection": c.collection,
                    "path": c.path,
                    "page": c.page,
                    "lines": [c.line_start, c.line_end],
                }
                for c in served.citations
            ]
        if served is not None and served.conversation_id is not None:
            detail["conversation"] = served.conversation_id
        if served is not None and served.tool_calls:
            detail["tool_calls"] = len(served.tool_calls)
        try:
            self.audit.record("api_request", **detail)
        except Exception as exc:  # noqa: BLE001 - the answer was given; a full disk must not hide it
            log.error("could not audit an API request: %s", exc)

    def refused(self, reason: RefusalReason, *, token_id: str | None = None, path: str = "", detail: str = "") -> None:
        """Audit a request refused before it reached a model (rate-limited per reason)."""
        now = time.monotonic()
        r = self._refusals
        with r.lock:
            if now - r.last.get(reason, -REFUSAL_AUDIT_INTERVAL_S) < REFUSAL_AUDIT_INTERVAL_S:
                r.suppressed[reason] = r.suppressed.get(reason, 0) + 1
                return
            r.last[reason] = now
            suppressed = r.suppressed.pop(reason, 0)
        entry: dict[str, Any] = {"reason": reason, "token": token_id, "path": path}
        if detail:
            entry["detail"] = detail[:200]
        if suppressed:
            entry["also_refused_unrecorded"] = suppressed
        try:
            self.audit.record("api_refused", **entry)
        except Exception as exc:  # noqa: BLE001 - refusing must not fail because the disk is full
            log.error("could not audit a refused API request: %s", exc)

    def started(self, where: Binding, token: ServerToken, *, token_created: bool) -> None:
        """Audit the start: where it listens (exposed or not) and which token guards it."""
        if token_created:
            self.audit.record("serve_token_created", token=token.id)
        self.audit.record(
            "serve_exposed" if where.exposed else "serve_start",
            host=where.host,
            port=where.port,
            token=token.id,
            cors_origins=list(self.settings.serve_cors_origins),
            save_history=self.settings.serve_save_history,
        )

    def close(self) -> None:
        """Stop the lanes (running requests finish), release the KV slots and the models."""
        for lane in list(self._lanes.values()):
            lane.close()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        try:
            self.audit.record("serve_stop")
        except EnclaveError as exc:
            log.error("could not audit the server stop: %s", exc)
        self.assistant.close()


class _Forwarder:
    """Hands a tool turn's pieces to its job: content cut at the stop sequences (a stop
    cancels decoding within the token), call starts and arguments as they come."""

    def __init__(self, job: Job, session: Session, scanner: StopScanner) -> None:
        self.job, self.session, self.scanner = job, session, scanner
        self.sent: list[str] = []

    def __call__(self, items: Iterable[StreamItem]) -> None:
        for item in items:
            match item:
                case ContentDelta(text=text):
                    self._content(self.scanner.push(text))
                    if self.scanner.hit:
                        self.session.cancel()
                case CallStarted(index=index, id=ident, name=name):
                    self.job._put(ToolCallDelta(index, "", ident, name))
                case ArgumentsDelta(index=index, text=text):
                    self.job._put(ToolCallDelta(index, text))

    def flush(self) -> None:
        self._content(self.scanner.flush())

    def _content(self, text: str) -> None:
        if text:
            self.sent.append(text)
            self.job._put(TextDelta(text))


def _wants_tools(request: ChatRequest, engine: Engine) -> bool:
    """A request for the tool path: tools to call, tool turns in its history, or tools shown
    to a model that has a format (tool_choice "none" on a model without one: tools ignored)."""
    if any(m.is_tool_turn for m in request.messages):
        return True
    if not request.tools:
        return False
    return request.tool_choice != "none" or tool_format(engine.info.extra.get("tool_format")) is not None


def _tool_support(request: ChatRequest, model: InstalledModel, engine: Engine) -> ToolFormat:
    """The model's tool-call format; NotSupported when it has none, its engine cannot
    constrain to a Lark grammar, or the request combines tools with what they exclude."""
    fmt = tool_format(engine.info.extra.get("tool_format"))
    if fmt is None:
        raise NotSupported(
            f"{model.name} ({model.engine}) has no tool-call format: its chat template does not offer "
            "`tools` to the model, or writes calls in no syntax Enclave knows (Hermes/Qwen <tool_call>, "
            "Llama 3 JSON, Phi-4 <|tool_call|>, Mistral [TOOL_CALLS]), so calls could only be guessed "
            "from free text.",
            'Send the request without `tools` and tool messages (or with tool_choice "none"), or use a '
            "model whose template has a tool-call format (GET /v1/models shows `tool_calls` once loaded).",
            param="tools",
        )
    caps = engine.capabilities
    if not (caps.token_level and caps.constrained and "lark" in caps.constraint_kinds):
        raise NotSupported(
            f"The {engine.name} engine cannot constrain {model.name}'s answer to a tool-call grammar "
            "(it takes no Lark grammar), and unconstrained calls would not be guaranteed to parse.",
            f"Use an onnx build of the model for tools (`enclave models build {model.name} --engine onnx`), "
            "or send the request without `tools`.",
            param="tools",
        )
    formatted = request.response_format is not None and request.response_format.kind != "text"
    if formatted and request.tool_choice != "none":
        raise NotSupported(
            "`response_format` and `tools` cannot be combined: an answer is either calls or JSON text.",
            'Send one of them, or tool_choice "none".',
            param="response_format",
        )
    if request.documents is not None:
        raise NotSupported(
            "Answers from documents (`enclave.documents`) cannot call tools.",
            "Send the request without `tools` or without `enclave.documents`.",
            param="tools",
        )
    return fmt


def _tool_format_of(engine: Engine) -> str:
    """The tool-call format tool requests can use on ``engine`` ("" for none)."""
    fmt = tool_format(engine.info.extra.get("tool_format"))
    caps = engine.capabilities
    usable = caps.token_level and caps.constrained and "lark" in caps.constraint_kinds
    return fmt.name if fmt is not None and usable else ""


def _split(messages: list[Message]) -> tuple[str, list[Message], str]:
    """(system prompt, earlier messages, the new user message) of a request."""
    system_parts: list[str] = []
    rest = list(messages)
    while rest and rest[0]["role"] == "system":
        system_parts.append(rest.pop(0)["content"])
    return "\n\n".join(system_parts), rest[:-1], rest[-1]["content"]


def _check_json(text: str, model: InstalledModel, schema: dict[str, Any] | None) -> None:
    """Constrained output is re-validated (MODELS.md: llguidance bounds the grammar, not the
    engine's bookkeeping): a reply that does not parse, or does not match the request's
    JSON Schema, is an engine error, not an answer."""
    from assistant.app.structured import schema_mismatch

    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineError(
            f"{model.name}'s constrained output is not valid JSON ({exc.msg} at character {exc.pos}).",
            "Retry; report it if it happens again.",
        ) from exc
    mismatch = schema_mismatch(schema, parsed) if schema is not None else None
    if mismatch is not None:
        raise EngineError(
            f"{model.name}'s constrained output does not match the request's JSON Schema {mismatch}.",
            "Retry; report it if it happens again.",
        )


def _outcome(exc: BaseException) -> str:
    """A failure, in the audit log's words."""
    if isinstance(exc, Busy):
        return "queue_full"
    if isinstance(exc, ContextExhausted):
        return "context_length_exceeded"
    if isinstance(exc, NotSupported):
        return "unsupported"
    if isinstance(exc, InvalidRequest):
        return "invalid_request"
    if isinstance(exc, ModelUnknown | ModelNotInstalled):
        return "model_not_found"
    return "error"
