"""Cloud fallback in the core: consent, redaction, records, and the way back to local.

Real parts: the tiny ONNX model, a real SQLite database, a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.app.turns import Assistant, Conversation, collect
from assistant.cloud.client import CloudError
from assistant.cloud.policy import CloudNotConfigured, api_key
from assistant.core.errors import EnclaveError
from assistant.core.records import TurnResult
from assistant.core.settings import Settings
from assistant.privacy.guard import GUARD
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store
from tests.fake_openai import FakeOpenAI


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as s:
        yield s


@pytest.fixture
def conv(settings: Settings, tiny_installed: object, server: FakeOpenAI) -> Iterator[Conversation]:
    cloud = replace(settings, cloud_base_url=server.base_url, cloud_model="big-model", cloud_retries=0)
    assistant = Assistant(cloud)
    c = assistant.conversation("tiny")
    yield c
    c.close()
    assistant.close()


def _cloud_turn(conv: Conversation, text: str, redact: bool | None = None) -> TurnResult:
    request = conv.cloud_request(text, redact=redact)
    result = collect(conv, conv.stream_cloud(request, text, consent="test"))
    conv.save_turn(result, text)
    return result


def _store(conv: Conversation) -> Store:
    assert conv.store is not None
    return conv.store


def test_settings_read_cloud_options_from_toml_and_the_environment(
    enclave_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = enclave_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'cloud_base_url = "http://127.0.0.1:9/v1"\ncloud_timeout = 5\ncloud_redact = false\n'
        "cloud_redact_patterns = ['ACME-\\d+', 'secret, with comma']\n"
    )
    s = Settings.load()
    assert (s.cloud_base_url, s.cloud_timeout, s.cloud_redact) == ("http://127.0.0.1:9/v1", 5.0, False)
    assert s.cloud_redact_patterns == (r"ACME-\d+", "secret, with comma")
    monkeypatch.setenv("ENCLAVE_CLOUD_REDACT_PATTERNS", "first\nsecond, too")
    assert Settings.load().cloud_redact_patterns == ("first", "second, too")
    monkeypatch.setenv("ENCLAVE_CLOUD_REDACT_PATTERNS", '["a", "b"]')
    assert Settings.load().cloud_redact_patterns == ("a", "b")
    monkeypatch.setenv("ENCLAVE_CLOUD_REDACT_PATTERNS", "[1, 2]")
    with pytest.raises(EnclaveError, match="cloud_redact_patterns"):
        Settings.load()


def test_off_by_default_and_a_clear_error_when_not_configured(settings: Settings, tiny_installed: object) -> None:
    assistant = Assistant(settings)
    conv = assistant.conversation("tiny")
    assert not conv.cloud_configured and not conv.cloud_enabled
    with pytest.raises(CloudNotConfigured, match="not configured"):
        conv.cloud.enable("test")
    assistant.close()


def test_a_cloud_turn_sends_the_history_and_records_where_it_ran(conv: Conversation, server: FakeOpenAI) -> None:
    local = conv.ask("First, locally")
    assert local.where == "local"
    conv.cloud.enable("test", conv.id)
    assert GUARD.allows("127.0.0.1") and GUARD.opened.get("127.0.0.1") == 1
    result = _cloud_turn(conv, "Second, in the cloud")
    assert result.text == "Hello from the cloud." and result.where == f"cloud:{server.label}"
    body = server.requests[0].body
    assert body["model"] == "big-model" and body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][1]["content"] == "First, locally"
    assert body["messages"][2]["content"] == local.text
    conv.cloud.disable("test", conv.id)
    assert "127.0.0.1" not in GUARD.opened
    # Back to local: the KV cache re-syncs from the shared prefix; the history includes the cloud turn.
    third = conv.ask("Third, locally again")
    assert third.where == "local" and third.usage is not None
    assert third.usage.prefilled_tokens < third.usage.prompt_tokens
    assert conv.store is not None and conv.id is not None
    stored = conv.store.messages(conv.id)
    assert [m.where_ran for m in stored if m.role == "assistant"] == ["local", f"cloud:{server.label}", "local"]
    assert [m.engine for m in stored if m.role == "assistant"] == ["onnx", "cloud", "onnx"]
    assert stored[3].model == "big-model"


def test_redaction_changes_what_is_sent_not_what_is_kept(conv: Conversation, server: FakeOpenAI) -> None:
    text = "Email jane.doe@example.com or call +44 20 7946 0958 about the pump."
    request = conv.cloud_request(text)
    assert request.redacted and request.redactions == 2
    assert "jane.doe" not in request.preview() and "[email]" in request.preview()
    assert f"{request.size} bytes" in request.preview() and server.label in request.preview()
    _cloud_turn(conv, text)
    sent = server.requests[0].body["messages"][-1]["content"]
    assert sent == "Email [email] or call [phone] about the pump."
    assert conv.messages[-2]["content"] == text
    assert conv.store is not None and conv.id is not None
    assert conv.store.messages(conv.id)[0].content == text
    # The per-request toggle sends the original.
    _cloud_turn(conv, text, redact=False)
    assert server.requests[1].body["messages"][-1]["content"] == text


def test_audit_records_enable_egress_refusal_and_disable_and_still_verifies(
    conv: Conversation, server: FakeOpenAI
) -> None:
    conv.cloud.enable("test /cloud on")
    refused = conv.cloud_request("Not this one")
    conv.refuse_cloud(refused, "declined at the prompt")
    assert server.requests == []  # a refusal sends nothing
    sent = conv.cloud_request("This one, mail a@example.org")
    collect(conv, conv.stream_cloud(sent, "This one, mail a@example.org", consent="interactive prompt"))
    conv.cloud.disable("test /cloud off")
    log = AuditLog(_store(conv))
    entries = [(e["kind"], json.loads(e["detail"])) for e in log.entries() if e["kind"].startswith("cloud")]
    assert [k for k, _ in entries] == ["cloud_enabled", "cloud_refused", "cloud_egress", "cloud_disabled"]
    egress = entries[2][1]
    assert egress["host"] == server.label and egress["bytes"] == sent.size == len(egress["body"].encode())
    assert egress["sha256"] == sent.sha256 and egress["redaction"] == "on"
    assert egress["consent"] == {"by": "user", "how": "interactive prompt"}
    assert "[email]" in egress["body"] and "a@example.org" not in egress["body"]
    assert entries[1][1]["sha256"] == refused.sha256
    assert log.verify() == []


def test_the_key_comes_from_the_environment_and_never_reaches_the_audit(
    conv: Conversation, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCLAVE_CLOUD_API_KEY", "sk-secret-42")
    key, source = api_key("127.0.0.1")
    assert key == "sk-secret-42" and "ENCLAVE_CLOUD_API_KEY" in source and "sk-" not in source
    _cloud_turn(conv, "hello")
    assert server.requests[0].headers["authorization"] == "Bearer sk-secret-42"
    dump = AuditLog(_store(conv)).export()
    assert "sk-secret-42" not in dump


def test_without_a_keyring_backend_the_key_source_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    from keyring.backends import fail

    from assistant.cloud.policy import store_key

    monkeypatch.delenv("ENCLAVE_CLOUD_API_KEY", raising=False)
    previous = keyring.core._keyring_backend
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # keyring is untyped
    try:
        key, source = api_key("127.0.0.1")
        assert key is None and "no keyring backend" in source
        with pytest.raises(EnclaveError, match="no system keyring") as info:
            store_key("127.0.0.1", "sk-x")
        assert "ENCLAVE_CLOUD_API_KEY" in info.value.hint
    finally:
        keyring.core._keyring_backend = previous


def test_server_gone_is_a_clean_error_cloud_turns_off_and_the_next_turn_runs_locally(
    conv: Conversation, server: FakeOpenAI
) -> None:
    conv.cloud.enable("test")
    assert _cloud_turn(conv, "one").text
    server.stop()
    result = _cloud_turn(conv, "two")
    assert isinstance(result.error, CloudError) and result.error.connection
    assert "Could not reach the cloud endpoint" in result.error.message
    assert not conv.cloud_enabled and "127.0.0.1" not in GUARD.opened
    assert len(conv.messages) == 2  # the failed turn is not part of the conversation
    local = conv.ask("three")
    assert local.error is None and local.where == "local" and local.text
    cloud = [e for e in AuditLog(_store(conv)).entries() if e["kind"].startswith("cloud")]
    assert [e["kind"] for e in cloud] == ["cloud_enabled", "cloud_egress", "cloud_egress", "cloud_disabled"]
    assert json.loads(cloud[-1]["detail"])["how"] == "automatic"


def test_retrieved_passages_are_in_the_preview_and_the_body(
    conv: Conversation, server: FakeOpenAI, tmp_path: Path
) -> None:
    from assistant.retrieval.index import Library

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nHold the red RESET button for five seconds to reset the pressure.\n")
    assert conv.store is not None
    library = Library(conv.store)
    library.add([docs], "manuals")
    conv.use_documents(library, ["manuals"])
    conv.cloud.enable("test")
    request = conv.cloud_request("How do I reset the pressure?")
    assert "Hold the red RESET button" in request.preview()  # the user sees the passages that leave
    result = collect(conv, conv.stream_cloud(request, "How do I reset the pressure?", consent="test"))
    body = json.dumps(server.requests[-1].body)
    assert "Hold the red RESET button" in body and "[1] pump.md" in body
    assert result.citations and result.citations[0]["path"] == str(docs / "pump.md")
    with pytest.raises(EnclaveError, match="nothing was sent"):
        conv.cloud_request("Which wine goes with salmon?")
    conv.cloud.disable("test")
