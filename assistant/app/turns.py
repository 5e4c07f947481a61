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
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from assistant.app.context import fit
from assistant.app.history import History, title_for
from assistant.app.notices import drops_notice, input_notice, window_hint
from assistant.app.personas import load_persona
from assistant.catalog.manifests import Catalog, InstalledModel
from assistant.core.errors import ContextExhausted, EnclaveError, EngineError
from assistant.core.events import (
    Constraint,
    Done,
    Error,
    Event,
    FinishReason,
    GenerationOptions,
    Notice,
    TextDelta,
    Usage,
)
from assistant.core.records import AnswerMode, Plan, TurnResult
from assistant.core.settings import Settings
from assistant.core.text import for_model
from assistant.engines import ENGINE_NAMES
from assistant.engines.base import CompletionTokenizer, Engine, Session
from assistant.privacy.report import privacy_state
from assistant.retrieval.answer import (
    MIN_PASSAGE_TOKENS,
    Passage,
    Retrieval,
    evidence,
    leans_back,
    nothing_found,
    render,
    select,
)
from assistant.retrieval.backfill import generating
from assistant.storage.audit import AuditLog
from assistant.storage.database import DiskFull, Store, StoredMessage

if TYPE_CHECKING:
    from assistant.app.answers import Grounding
    from assistant.app.structured import OutputFormat
    from assistant.cloud.policy import CloudLink, CloudRequest
    from assistant.retrieval.index import Hit, Library


# --------------------------------------------------------------------------- turn events
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
TurnEvent = Event | AttemptFailed | ConsentNeeded | TurnFinished


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
            from assistant.app.updates import Updates, load_unrecorded

            audit: AuditLog | None = None
            try:
                store = self.store
            except DiskFull as exc:
                # Nothing can be written, so nothing is counted or logged; a question that
                # saves nothing is still answered, and the user is told what is missing.
                loaded, notices = load_unrecorded(self.settings, model)
                notices.append(f"{exc.message} This answer is not in the audit log and cannot be saved. {exc.hint}")
            else:
                # Checked against its manifest, power profile and device applied, failed loads
                # of an installed release counted (and reverted after two).
                model, loaded, notices = Updates(self.settings, store).load_guarded(model)
                audit = AuditLog(store)
            self.notices.extend(notices)
            if not model.chat:
                # A base model continues text: no chat template around it (turns.py's
                # prompts, the server's chat requests and bench all render through this;
                # a LiteRT-LM worker renders the same text natively, COMPLETION_TEMPLATE).
                loaded.tokenizer = CompletionTokenizer(loaded.tokenizer, str(loaded.info.extra.get("start_text", "")))
            if self.settings.speculation == "on" and loaded.capabilities.token_level and not loaded.capabilities.speculative:
                self.notices.append(
                    f"speculation is on, but this build of {model.name} cannot verify drafts: its output layer "
                    "keeps only the last position (prune_lm_head), so answers are decoded one token at a time."
                )
            self._loaded[key] = (model, loaded)
            try:
                if audit is not None:
                    audit.record("model_load", model=model.name, engine=model.engine, sha256=model.sha256)
                    audit.record("privacy_state", model=model.name, **privacy_state(loaded.isolation))
            except DiskFull as exc:
                # As above: an answer that is not saved still works, and the gap is said.
                self.notices.append(
                    f"The audit log could not record loading {model.name}: {exc.message} "
                    f"Nothing can be saved until then. {exc.hint}"
                )
        return self._loaded[key]

    def _audit_if_writable(self) -> AuditLog | None:
        """The audit log, or None when its database cannot be opened on a full disk."""
        try:
            return self.audit
        except DiskFull:
            return None

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
        system: str | None = None,
    ) -> Conversation:
        """A new conversation, or the stored conversation ``resume`` continued.

        With ``save`` every finished turn is written to the database. ``system``
        replaces the persona's system prompt. A resumed conversation comes back as it
        was left: its model and engine (unless others are named), system prompt,
        sampling, documents and the context it fills.
        """
        store = self.store if (save or resume is not None) else None
        history: list[dict[str, str]] = []
        stored: dict[str, Any] | None = None
        if resume is not None and store is not None:
            stored = store.conversation(resume)
            if model is None:
                model = stored["model"]
                if engine is None and stored["engine"] in ENGINE_NAMES:
                    engine = stored["engine"]
            persona_name = persona or stored["persona"]
            prompt = stored["system_prompt"] if persona is None else load_persona(self.settings, persona)
            messages = store.messages(resume)
            # Cleaned as a new message is: a NUL stored by an older Enclave would otherwise
            # cut every later prompt short at the native tokenizer, in this session too.
            history = [{"role": m.role, "content": for_model(m.content).text} for m in messages]
        else:
            persona_name = persona or self.settings.persona
            prompt = load_persona(self.settings, persona_name)
        installed, loaded = self.load(model, engine)
        if system is None and not installed.chat and stored is None:
            # A persona's instructions would only be continued by a base model as more
            # text ("You are Enclave, a helpful…"); a system prompt the user gives is kept.
            prompt = ""
        conv = Conversation(
            self.settings,
            installed,
            loaded,
            for_model(prompt if system is None else system).text,
            history,
            persona=persona_name,
        )
        conv.audit = self.audit if store is not None else self._audit_if_writable()
        if save and store is not None:
            conv.attach(store, resume)
        if stored is not None and store is not None:
            conv.restore(stored, messages, store)
        return conv

    def follow_on(
        self, conv: Conversation, model: str | None = None, engine: str | None = None, persona: str | None = None
    ) -> Conversation:
        """A new conversation that starts where ``conv`` is set up: the same model (or
        ``model``/``engine``), persona (or ``persona``), system prompt, sampling and
        documents; an empty context. ``conv`` is not closed here."""
        same_model = model is None
        new = self.conversation(
            model or conv.model.name,
            engine or (conv.model.engine if same_model else None),
            persona or conv.persona,
            save=conv.store is not None,
            system=None if persona or not conv.system else conv.system,  # none: the persona's
        )
        new.temperature, new.repetition_penalty = conv.temperature, conv.repetition_penalty
        if conv.library is not None:
            new.use_documents(conv.library, conv.collections)
        return new

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
        #: What the cache stood for before the last exchange, so that replacing that
        #: exchange (retry, edit) rewinds exactly to it instead of re-encoding the history.
        self._before_last: tuple[str | None, list[int]] = (None, [])
        #: The last message as the user typed it (``messages`` may hold it with sources).
        asked = [m["content"] for m in self.messages if m["role"] == "user"]
        self.last_user_text: str | None = asked[-1] if asked else None
        #: A message whose answer was cancelled (nothing saved), and whether that turn was
        #: replacing the last exchange: what /retry answers next, instead of the message before.
        self.unanswered: tuple[str, bool] | None = None
        #: The questions the last answered turn was searched with (one, or a follow-up
        #: with those it followed), the turn's before it (what a retried or edited
        #: follow-up refers back to), and the running turn's.
        self._last_chain: list[str] = [asked[-1]] if asked else []
        self._prior_chain: list[str] = [asked[-2]] if len(asked) > 1 else []
        self._pending_chain: list[str] | None = None
        #: Tokens the conversation fills in the window (the meter in the status bar).
        self.context_used = 0
        #: Sampling for this conversation (``/set``); starts from the settings.
        self.temperature: float = self.settings.temperature
        self.repetition_penalty: float = self.settings.repeat_penalty
        #: Set by :meth:`restore`: what could not be restored, and the last answer's sources.
        self.restore_notices: list[str] = []
        self.last_citations: list[dict[str, Any]] | None = None
        self.store: Store | None = None
        self.id: int | None = None
        self.last_plan: Plan | None = None
        #: The generation options of the last model turn (its answer length, as capped).
        self.last_options: GenerationOptions | None = None
        #: Documents on for this conversation: the library, the collections to search, and
        #: the path globs (``--path``) that limit them to some files.
        self.library: Library | None = None
        self.collections: list[str] | None = None
        self.paths: list[str] = []
        self._all_documents = False  # on for every collection, present and future
        self.last_retrieval: Retrieval | None = None
        self.last_grounding: Grounding | None = None
        self.turn_started: float | None = None
        self.retrieval_ms = 0.0
        self.audit: AuditLog | None = None
        self._cloud: CloudLink | None = None
        self.route = Route.local(self)  # who answers the current turn
        self._pending_consent: ConsentNeeded | None = None
        self._replacing = False  # the turn running replaces the last exchange

    def use_documents(
        self, library: Library | None, collections: list[str] | None = None, paths: Sequence[str] = ()
    ) -> None:
        """Answer from documents (``collections``; empty or None: all of them; ``paths``:
        only the files these globs match), or stop (``library=None``). Saved with the
        conversation, so ``--continue`` restores it."""
        self.library = library
        self.collections = library.names(collections) if library is not None else None
        self.paths = list(paths) if library is not None else []
        if library is not None and self.paths:
            library.scope(self.collections, self.paths)  # a glob that matches nothing fails now
        self._all_documents = not collections or list(collections) == ["all"]
        self._save_state()

    @property
    def answer_mode(self) -> tuple[AnswerMode, str]:
        """How this conversation answers from documents (and a notice when the wanted
        mode cannot be used with this model)."""
        from assistant.app.answers import choose_mode

        return choose_mode(self.settings, self.model, self.engine)

    # -- what the conversation is set to (stored with it; restored on --continue)
    def set_sampling(self, *, temperature: float | None = None, repetition_penalty: float | None = None) -> None:
        """Sampling for the next turns of this conversation, checked against the settings'
        schema first (:data:`~assistant.core.settings.RULES`)."""
        from assistant.core.settings import parse_setting

        if temperature is not None:
            self.temperature = parse_setting("temperature", temperature, "this conversation")
        if repetition_penalty is not None:
            self.repetition_penalty = parse_setting("repeat_penalty", repetition_penalty, "this conversation")
        self._save_state()

    def set_system(self, text: str) -> None:
        """A new system prompt for the next turns (the KV cache re-reads the conversation once)."""
        text = text.strip()
        if not text:
            raise EnclaveError("The system prompt is empty.", "Write it after the command: /set system You are …")
        self.system = text
        self._save_state()

    def _save_state(self) -> None:
        if self.store is None or self.id is None:
            return
        self.store.update_conversation(
            self.id,
            system_prompt=self.system,
            documents=None if self.library is None else [] if self._all_documents else list(self.collections or []),
            options={"temperature": self.temperature, "repetition_penalty": self.repetition_penalty},
        )

    def restore(self, stored: dict[str, Any], messages: Sequence[StoredMessage], store: Store) -> None:
        """Come back as the stored conversation was left: sampling, documents (a
        collection removed since is left out, with a notice) and the context meter."""
        options = stored.get("options") or {}
        self.temperature = float(options.get("temperature", self.temperature))
        self.repetition_penalty = float(options.get("repetition_penalty", self.repetition_penalty))
        documents = stored.get("documents")
        if documents is not None:
            from assistant.retrieval import open_library

            library = open_library(self.settings, store)
            known = {str(c["name"]) for c in library.collections()}
            kept = [name for name in documents if name in known]
            if (documents and not kept) or not known:
                self.restore_notices.append(
                    "Documents were on for this conversation, but their collections are gone; documents are off."
                )
            else:
                if len(kept) < len(documents):
                    gone = ", ".join(sorted(set(documents) - known))
                    self.restore_notices.append(f"Collection(s) {gone} no longer exist; documents on for the rest.")
                self.library = library
                self.collections = library.names(kept)
                self._all_documents = not documents
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        used = 0
        if last is not None and last.usage and last.model == self.model.name and last.engine == self.engine.name:
            # An answer quoted from documents ran no model: its usage counts no tokens.
            used = int(last.usage.get("prompt_tokens", 0)) + int(last.usage.get("completion_tokens", 0))
        if used:
            self.context_used = used
        elif self.messages:
            self.context_used = len(self.tokens_for(self.system_messages() + self.messages))
        self.last_citations = last.citations if last is not None else None

    @property
    def documents_on(self) -> bool:
        return self.library is not None

    @property
    def all_documents(self) -> bool:
        """Documents are on for every collection, including ones added later."""
        return self.library is not None and self._all_documents

    def retrieve(self, user_text: str) -> Retrieval:
        """Search the documents for this question and choose the passages that fit.

        Passages get the room the window has left after the system prompt, history,
        question and answer reserve; when the history is long (and the policy may drop
        old turns), they get at least half of the window, because for a question about
        the documents the sources matter more than old turns.
        """
        from assistant.app.answers import EXTRACT_PASSAGES

        assert self.library is not None
        names = self.collections or []
        # A follow-up ("Which file sets it?") is searched with the question it follows
        # and, when that was a follow-up too, with the ones before it (up to FOLLOW_CHAIN).
        chain = self._prior_chain if self._replacing else self._last_chain
        followed = chain[-1] if chain and leans_back(user_text) else None
        asked = [*chain, user_text][-FOLLOW_CHAIN:] if followed is not None else [user_text]
        self._pending_chain = asked
        query = " ".join(asked)
        named = self._named(user_text, query, names)
        found, fresh = self._fresh_hits(
            query, names, max(self.settings.docs_passages, EXTRACT_PASSAGES), named or None
        )
        hits = found[: self.settings.docs_passages]
        strong, reason = evidence(query, hits, self.settings.docs_min_similarity)
        if not strong:
            return Retrieval(
                names, hits, [], False, reason, refreshed=fresh, query=query, followed=followed, named=named
            )
        tok = self.engine.tokenizer
        question = {"role": "user", "content": render(user_text, [])}
        room = self.window - self.reserve
        with_history = room - len(self.tokens_for(self.system_messages() + self.messages + [question]))
        alone = room - len(self.tokens_for(self.system_messages() + [question]))
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
            excess = len(self.tokens_for(self.system_messages() + [message])) + history - room
            if excess <= 0:
                break
            last = passages[-1]
            have = len(tok.encode(last.text))
            if have - excess - 4 >= MIN_PASSAGE_TOKENS:
                last.text = tok.decode(tok.encode(last.text)[: have - excess - 4]).rstrip(" …") + " …"
                last.shortened = True
            else:
                passages.pop()
        # The sentences of more passages than the model is given are candidates for the
        # quoted answer (it needs no room in the window); they are numbered after them.
        given = {p.hit.chunk_id for p in passages}
        rest = [h for h in found if h.chunk_id not in given]
        extra = [Passage(len(passages) + i + 1, h, h.text) for i, h in enumerate(rest)]
        return Retrieval(
            names, hits, passages, True, refreshed=fresh, extra=extra, query=query, followed=followed, named=named
        )

    def _named(self, user_text: str, query: str, names: list[str]) -> list[int]:
        """The documents a question names ("under the MPL-2.0", "the FAQ"), searched alone
        since the answer may come from them only; a follow-up that names none keeps the
        ones its chain named. Within ``--path`` only: the user's scope wins over a name
        the question happens to use."""
        assert self.library is not None
        library = self.library
        cids = [library.collection_id(n) for n in names] or [library.collection_id(c["name"]) for c in library.collections()]
        named = list(library.named(user_text, cids)) or (list(library.named(query, cids)) if query != user_text else [])
        if named and self.paths:
            inside = set(library.scope(names or None, self.paths))
            named = [d for d in named if d in inside]
        return named

    def _fresh_hits(
        self, user_text: str, names: list[str], k: int, documents: list[int] | None = None
    ) -> tuple[list[Hit], list[str]]:
        """Search, then check the files about to be cited (size and time, the sha256 when
        they differ): a changed file is re-indexed and the search run again, a deleted
        one forgotten, so a quote is never taken from a file as it used to be. Returns
        the hits and a notice per file re-read."""
        assert self.library is not None
        library = self.library

        def search() -> list[Hit]:
            return library.search(
                user_text, k=k, collections=names or None, paths=self.paths or None, documents=documents
            )

        hits = search()
        stale = [s for s in library.freshness(h.document_id for h in hits) if s.state != "fresh"]
        if not stale:
            return hits, []
        started = time.perf_counter()
        report = library.refresh(stale)
        seconds = time.perf_counter() - started
        notes = []
        for s in stale:
            name = Path(s.path).name
            if s.state == "missing":
                notes.append(f"{name} is gone since it was indexed; its passages were dropped before answering.")
            elif any(p == s.path for p, _ in report.skipped):
                notes.append(f"{name} changed and can no longer be read; its passages were dropped before answering.")
            else:
                notes.append(f"{name} changed since it was indexed; it was re-indexed before answering ({seconds:.1f} s).")
        return search(), notes

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

    def system_messages(self) -> list[dict[str, str]]:
        """The system prompt as the chat messages that open every prompt (none when it is empty)."""
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
        # The cache may hold more than the text (a retried answer): the session keeps
        # the shared prefix and rewinds the rest.
        if (
            held is not None
            and text.startswith(held)
            and self.session.tokens[: len(self._held_tokens)] == self._held_tokens
        ):
            return self._held_tokens + tok.encode(text[len(held) :])
        return tok.encode(text)

    def plan(self, user_text: str) -> Plan:
        """What this turn would send, fitted to the window by the context policy."""
        tok = self.engine.tokenizer
        return fit(
            self.system_messages(),
            self.messages,
            {"role": "user", "content": user_text},
            count=lambda msgs: len(self.tokens_for(list(msgs))),
            window=self.window,
            reserve=self.reserve,
            policy=self.settings.context_policy,
            encode=tok.encode,
            decode=tok.decode,
            grow=self.window_hint,
        )

    def options(self, room: int, requested: GenerationOptions | None = None) -> GenerationOptions:
        """Sampling for a turn with ``room`` tokens left: the settings', or ``requested``
        (a caller's own, e.g. an API request's) with its answer length capped to the room."""
        if requested is not None:
            return replace(
                requested,
                max_tokens=max(1, min(requested.max_tokens, room)),
                speculative=requested.speculative or self.speculative(),
            )
        s = self.settings
        return GenerationOptions(
            max_tokens=max(1, min(s.max_tokens, room)),
            temperature=self.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=s.seed,
            repetition_penalty=self.repetition_penalty,
            speculative=self.speculative(),
        )

    def speculative(self) -> bool:
        """Whether this turn asks for n-gram speculation (the engine decides whether it can).

        ``auto`` asks for document answers only, which copy their passages: measured on
        SmolLM2 (scripts/bench_speculation.py, 1 thread) it saved 7 % CPU per token there
        (77 % of drafts accepted) and cost 16 % on free text (47 % accepted), so the saver
        profile does not turn it on for free text either."""
        mode = self.settings.speculation
        if mode == "auto":
            return self.documents_on
        return mode == "on"

    def window_hint(self, needed: int | None = None) -> str:
        """How the window could grow, in the user's words: by --ctx up to the model's
        limit, or not at all when the window is the model's own (a LiteRT-LM bundle's
        KV cache is fixed when it is built) or ``needed`` tokens exceed the model's limit."""
        return window_hint(self.settings.context_window, self.engine.info.context_length, self.window, needed)

    def stream(
        self, user_text: str, options: GenerationOptions | None = None, *, output: OutputFormat | None = None
    ) -> Iterator[Event]:
        """Run one turn, yielding engine events; history and store are updated at ``Done``.

        ``options`` replaces the settings' sampling for this turn (the answer length is
        still capped to the room the window has left). With documents on, the answer is
        made from the passages found (:mod:`assistant.app.answers`: the source sentences
        first, then what the model adds, by the answer mode). ``output`` constrains the
        answer to a schema, regex or grammar (documents off only). Raises
        :class:`~assistant.core.errors.ContextExhausted` (with the numbers) before
        anything runs when the turn cannot fit under the policy.
        """
        # The background embedder (MiniLM vectors for documents) waits for the whole turn:
        # retrieval, prefill and decoding (assistant/retrieval/backfill.py).
        with generating(self.settings):
            yield from self._stream(user_text, options, output)

    def _stream(
        self, user_text: str, options: GenerationOptions | None, output: OutputFormat | None
    ) -> Iterator[Event]:
        self.route = Route.local(self)
        self.last_retrieval = None
        self.last_grounding = None
        self.last_plan = None  # this turn's, once it has one (never the last turn's)
        self.turn_started = time.perf_counter()
        if output is not None and self.documents_on:
            raise EnclaveError(
                "A structured answer (--schema, --regex, --grammar) cannot be made from documents.",
                "Ask without --docs, or without the output format.",
            )
        if not self.documents_on:
            constraint = None if output is None else output.constraint
            yield from self.model_turn(user_text, requested=options, constraint=constraint)
            return
        from assistant.app.answers import Grounding, answer_turn

        retrieval = self.last_retrieval = self.retrieve(user_text)
        self.retrieval_ms = (time.perf_counter() - self.turn_started) * 1000
        mode, notice = self.answer_mode
        if not retrieval.strong:
            # Weak evidence: say so instead of letting the model answer from nothing.
            self.last_grounding = Grounding(mode, reason=retrieval.reason)
            text = nothing_found(retrieval.collections, retrieval.reason)
            self.remember(user_text, text)
            yield TextDelta(text)
            # The model was not asked: no tokens, the time it took to say so (as `extract` reports).
            yield Usage(
                0, 0, 0, ttft_ms=(time.perf_counter() - self.turn_started) * 1000, prefill_ms=0.0, decode_ms=0.0
            )
            yield Done("no-evidence", text)
            return
        if not retrieval.passages:
            raise EnclaveError(
                f"Passages from your documents were found, but none fits the {self.window}-token context "
                "window beside the conversation.",
                f"Start a new conversation (/new) or ask without documents. {self.window_hint()}",
            )
        yield from answer_turn(self, user_text, retrieval, mode, requested=options)
        if notice and self.last_grounding is not None:
            self.last_grounding.notices.append(notice)

    def remember(self, user_text: str, answer: str) -> None:
        """Add an exchange the model did not write (a refusal, quoted sentences) to the history."""
        if self.last_plan is None:  # the model saw no prompt this turn: nothing sent, nothing dropped
            self.last_plan = Plan([], 0, self.window, self.reserve)
        self._before_last = (self._held_text, self._held_tokens)
        self.messages.append({"role": "user", "content": user_text})
        self.messages.append({"role": "assistant", "content": answer})
        self.context_used = len(self.tokens_for(self.system_messages() + self.messages))

    def model_turn(
        self,
        content: str,
        *,
        constraint: Constraint | None = None,
        max_tokens: int | None = None,
        remember: bool = True,
        requested: GenerationOptions | None = None,
    ) -> Iterator[Event]:
        """Ask the model: ``content`` is the new user message as the model sees it.

        ``requested`` replaces the settings' sampling (see :meth:`options`);
        ``constraint`` and ``max_tokens`` narrow this one turn; without ``remember``
        the exchange is left out of the history (the caller records what it shows)."""
        from assistant.app.answers import options_with

        plan = self.plan(content)
        self.last_plan = plan
        tokens = self.tokens_for(plan.messages)
        text = self.engine.tokenizer.render(plan.messages, add_generation_prompt=True)
        room = self.window - len(tokens)
        if room < 1:  # only reachable with answer_reserve misconfigured
            keep = self.session.common_prefix(tokens)
            raise ContextExhausted(needed=len(tokens), window=self.window, held=keep)
        options = options_with(self.options(room, requested), constraint, max_tokens)
        self.last_options = options
        events = self.session.generate(tokens, options, messages=plan.messages)
        try:
            first = next(events, None)  # the engine reads the prompt (and may find it too long) here
        except ContextExhausted as exc:
            exc.hint = f"Shorten the message or start a new conversation (/new). {self.window_hint()}"
            raise
        before = (self._held_text, self._held_tokens)
        for event in itertools.chain([first] if first is not None else [], events):
            if isinstance(event, Usage):
                self.context_used = event.prompt_tokens + event.completion_tokens
            if isinstance(event, Done):
                if event.reason == "cancelled" or not remember:
                    # A cancelled answer is not part of the conversation; the cache
                    # is re-synced from the shared prefix on the next turn.
                    self._held_text, self._held_tokens = None, []
                else:
                    self._before_last = before
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
        if result.finish_reason not in ("cancelled", "error"):
            if not self._replacing:
                self._prior_chain = self._last_chain
            self.last_user_text = user_text
            self._last_chain = self._pending_chain or [user_text]
            self.unanswered = None
        elif result.finish_reason == "cancelled":
            self.unanswered = (user_text, self._replacing)
        self._pending_chain = None
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
            self._save_state()
        replacing = self._replacing
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
            context=_stored_context(result),
            citations=result.citations,
            title=title_for(user_text),
            replace_last=replacing,
        )
        result.conversation_id = self.id
        if replacing:
            AuditLog(self.store).record("turn_replaced", conversation=self.id, messages_deleted=2)
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

    def retry_target(self) -> tuple[str, bool] | None:
        """What /retry (Ctrl+R) answers again: a message whose answer was cancelled (as a
        new turn, or again in the place it was replacing), else the last message in place
        of its answer; None when there is nothing to retry."""
        if self.unanswered is not None:
            return self.unanswered
        if self.can_replace_last and self.last_user_text is not None:
            return self.last_user_text, True
        return None

    @property
    def can_replace_last(self) -> bool:
        """Whether there is a last exchange to answer again or edit."""
        return len(self.messages) >= 2 and self.last_user_text is not None

    def turn(
        self, user_text: str, *, replace_last: bool = False, output: OutputFormat | None = None
    ) -> Iterator[TurnEvent]:
        """One turn, decided here for every front end: in the cloud when cloud is on for
        this conversation and the user consents, else on this device; a local failure
        offers the cloud when one is configured (never silently). The turn is saved and
        audited before :class:`TurnFinished` is yielded; failures end up in its result.

        With ``replace_last`` the turn takes the place of the last exchange (retry the
        answer, or an edited message): the KV cache rewinds to just before it, and the
        stored exchange is replaced when the new one is saved. A cancelled or failed
        replacement leaves the last exchange as it was.

        The message is first made readable for a tokenizer (:func:`~assistant.core.text.for_model`):
        a NUL ends a C string in the native tokenizer and would make this and every later
        turn lose its end, so it is removed with the other control characters, and bytes
        that were not UTF-8 become U+FFFD; a :class:`Notice` says what changed.

        With ``output`` the answer is constrained to that format on this device (no
        cloud), checked again when it ends, and the check is the result's ``output``
        (:mod:`assistant.app.structured`).
        """
        cleaned = for_model(user_text)
        if cleaned.changed:
            yield Notice(input_notice(cleaned), "warning")
        user_text = cleaned.text
        if not user_text.strip():
            yield TurnFinished(
                self._failure(
                    EnclaveError("The message is empty once the characters the model cannot read are removed.",
                                 "Type the question again as plain text.")  # fmt: skip
                )
            )
            return
        if output is not None:
            yield from self._structured(user_text, output)
            return
        if not replace_last:
            yield from self._turn(user_text)
            return
        if not self.can_replace_last:
            yield TurnFinished(
                self._failure(EnclaveError("There is no answer to replace yet.", "Ask something first."))
            )
            return
        removed = self.messages[-2:]
        del self.messages[-2:]
        held = (self._held_text, self._held_tokens)
        self._held_text, self._held_tokens = self._before_last
        self._replacing = True
        count = len(self.messages)
        try:
            yield from self._turn(user_text)
        finally:
            self._replacing = False
            if len(self.messages) == count:  # not answered: the old exchange stays
                self.messages.extend(removed)
                if self._held_text is not None:
                    self._held_text, self._held_tokens = held

    def _turn(self, user_text: str) -> Iterator[TurnEvent]:
        if self.cloud_enabled:
            consent = yield from self._consent(user_text, f"Send this turn to {self.cloud.endpoint.label}?")
            if consent is None:
                yield Notice("Not sent. Answering on this device instead.")
            else:
                lost = yield from self._cloud_turn(user_text, consent)
                if lost is None:
                    return
                # The endpoint went away before any of the answer came: cloud is off for
                # this conversation, and this turn too runs here (a one-shot ask answers).
                yield Notice(
                    f"{lost.message} Cloud is now off for this conversation; answering on this device instead.",
                    "warning",
                )
        yield from self._local_turn(user_text)

    def _cloud_turn(
        self, user_text: str, consent: tuple[CloudRequest, str]
    ) -> Generator[TurnEvent, None, EnclaveError | None]:
        """One turn sent to the cloud endpoint. Returns the error when the endpoint failed
        before any text arrived (and cloud switched itself off), so that the turn can run
        on this device; otherwise the turn is finished here."""
        streamed = False
        for event in self._attempt(user_text, self._cloud_stream(user_text, *consent), hold_failure=True):
            if isinstance(event, TurnFinished) and event.result.error is not None:
                if not streamed and not self.cloud_enabled:
                    return event.result.error
                if not self.cloud_enabled:
                    yield Notice("Cloud is now off for this conversation; the next turn runs on this device.", "warning")
                yield event
                return None
            streamed = streamed or (isinstance(event, TextDelta) and bool(event.text))
            yield event
        return None

    def _local_turn(self, user_text: str) -> Iterator[TurnEvent]:
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

    def _structured(self, user_text: str, output: OutputFormat) -> Iterator[TurnEvent]:
        """A structured turn: local only (the cloud client sends no grammar), then checked."""
        if self.cloud_enabled:
            yield TurnFinished(
                self._failure(EnclaveError("A structured answer (--schema, --regex, --grammar) is made on this "
                                           "device only.", "Ask without --cloud."))  # fmt: skip
            )
            return
        try:
            self.engine.capabilities.check(GenerationOptions(constraint=output.constraint), self.engine.name)
            yield from self._attempt(user_text, lambda: self.stream(user_text, output=output), output=output)
        except EnclaveError as exc:
            yield TurnFinished(self._failure(exc))

    def _cloud_stream(self, user_text: str, request: CloudRequest, how: str) -> Callable[[], Iterator[Event]]:
        return lambda: self.stream_cloud(request, user_text, how)

    def _attempt(
        self,
        user_text: str,
        make: Callable[[], Iterator[Event]],
        *,
        hold_failure: bool = False,
        output: OutputFormat | None = None,
    ) -> Iterator[TurnEvent]:
        """Stream one attempt and finish it: result, save, audit. With ``hold_failure`` a
        failed result is yielded unsaved for :meth:`turn` to decide on; with ``output``
        the answer is checked against its format."""
        collector = TurnCollector(self)
        was_cloud = self.cloud_enabled
        for event in make():
            collector.feed(event)
            yield event
        result = collector.result()
        if output is not None and result.error is None:
            limit = self.last_options.max_tokens if self.last_options is not None else None
            result.output = output.check(result.text, result.finish_reason, limit)
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
        return [*self.system_messages(), *self.messages, {"role": "user", "content": content}]

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
                self._before_last = (self._held_text, self._held_tokens)
                self.messages.append({"role": "user", "content": user_text})
                self.messages.append({"role": "assistant", "content": event.text})
            yield event

    def refuse_cloud(self, request: CloudRequest, how: str) -> None:
        """The user saw ``request`` and did not send it: recorded, nothing sent."""
        self.cloud.refuse(request, how, self.id)


def _stored_context(result: TurnResult) -> dict[str, Any] | None:
    """What is kept with an answer besides its text: the context accounting and, for an
    answer from documents, its mode and each sentence with its label, so that an export
    shows "not found in the sources" where the screen did."""
    context = result.context.as_dict() if result.context else None
    if result.mode is not None:
        context = dict(context or {})
        context["answer_mode"] = result.mode
        context["answer_sentences"] = [s.as_dict() for s in result.answer_sentences]
    return context


#: Questions a chain of follow-ups is searched with at most: the newest and the two
#: before it ("…cure a violation of the GPL-3?", "what about the LGPL?", "and the MPL-2.0?").
FOLLOW_CHAIN = 3


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
        self.notices: list[str] = []

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
            case Notice(text=text):
                self.notices.append(text)

    def result(self) -> TurnResult:
        conv = self.conv
        text = "".join(self.parts)
        retrieval = conv.last_retrieval
        grounding = conv.last_grounding
        citations = None
        notices: list[str] = list(self.notices)  # the engine's (a restarted worker)
        sentences = []
        if retrieval is not None:
            from assistant.app.answers import grounding_for

            if grounding is None:  # an answer made elsewhere (the cloud): checked the same way
                grounding = conv.last_grounding = grounding_for(conv, text, retrieval)
            sentences = grounding.sentences
            citations = retrieval.citations(text, sentences)
            notices += list(retrieval.notices) + list(grounding.notices)
            models = [s for s in sentences if s.kind == "model"]
            unbacked = [s for s in models if s.source is None]
            if models and unbacked:
                notices.append(
                    f"{len(unbacked)} of the {len(models)} sentences the model wrote are not found in the sources; "
                    "check them against the quoted sentences."
                )
        drops = drops_notice(conv.last_plan)
        if drops:
            notices.append(drops)
        if self.reason == "repetition":
            notices.append("The answer began repeating itself, so it was stopped.")
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
            mode=grounding.mode if grounding is not None else None,
            answer_sentences=list(sentences),
            timings=dict(grounding.timings) if grounding is not None else {},
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
