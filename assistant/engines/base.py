"""The engine seam: what every local or remote backend provides.

An :class:`Engine` is a loaded model. It opens :class:`Session` objects; a session
owns one KV cache and the exact token sequence that cache holds. A turn is one
call to :meth:`Session.generate` with the whole prompt of that turn: the session
keeps the longest prefix it already holds, rewinds past anything that differs,
prefills only the rest, then streams typed events.

:class:`Session` is the contract every caller sees. Token-level backends derive from
:class:`TokenSession`: streaming, timing and usage accounting live there, once, around
the one method a backend must implement for decoding (:meth:`TokenSession._decode_step`)
and the ones it must implement for its cache (:meth:`TokenSession._append`,
:meth:`TokenSession._rewind`, :meth:`TokenSession._reset`). Message-level backends
(LiteRT-LM) and the sealed-worker proxy (:mod:`assistant.engines.sealed`) implement
:meth:`Session.generate` themselves. Optional operations have safe defaults and are
announced by :class:`Capabilities`, never discovered by ``isinstance``.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.core.errors import ContextExhausted, EngineError
from assistant.core.events import (
    ConstraintKind,
    Done,
    Error,
    Event,
    FinishReason,
    GenerationOptions,
    TextDelta,
    Usage,
)
from assistant.engines.repetition import RepetitionGuard

if TYPE_CHECKING:
    from assistant.privacy.seal import Isolation


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Callers branch on these flags, never on types."""

    rewind: bool = False  # can drop tokens from the end of the KV cache
    cancel: bool = True  # stops within a token of a cancel request
    kv_save: bool = False  # can write the KV cache to disk and restore it
    gpu: bool = False  # is running on an accelerator
    token_count: bool = True  # its tokenizer gives exact prompt token counts
    token_level: bool = True  # prefills token ids and reports sampled ids (else: works on messages)
    constrained: bool = False  # honours GenerationOptions.constraint (llguidance)
    logprobs: bool = False  # Session.score gives teacher-forced log-probabilities (perplexity, drift)
    speculative: bool = False  # honours GenerationOptions.speculative (n-gram prompt lookup)
    #: The grammar kinds it takes when ``constrained`` (LiteRT-LM takes no Lark grammar).
    constraint_kinds: frozenset[ConstraintKind] = frozenset()

    def check(self, options: GenerationOptions, engine: str) -> None:
        """Raise :class:`EngineError` when ``options`` ask for what this backend cannot do."""
        constraint = options.constraint
        if constraint is not None and not (self.constrained and constraint.kind in self.constraint_kinds):
            kinds = ", ".join(sorted(self.constraint_kinds)) if self.constrained else "none"
            raise EngineError(
                f"The {engine} engine cannot constrain an answer to a {constraint.kind} grammar "
                f"(it takes: {kinds}).",
                "Use another grammar kind, or a model built for the onnx engine (--engine onnx).",
            )


@dataclass
class ModelInfo:
    """What the engine knows about the loaded model."""

    name: str
    path: str
    context_length: int  # the model's trained window
    eos_token_ids: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: Bytes the KV cache takes per token of a session's capacity, when the engine knows
    #: (a server budgets its kept sessions with it); None when it cannot tell.
    kv_bytes_per_token: int | None = None


# --------------------------------------------------------------------------- tokenizer
class Tokenizer(ABC):
    """The model's own tokenizer and chat template."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Tokens of ``text``; special tokens written in the text are recognised,
        nothing is added (templates carry their own BOS)."""

    @abstractmethod
    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``; incomplete UTF-8 becomes U+FFFD."""

    @abstractmethod
    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The model's chat template applied to ``messages`` (role/content dicts)."""

    def render_tools(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
    ) -> str:
        """The chat template applied to ``messages`` in OpenAI's shapes (``tool`` results,
        assistant ``tool_calls`` with their arguments as objects) offering ``tools``.
        Only for models whose ``info.extra["tool_format"]`` names a format; others raise
        :class:`EngineError`."""
        raise EngineError("This model's chat template has no tool-call format.", "Send the request without tools.")


def start_text(tokenizer: Tokenizer, bos: str, add_bos: bool | None = None) -> str:
    """The start token a prompt of this model begins with, as text ("" for none).

    A model is given its start token when its own template writes it first (Gemma's
    ``<bos>``, a GGUF's ``add_bos_token`` turned into ``{{ bos_token }}``), or when its
    tokenizer's configuration says ``add_bos_token``. The engines' tokenizers never add
    it themselves, so text that skips the template (a base model's completion) needs it
    from here: without it Gemma 3 270M continues "The capital of France is" with
    "France. France. France."."""
    if not bos:
        return ""
    if add_bos is not None:
        return bos if add_bos else ""
    try:
        probe = tokenizer.render([{"role": "user", "content": "x"}], add_generation_prompt=False)
    except Exception:  # noqa: BLE001 - a template that refuses a lone user message: no evidence either way
        return ""
    return bos if probe.startswith(bos) else ""


class CompletionTokenizer(Tokenizer):
    """A base model's tokenizer: the conversation is one plain text that the model continues.

    A base model (no chat template, or one it was never tuned on) does not answer turns:
    it continues text. So nothing is wrapped around the messages: the start token if the
    model takes one, a system prompt (only one the user wrote) and a blank line, then
    each message as written, a continuation directly after the text it continues and the
    next message on a new line. Encoding and decoding are the model's own."""

    def __init__(self, inner: Tokenizer, start: str = "") -> None:
        self.inner = inner
        self.start = start

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.inner.decode(tokens)

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        parts = [self.start]
        previous = ""
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "system":
                if content:
                    parts.append(content + "\n\n")
                continue
            if role == "user" and previous == "assistant":
                parts.append("\n")
            parts.append(content)
            previous = role
        return "".join(parts)


class StreamDecoder:
    """Turns a growing list of generated tokens into whole-character text deltas.

    Re-decodes a short window of recent tokens so that a multi-byte character split
    over several tokens is only emitted once complete, and so that tokenizers that
    treat a leading space specially stay consistent. The concatenated deltas equal
    ``tokenizer.decode(all_tokens)`` once :meth:`flush` is called.
    """

    _WINDOW = 24  # tokens decoded per step at most; keeps the cost flat per token

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._tokens: list[int] = []
        self._anchor = 0
        self._emitted = 0  # characters of decode(tokens[anchor:]) already emitted

    def push(self, token: int) -> str:
        self._tokens.append(token)
        text = self._tok.decode(self._tokens[self._anchor :])
        if text.endswith("\ufffd"):
            return ""  # the last character is not complete yet
        delta = text[self._emitted :]
        self._emitted = len(text)
        if len(self._tokens) - self._anchor > self._WINDOW:
            # Move the anchor forward, keeping a few tokens of left context, but only
            # to a clean boundary: one where the tail decodes to a suffix of what was
            # already emitted (a boundary inside a character would not).
            anchor = len(self._tokens) - 4
            tail = self._tok.decode(self._tokens[anchor:])
            if tail and text.endswith(tail) and not tail.startswith("\ufffd"):
                self._anchor = anchor
                self._emitted = len(tail)
        return delta

    def flush(self) -> str:
        text = self._tok.decode(self._tokens[self._anchor :])
        delta = text[self._emitted :]
        self._emitted = len(text)
        return delta

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)


# --------------------------------------------------------------------------- session
class Session(ABC):
    """One KV cache and the tokens it holds: what every caller of an engine sees.

    A session is used by one thread at a time; :meth:`cancel` may be called from any
    thread.
    """

    def __init__(self, engine: Engine, capacity: int) -> None:
        self.engine = engine
        self.capacity = capacity
        self._held: list[int] = []
        self._cancel = threading.Event()

    # -- state
    @property
    def tokens(self) -> list[int]:
        """The exact token sequence the KV cache holds."""
        return list(self._held)

    @property
    def token_count(self) -> int:
        return len(self._held)

    def cancel(self) -> None:
        """Ask the running :meth:`generate` to stop; safe from any thread."""
        self._cancel.set()

    def reset_cancel(self) -> None:
        """Forget a cancel request that arrived after the turn had already ended."""
        self._cancel.clear()

    def common_prefix(self, tokens: Sequence[int]) -> int:
        """Length of the longest prefix shared by the cache and ``tokens``."""
        n = 0
        for a, b in zip(self._held, tokens, strict=False):
            if a != b:
                break
            n += 1
        return n

    @abstractmethod
    def generate(
        self,
        prompt: Sequence[int],
        options: GenerationOptions | None = None,
        messages: Sequence[dict[str, str]] | None = None,
    ) -> Iterator[Event]:
        """Stream one turn whose whole prompt is ``prompt`` (``messages`` as chat messages).

        Yields :class:`TextDelta` events, then one :class:`Usage`, then :class:`Done`
        (a :class:`Notice` may come first). A failure yields :class:`Error` (after any
        text already produced) and ends the stream; :class:`ContextExhausted` when the
        prompt itself does not fit is raised before anything is yielded.
        """

    def score(self, tokens: Sequence[int]) -> list[float]:
        """Natural-log probability of each of ``tokens[1:]`` given the tokens before it
        (teacher forcing), for perplexity. Optional: announced by ``capabilities.logprobs``;
        uses its own cache, so the session's conversation cache is left as it is."""
        raise EngineError(f"The {self.engine.name} engine cannot score tokens.", "Use an engine with logprobs.")

    def prepare_next(self, interrupted: Callable[[], bool] = lambda: False) -> int:
        """Idle time after a turn (the worker calls it when no request has come for a
        moment): make room for the next turn now, so that it does not wait. Stops early
        when ``interrupted()`` turns true. Returns the tokens read doing so (0: nothing
        to do, the default)."""
        return 0

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources; optional."""

    def close(self) -> None:
        self._close()


class TokenSession(Session):
    """A session over token ids: keeps the longest prefix held, prefills the rest.

    Backends implement :meth:`_append`, :meth:`_rewind`, :meth:`_decode_step` and
    :meth:`_reset`; everything else is shared.
    """

    # -- backend hooks
    @abstractmethod
    def _append(self, tokens: list[int]) -> None:
        """Run ``tokens`` through the model, extending the KV cache."""

    @abstractmethod
    def _rewind(self, n: int) -> None:
        """Drop the KV cache back to its first ``n`` tokens (``n`` ≥ 1)."""

    @abstractmethod
    def _reset(self) -> None:
        """Drop the whole KV cache."""

    @abstractmethod
    def _decode_step(self, options: GenerationOptions) -> int:
        """Sample the next token from the current logits and feed it back."""

    def _speculation_counts(self) -> tuple[int, int]:
        """(drafted, accepted) draft tokens since the session's cache was created;
        optional: (0, 0) for backends without speculation."""
        return (0, 0)

    def _cache_tokens(self) -> int:
        """Tokens the native KV cache has room for now (0: the backend does not say)."""
        return 0

    def _after_stop_token(self) -> None:
        """The model sampled an end-of-turn token, which is not kept in ``tokens``.

        Backends whose native cache already holds it must drop it here, so that
        the cache and ``tokens`` agree (the next turn's template glue follows the
        answer directly)."""

    # -- shared logic
    def sync(self, tokens: Sequence[int]) -> int:
        """Make the KV cache hold exactly ``tokens`` plus room to answer.

        Keeps the longest prefix already held, rewinds (or resets, without the
        rewind capability) past the first difference, and prefills the rest.
        Returns the number of tokens prefilled. Raises :class:`ContextExhausted`
        before touching the cache when ``tokens`` cannot fit.
        """
        tokens = list(tokens)
        if len(tokens) >= self.capacity:
            keep = self.common_prefix(tokens)
            raise ContextExhausted(needed=len(tokens), window=self.capacity, held=keep)
        keep = self.common_prefix(tokens)
        # The logits after the last prefix token are needed to generate, so at least
        # one token is always (re)appended: rewind to n-1 and re-append the last.
        if keep == len(tokens):
            keep -= 1
        if keep < len(self._held):
            if keep > 0 and self.engine.capabilities.rewind:
                self._rewind(keep)
                self._held = self._held[:keep]
            else:
                self._reset()
                self._held = []
                keep = 0
        new = tokens[keep:]
        if new:
            try:
                self._append(new)
            except Exception:
                # Leave the session in a known state: empty, so the next sync re-prefills.
                self._reset()
                self._held = []
                raise
            self._held.extend(new)
        return len(new)

    def generate(
        self,
        prompt: Sequence[int],
        options: GenerationOptions | None = None,
        messages: Sequence[dict[str, str]] | None = None,
    ) -> Iterator[Event]:
        """Stream one turn: sync the cache to ``prompt``, then decode.

        ``messages`` are the same prompt as chat messages; token-level backends
        ignore them, message-level backends (``capabilities.token_level`` false)
        need them.

        Yields :class:`TextDelta` events, then one :class:`Usage`, then
        :class:`Done`. A failure yields :class:`Error` (after any text already
        produced) and ends the stream; :class:`ContextExhausted` when the prompt
        itself does not fit is raised before anything is yielded.
        """
        options = options or GenerationOptions()
        self.engine.capabilities.check(options, self.engine.name)
        eos = set(self.engine.info.eos_token_ids)
        guard = RepetitionGuard()
        start = time.perf_counter()
        try:
            prefilled = self.sync(prompt)
        except ContextExhausted:
            raise
        except Exception as exc:  # noqa: BLE001 - native errors become EngineError
            yield Error(EngineError(f"The engine failed while reading the prompt: {exc}"))
            return
        prefill_done = time.perf_counter()
        drafted_before, accepted_before = self._speculation_counts()
        decoder = StreamDecoder(self.engine.tokenizer)
        first_token_at: float | None = None
        reason: FinishReason = "length"
        completion = 0
        pieces: list[str] = []
        try:
            while completion < options.max_tokens:
                if self._cancel.is_set():
                    reason = "cancelled"
                    break
                if len(self._held) >= self.capacity:
                    reason = "context"
                    break
                token = self._decode_step(options)
                completion += 1
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if token in eos:
                    reason = "stop"
                    self._after_stop_token()
                    break
                self._held.append(token)
                delta = decoder.push(token)
                if delta:
                    pieces.append(delta)
                    yield TextDelta(delta)
                    # A constrained answer follows its grammar; anything else that loops stops.
                    if options.constraint is None and options.stop_on_repetition and guard.push(delta):
                        reason = "repetition"
                        break
        except Exception as exc:  # noqa: BLE001
            self._resync_after_failure()
            yield from _flush(decoder, pieces)
            yield Error(EngineError(f"The engine failed while generating: {exc}"))
            return
        end = time.perf_counter()
        yield from _flush(decoder, pieces)
        first = first_token_at or end
        drafted, accepted = self._speculation_counts()
        yield Usage(
            prompt_tokens=len(prompt),
            prefilled_tokens=prefilled,
            completion_tokens=completion,
            ttft_ms=(first - start) * 1000.0,
            prefill_ms=(prefill_done - start) * 1000.0,
            decode_ms=(end - first) * 1000.0,
            drafted_tokens=max(0, drafted - drafted_before),
            accepted_tokens=max(0, accepted - accepted_before),
            cache_tokens=self._cache_tokens(),
        )
        # A cancel that arrived during this turn must not stop the next one. (It is not
        # cleared at the start: an Esc pressed before decoding began still counts.)
        self._cancel.clear()
        yield Done(reason=reason, text="".join(pieces))

    def _resync_after_failure(self) -> None:
        """After a native failure the cache state is unknown: start empty."""
        try:
            self._reset()
        finally:
            self._held = []


def _flush(decoder: StreamDecoder, pieces: list[str]) -> Iterator[TextDelta]:
    """End a turn's text: what ``decoder`` held back (an incomplete character), added to ``pieces`` and yielded."""
    tail = decoder.flush()
    if tail:
        pieces.append(tail)
        yield TextDelta(tail)


# --------------------------------------------------------------------------- engine
class Engine(ABC):
    """A loaded model. Subclasses set ``name`` and ``capabilities``.

    ``isolation`` says how the process that runs the model is sealed off the network
    (``None``: in this process, as the backends themselves are).
    """

    name: str = "base"
    capabilities: Capabilities = Capabilities()
    isolation: Isolation | None = None

    def __init__(self, info: ModelInfo, tokenizer: Tokenizer) -> None:
        self.info = info
        self.tokenizer = tokenizer

    @abstractmethod
    def open_session(self, capacity: int) -> Session:
        """A new, empty session whose KV cache holds at most ``capacity`` tokens."""

    def process_peak_rss_mib(self) -> float:
        """Peak memory of the process that runs the model, when it is not this one (0.0: it is)."""
        return 0.0

    def process_cpu_seconds(self) -> float:
        """CPU time so far of the process that runs the model, when it is not this one (0.0: it is)."""
        return 0.0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model; optional."""
