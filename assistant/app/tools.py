"""Tool calls: OpenAI's ``tools`` / ``tool_calls`` for models whose chat template has a
tool-call format, written once for every front end.

* **Which models.** The engine reads the model's chat template when it loads
  (:func:`assistant.engines.templates.detect_tool_format`) and records the format in
  ``info.extra["tool_format"]``: ``hermes`` (Qwen2.5, Hermes: ``<tool_call>{json}</tool_call>``),
  ``llama3_json`` (Llama 3.x: a bare ``{"name": …, "parameters": …}``), ``phi4``
  (``<|tool_call|>[…]<|/tool_call|>``) and ``mistral`` (``[TOOL_CALLS][…]``). A model
  without one is refused (:class:`~assistant.core.errors.NotSupported`).
* **The prompt** is the model's own template rendered with the tools and the history
  (``tool`` results, assistant ``tool_calls``), as transformers would render it.
* **Decoding** is constrained by an llguidance Lark grammar (:func:`tool_grammar`):
  ``auto`` is free text or calls, ``required`` one call (or several with
  ``parallel_tool_calls``), a named choice that function, ``none`` free text that does not
  open a call; each call's arguments follow the function's JSON Schema, bounded
  (:func:`~assistant.app.structured.bound_schema`) so the longest call fits ``max_tokens``.
* **The answer** is parsed as it streams (:class:`CallStream`) into text or calls, and
  every call's arguments are validated against the schema as the client sent it.

What is not done: a call after some free text (the grammar lets an answer be text *or*
calls, so a model cannot start a call half-way through a sentence), and tools together
with ``response_format``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from assistant.app.structured import LADDER, FormatError, TooLarge, bound_schema, schema_mismatch, schema_size
from assistant.core.errors import EngineError, InvalidRequest

FormatName = Literal["hermes", "llama3_json", "phi4", "mistral"]
#: Calls one answer may hold with ``parallel_tool_calls`` (each also has to fit max_tokens).
MAX_PARALLEL_CALLS = 4
#: JSON as tool-call templates print it (``tojson``: Python's default separators), so the
#: constrained arguments look like the calls the model saw in its training.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Tool:
    """A function a client offers: its name, what it does, and its parameters' JSON Schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The tool as OpenAI (and chat templates) write it."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters) if self.parameters is not None else _NO_PARAMETERS
        return {"type": "function", "function": function}

    @property
    def schema(self) -> dict[str, Any]:
        """The parameters' schema, an object with no keys when none is given."""
        if not self.parameters or (self.parameters.get("type") == "object" and not self.parameters.get("properties")):
            return dict(_NO_PARAMETERS)
        return dict(self.parameters)


_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class ToolCall:
    """A call the model made (or a client's history holds): ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


# --------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class ToolFormat:
    """How a model writes calls: ``opener`` call (``separator`` call)* ``closer``, each call
    ``{"name": "NAME", "KEY": ARGUMENTS}``."""

    name: FormatName
    opener: str
    separator: str
    closer: str
    #: The key the arguments go under.
    key: str = "arguments"
    #: The format holds more than one call.
    parallel: bool = True

    def head(self, function: str) -> str:
        return '{"name": ' + json.dumps(function, ensure_ascii=False) + ', "' + self.key + '": '


FORMATS: dict[FormatName, ToolFormat] = {
    # Qwen2.5's template: "<tool_call>\n{...}\n</tool_call>" per call, one per line.
    "hermes": ToolFormat("hermes", "<tool_call>\n", "\n</tool_call>\n<tool_call>\n", "\n</tool_call>"),
    # Llama 3.1/3.2/3.3: one JSON object, the arguments under "parameters".
    "llama3_json": ToolFormat("llama3_json", "", "", "", key="parameters", parallel=False),
    "phi4": ToolFormat("phi4", "<|tool_call|>[", ", ", "]<|/tool_call|>"),
    "mistral": ToolFormat("mistral", "[TOOL_CALLS][", ", ", "]"),
}


def tool_format(name: object) -> ToolFormat | None:
    """The format an engine recorded (``info.extra["tool_format"]``), if Enclave knows it."""
    return FORMATS.get(name) if isinstance(name, str) else None  # type: ignore[call-overload]


# --------------------------------------------------------------------------- the grammar
Choice = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ToolGrammar:
    """What decoding is constrained with, and what the calls were bounded to."""

    lark: str
    #: Calls the answer may hold at most (0: text only).
    max_calls: int
    notices: tuple[str, ...] = ()


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def tool_grammar(
    fmt: ToolFormat,
    tools: Sequence[Tool],
    choice: Choice,
    *,
    named: str | None = None,
    parallel: bool = True,
    max_tokens: int,
) -> ToolGrammar:
    """The Lark grammar for an answer under ``choice``, every call fitting ``max_tokens``.

    Raises :class:`~assistant.core.errors.InvalidRequest` (param ``tools``) when a function's
    schema cannot be bounded or its smallest call does not fit."""
    text = "TEXT: /(?s:.+)/ & ~/(?s:\\s*" + _escape_regex(fmt.opener or "{") + ".*)/"
    offered = [t for t in tools if choice != "named" or t.name == named]
    if choice == "none" or not offered:  # no tools now (tool turns in the history only): text
        return ToolGrammar(f"start: TEXT\n{text}\n", 0)
    rules: list[str] = []
    notices: list[str] = []
    worst = 0
    frame = len(fmt.opener) + len(fmt.closer)
    for i, tool in enumerate(offered):
        head = fmt.head(tool.name)
        budget = max_tokens - frame - len(head) - 1
        where = f"tools[{i}] ({tool.name}) parameters"
        try:
            bounded, said = bound_schema(tool.schema, budget, where, gap=1)
        except TooLarge as exc:
            needed = max_tokens - budget + exc.needed
            fix = exc.fix.replace("the schema's", "the parameters'").replace("the schema", "the parameters")
            raise InvalidRequest(
                f"A call of {tool.name} takes up to {needed} tokens with the smallest bounds on its parameters "
                f"(strings of {LADDER[-1][0]} characters, arrays of {LADDER[-1][1]}), more than max_tokens "
                f"({max_tokens}).",
                f"Raise max_tokens to at least {needed}, or {fix}.",
                param="max_tokens",
            ) from None
        except FormatError as exc:
            raise InvalidRequest(exc.message, exc.hint.replace("--max-tokens", "max_tokens"), param="tools") from None
        notices.extend(n.replace("--max-tokens", "max_tokens") for n in said)
        bounded["x-guidance"] = JSON_LAYOUT
        worst = max(worst, len(head) + schema_size(bounded, gap=1) + 1)
        rules.append(f'call_{i}: {_lit(head)} %json{json.dumps(bounded, ensure_ascii=False)} "}}"')
    calls = 1
    if parallel and fmt.parallel:
        room = max_tokens - frame + len(fmt.separator)
        calls = max(1, min(MAX_PARALLEL_CALLS, room // (worst + len(fmt.separator))))
    call = "call: " + " | ".join(f"call_{i}" for i in range(len(offered)))
    more = f" ({_lit(fmt.separator)} call){{0,{calls - 1}}}" if calls > 1 else ""
    calls_rule = f"calls: {_lit(fmt.opener)} call{more} {_lit(fmt.closer)}".replace(' ""', "")
    start = "start: TEXT | calls" if choice == "auto" else "start: calls"
    lines = [start, calls_rule, call, *rules]
    if choice == "auto":
        lines.append(text)
    return ToolGrammar("\n".join(lines) + "\n", calls, tuple(notices))


def _escape_regex(text: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\/" else c for c in text).replace("\n", "\\n")


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class CallStarted:
    """A call began: its index in the answer, id and function name."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    """More of call ``index``'s arguments (JSON text)."""

    index: int
    text: str


@dataclass(frozen=True)
class ContentDelta:
    text: str


StreamItem = CallStarted | ArgumentsDelta | ContentDelta


class CallStream:
    """Turns an answer written under :func:`tool_grammar` into text or calls as it streams.

    The grammar fixes the shape, so the parser only has to follow it: until the answer
    can no longer be the opener of a call it holds the text back; then it is either
    content (passed on) or calls, whose arguments are passed on as they come, their end
    found by counting braces outside JSON strings."""

    def __init__(self, fmt: ToolFormat, names: Sequence[str]) -> None:
        self.fmt = fmt
        self.names = tuple(names)
        self.mode: Literal["undecided", "text", "calls"] = "undecided"
        self.calls: list[ToolCall] = []
        self.content = ""
        self._buffer = ""
        self._args: list[str] = []
        self._state: Literal["between", "arguments"] = "between"
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def push(self, text: str) -> Iterator[StreamItem]:
        if self.mode == "text":
            self.content += text
            yield ContentDelta(text)
            return
        self._buffer += text
        if self.mode == "undecided":
            opener = self.fmt.opener or "{"
            stripped = self._buffer.lstrip()
            if stripped.startswith(opener) or (stripped and opener.startswith(stripped)) or not stripped:
                if not stripped.startswith(opener):
                    return  # could still become a call
                self.mode = "calls"
                self._buffer = stripped[len(self.fmt.opener) :]
            else:
                self.mode = "text"
                pending, self._buffer = self._buffer, ""
                self.content += pending
                yield ContentDelta(pending)
                return
        yield from self._calls()

    def finish(self) -> Iterator[StreamItem]:
        """The end of the answer: held-back text is content after all."""
        if self.mode == "undecided" and self._buffer:
            self.mode = "text"
            pending, self._buffer = self._buffer, ""
            self.content += pending
            yield ContentDelta(pending)

    def _calls(self) -> Iterator[StreamItem]:
        while self._buffer:
            if self._state == "between":
                found = self._head()
                if found is None:
                    return
                name, used = found
                self._buffer = self._buffer[used:]
                self.calls.append(ToolCall(new_call_id(), name, ""))
                self._args.append("")
                self._state = "arguments"
                self._depth, self._in_string, self._escaped = 0, False, False
                yield CallStarted(len(self.calls) - 1, self.calls[-1].id, name)
                continue
            end = self._scan()
            piece, self._buffer = self._buffer[:end], self._buffer[end:]
            if piece:
                self._args[-1] += piece
                yield ArgumentsDelta(len(self.calls) - 1, piece)
            if self._depth == 0 and self._args[-1]:
                call = self.calls[-1]
                self.calls[-1] = ToolCall(call.id, call.name, self._args[-1])
                self._state = "between"

    def _head(self) -> tuple[str, int] | None:
        """The next call's function name and where its arguments start, once all of it is in."""
        for name in self.names:
            head = self.fmt.head(name)
            at = self._buffer.find(head)
            if at >= 0:
                return name, at + len(head)
        return None

    def _scan(self) -> int:
        """Characters of the buffer that belong to the current arguments."""
        for i, c in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == "\\":
                    self._escaped = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return len(self._buffer)


def check_calls(calls: Sequence[ToolCall], tools: Sequence[Tool], model: str) -> None:
    """Every call names an offered function and its arguments parse and match its schema
    as the client sent it (the grammar bounds sizes the client left open; this checks the
    client's own)."""
    by_name = {t.name: t for t in tools}
    for call in calls:
        tool = by_name.get(call.name)
        if tool is None:
            raise EngineError(f"{model} called {call.name!r}, which was not offered.", "Retry.")
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError as exc:
            raise EngineError(
                f"{model}'s call of {call.name} has arguments that are not JSON ({exc.msg} at character {exc.pos}).",
                "Retry; report it if it happens again.",
            ) from exc
        mismatch = schema_mismatch(tool.schema, arguments)
        if mismatch is not None:
            raise EngineError(
                f"{model}'s call of {call.name} does not match the function's parameters {mismatch}.",
                "Retry; report it if it happens again.",
            )


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as chat templates take them: an assistant's ``tool_calls`` with their
    arguments parsed into objects (transformers' convention, which templates' ``tojson``
    relies on), a ``tool`` message with the name of the function it answers."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        entry = dict(message)
        calls = entry.get("tool_calls")
        if calls:
            converted = []
            for call in calls:
                function = call["function"]
                try:
                    arguments = json.loads(function["arguments"]) if function["arguments"] else {}
                except json.JSONDecodeError:
                    arguments = function["arguments"]
                names[call["id"]] = function["name"]
                converted.append(
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": function["name"], "arguments": arguments},
                    }
                )
            entry["tool_calls"] = converted
        if entry.get("role") == "tool" and "name" not in entry and entry.get("tool_call_id") in names:
            entry["name"] = names[entry["tool_call_id"]]
        out.append(entry)
    return out
