"""Tool calls through `enclave serve`: the real `openai` client, the real tiny model given a
Qwen2.5-style tool template, llguidance grammars in onnxruntime-genai.

The tiny model writes noise, so these tests check what the grammar guarantees, never what
a good model would choose: a call of an offered function whose arguments parse and match
its schema, the function a named choice names, text where no call may be made."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolMessageParam,
    ChatCompletionToolParam,
)

from assistant.catalog.manifests import InstalledModel
from assistant.core.settings import Settings
from assistant.server.run import BackgroundServer
from tests.server.conftest import ServerFactory, audit_entries

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 8}},
    "required": ["zone"],
    "additionalProperties": False,
}
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city.", "parameters": WEATHER_SCHEMA},
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "description": "Time in a zone.", "parameters": TIME_SCHEMA},
}
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "Weather in Paris?"},
]


@pytest.fixture
def tools_api(start_server: ServerFactory, tools_installed: InstalledModel) -> BackgroundServer:
    # The tool prompt (system, tool list, question) takes ~600 tokens of the tiny vocabulary.
    return start_server(context_window=1024)


@pytest.fixture
def tools_client(tools_api: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=tools_api.base_url, api_key=tools_api.token, max_retries=0, timeout=120)


def _calls(message: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    calls = message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]


def _valid(name: str, arguments: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return parsed


def test_a_required_call_parses_and_matches_the_schema(
    tools_client: openai.OpenAI, tools_api: BackgroundServer, settings: Settings
) -> None:
    reply = tools_client.chat.completions.create(
        model="tiny-tools",
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = _calls(choice.message)
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    _valid("get_weather", call.function.arguments)

    # The model's tool-call format is shown once it is loaded; a model without one says false.
    listed = {m.id: (m.model_extra or {})["enclave"] for m in tools_client.models.list()}
    assert listed["tiny-tools"]["tool_calls"] == "hermes"

    # Audited as every request: counts and outcome, never the question or the arguments.
    entries = [e for e in audit_entries(settings.locations.data.parent, "api_request") if e.get("tools")]
    assert entries[-1]["tool_calls"] == 1 and entries[-1]["tool_choice"] == "required"
    assert entries[-1]["outcome"] == "stop" and entries[-1]["model"] == "tiny-tools"
    written = json.dumps(entries)
    assert "Paris" not in written and "get_weather" not in written and call.function.arguments not in written


def test_parallel_calls_are_each_valid(tools_client: openai.OpenAI) -> None:
    reply = tools_client.chat.completions.create(
        model="tiny-tools", messages=QUESTION, tools=[WEATHER, TIME], tool_choice="required", max_tokens=200
    )
    calls = _calls(reply.choices[0].message)
    assert 1 <= len(calls) <= 4
    assert len({c.id for c in calls}) == len(calls)
    for call in calls:
        _valid(call.function.name, call.function.arguments)


def test_a_named_tool_choice_calls_that_function(tools_client: openai.OpenAI) -> None:
    reply = tools_client.chat.completions.create(
        model="tiny-tools",
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=120,
    )
    calls = _calls(reply.choices[0].message)
    assert calls and {c.function.name for c in calls} == {"get_time"}
    for call in calls:
        _valid("get_time", call.function.arguments)
    with pytest.raises(openai.BadRequestError) as caught:
        tools_client.chat.completions.create(
            model="tiny-tools",
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    assert caught.value.param == "tool_choice"


def test_a_tool_result_is_answered_as_text(tools_client: openai.OpenAI) -> None:
    first = tools_client.chat.completions.create(
        model="tiny-tools", messages=QUESTION, tools=[WEATHER], tool_choice="required", max_tokens=120
    )
    message = first.choices[0].message
    calls = _calls(message)
    results: list[ChatCompletionToolMessageParam] = [
        {"role": "tool", "tool_call_id": c.id, "content": '{"temp": 21}'} for c in calls
    ]
    follow_up: list[ChatCompletionMessageParam] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in calls
            ],
        },
        *results,
    ]
    reply = tools_client.chat.completions.create(
        model="tiny-tools", messages=follow_up, tools=[WEATHER], tool_choice="none", max_tokens=6
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and not choice.message.tool_calls
    assert choice.message.content
    # The result was in the prompt: it is longer than the question's by the call and the result.
    assert reply.usage is not None and first.usage is not None
    assert reply.usage.prompt_tokens > first.usage.prompt_tokens + 10

    # The history alone (no tools offered now) is rendered too; the answer is text.
    plain = tools_client.chat.completions.create(model="tiny-tools", messages=follow_up, max_tokens=4)
    assert plain.choices[0].message.content and not plain.choices[0].message.tool_calls

    # Under "auto" the answer is text or calls, never a broken call.
    auto = tools_client.chat.completions.create(model="tiny-tools", messages=follow_up, tools=[WEATHER], max_tokens=120)
    choice = auto.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in _calls(choice.message):
            _valid(call.function.name, call.function.arguments)
    else:
        assert choice.message.content and not choice.message.content.lstrip().startswith("<tool_call>")


def test_streamed_tool_calls_are_reassembled_by_the_client(tools_client: openai.OpenAI) -> None:
    chunks = list(
        tools_client.chat.completions.create(
            model="tiny-tools",
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=120,
            stream=True,
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    # The first piece names the call; the others (as many as the decoder ran ahead of the
    # event loop: pieces waiting are sent as one) carry only more arguments.
    first = deltas[0]
    assert first.index == 0 and first.id and first.function is not None and first.function.name == "get_weather"
    assert all(d.index == 0 and d.id is None and d.function is not None for d in deltas[1:])
    _valid("get_weather", "".join((d.function.arguments or "") if d.function else "" for d in deltas))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]

    # The client's own stream helper puts the pieces back together.
    with tools_client.chat.completions.stream(
        model="tiny-tools",
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
    ) as stream:
        final = stream.get_final_completion()
    calls = _calls(final.choices[0].message)
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    _valid("get_weather", calls[0].function.arguments)


def test_a_model_without_a_tool_format_is_refused_naming_it(tools_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        tools_client.chat.completions.create(model="tiny", messages=QUESTION, tools=[WEATHER], tool_choice="required")
    assert caught.value.param == "tools"
    assert "tiny (onnx) has no tool-call format" in caught.value.message
    assert "without `tools`" in caught.value.message
    # A history with tool turns needs the format too.
    history: list[ChatCompletionMessageParam] = [
        *QUESTION,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21"},
    ]
    with pytest.raises(openai.BadRequestError, match="no tool-call format"):
        tools_client.chat.completions.create(model="tiny", messages=history)
    listed = {m.id: (m.model_extra or {})["enclave"] for m in tools_client.models.list()}
    assert listed["tiny"]["tool_calls"] is False


def test_tools_with_a_response_format_or_a_bad_schema_are_refused(tools_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="cannot be combined"):
        tools_client.chat.completions.create(
            model="tiny-tools", messages=QUESTION, tools=[WEATHER], response_format={"type": "json_object"}
        )
    unbounded: Any = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {}}}}}
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        tools_client.chat.completions.create(
            model="tiny-tools", messages=QUESTION, tools=unbounded, tool_choice="required", max_tokens=60
        )
    assert caught.value.param == "tools" and "any JSON value is allowed" in caught.value.message
