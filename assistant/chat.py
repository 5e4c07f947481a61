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

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.catalog import Catalog, InstalledModel
from assistant.config import REPO_ROOT, Settings
from assistant.engines import load_engine
from assistant.engines.base import Done, Engine, Error, Event, GenerationOptions, Session, TextDelta, Usage
from assistant.errors import ContextExhausted, EnclaveError

PROMPTS_DIR = REPO_ROOT / "prompts"


def persona_dirs(settings: Settings) -> list[Path]:
    """Where personas are looked up: the user's config directory first."""
    return [settings.locations.config / "prompts", PROMPTS_DIR]


def list_personas(settings: Settings) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in reversed(persona_dirs(settings)):
        for path in sorted(directory.glob("*.md")):
            found[path.stem] = path
    return dict(sorted(found.items()))


def load_persona(settings: Settings, name: str) -> str:
    personas = list_personas(settings)
    if name not in personas:
        raise EnclaveError(
            f"No persona is called {name!r}.",
            f"Personas: {', '.join(personas)}. Add your own as a .md file in "
            f"{settings.locations.config / 'prompts'}.",
        )
    return personas[name].read_text(encoding="utf-8").strip()


@dataclass
class TurnResult:
    """One finished turn, as reported by ``--json`` and stored."""

    text: str
    model: str
    model_sha256: str
    engine: str
    usage: Usage | None
    finish_reason: str
    error: EnclaveError | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "engine": self.engine,
            "where": "local",
            "finish_reason": self.finish_reason,
            "usage": self.usage.as_dict() if self.usage else None,
        }
        if self.error:
            data["error"] = {"message": self.error.message, "hint": self.error.hint}
        return data


class Assistant:
    """Loads models and opens conversations; the one object front ends talk to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self._loaded: dict[tuple[str, str], tuple[InstalledModel, Engine]] = {}

    def load(self, name: str | None = None, engine: str | None = None) -> tuple[InstalledModel, Engine]:
        name = name or self.settings.model
        model = self.catalog.find(name, engine)
        key = (model.name, model.engine)
        if key not in self._loaded:
            self.catalog.check_before_load(model)
            self._loaded[key] = (model, load_engine(model, self.settings))
        return self._loaded[key]

    def conversation(
        self, model: str | None = None, engine: str | None = None, persona: str | None = None
    ) -> Conversation:
        installed, loaded = self.load(model, engine)
        system = load_persona(self.settings, persona or self.settings.persona)
        return Conversation(self.settings, installed, loaded, system)

    def close(self) -> None:
        for _, engine in self._loaded.values():
            engine.close()
        self._loaded.clear()


@dataclass
class Conversation:
    """A chat with one model: history, one KV-cache session, and turn accounting."""

    settings: Settings
    model: InstalledModel
    engine: Engine
    system: str
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        window = min(self.settings.context_window, self.engine.info.context_length)
        self.session: Session = self.engine.open_session(window)
        self._held_text: str | None = None  # text that session.tokens stands for
        self._held_tokens: list[int] = []

    @property
    def window(self) -> int:
        return self.session.capacity

    def all_messages(self, pending: str | None = None) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": pending}] if pending is not None else []
        return head + self.messages + tail

    def prompt_tokens(self, user_text: str) -> tuple[list[int], str]:
        """The exact tokens of the next turn's prompt, and the text they stand for."""
        tok = self.engine.tokenizer
        text = tok.render(self.all_messages(user_text), add_generation_prompt=True)
        held = self._held_text
        if held is not None and text.startswith(held) and self.session.tokens == self._held_tokens:
            return self._held_tokens + tok.encode(text[len(held) :]), text
        return tok.encode(text), text

    def options(self) -> GenerationOptions:
        s = self.settings
        return GenerationOptions(
            max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, seed=s.seed
        )

    def stream(self, user_text: str) -> Iterator[Event]:
        """Run one turn, yielding engine events; the history is updated at ``Done``.

        Raises :class:`ContextExhausted` (with the numbers) before anything runs
        when the prompt does not leave room in the window for an answer.
        """
        tokens, text = self.prompt_tokens(user_text)
        options = self.options()
        room = self.window - len(tokens)
        if room < 1:
            keep = self.session.common_prefix(tokens)
            raise ContextExhausted(held=keep, requested=len(tokens) - keep, capacity=self.window)
        options = GenerationOptions(
            max_tokens=min(options.max_tokens, room),
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=options.top_k,
            seed=options.seed,
        )
        for event in self.session.generate(tokens, options):
            if isinstance(event, Done):
                if event.reason == "cancelled":
                    # A cancelled answer is not part of the conversation; the cache
                    # is re-synced from the shared prefix on the next turn.
                    self._held_text, self._held_tokens = None, []
                else:
                    self.messages.append({"role": "user", "content": user_text})
                    self.messages.append({"role": "assistant", "content": event.text})
                    self._held_text = text + event.text
                    self._held_tokens = self.session.tokens
            elif isinstance(event, Error):
                self._held_text, self._held_tokens = None, []
            yield event

    def ask(self, user_text: str, on_text: Any = None) -> TurnResult:
        """Run one turn to completion in this thread; ``on_text(str)`` sees each delta."""
        return collect(self, self.stream(user_text), on_text)

    def cancel(self) -> None:
        self.session.cancel()


def collect(conv: Conversation, events: Iterator[Event], on_text: Any = None) -> TurnResult:
    usage: Usage | None = None
    reason = "error"
    text_parts: list[str] = []
    error: EnclaveError | None = None
    for event in events:
        match event:
            case TextDelta(text=piece):
                text_parts.append(piece)
                if on_text:
                    on_text(piece)
            case Usage():
                usage = event
            case Done(reason=r):
                reason = r
            case Error(error=exc):
                error = exc if isinstance(exc, EnclaveError) else EnclaveError(str(exc))
    return TurnResult(
        text="".join(text_parts),
        model=conv.model.name,
        model_sha256=conv.model.sha256,
        engine=conv.engine.name,
        usage=usage,
        finish_reason=reason,
        error=error,
    )


def stream_in_thread(conv: Conversation, user_text: str) -> Iterator[Event]:
    """Run the turn's blocking decode loop in a worker thread, yielding its events here.

    The caller's thread stays free to react to Ctrl-C (call ``conv.cancel()`` and
    keep iterating: the stream ends with ``Done(reason="cancelled")``). Exceptions
    raised in the worker are re-raised in the caller.
    """
    events: queue.Queue[Any] = queue.Queue()
    sentinel = object()

    def work() -> None:
        try:
            for event in conv.stream(user_text):
                events.put(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            events.put(exc)
        finally:
            events.put(sentinel)

    worker = threading.Thread(target=work, name="enclave-decode", daemon=True)
    worker.start()
    while True:
        item = events.get()
        if item is sentinel:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    worker.join()
