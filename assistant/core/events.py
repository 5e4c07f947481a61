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
        }


#: Why a turn ended: ``stop`` (the model ended its answer), ``length`` (``max_tokens``
#: reached), ``context`` (the window is full), ``cancelled`` (the user stopped it),
#: ``no-evidence`` (documents on, nothing relevant found: the model was not asked),
#: ``error`` (the turn failed; see the error).
FinishReason = Literal["stop", "length", "context", "cancelled", "no-evidence", "error"]
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


Event = TextDelta | Usage | Done | Error


@dataclass(frozen=True)
class Constraint:
    """Constrained decoding (llguidance): the answer must match ``grammar``, a JSON
    Schema, a regular expression or a Lark grammar. Only for engines whose
    ``capabilities.constrained`` is true."""

    kind: Literal["json_schema", "regex", "lark"]
    grammar: str


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
