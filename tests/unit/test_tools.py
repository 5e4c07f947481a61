"""Tool-call formats: detection from chat templates, the grammars (replayed by llguidance),
the streaming parser, and the tiny ONNX model rendering a tool conversation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistant.app.structured import OutputFormat
from assistant.app.tools import (
    FORMATS,
    ArgumentsDelta,
    CallStarted,
    CallStream,
    ContentDelta,
    Tool,
    ToolCall,
    ToolFormat,
    check_calls,
    template_messages,
    tool_grammar,
)
from assistant.core.errors import EngineError, InvalidRequest
from assistant.engines.templates import detect_tool_format
from tests.conftest import ROOT, TINY_MODEL

TEMPLATES = ROOT / "tests" / "assets" / "tool-templates"
WEATHER = Tool(
    "get_weather",
    "Weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city"],
    },
)
NOW = Tool("now")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("qwen2.5.jinja", "hermes"),
        ("llama3.1.jinja", "llama3_json"),
        ("phi4-mini.jinja", "phi4"),
        ("mistral.jinja", "mistral"),
    ],
)
def test_a_template_with_tools_names_its_format(template: str, expected: str) -> None:
    assert detect_tool_format((TEMPLATES / template).read_text(encoding="utf-8")) == expected


def test_templates_without_a_tool_format_have_none() -> None:
    # The tiny model's ChatML, like SmolLM2's, never renders `tools`.
    assert detect_tool_format((TINY_MODEL / "chat_template.jinja").read_text(encoding="utf-8")) is None
    assert detect_tool_format(None) is None
    # It lists the tools, but shows no way to call them.
    lists_only = (
        "{% for t in tools %}{{ t.function.name }}{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    assert detect_tool_format(lists_only) is None
    # It names a syntax but never shows the tools to the model.
    assert detect_tool_format("{% for m in messages %}<tool_call>{{ m.content }}{% endfor %}") is None
    # A template that refuses tools, and one that does not compile.
    assert detect_tool_format("{% if tools %}{{ raise_exception('no tools') }}{% endif %}<tool_call>") is None
    assert detect_tool_format("{% for %}") is None


def _answer(fmt: ToolFormat, calls: list[tuple[str, str]]) -> str:
    body = fmt.separator.join(fmt.head(name) + arguments + "}" for name, arguments in calls)
    return fmt.opener + body + fmt.closer


def _check(grammar: str, text: str) -> bool:
    return OutputFormat("lark", "tools", grammar).check(text, "stop").valid


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_grammar_takes_calls_and_text_by_the_choice(name: str) -> None:
    fmt = FORMATS[name]  # type: ignore[index]
    one = _answer(fmt, [("get_weather", '{"city": "Oslo", "days": 3}')])
    other = _answer(fmt, [("now", "{}")])
    broken = _answer(fmt, [("get_weather", '{"town": "Oslo"}')])
    text = "It is sunny."
    auto = tool_grammar(fmt, [WEATHER, NOW], "auto", max_tokens=200).lark
    assert _check(auto, one) and _check(auto, other) and _check(auto, text)
    assert not _check(auto, broken)
    # A call cannot hide in text: an answer that opens a call is a call.
    assert not _check(auto, (fmt.opener or "{") + "nonsense")
    required = tool_grammar(fmt, [WEATHER, NOW], "required", max_tokens=200).lark
    assert _check(required, one) and not _check(required, text)
    named = tool_grammar(fmt, [WEATHER, NOW], "named", named="now", max_tokens=200).lark
    assert _check(named, other) and not _check(named, one)
    none = tool_grammar(fmt, [WEATHER, NOW], "none", max_tokens=200).lark
    assert _check(none, text) and not _check(none, one)
    # No tools offered (a history with tool turns, answered now): text, as under "none".
    bare = tool_grammar(fmt, [], "auto", max_tokens=200)
    assert bare.max_calls == 0 and _check(bare.lark, text) and not _check(bare.lark, other)


def test_parallel_calls_are_bounded_by_the_token_limit() -> None:
    fmt = FORMATS["hermes"]
    two = _answer(fmt, [("now", "{}"), ("now", "{}")])
    assert tool_grammar(fmt, [NOW], "required", max_tokens=400).max_calls == 4
    assert _check(tool_grammar(fmt, [NOW], "required", max_tokens=400).lark, two)
    single = tool_grammar(fmt, [NOW], "required", parallel=False, max_tokens=400)
    assert single.max_calls == 1 and not _check(single.lark, two)
    # Llama 3's format holds one call.
    assert tool_grammar(FORMATS["llama3_json"], [NOW], "required", max_tokens=400).max_calls == 1
    # The open string is bounded so that a call fits; the worst call is within the limit.
    bounded = tool_grammar(fmt, [WEATHER], "required", max_tokens=100)
    assert bounded.max_calls == 1 and '"maxLength": 8' in bounded.lark and bounded.notices
    longest = _answer(fmt, [("get_weather", '{"city": "' + "x" * 8 + '", "days": 7}')])
    assert len(longest) <= 100 and _check(bounded.lark, longest)
    assert not _check(bounded.lark, _answer(fmt, [("get_weather", '{"city": "' + "x" * 9 + '"}')]))
    with pytest.raises(InvalidRequest, match=r"Raise max_tokens to at least 94\b"):
        tool_grammar(fmt, [WEATHER], "required", max_tokens=60)
    # A lower bound forces its size whatever the bounds: the fix names it.
    many = Tool("tag", "", {"type": "object", "properties": {"tags": {"type": "array", "minItems": 50,
                                                                       "items": {"type": "boolean"}}}})  # fmt: skip
    with pytest.raises(InvalidRequest, match=r"or lower the parameters' minItems at /properties/tags\.$"):
        tool_grammar(fmt, [many], "required", max_tokens=60)
    # ... and 94 is just enough: the longest call at the smallest bounds is 94 characters.
    smallest = tool_grammar(fmt, [WEATHER], "required", max_tokens=94)
    longest = _answer(fmt, [("get_weather", '{"city": "' + "x" * 8 + '", "days": 7}')])
    assert len(longest) == 94
    assert _check(smallest.lark, longest)
    with pytest.raises(InvalidRequest):
        tool_grammar(fmt, [WEATHER], "required", max_tokens=93)
    anything = Tool("f", "", {"type": "object", "properties": {"x": {}}})
    with pytest.raises(InvalidRequest, match="any JSON value is allowed"):
        tool_grammar(fmt, [anything], "required", max_tokens=200)


def _stream(fmt: ToolFormat, text: str) -> tuple[CallStream, list[Any]]:
    parser = CallStream(fmt, ["get_weather", "now"])
    items: list[Any] = []
    for char in text:  # one character a token: the hardest split
        items.extend(parser.push(char))
    items.extend(parser.finish())
    return parser, items


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_stream_parser_finds_the_calls_and_their_arguments(name: str) -> None:
    fmt = FORMATS[name]  # type: ignore[index]
    tricky = '{"city": "a}\\"]{b", "days": 2}'  # braces and an escaped quote inside a string
    text = _answer(fmt, [("get_weather", tricky), ("now", "{}")] if fmt.parallel else [("get_weather", tricky)])
    parser, items = _stream(fmt, text)
    assert parser.mode == "calls" and parser.content == ""
    assert [c.name for c in parser.calls] == (["get_weather", "now"] if fmt.parallel else ["get_weather"])
    assert parser.calls[0].arguments == tricky
    starts = [i for i in items if isinstance(i, CallStarted)]
    assert [s.id for s in starts] == [c.id for c in parser.calls]
    pieces = "".join(i.text for i in items if isinstance(i, ArgumentsDelta) and i.index == 0)
    assert pieces == tricky
    assert not any(isinstance(i, ContentDelta) for i in items)
    # Text comes through as content, whole.
    parser, items = _stream(fmt, "  Sunny, 21 degrees.")
    assert parser.mode == "text" and parser.content == "  Sunny, 21 degrees." and not parser.calls
    assert "".join(i.text for i in items if isinstance(i, ContentDelta)) == "  Sunny, 21 degrees."


def test_calls_are_checked_against_the_clients_schema() -> None:
    check_calls([ToolCall("call_1", "get_weather", '{"city": "Oslo"}')], [WEATHER], "m")
    with pytest.raises(EngineError, match="does not match"):
        check_calls([ToolCall("call_1", "get_weather", '{"days": 3}')], [WEATHER], "m")
    with pytest.raises(EngineError, match="not JSON"):
        check_calls([ToolCall("call_1", "get_weather", '{"city": ')], [WEATHER], "m")
    with pytest.raises(EngineError, match="not offered"):
        check_calls([ToolCall("call_1", "delete_all", "{}")], [WEATHER], "m")


CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_7", "content": '{"temp": 21}'},
]


def test_history_is_given_to_templates_as_transformers_does() -> None:
    converted = template_messages(CONVERSATION)
    assert converted[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert converted[3]["name"] == "get_weather"
    assert CONVERSATION[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'  # not changed


@pytest.fixture
def qwen_tiny(tmp_path: Path) -> Iterator[Any]:
    """The tiny ONNX model with the Qwen2.5-style template, in this process."""
    from assistant.engines.onnx_genai import OnnxGenaiEngine

    folder = tmp_path / "tiny-tools"
    shutil.copytree(TINY_MODEL, folder)
    shutil.copy(TEMPLATES / "qwen2.5.jinja", folder / "chat_template.jinja")
    engine = OnnxGenaiEngine(folder, "tiny-tools")
    yield engine
    engine.close()


def test_the_model_renders_tools_and_tool_turns_with_its_own_template(qwen_tiny: Any, tiny_engine: Any) -> None:
    assert qwen_tiny.info.extra["tool_format"] == "hermes"
    prompt = qwen_tiny.tokenizer.render_tools(template_messages(CONVERSATION), [WEATHER.as_json()])
    assert json.dumps(WEATHER.as_json()) in prompt  # the tool list, as the template prints it
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"temp": 21}\n</tool_response>' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tiny_engine.info.extra["tool_format"] is None
    with pytest.raises(EngineError, match="no tool-call format"):
        tiny_engine.tokenizer.render_tools(CONVERSATION, [WEATHER.as_json()])
