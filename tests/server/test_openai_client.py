"""The real `openai` Python client against `enclave serve` on the real tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from assistant.core.settings import Settings
from assistant.engines.onnx_genai import OnnxGenaiEngine
from assistant.server.run import BackgroundServer
from tests.conftest import ROOT
from tests.server.conftest import ServerFactory, audit_entries

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]


def test_lists_the_chat_models_per_engine_and_the_embedder(
    start_server: ServerFactory, tiny_embedder_installed: Path, settings: Settings, tmp_path: Path
) -> None:
    from assistant.catalog.manifests import Catalog

    bundle = tmp_path / "tiny-gemma.litertlm"
    shutil.copy(ROOT / "tests" / "assets" / "tiny-gemma.litertlm", bundle)
    Catalog(settings).add(bundle, name="tiny")  # the same name, a second engine
    api = start_server()
    client = openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"tiny", "tiny@litert", "all-minilm-l6-v2"}
    assert models["tiny"].owned_by == "enclave"
    extra: dict[str, Any] = models["tiny"].model_extra or {}
    assert extra["enclave"]["engine"] == "onnx" and len(extra["enclave"]["sha256"]) == 64
    assert (models["tiny@litert"].model_extra or {})["enclave"]["engine"] == "litert"
    embedder = (models["all-minilm-l6-v2"].model_extra or {})["enclave"]
    assert embedder["kind"] == "embedding" and embedder["dimensions"] == 32
    assert client.models.retrieve("tiny@litert").id == "tiny@litert"

    # The LiteRT build answers too (a message-level engine), streamed.
    stream = client.chat.completions.create(model="tiny@litert", messages=HELLO, max_tokens=4, stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # It cannot continue raw text: a clear 400, not a guess.
    with pytest.raises(openai.BadRequestError, match="works on chat messages only"):
        client.completions.create(model="tiny@litert", prompt="Once upon", max_tokens=4)
    # Its template (Gemma's) has no tool-call format, and LiteRT-LM takes no tool grammar.
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError, match=r"tiny \(litert\) has no tool-call format"):
        client.chat.completions.create(model="tiny@litert", messages=HELLO, tools=tools, tool_choice="required")
    listed = {m.id: (m.model_extra or {})["enclave"] for m in client.models.list()}
    assert listed["tiny@litert"]["tool_calls"] is False


def test_streams_a_chat_with_usage_and_enclave_details(client: openai.OpenAI, api: BackgroundServer) -> None:
    stream = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["length"]
    details = (finish[0].model_extra or {})["enclave"]
    assert details["engine"] == "onnx" and details["prefilled_tokens"] > 0 and details["ttft_ms"] > 0
    # kv_cache = auto: a served conversation's slot holds its whole window (512 here), as
    # the slot budget counts it.
    assert details["cache_tokens"] == 512
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.completion_tokens == 8 and usage.prompt_tokens == details["prefilled_tokens"]
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0

    # The SSE stream itself ends with [DONE].
    raw = httpx.post(
        f"{api.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {api.token}"},
        json={"model": "tiny", "messages": HELLO, "max_tokens": 2, "stream": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_every_finish_reason_has_an_openai_word() -> None:
    from assistant.core.events import FINISH_REASONS
    from assistant.server.wire import FINISH

    assert set(FINISH) == set(FINISH_REASONS)


def test_a_client_resending_the_history_prefills_only_the_new_message(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "You are terse."}]
    prompt: list[int] = []
    held: list[int] = []  # tokens the cache holds after each turn: its prompt and its answer
    cached: list[int] = []
    for question in ("Hello!", "What should I check first?", "Could it be the bearings?", "How do I check them?"):
        messages.append({"role": "user", "content": question})
        reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6)
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        prompt.append(reply.usage.prompt_tokens)
        held.append(reply.usage.prompt_tokens + reply.usage.completion_tokens)
        cached.append(reply.usage.prompt_tokens_details.cached_tokens or 0)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
    assert cached[0] == 0
    # Every later turn reuses the whole earlier conversation, the model's own answer tokens
    # included: only the new message and the template glue are prefilled.
    assert cached[1:] == held[:-1]
    assert all(prompt[t] - cached[t] < 40 for t in range(1, 4)), (prompt, cached)


def test_sampling_fields_stop_and_completions(client: openai.OpenAI) -> None:
    # The tiny model writes bytes that mostly never form a character, so its text ends in
    # U+FFFD (flushed at the end): a stop sequence on it cuts the answer there, reason "stop".
    full = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0)
    text = full.choices[0].message.content or ""
    assert "\ufffd" in text and full.choices[0].finish_reason == "length"
    cut = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, stop=["\ufffd"])
    assert cut.choices[0].message.content == text[: text.index("\ufffd")]
    assert cut.choices[0].finish_reason == "stop"
    a, b = (
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0.9, top_p=0.9, seed=7)
        for _ in range(2)
    )
    assert a.usage is not None and b.usage is not None and a.usage.completion_tokens == 6

    completion = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5)
    assert completion.choices[0].finish_reason == "length" and completion.usage is not None
    assert completion.usage.completion_tokens == 5
    streamed = list(client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=3, stream=True))
    assert streamed[-1].choices[0].finish_reason == "length"

    with pytest.raises(openai.BadRequestError, match="`n` must be 1"):
        client.chat.completions.create(model="tiny", messages=HELLO, n=2)
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.chat.completions.create(model="tiny", messages=HELLO, presence_penalty=0.5)
    with pytest.raises(openai.NotFoundError, match="No model is called 'nosuch'") as unknown:
        client.chat.completions.create(model="nosuch", messages=HELLO)
    # What is installed apart from what Enclave could build (a tester read the recipes as served models).
    assert "Installed: tiny." in unknown.value.message and "Enclave can build" in unknown.value.message


def test_a_conversation_over_the_window_is_a_context_length_error(client: openai.OpenAI) -> None:
    long: list[ChatCompletionMessageParam] = [{"role": "user", "content": "pump maintenance log " * 400}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=long, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"
    assert "the window holds 512" in caught.value.message and "context_window setting" in caught.value.message
    assert caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as plain:  # /v1/completions has a prompt, not messages
        client.completions.create(model="tiny", prompt="pump maintenance log " * 400, max_tokens=4)
    assert plain.value.code == "context_length_exceeded" and plain.value.param == "prompt"


@pytest.mark.skipif(
    not OnnxGenaiEngine.capabilities.constrained,
    reason="onnxruntime-genai's llguidance is not wired into the engine yet (Capabilities.constrained, branch grounded)",
)
def test_json_schema_output_parses(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="tiny",
        messages=HELLO,
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert set(data) == {"city"}


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "objekt"}, "'objekt' is not valid under any of the given schemas"),
        (
            {"type": "string", "pattern": "(?=x)x+"},
            "look-around, including look-ahead and look-behind, is not supported",
        ),
    ],
    ids=["bad-type", "look-ahead"],
)
def test_a_schema_that_cannot_be_decoded_is_a_400_before_any_model_runs(
    start_server: ServerFactory, settings: Settings, tmp_path: Path, schema: dict[str, Any], problem: str
) -> None:
    from assistant.catalog.manifests import Catalog

    bundle = tmp_path / "tiny-gemma.litertlm"
    shutil.copy(ROOT / "tests" / "assets" / "tiny-gemma.litertlm", bundle)
    Catalog(settings).add(bundle, name="tiny")
    api = start_server()
    client = openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0, timeout=60)
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for model in ("tiny", "tiny@litert"):  # both engines were a 500 from their grammar compiler
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=model, messages=HELLO, max_tokens=8, response_format=response_format)
        assert caught.value.status_code == 400 and caught.value.param == "response_format"
        body: Any = caught.value.body
        assert body["type"] == "invalid_request_error"
        assert body["message"].startswith("response_format.json_schema.schema ") and problem in body["message"]
    tools: Any = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": schema}}}}
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=HELLO, tools=tools)
    tool_body: Any = caught.value.body
    assert caught.value.param == "tools" and tool_body["message"].startswith("tools[0].function.parameters ")
    assert problem in tool_body["message"]
    # Refused while the request was read: no model was loaded for them.
    assert audit_entries(settings.locations.data.parent, "model_load") == []


def test_tools_on_a_model_without_a_tool_call_format_are_refused_clearly(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=HELLO, tools=tools)
    assert caught.value.param == "tools" and "no tool-call format" in caught.value.message
    # tool_choice "none" asks for an ordinary answer: served.
    reply = client.chat.completions.create(model="tiny", messages=HELLO, tools=tools, tool_choice="none", max_tokens=2)
    assert reply.choices[0].finish_reason == "length"


def test_embeddings_through_the_app_layer(start_server: ServerFactory, tiny_embedder_installed: Path) -> None:
    api = start_server()
    client = openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0)
    # The client asks for base64 by default and decodes it; floats on request.
    result = client.embeddings.create(model="all-minilm-l6-v2", input=["reset the pump", "torque the bolts"])
    assert [len(d.embedding) for d in result.data] == [32, 32]
    assert abs(sum(x * x for x in result.data[0].embedding) - 1.0) < 1e-3  # unit length
    floats = client.embeddings.create(model="all-minilm-l6-v2", input="reset the pump", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    # Asking the embedder to chat or complete: the fix an API client can make, not a CLI flag.
    for call in (
        lambda: client.chat.completions.create(model="all-minilm-l6-v2", messages=HELLO, max_tokens=4),
        lambda: client.completions.create(model="all-minilm-l6-v2", prompt="Once upon", max_tokens=4),
    ):
        with pytest.raises(openai.NotFoundError, match="not a chat model. Send a chat model's id as `model`") as err:
            call()
        assert "--model" not in str(err.value)


def test_embeddings_without_the_embedder_name_the_build_command(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="enclave models build all-minilm-l6-v2"):
        client.embeddings.create(model="all-minilm-l6-v2", input="x")


def test_a_document_question_returns_citations(start_server: ServerFactory, settings: Settings, tmp_path: Path) -> None:
    from assistant.retrieval import open_library
    from assistant.storage.database import Store

    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "pump.md").write_text(
        "# P-200 pump\n\n## Resetting pressure\n\nHold the red RESET button for five seconds.\n"
        "The gauge returns to zero bar.\n"
    )
    store = Store.open(settings)
    open_library(settings, store).add([folder], "manuals")
    store.close()
    api = start_server(context_window=1024)
    client = openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0)
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How do I reset the pump pressure?"}]
    reply = client.chat.completions.create(
        model="tiny", messages=question, max_tokens=6, extra_body={"enclave": {"documents": ["manuals"]}}
    )
    citations = (reply.model_extra or {})["enclave"]["citations"]
    assert citations[0]["path"] == str(folder / "pump.md")
    assert (citations[0]["line_start"], citations[0]["line_end"]) == (5, 6)
    assert "RESET button" in citations[0]["text"]
    # Streamed, the citations ride on the last chunk.
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=question, max_tokens=4, stream=True, extra_body={"enclave": {"documents": "all"}}
        )
    )
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    assert (last.model_extra or {})["enclave"]["citations"][0]["path"] == str(folder / "pump.md")
    # The audit names the passages used, never the question.
    used = [e for e in audit_entries(settings.locations.data.parent, "api_request") if "documents" in e]
    assert used[0]["documents"][0]["path"] == str(folder / "pump.md")
    with pytest.raises(openai.BadRequestError, match="no document collection named 'nosuch'"):
        client.chat.completions.create(
            model="tiny", messages=question, extra_body={"enclave": {"documents": ["nosuch"]}}
        )


def test_a_base_model_continues_the_text_it_is_sent(
    start_server: ServerFactory, settings: Settings, tiny_dir: Path, tmp_path: Path
) -> None:
    """A model without a chat template is listed as base and gets neither the persona nor
    a chat frame: the tokens a chat request costs are those of its text."""
    from assistant.catalog.manifests import Catalog

    plain = tmp_path / "plain-llama"
    shutil.copytree(tiny_dir, plain)
    (plain / "chat_template.jinja").unlink()
    Catalog(settings).add(plain, name="plain")
    server = start_server()
    client = openai.OpenAI(base_url=server.base_url, api_key=server.token, max_retries=0, timeout=60)
    kinds = {m.id: m.model_extra["enclave"]["kind"] for m in client.models.list().data}  # type: ignore[index]
    assert kinds["plain"] == "base" and kinds["tiny"] == "chat"
    text = "The pump"
    chat = client.chat.completions.create(model="plain", messages=[{"role": "user", "content": text}], max_tokens=4)
    done = client.completions.create(model="plain", prompt=text, max_tokens=4)
    assert chat.usage is not None and done.usage is not None
    assert chat.usage.prompt_tokens == done.usage.prompt_tokens  # no persona, no frame around it
    framed = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}], max_tokens=4)
    assert framed.usage is not None and framed.usage.prompt_tokens > chat.usage.prompt_tokens + 10
