"""A native crash ends the engine's worker process, never Enclave.

Real crashes: the worker aborts itself (``os.abort()``, SIGABRT, through a test-only hook
that the worker honours only with ``ENCLAVE_TEST_HOOKS=1`` and that no model output can
reach: it is a request from the front end), and LiteRT-LM's own loader aborts on a
crafted bundle (the first 4 KB of a real one).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assistant.app.turns import Assistant, result_of
from assistant.core.errors import EngineStopped, ModelCorrupt
from assistant.core.settings import Settings
from assistant.engines.protocol import LoadLitert
from assistant.engines.sealed import SealedEngine
from assistant.storage.audit import AuditLog

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "tests" / "assets" / "tiny-gemma.litertlm"


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_TEST_HOOKS", "1")  # read by the worker when it starts


def test_a_crash_mid_answer_ends_the_turn_with_a_clear_error_and_the_next_turn_restarts(
    settings: Settings, tiny_installed: object, hooks: None
) -> None:
    assistant = Assistant(replace(settings, max_tokens=24))
    conv = assistant.conversation("tiny")
    first = conv.ask("What is a pump?")
    assert first.error is None and conv.id is not None
    engine: Any = conv.engine
    pid = engine.isolation.pid

    engine.test_hook("abort-after", 0)  # the worker aborts on its next piece of text
    crashed = result_of(conv.turn("And a valve?"))  # ask() would raise the error
    assert isinstance(crashed.error, EngineStopped)
    assert "signal 6 (SIGABRT)" in crashed.error.message and "nothing saved was lost" in crashed.error.message
    assert "restarts" in crashed.error.hint
    assert crashed.finish_reason == "error"
    # Nothing was lost or half-written: the history and the store hold the first turn only.
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]
    assert len(assistant.store.messages(conv.id)) == 2
    assert AuditLog(assistant.store).verify() == []

    again = conv.ask("And a valve?")
    assert again.error is None and again.finish_reason == "length"
    assert any("restarted" in notice and "SIGABRT" in notice for notice in again.notices)
    assert engine.isolation.pid != pid and engine.isolation.network_sealed
    # The new worker's cache was empty: the whole prompt was read back in from the history.
    assert again.usage is not None and again.usage.prefilled_tokens == again.usage.prompt_tokens
    assert len(assistant.store.messages(conv.id)) == 4
    # The next turn reuses the new worker's cache again.
    third = conv.ask("Thanks")
    assert third.usage is not None and third.usage.prefilled_tokens < third.usage.prompt_tokens
    assert third.notices == []
    assistant.close()


def test_a_crafted_bundle_that_aborts_the_native_loader_is_a_message(tmp_path: Path) -> None:
    crafted = tmp_path / "crafted.litertlm"
    crafted.write_bytes(BUNDLE.read_bytes()[:4096])  # a valid header whose sections are cut off
    with pytest.raises(ModelCorrupt) as info:
        SealedEngine(LoadLitert(str(crafted), "crafted", str(tmp_path / "cache")), home=tmp_path / "worker")
    assert "signal 6 (SIGABRT)" in info.value.message and "crafted.litertlm" in info.value.message
    assert "greater than file size" in info.value.message  # LiteRT-LM's own last words
    assert os.getpid() > 0  # (this process is alive to say so)
