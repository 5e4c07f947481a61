"""Assistant and Conversation: build each turn, run it, account for it.

The :class:`Assistant` loads a model through the catalog and the engine registry.
A :class:`Conversation` owns the message history and one engine session. Each turn
it renders the history with the model's chat template and hands the engine the
whole prompt; because the conversation remembers the exact tokens the KV cache
holds and the text they stand for, the tokens of the new turn are appended to
those instead of re-encoding the history, so the cache prefix always matches and
only the new message and template glue are prefilled.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from assistant.app.context import fit
from assistant.app.history import History
from assistant.app.notices import drops_notice
from assistant.app.personas import load_persona
from assistant.catalog.manifests import Catalog, InstalledModel
from assistant.core.errors import ContextExhausted, EnclaveError, EngineError
from assistant.core.events import Done, Error, Event, FinishReason, GenerationOptions, TextDelta, Usage
from assistant.core.records import Plan, TurnResult
from assistant.core.settings import Settings
from assistant.engines.base import Engine, Session
from assistant.retrieval.answer import MIN_PASSAGE_TOKENS, Retrieval, evidence, nothing_found, render, select
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store

if TYPE_CHECKING:
    from assistant.cloud.policy import CloudLink, CloudRequest
    from assistant.retrieval.index import Library


# --------------------------------------------------------------------------- turn events
@dataclass(frozen=True)
class Notice:
    """Something the user should read during a turn (never part of the answer)."""

    text: str
    level: Literal["info", "warning", "error"] = "info"


@dataclass(frozen=True)
class AttemptFailed:
    """The local attempt failed (``error``) and the cloud will be offered: a front end
    drops whatever it showed of this attempt and says why."""

    error: EnclaveError


@dataclass(frozen=True)
class Decision:
    """A front end's answer to :class:`ConsentNeeded`; ``how`` is recorded in the audit log
    in the user's words (e.g. "interactive prompt (y)", "--yes-cloud flag")."""

    choice: Literal["send", "refuse", "toggle-redaction"]
    how: str


@dataclass(frozen=True, eq=False)
class ConsentNeeded:
    """The turn may go to the cloud: show ``request.preview()`` with ``question`` and call
    :meth:`answer`. The turn waits (in its worker thread) until it is answered."""

    question: str
    request: CloudRequest
    _reply: Future[Decision] = field(default_factory=Future, repr=False)

    def answer(self, decision: Decision) -> None:
        if not self._reply.done():
            self._reply.set_result(decision)

    def wait(self) -> Decision:
        return self._reply.result()


@dataclass(frozen=True)
class TurnFinished:
    """The turn is over and, unless cancelled or failed, saved and audited."""

    result: TurnResult


#: Everything a front end receives during a turn.
TurnEvent = Event | Notice | AttemptFailed | ConsentNeeded | TurnFinished


class Assistant:
    """Loads models and opens conversations; the one object front ends talk to."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self._store = store
        self._loaded: dict[tuple[str, str], tuple[InstalledModel, Engine]] = {}
        #: Sentences for the user about loading (a GPU that fell back to the CPU, a release
        #: reverted after failed loads); front ends show them once.
        self.notices: list[str] = []

    @property
    def store(self) -> Store:
        """The database, opened (and migrated) on first use."""
        if self._store is None:
            self._store = Store.open(self.settings)
        return self._store

    def load(self, name: str | None = None, engine: str | None = None) -> tuple[InstalledModel, Engine]:
        name = name or self.settings.model
        model = self.catalog.find_language_model(name, engine)
        key = (model.name, model.engine)
        if key not in self._loaded:
            from assistant.app.updates import Updates

            # Checked against its manifest, power profile and device applied, failed loads
            # of an installed release counted (and reverted after two).
            model, loaded, notices = Updates(self.settings, self.store).load_guarded(model)
            self.notices.extend(notices)
            self._loaded[key] = (model, loaded)
            self.audit.record("model_load", model=model.name, engine=model.engine, sha256=model.sha256)
        return self._loaded[key]

    @property
    def history(self) -> History:
        """Stored conversations (deletes and exports audited)."""
        return History(self.store)

    @property
    def audit(self) -> AuditLog:
        """The hash-chained audit log (in the same database)."""
        return AuditLog(self.store)

    def conversation(
        self,
        model: str | None = None,
        engine: str | None = None,
        persona: str | None = None,
        *,
        resume: int | None = None,
        save: bool = True,
    ) -> Conversation:
        """A new conversation, or the stored conversation ``resume`` continued.

        With ``save`` every finished turn is written to the database.
        """
        store = self.store if (save or resume is not None) else None
        history: list[dict[str, str]] = []
        if resume is not None and store is not None:
            stored = store.conversation(resume)
            model = model or stored["model"]
            persona_name = persona or stored["persona"]
            system = stored["system_prompt"] if persona is None else load_persona(self.settings, persona)
            history = [{"role": m.role, "content": m.content} for m in store.messages(resume)]
        else:
            persona_name = persona or self.settings.persona
            system = load_persona(self.settings, persona_name)
        installed, loaded = self.load(model, engine)
        conv = Conversation(self.settings, installed, loaded, system, history, persona=persona_name)
        conv.audit = self.audit
        if save and store is not None:
            conv.attach(store, resume)
        return conv

    def conversation_without_model(self, problem: EnclaveError, persona: str | None = None) -> Conversation:
        """A conversation for when the local model cannot load (``problem``) but cloud
        fallback is configured: each local turn fails with ``problem``, which front
        ends answer by offering the cloud (preview and consent, never silently)."""
        from assistant.engines.unavailable import UnavailableEngine

        persona_name = persona or self.settings.persona
        name = self.settings.model
        model = InstalledModel(name=name, engine="unavailable", path=Path(), manifest_path=Path())
        engine = UnavailableEngine(name, problem, self.settings.context_window)
        conv = Conversation(self.settings, model, engine, load_persona(self.settings, persona_name), [], persona_name)
        conv.audit = self.audit
        conv.attach(self.store)
        return conv

    def close(self) -> None:
        for _, engine in self._loaded.values():
            engine.close()
        self._loaded.clear()
        if self._store is not None:
            self._store.close()
            self._store = None


@dataclass
class Conversation:
    """A chat with one model: history, one KV-cache session, the context budget, storage."""

    settings: Settings
    model: InstalledModel
    engine: Engine
    system: str
    messages: list[dict[str, str]] = field(default_factory=list)
    persona: str = "general"

    def __post_init__(self) -> None:
        window = min(self.settings.context_window, self.engine.info.context_length)
        self.session: Session = self.engine.open_session(window)
        self._held_text: str | None = None  # text that session.tokens stands for
        self._held_tokens: list[int] = []
        self.store: Store | None = None
        self.id: int | None = None
        self.last_plan: Plan | None = None
        #: Documents on for this conversation: the library and the collections to search.
        self.library: Library | None = None
        self.collections: list[str] | None = None
        self.last_retrieval: Retrieval | None = None
        self.audit: AuditLog | None = None
        self._cloud: CloudLink | None = None
        self.route = Route.local(self)  # who answers the current turn
        self._pending_consent: ConsentNeeded | None = None

    def use_documents(self, library: Library | None, collections: list[str] | None = None) -> None:
        """Answer from documents (``collections``; empty or None: all of them), or stop
        (``library=None``)."""
        self.library = library
        self.collections = library.names(collections) if library is not None else None

    @property
    def documents_on(self) -> bool:
        return self.library is not None

    def retrieve(self, user_text: str) -> Retrieval:
        """Search the documents for this question and choose the passages that fit.

        Passages get the room the window has left after the system prompt, history,
        question and answer reserve; when the history is long (and the policy may drop
        old turns), they get at least half of the window, because for a question about
        the documents the sources matter more than old turns.
        """
        assert self.library is not None
        names = self.collections or []
        hits = self.library.search(user_text, k=self.settings.docs_passages, collections=names or None)
        strong, reason = evidence(user_text, hits, self.settings.docs_min_similarity)
        if not strong:
            return Retrieval(names, hits, [], False, reason)
        tok = self.engine.tokenizer
        question = {"role": "user", "content": render(user_text, [])}
        room = self.window - self.reserve
        with_history = room - len(self.tokens_for(self._system_messages() + self.messages + [question]))
        alone = room - len(self.tokens_for(self._system_messages() + [question]))
        keep_history = self.settings.context_policy == "stop" or with_history >= alone // 2
        budget = with_history if keep_history else alone // 2
        passages = select(
            hits,
            max(0, budget),
            count=lambda text: len(tok.encode(text)),
            shorten=lambda text, n: tok.decode(tok.encode(text)[:n]),
        )
        # Passages were counted one by one; check the whole message (template glue and
        # joins can add a few tokens) and give up the last passage until it fits.
        history = alone - with_history if keep_history else 0
        while passages:
            message = {"role": "user", "content": render(user_text, passages)}
            excess = len(self.tokens_for(self._system_messages() + [message])) + history - room
            if excess <= 0:
                break
            last = passages[-1]
            have = len(tok.encode(last.text))
            if have - excess - 4 >= MIN_PASSAGE_TOKENS:
                last.text = tok.decode(tok.encode(last.text)[: have - excess - 4]).rstrip(" …") + " …"
                last.shortened = True
            else:
                passages.pop()
        return Retrieval(names, hits, passages, True)

    def attach(self, store: Store, conversation_id: int | None = None) -> None:
        """Save turns to ``store`` (the conversation row is created with the first turn)."""
        self.store = store
        self.id = conversation_id

    @property
    def window(self) -> int:
        return self.session.capacity

    @property
    def reserve(self) -> int:
        """Tokens kept free for the answer."""
        if self.settings.answer_reserve > 0:
            return min(self.settings.answer_reserve, self.window - 1)
        return max(1, min(self.settings.max_tokens, self.window // 4))

    def _system_messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def tokens_for(self, messages: list[dict[str, str]]) -> list[int]:
        """The exact prompt tokens the engine will get for ``messages``.

        When the rendered prompt extends the text the KV cache already stands for,
        only the new text is encoded and appended to the cached tokens, so the
        cache prefix is reused exactly (re-encoding a generated answer can give
        different tokens than the model produced).
        """
        tok = self.engine.tokenizer
        text = tok.render(messages, add_generation_prompt=True)
        held = self._held_text
        if held is not None and text.startswith(held) and self.session.tokens == self._held_tokens:
            return self._held_tokens + tok.encode(text[len(held) :])
        return tok.encode(text)

    def plan(self, user_text: str) -> Plan:
        """What this turn would send, fitted to the window by the context policy."""
        tok = self.engine.tokenizer
        return fit(
            self._system_messages(),
            self.messages,
            {"role": "user", "content": user_text},
            count=lambda msgs: len(self.tokens_for(list(msgs))),
            window=self.window,
            reserve=self.reserve,
            policy=self.settings.context_policy,
            encode=tok.encode,
            decode=tok.decode,
        )

    def options(self, room: int) -> GenerationOptions:
        s = self.settings
        return GenerationOptions(
            max_tokens=max(1, min(s.max_tokens, room)),
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=s.seed,
        )

    def stream(self, user_text: str) -> Iterator[Event]:
        """Run one turn, yielding engine events; history and store are updated at ``Done``.

        Raises :class:`~assistant.core.errors.ContextExhausted` (with the numbers) before
        anything runs when the turn cannot fit under the policy.
        """
        self.route = Route.local(self)
        content = user_text
        self.last_retrieval = None
        if self.documents_on:
            retrieval = self.last_retrieval = self.retrieve(user_text)
            if not retrieval.strong:
                # Weak evidence: say so instead of letting the model answer from nothing.
                text = nothing_found(retrieval.collections, retrieval.reason)
                self.last_plan = None
                self.messages.append({"role": "user", "content": user_text})
                self.messages.append({"role": "assistant", "content": text})
                yield TextDelta(text)
                yield Done("no-evidence", text)
                return
            if not retrieval.passages:
                raise EnclaveError(
                    f"Passages from your documents were found, but none fits the {self.window}-token context "
                    "window beside the conversation.",
                    "Start a new conversation (/new), raise --ctx if the model allows it, or ask without documents.",
                )
            content = render(user_text, retrieval.passages)
        plan = self.plan(content)
        self.last_plan = plan
        tokens = self.tokens_for(plan.messages)
        text = self.engine.tokenizer.render(plan.messages, add_generation_prompt=True)
        room = self.window - len(tokens)
        if room < 1:  # only reachable with answer_reserve misconfigured
            keep = self.session.common_prefix(tokens)
            raise ContextExhausted(needed=len(tokens), window=self.window, held=keep)
        for event in self.session.generate(tokens, self.options(room), messages=plan.messages):
            if isinstance(event, Done):
                if event.reason == "cancelled":
                    # A cancelled answer is not part of the conversation; the cache
                    # is re-synced from the shared prefix on the next turn.
                    self._held_text, self._held_tokens = None, []
                else:
                    self._held_text = text + event.text
                    self._held_tokens = self.session.tokens
                    # The history keeps the message as the model saw it (with its
                    # sources), so the KV cache stays a prefix of the next prompt.
                    self.messages.append({"role": "user", "content": content})
                    self.messages.append({"role": "assistant", "content": event.text})
            elif isinstance(event, Error):
                self._held_text, self._held_tokens = None, []
            yield event

    def save_turn(self, result: TurnResult, user_text: str) -> None:
        """Write a finished turn to the store (one transaction for both messages)."""
        if result.error is not None and self.store is not None and result.engine != "cloud":
            from assistant.storage.releases import Releases

            # Kept for `enclave stats` and `enclave report`: the engine's message, never the turn's text.
            Releases(self.store).record_event(result.model, result.engine, result.model_sha256, "turn_error",
                                              result.error.message)  # fmt: skip
        if self.store is None or result.finish_reason in ("cancelled", "error"):
            return
        if self.id is None:
            self.id = self.store.create_conversation(
                model=self.model.name,
                engine=self.engine.name,
                persona=self.persona,
                system_prompt=self.system,
                context_policy=self.settings.context_policy,
            )
        self.store.add_turn(
            self.id,
            user_text,
            result.text,
            model=result.model,
            model_sha256=result.model_sha256,
            engine=result.engine,
            where_ran=result.where,
            finish_reason=result.finish_reason,
            usage=result.usage.as_dict() if result.usage else None,
            context=result.context.as_dict() if result.context else None,
            citations=result.citations,
        )
        result.conversation_id = self.id
        if result.citations is not None and self.last_retrieval is not None:
            AuditLog(self.store).record(
                "documents_used",
                conversation=self.id,
                collections=self.last_retrieval.collections,
                passages=[
                    {"n": c["n"], "path": c["path"], "page": c["page"], "lines": [c["line_start"], c["line_end"]]}
                    for c in result.citations
                ],
            )

    def turn(self, user_text: str) -> Iterator[TurnEvent]:
        """One turn, decided here for every front end: in the cloud when cloud is on for
        this conversation and the user consents, else on this device; a local failure
        offers the cloud when one is configured (never silently). The turn is saved and
        audited before :class:`TurnFinished` is yielded; failures end up in its result.
        """
        if self.cloud_enabled:
            consent = yield from self._consent(user_text, f"Send this turn to {self.cloud.endpoint.label}?")
            if consent is not None:
                yield from self._attempt(user_text, self._cloud_stream(user_text, *consent))
                return
            yield Notice("Not sent. Answering on this device instead.")
        failed: EnclaveError | None = None
        events: list[TurnEvent] = []
        try:
            for event in self._attempt(user_text, lambda: self.stream(user_text), hold_failure=True):
                events.append(event)
                if isinstance(event, TurnFinished) and event.result.error is not None:
                    failed = event.result.error
                    break
                yield event
        except (ContextExhausted, EngineError) as exc:
            failed = exc
        except EnclaveError as exc:  # not a local-engine failure: no fallback
            yield TurnFinished(self._failure(exc))
            return
        if failed is None:
            return
        if not isinstance(failed, ContextExhausted | EngineError) or not self.cloud_configured:
            yield TurnFinished(self._failure(failed, events))
            return
        yield AttemptFailed(failed)
        host = self.cloud.endpoint.label
        consent = yield from self._consent(
            user_text, f"The local model could not answer. Send this turn to {host} instead?"
        )
        if consent is None:
            yield TurnFinished(self._failure(failed, events))
            return
        yield from self._attempt(user_text, self._cloud_stream(user_text, *consent))

    def _cloud_stream(self, user_text: str, request: CloudRequest, how: str) -> Callable[[], Iterator[Event]]:
        return lambda: self.stream_cloud(request, user_text, how)

    def _attempt(
        self, user_text: str, make: Callable[[], Iterator[Event]], *, hold_failure: bool = False
    ) -> Iterator[TurnEvent]:
        """Stream one attempt and finish it: result, save, audit. With ``hold_failure`` a
        failed result is yielded unsaved for :meth:`turn` to decide on."""
        collector = TurnCollector(self)
        was_cloud = self.cloud_enabled
        for event in make():
            collector.feed(event)
            yield event
        result = collector.result()
        if result.error is not None and hold_failure:
            yield TurnFinished(result)
            return
        if result.engine == "cloud" and was_cloud and not self.cloud_enabled:
            yield Notice("Cloud is now off for this conversation; the next turn runs on this device.", "warning")
        try:
            self.save_turn(result, user_text)
        except EnclaveError as exc:
            result.notices.append(f"Not saved: {exc.message} {exc.hint}")
        yield TurnFinished(result)

    def _failure(self, error: EnclaveError, events: Sequence[TurnEvent] = ()) -> TurnResult:
        """The result of a turn that failed (nothing is saved)."""
        for event in events:
            if isinstance(event, TurnFinished):
                return event.result
        route = self.route
        return TurnResult(
            text="",
            model=route.model,
            model_sha256=route.model_sha256,
            engine=route.engine,
            usage=None,
            finish_reason="error",
            error=error,
            context=self.last_plan,
            conversation_id=self.id,
            where=route.where,
        )

    def _consent(self, user_text: str, question: str) -> Generator[TurnEvent, None, tuple[CloudRequest, str] | None]:
        """Show the request a cloud turn would send and wait for the front end's decision;
        the request and how consent was given, or None (refused and recorded)."""
        try:
            request = self.cloud_request(user_text)
        except EnclaveError as exc:
            yield Notice(f"{exc.message} {exc.hint}", "error")
            return None
        while True:
            ask = ConsentNeeded(question, request)
            self._pending_consent = ask
            yield ask
            decision = ask.wait()
            self._pending_consent = None
            if decision.choice == "toggle-redaction":
                request = self.cloud_request(user_text, redact=not request.redacted)
            elif decision.choice == "send":
                return request, decision.how
            else:
                self.refuse_cloud(request, decision.how)
                return None

    def ask(self, user_text: str, on_text: Callable[[str], object] | None = None) -> TurnResult:
        """Run one turn to completion in this thread (a consent request is refused: there
        is no one to ask); ``on_text(str)`` sees each delta. A failed turn raises its
        :class:`~assistant.core.errors.EnclaveError`."""
        result = result_of(self.turn(user_text), on_text)
        if result.error is not None:
            raise result.error
        return result

    def cancel(self) -> None:
        """Stop the turn: the answer being written, or a consent question still open."""
        pending = self._pending_consent
        if pending is not None:
            pending.answer(Decision("refuse", "the turn was cancelled"))
        self.session.cancel()
        if self._cloud is not None:
            self._cloud.cancel()

    def close(self) -> None:
        """Release this conversation's KV cache (the history stays in the store)."""
        if self._cloud is not None:
            self._cloud.close(self.id)
        self.session.close()

    # -- cloud fallback (off unless configured and enabled; see assistant.cloud.policy)
    @property
    def cloud(self) -> CloudLink:
        """This conversation's cloud switch (created on first use; sends nothing by itself)."""
        if self._cloud is None:
            from assistant.cloud.policy import CloudLink

            self._cloud = CloudLink(self.settings, self.audit)
        return self._cloud

    @property
    def cloud_configured(self) -> bool:
        from assistant.cloud.policy import configured

        return configured(self.settings)

    @property
    def cloud_enabled(self) -> bool:
        return self._cloud is not None and self._cloud.enabled

    def cloud_messages(self, user_text: str) -> list[dict[str, str]]:
        """What a cloud turn sends: system prompt, the whole history, the new message.

        Not fitted to the local window (the endpoint has its own, usually larger);
        anything the local turn would add to the messages (retrieved passages) must
        be added here too, so that the preview shows it."""
        content = user_text
        self.last_retrieval = None
        if self.documents_on:
            retrieval = self.last_retrieval = self.retrieve(user_text)
            if not retrieval.strong or not retrieval.passages:
                raise EnclaveError(
                    "Nothing relevant was found in your documents for this question, so nothing was sent "
                    f"({retrieval.reason or 'no passage fits the window'}).",
                    "Try other words or another collection, or turn documents off (/docs off).",
                )
            content = render(user_text, retrieval.passages)
        return [*self._system_messages(), *self.messages, {"role": "user", "content": content}]

    def cloud_request(self, user_text: str, redact: bool | None = None) -> CloudRequest:
        """The request a cloud turn would send, for the preview; sends nothing."""
        return self.cloud.prepare(self.cloud_messages(user_text), self.options(self.settings.max_tokens), redact)

    def stream_cloud(self, request: CloudRequest, user_text: str, consent: str) -> Iterator[Event]:
        """Run one turn on the cloud endpoint (the user consented to ``request``).

        The history keeps the original ``user_text`` (never the redacted copy); the
        local KV cache is left as it is and re-syncs from the shared prefix on the
        next local turn."""
        ep = request.endpoint
        self.route = Route(model=request.model or "(server default)", model_sha256="", engine="cloud", where=ep.where)
        self.last_plan = None
        for event in self.cloud.send(request, consent, self.id):
            if isinstance(event, Done) and event.reason != "cancelled":
                self.messages.append({"role": "user", "content": user_text})
                self.messages.append({"role": "assistant", "content": event.text})
            yield event

    def refuse_cloud(self, request: CloudRequest, how: str) -> None:
        """The user saw ``request`` and did not send it: recorded, nothing sent."""
        self.cloud.refuse(request, how, self.id)


@dataclass(frozen=True)
class Route:
    """Who answered a turn, as stored with the answer."""

    model: str
    model_sha256: str
    engine: str
    where: str

    @classmethod
    def local(cls, conv: Conversation) -> Route:
        return cls(conv.model.name, conv.model.sha256, conv.engine.name, "local")


class TurnCollector:
    """Accumulates one turn's events into a :class:`TurnResult` (used by every front end)."""

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.reason: FinishReason = "error"
        self.error: EnclaveError | None = None

    def feed(self, event: Event) -> None:
        match event:
            case TextDelta(text=piece):
                self.parts.append(piece)
            case Usage():
                self.usage = event
            case Done(reason=r):
                self.reason = r
            case Error(error=exc):
                self.error = exc if isinstance(exc, EnclaveError) else EnclaveError(str(exc))

    def result(self) -> TurnResult:
        conv = self.conv
        text = "".join(self.parts)
        retrieval = conv.last_retrieval
        citations = None if retrieval is None else retrieval.citations(text)
        notices = [] if retrieval is None else list(retrieval.notices)
        if citations and text.strip() and not any(c["supports"] for c in citations):
            # Checked, not trusted: a small model can mix facts from two passages.
            notices.append(
                "No sentence of this answer matches a source in its words and figures; check it against them."
            )
        drops = drops_notice(conv.last_plan)
        if drops:
            notices.append(drops)
        route = conv.route
        return TurnResult(
            text=text,
            model=route.model,
            model_sha256=route.model_sha256,
            engine=route.engine,
            usage=self.usage,
            finish_reason=self.reason,
            error=self.error,
            context=conv.last_plan,
            conversation_id=conv.id,
            citations=citations,
            notices=notices,
            where=route.where,
        )


def result_of(events: Iterable[TurnEvent], on_text: Callable[[str], object] | None = None) -> TurnResult:
    """Drive a turn's events to its result without a front end: text goes to ``on_text``,
    a consent request is refused."""
    for event in events:
        match event:
            case TextDelta(text=piece) if on_text is not None:
                on_text(piece)
            case ConsentNeeded():
                event.answer(Decision("refuse", "no one to ask (no front end)"))
            case TurnFinished(result=result):
                return result
    raise AssertionError("a turn always ends with TurnFinished")


def collect(conv: Conversation, events: Iterable[Event]) -> TurnResult:
    """The result of a stream of engine events (no save, no routing): for benchmarks and tests."""
    collector = TurnCollector(conv)
    for event in events:
        collector.feed(event)
    return collector.result()


def stream_in_thread(conv: Conversation, events: Callable[[], Iterator[TurnEvent]]) -> Iterator[TurnEvent]:
    """Run a turn (``events``, e.g. ``lambda: conv.turn(text)``) in a worker thread and
    yield its events here.

    The caller's thread stays free to react to Ctrl-C (call ``conv.cancel()`` and keep
    iterating: the stream ends with a cancelled result) and to answer
    :class:`ConsentNeeded` (the worker waits for it). Exceptions raised in the worker
    are re-raised in the caller.
    """
    items: queue.Queue[Any] = queue.Queue()
    sentinel = object()

    def work() -> None:
        try:
            for event in events():
                items.put(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            items.put(exc)
        finally:
            items.put(sentinel)

    worker = threading.Thread(target=work, name="enclave-decode", daemon=True)
    worker.start()
    while True:
        try:
            item = items.get()
        except KeyboardInterrupt:
            # Ctrl-C cancels the answer; the worker stops within a token and the
            # turn still ends with a cancelled result.
            conv.cancel()
            continue
        if item is sentinel:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    worker.join()


async def astream(conv: Conversation, events: Callable[[], Iterator[TurnEvent]]) -> AsyncIterator[TurnEvent]:
    """A turn's events in an asyncio program: the turn runs in a worker thread and each
    event crosses to the event loop with ``call_soon_threadsafe``; exceptions raised in
    the worker are re-raised here. A :class:`ConsentNeeded` waits until answered."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    sentinel = object()

    def work() -> None:
        try:
            for event in events():
                loop.call_soon_threadsafe(items.put_nowait, event)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop
            loop.call_soon_threadsafe(items.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(items.put_nowait, sentinel)

    worker = threading.Thread(target=work, name="enclave-decode", daemon=True)
    worker.start()
    while True:
        item = await items.get()
        if item is sentinel:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
