"""What flows from an engine (local or cloud) to the front ends: typed events, and the
sampling options of one turn. Pure values, stdlib only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args


@dataclass(frozen=True)
class TextDelta:
    """A piece of answer text, always whole Unicode characters."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Figures for one turn.

    ``prompt_tokens`` is the whole prompt of the turn (system, history, new
    message); ``prefilled_tokens`` the part actually run through the model this
    turn (the rest was already in the KV cache).
    """

    prompt_tokens: int
    prefilled_tokens: int
    completion_tokens: int
    ttft_ms: float
    prefill_ms: float
    decode_ms: float
    #: Speculation (n-gram prompt lookup): draft tokens the model verified this turn,
    #: and how many of them it accepted. Both 0 when the turn ran without it.
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    #: Tokens the session's KV cache has room for after this turn (its allocation, at most
    #: the window); 0 when the engine does not say.
    cache_tokens: int = 0

    @property
    def decode_tokens_per_s(self) -> float:
        # The first token comes out of prefill; decode speed is measured over the rest.
        steps = self.completion_tokens - 1
        return steps / (self.decode_ms / 1000.0) if steps > 0 and self.decode_ms > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefilled_tokens / (self.prefill_ms / 1000.0) if self.prefill_ms > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "prefilled_tokens": self.prefilled_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": round(self.ttft_ms, 1),
            "prefill_ms": round(self.prefill_ms, 1),
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 1),
            "drafted_tokens": self.drafted_tokens,
            "accepted_tokens": self.accepted_tokens,
            "cache_tokens": self.cache_tokens,
        }


#: Why a turn ended: ``stop`` (the model ended its answer), ``length`` (``max_tokens``
#: reached), ``context`` (the window is full), ``cancelled`` (the user stopped it),
#: ``no-evidence`` (documents on, nothing relevant found: the model was not asked, or
#: no source sentence answers), ``repetition`` (the answer began repeating itself and
#: was stopped), ``error`` (the turn failed; see the error).
FinishReason = Literal["stop", "length", "context", "cancelled", "no-evidence", "repetition", "error"]
FINISH_REASONS: tuple[FinishReason, ...] = get_args(FinishReason)


@dataclass(frozen=True)
class Done:
    """The turn ended, for ``reason``; ``text`` is the whole answer."""

    reason: FinishReason
    text: str


@dataclass(frozen=True)
class Error:
    """The turn failed; ``error`` is an :class:`~assistant.core.errors.EnclaveError`."""

    error: Exception


@dataclass(frozen=True)
class Notice:
    """Something the user should read during a turn, never part of the answer: from the
    engine (its worker process was restarted and the conversation read back in) or the
    app layer (the cloud was refused, switched off)."""

    text: str
    level: Literal["info", "warning", "error"] = "info"


Event = TextDelta | Usage | Done | Error | Notice


#: The grammars constrained decoding takes: a JSON Schema, a regular expression, a Lark grammar.
ConstraintKind = Literal["json_schema", "regex", "lark"]
CONSTRAINT_KINDS: tuple[ConstraintKind, ...] = get_args(ConstraintKind)


@dataclass(frozen=True)
class Constraint:
    """Constrained decoding (llguidance): the answer must match ``grammar``, a JSON
    Schema, a regular expression or a Lark grammar. Only for engines whose
    ``capabilities.constrained`` is true and whose ``capabilities.constraint_kinds``
    hold ``kind``; others raise :class:`~assistant.core.errors.EngineError`."""

    kind: ConstraintKind
    grammar: str


def json_constraint(schema: str | dict[str, Any] | None = None) -> Constraint:
    """Output that parses as JSON matching ``schema`` (default: any object), written
    compactly: llguidance's ``whitespace_flexible: false`` keeps a small model from
    spending its token budget on newlines and tabs between the keys (measured on the
    tiny test model: an unbounded run of whitespace, then the limit, then unparsable text)."""
    import json

    data = json.loads(schema) if isinstance(schema, str) else dict(schema or {"type": "object"})
    data.setdefault("x-guidance", {"whitespace_flexible": False})
    return Constraint("json_schema", json.dumps(data))


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling settings for one turn. ``temperature == 0`` means greedy."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 50
    seed: int | None = None
    #: 1.0 is off; above 1 makes tokens already in the answer less likely.
    repetition_penalty: float = 1.0
    constraint: Constraint | None = None
    #: Stop the answer when it starts repeating itself (finish reason ``repetition``);
    #: off only where noise is expected (the random-weight test models).
    stop_on_repetition: bool = True
    #: Ask for n-gram (prompt-lookup) speculation: draft tokens copied from the prompt,
    #: verified in one pass. Honoured only by engines whose ``capabilities.speculative``
    #: is true, and only for greedy turns without repetition penalty or constraint;
    #: elsewhere it is ignored (see ``speculation_applies``).
    speculative: bool = False

    @property
    def speculation_applies(self) -> bool:
        """Whether speculation may run for these settings (greedy, no penalty, no constraint)."""
        return self.speculative and self.temperature == 0 and self.repetition_penalty == 1.0 and self.constraint is None
