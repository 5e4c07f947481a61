"""Records that cross layers: a turn's context plan and its result. Pure values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from assistant.core.errors import EnclaveError
from assistant.core.events import ConstraintKind, FinishReason, Usage

#: The file inside an installed model's folder (a chat model's or the embedder's) that
#: records its hashes, engine and template: the one spelling of its name.
MANIFEST_NAME = "enclave-manifest.json"

#: The template of a base model that ships none: the model simply continues a transcript.
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}Question: {{ message['content'] }}\n"
    "{% else %}Answer: {{ message['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Answer:{% endif %}"
)

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


#: How an answer from documents is made (issue 13): ``extract`` shows the source
#: sentences that answer the question, chosen by Enclave, without asking the model;
#: ``quote`` lets the model choose them, decoding constrained to verbatim quotes;
#: ``free`` shows the extracted sentences, then a short answer the model writes,
#: every sentence of which is checked against the sources.
AnswerMode = Literal["extract", "quote", "free"]
ANSWER_MODES: tuple[AnswerMode, ...] = get_args(AnswerMode)
#: The setting: a mode, or ``auto`` (the mode recorded for the model, else extract).
AnswerModeSetting = Literal["auto", "extract", "quote", "free"]
ANSWER_MODE_SETTINGS: tuple[AnswerModeSetting, ...] = get_args(AnswerModeSetting)


@dataclass(frozen=True)
class AnswerSentence:
    """One sentence of an answer from documents and what backs it.

    ``kind`` is ``quote`` (verbatim from passage ``source``) or ``model`` (written by
    the model; ``source`` is the passage one sentence of which states it, None when
    no source sentence does: "not found in the sources"). ``location`` is that
    source sentence's exact place; ``evidence`` its text.
    """

    text: str
    kind: Literal["quote", "model"]
    source: int | None
    location: str | None = None
    evidence: str | None = None
    line_start: int | None = None
    line_end: int | None = None
    page: int | None = None
    page_label: str | None = None

    @property
    def label(self) -> str:
        """What the sentence is, in the user's words."""
        if self.kind == "quote":
            return f"quoted from [{self.source}]"
        return f"supported by [{self.source}]" if self.source is not None else "not found in the sources"

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "kind": self.kind,
            "source": self.source,
            "label": self.label,
            "location": self.location,
            "evidence": self.evidence,
            "page": self.page,
            "page_label": self.page_label,
            "line_start": self.line_start,
            "line_end": self.line_end,
        }


@dataclass(frozen=True)
class OutputCheck:
    """A structured answer checked again after it was generated (``ask --schema``,
    ``--regex``, ``--grammar``): whether it matches, why not, and the parsed JSON."""

    kind: ConstraintKind
    valid: bool
    #: Why it does not match (None when it does), e.g. "it stopped at the token limit".
    reason: str | None = None
    #: The answer as parsed JSON (schema answers that match; None otherwise).
    parsed: Any = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": self.kind, "valid": self.valid}
        if self.reason is not None:
            data["invalid_reason"] = self.reason
        if self.valid and self.kind == "json_schema":
            data["parsed"] = self.parsed
        return data


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
    #: How the answer from documents was made (None when documents were off).
    mode: AnswerMode | None = None
    #: The answer's sentences with what backs each (answers from documents).
    answer_sentences: list[AnswerSentence] = field(default_factory=list)
    #: Milliseconds from the question to: the passages found, the first text shown,
    #: the end of the turn (answers from documents).
    timings: dict[str, float] = field(default_factory=dict)
    #: The structured-output check (None when the answer was free text).
    output: OutputCheck | None = None

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
            data["mode"] = self.mode
            data["answer_sentences"] = [s.as_dict() for s in self.answer_sentences]
        if self.timings:
            data["timings"] = {k: round(v, 1) for k, v in self.timings.items()}
        if self.output is not None:
            data.update(self.output.as_dict())
        if self.notices:
            data["notices"] = self.notices
        if self.error:
            data["error"] = {"message": self.error.message, "hint": self.error.hint}
        return data
