"""`enclave serve` on the real SmolLM2-135M-Instruct and the real all-MiniLM-L6-v2, through the
real `openai` client and the real `llm` CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from assistant.core.settings import Settings
from assistant.engines.onnx_genai import OnnxGenaiEngine
from assistant.server.run import BackgroundServer
from tests.server.test_llm_cli import llm, write_llm_config

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"
FRANCE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def settings_real(tmp_path: Path, smollm2_home: Path, embedder_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh Enclave home whose models are the built real ones (linked, not copied)."""
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "models").symlink_to(smollm2_home / "data" / "models")
    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    return Settings.load(model=MODEL, max_tokens=48)


@pytest.fixture
def api(settings_real: Settings) -> Iterator[BackgroundServer]:
    with BackgroundServer(settings_real) as server:
        yield server


@pytest.fixture
def client(api: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0, timeout=300)


def test_streams_an_answer_and_reuses_the_kv_cache_across_requests(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {MODEL, "all-minilm-l6-v2"} <= ids
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=FRANCE, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    cut = client.chat.completions.create(model=MODEL, messages=FRANCE, stop=["Paris"])
    assert "Paris" not in (cut.choices[0].message.content or "") and cut.choices[0].finish_reason == "stop"

    messages: list[ChatCompletionMessageParam] = []
    held: list[int] = []
    cached: list[int] = []
    for question in ("Hello! I service pumps.", "What should I check first?", "Could it be the bearings?"):
        messages.append({"role": "user", "content": question})
        reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=32)
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        cached.append(reply.usage.prompt_tokens_details.cached_tokens or 0)
        # The end-of-turn token is counted as generated but not kept in the cache.
        eos = 1 if reply.choices[0].finish_reason == "stop" else 0
        held.append(reply.usage.prompt_tokens + reply.usage.completion_tokens - eos)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
    # The cache holds exactly each turn's prompt and answer; the next request prefills
    # only the new message and the template glue.
    assert cached[1:] == held[:-1]


def test_llm_cli_answers_through_the_server(api: BackgroundServer, tmp_path: Path) -> None:
    home = tmp_path / "llm-user"
    write_llm_config(home, api.base_url, MODEL)
    llm(home, "keys", "set", "enclave", "--value", api.token)
    out = llm(home, "-m", "enclave", "What is the capital of France?", timeout=300)
    assert "Paris" in out.stdout


def test_embeddings_have_384_dimensions(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="all-minilm-l6-v2", input=["How do I reset the pump?", "Paris"])
    assert [len(d.embedding) for d in result.data] == [384, 384]


def test_a_document_question_returns_citations(settings_real: Settings, tmp_path: Path) -> None:
    from assistant.retrieval import open_library
    from assistant.retrieval.embed import load_embedder
    from assistant.storage.database import Store

    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "pump.md").write_text(
        "# P-200 pump\n\n## Resetting pressure\n\nHold the red RESET button for five seconds.\n"
        "The gauge returns to zero bar.\n\n## Fault codes\n\nFault E14 means the impeller is blocked.\n"
    )
    store = Store.open(settings_real)
    open_library(settings_real, store, load_embedder(settings_real)).add([folder], "manuals")
    store.close()
    with BackgroundServer(settings_real) as api:
        client = openai.OpenAI(base_url=api.base_url, api_key=api.token, max_retries=0, timeout=300)
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What does fault E14 mean?"}],
            extra_body={"enclave": {"documents": ["manuals"]}},
        )
    details = (reply.model_extra or {})["enclave"]
    # The same grounded answer as the CLI: the passages given, where they are, and what the
    # answer did with them (a 135M model often answers without citing: checked, not trusted).
    first = details["citations"][0]
    assert first["path"] == str(folder / "pump.md") and first["text"] in (folder / "pump.md").read_text()
    assert {"cited", "supports", "line_start", "line_end", "collection"} <= set(first)
    assert reply.choices[0].message.content


@pytest.mark.skipif(
    not OnnxGenaiEngine.capabilities.constrained,
    reason="onnxruntime-genai's llguidance is not wired into the engine yet (Capabilities.constrained, branch grounded)",
)
def test_json_schema_output_parses(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=FRANCE,
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert "Paris" in json.loads(reply.choices[0].message.content or "")["city"]


def test_an_answer_the_loop_guard_stops_ends_as_stop_streamed_or_not(client: openai.OpenAI) -> None:
    """SmolLM2's pump guide repeats itself and the loop guard stops it; the server used to
    close the stream there (it had no OpenAI word for "repetition")."""
    guide: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "[1]"},
        {"role": "user", "content": "Write a detailed maintenance guide for a centrifugal water pump, step by step."},
    ]
    stream = client.chat.completions.create(model=MODEL, messages=guide, max_tokens=400, stream=True, temperature=0)
    finish = [c for c in stream if c.choices and c.choices[0].finish_reason]
    enclave_reason = (finish[0].model_extra or {})["enclave"]["finish_reason"]
    # Greedy SmolLM2 loops on this prompt here ("repetition"); whatever it does on another
    # CPU, the stream must end cleanly with the OpenAI word for it.
    assert enclave_reason in ("repetition", "stop", "length")
    assert finish[0].choices[0].finish_reason == ("length" if enclave_reason == "length" else "stop")
    whole = client.chat.completions.create(model=MODEL, messages=guide, max_tokens=400, temperature=0)
    assert whole.choices[0].finish_reason == finish[0].choices[0].finish_reason
