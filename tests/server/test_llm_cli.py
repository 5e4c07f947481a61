"""simonw's real `llm` CLI against `enclave serve`, configured as a user would: an
``extra-openai-models.yaml`` and a stored key in its own (temporary) LLM_USER_PATH. Asserts
on its output and on the rows it writes to its SQLite log."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.core.settings import Settings
from assistant.server.run import BackgroundServer
from tests.server.conftest import audit_entries

LLM = Path(sys.executable).parent / "llm"


def write_llm_config(user_path: Path, base_url: str, model: str) -> None:
    """What the README tells a user to write: one chat model, one completion model."""
    user_path.mkdir(parents=True, exist_ok=True)
    (user_path / "extra-openai-models.yaml").write_text(
        f"- model_id: enclave\n  model_name: {model}\n  api_base: {base_url}\n  api_key_name: enclave\n"
        f"- model_id: enclave-text\n  model_name: {model}\n  api_base: {base_url}\n  api_key_name: enclave\n"
        "  completion: true\n"
    )


def llm(user_path: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LLM_USER_PATH=str(user_path), LLM_LOAD_PLUGINS="")
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run([str(LLM), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def llm_home(tmp_path: Path, api: BackgroundServer) -> Path:
    home = tmp_path / "llm-user"
    write_llm_config(home, api.base_url, "tiny")
    llm(home, "keys", "set", "enclave", "--value", api.token)
    return home


def test_llm_lists_streams_and_logs_through_the_server(llm_home: Path, settings: Settings) -> None:
    assert "OpenAI Chat: enclave" in llm(llm_home, "models").stdout
    out = llm(llm_home, "-m", "enclave", "-o", "max_tokens", "8", "What is the capital of France?")
    assert out.stdout.endswith("\n")
    llm(llm_home, "-m", "enclave", "--no-stream", "-o", "max_tokens", "4", "-o", "temperature", "0", "Hello")
    llm(llm_home, "-m", "enclave-text", "-o", "max_tokens", "3", "Once upon a time")

    db = sqlite3.connect(llm_home / "logs.db")
    rows = db.execute("select model, prompt, input_tokens, output_tokens from responses order by id").fetchall()
    db.close()
    # Usage came back, streamed or not (llm's completion models never log usage: its own choice).
    assert [(r[0], r[3]) for r in rows] == [("enclave", 8), ("enclave", 4), ("enclave-text", None)]
    assert all(r[2] > 0 for r in rows[:2])

    requests = audit_entries(settings.locations.data.parent, "api_request")
    assert [e["endpoint"] for e in requests] == ["chat", "chat", "completions"]
    assert [e["completion_tokens"] for e in requests] == [8, 4, 3]
    assert "capital of France" not in json.dumps(requests)


def test_llm_with_a_wrong_key_reports_the_401(llm_home: Path) -> None:
    out = llm(llm_home, "-m", "enclave", "--key", "enclave-wrong", "hi", check=False)
    assert out.returncode != 0
    assert "401" in out.stderr or "invalid_api_key" in out.stderr
