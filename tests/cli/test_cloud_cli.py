"""Cloud fallback from the `enclave` command, as a user runs it: real subprocesses, the
tiny local model, and a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.storage.database import Store, StoredMessage
from tests.cli.test_cli import enclave
from tests.fake_openai import FakeOpenAI


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as s:
        monkeypatch.setenv("ENCLAVE_CLOUD_BASE_URL", s.base_url)
        monkeypatch.setenv("ENCLAVE_CLOUD_MODEL", "big-model")
        monkeypatch.setenv("ENCLAVE_CLOUD_RETRIES", "0")
        monkeypatch.delenv("ENCLAVE_CLOUD_API_KEY", raising=False)
        # Deterministic on every machine: no system keyring (as on a headless server).
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
        yield s


@pytest.fixture
def home(enclave_home: Path, tiny_dir: Path) -> Path:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    return enclave_home


def _answers(home: Path) -> list[StoredMessage]:
    store = Store(home / "data" / "enclave.db")
    conv = store.latest_conversation()
    assert conv is not None
    return [m for m in store.messages(conv) if m.role == "assistant"]


def _audit_kinds(home: Path) -> list[str]:
    out = enclave("audit", "list", "-n", "100", home=home).stdout
    return [line.split()[2] for line in out.splitlines() if " cloud_" in line]


def test_ask_cloud_with_consent_flag_previews_sends_and_records(
    home: Path, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCLAVE_CLOUD_API_KEY", "sk-from-env")
    proc = enclave("ask", "-m", "tiny", "--cloud", "--yes-cloud", "Write to bob@example.com please", home=home)
    assert proc.stdout == "Hello from the cloud.\n"
    # The preview: host, byte count, the redacted body; never the key.
    assert f"host {server.label}" in proc.stderr and "bytes" in proc.stderr
    assert '"content": "Write to [email] please"' in proc.stderr
    assert "sk-from-env" not in proc.stderr
    (req,) = server.requests
    assert req.headers["authorization"] == "Bearer sk-from-env"
    assert req.body["messages"][-1]["content"] == "Write to [email] please"
    (answer,) = _answers(home)
    assert answer.where_ran == f"cloud:{server.label}" and answer.engine == "cloud"
    shown = enclave("history", "show", str(Store(home / "data" / "enclave.db").latest_conversation()), home=home)
    assert f"cloud:{server.label}" in shown.stdout and "bob@example.com" in shown.stdout
    assert _audit_kinds(home) == ["cloud_enabled", "cloud_egress", "cloud_disabled"]
    assert enclave("audit", "verify", home=home).stdout.startswith("ok")


def test_ask_cloud_without_consent_sends_nothing_and_answers_locally(home: Path, server: FakeOpenAI) -> None:
    proc = enclave("ask", "-m", "tiny", "--max-tokens", "4", "--cloud", "secret plans", home=home)
    assert server.requests == []
    assert "not sent" in proc.stderr and "--yes-cloud" in proc.stderr
    assert "Answering on this device instead." in proc.stderr
    (answer,) = _answers(home)
    assert answer.where_ran == "local"
    assert "cloud_refused" in _audit_kinds(home)


def test_chat_switches_cloud_on_and_off_per_line(home: Path, server: FakeOpenAI) -> None:
    lines = ["/cloud on", "first, in the cloud", "/cloud off", "second, locally", "/cloud"]
    proc = enclave(
        "chat", "-m", "tiny", "--json", "--max-tokens", "4", "--yes-cloud", home=home, stdin="\n".join(lines) + "\n"
    )
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["where"] for r in rows] == [f"cloud:{server.label}", "local"]
    assert rows[0]["text"] == "Hello from the cloud." and rows[0]["engine"] == "cloud"
    assert len(server.requests) == 1
    assert "cloud: ON for this conversation" in proc.stderr and "cloud: off" in proc.stderr
    assert [a.where_ran for a in _answers(home)] == [f"cloud:{server.label}", "local"]
    assert _audit_kinds(home) == ["cloud_enabled", "cloud_egress", "cloud_disabled"]


def test_a_local_failure_offers_the_cloud_and_refusing_keeps_the_local_error(home: Path, server: FakeOpenAI) -> None:
    question = "Please explain this at length: " + "pump valve seal " * 40
    args = ["ask", "-m", "tiny", "--ctx", "64", "--context-policy", "stop"]
    refused = enclave(*args, question, home=home, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "The local model could not answer. Send this turn to" in refused.stderr
    assert "not sent" in refused.stderr and server.requests == []
    accepted = enclave(*args, "--yes-cloud", question, home=home)
    assert accepted.stdout == "Hello from the cloud.\n" and len(server.requests) == 1
    (answer,) = _answers(home)
    assert answer.where_ran == f"cloud:{server.label}"


def test_without_cloud_configured_the_local_error_stays_as_it_is(home: Path) -> None:
    question = "Please explain this at length: " + "pump valve seal " * 40
    proc = enclave("ask", "-m", "tiny", "--ctx", "64", "--context-policy", "stop", question, home=home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cloud" not in proc.stderr.lower()
    cloud = enclave("ask", "-m", "tiny", "--cloud", "hi", home=home, check=False)
    assert cloud.returncode == 1 and "Cloud fallback is not configured" in cloud.stderr


def test_status_names_the_key_source_never_the_key_and_key_set_explains_a_missing_keyring(
    home: Path, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCLAVE_CLOUD_API_KEY", "sk-hidden-77")
    out = enclave("cloud", "status", home=home).stdout
    assert f"host:      {server.label}" in out and "big-model" in out
    assert "environment variable ENCLAVE_CLOUD_API_KEY" in out and "sk-hidden-77" not in out
    assert "egress:    off" in out
    proc = enclave("cloud", "key", "set", home=home, stdin="sk-new\n", check=False)
    assert proc.returncode == 1 and "no system keyring" in proc.stderr
    assert "ENCLAVE_CLOUD_API_KEY" in proc.stderr and "sk-new" not in proc.stderr + proc.stdout
    monkeypatch.delenv("ENCLAVE_CLOUD_API_KEY")
    assert "no keyring backend" in enclave("cloud", "status", home=home).stdout


def test_status_without_configuration(home: Path) -> None:
    out = enclave("cloud", "status", home=home).stdout
    assert "not configured" in out


def test_a_model_that_cannot_load_offers_the_cloud_for_each_turn(
    home: Path, server: FakeOpenAI, tiny_dir: Path
) -> None:
    weights = tiny_dir / "model.onnx.data"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    proc = enclave("ask", "-m", "tiny", "--yes-cloud", "hello", home=home)
    assert "does not match its manifest" in proc.stderr
    assert "Send this turn to" in proc.stderr and proc.stdout == "Hello from the cloud.\n"
    (answer,) = _answers(home)
    assert answer.where_ran == f"cloud:{server.label}"
    refused = enclave("ask", "-m", "tiny", "hello", home=home, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "not sent" in refused.stderr and len(server.requests) == 1


def test_an_endpoint_that_is_gone_turns_cloud_off_and_the_question_is_answered_here(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: the README says the conversation "continues locally", but a
    one-shot `ask --cloud` to a server that had gone away exited 1 with no answer."""
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ENCLAVE_CLOUD_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("ENCLAVE_CLOUD_RETRIES", "0")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    proc = enclave("ask", "-m", "tiny", "--max-tokens", "4", "--cloud", "--yes-cloud", "hello there", home=home)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    assert "Cloud is now off for this conversation; answering on this device instead." in proc.stderr
    assert "Traceback" not in proc.stderr
    (answer,) = _answers(home)
    assert answer.where_ran == "local" and answer.engine == "onnx"
    assert _audit_kinds(home) == ["cloud_enabled", "cloud_egress", "cloud_disabled"]
