"""Records that cross layers: a turn's context plan and its result. Pure values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.core.errors import EnclaveError
from assistant.core.events import FinishReason, Usage

#: One chat message as the chat template sees it: ``{"role": …, "content": …}``.
Message = dict[str, str]


@dataclass(frozen=True)
class Drop:
    """One thing left out of a turn's prompt."""

    kind: Literal["turn", "truncated"]  # an exchange dropped, or a message shortened
    index: int  # position of the (first) message in the history
    tokens: int  # tokens saved
    preview: str  # first words of what was left out, for the user

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "index": self.index, "tokens": self.tokens, "preview": self.preview}


@dataclass
class Plan:
    """The messages to send this turn and the accounting behind them."""

    messages: list[Message]
    used: int  # prompt tokens, as the engine will count them
    window: int
    reserve: int
    drops: list[Drop] = field(default_factory=list)

    @property
    def dropped_turns(self) -> int:
        return sum(1 for d in self.drops if d.kind == "turn")

    def as_dict(self) -> dict[str, object]:
        return {
            "window": self.window,
            "used": self.used,
            "reserved_for_answer": self.reserve,
            "dropped_turns": self.dropped_turns,
            "drops": [d.as_dict() for d in self.drops],
        }


@dataclass
class TurnResult:
    """One finished turn, as reported by ``--json`` and stored."""

    text: str
    model: str
    model_sha256: str
    engine: str
    usage: Usage | None
    finish_reason: FinishReason
    error: EnclaveError | None = None
    context: Plan | None = None
    conversation_id: int | None = None
    #: Passages given to the model (with ``cited`` marking those the answer names);
    #: ``None`` when documents were off for this turn.
    citations: list[dict[str, Any]] | None = None
    #: Things the user should know about this turn (passages left out or shortened).
    notices: list[str] = field(default_factory=list)
    where: str = "local"  # or the cloud host, e.g. cloud:127.0.0.1:8000

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "engine": self.engine,
            "where": self.where,
            "finish_reason": self.finish_reason,
            "usage": self.usage.as_dict() if self.usage else None,
            "context": self.context.as_dict() if self.context else None,
            "conversation_id": self.conversation_id,
        }
        if self.citations is not None:
            data["citations"] = self.citations
        if self.notices:
            data["notices"] = self.notices
        if self.error:
            data["error"] = {"message": self.error.message, "hint": self.error.hint}
        return data
