"""Ctrl-C while an answer streams cancels that answer; the stream still ends cleanly."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from assistant.app.turns import Assistant, result_of, stream_in_thread
from assistant.catalog.manifests import InstalledModel
from assistant.core.settings import Settings


def test_keyboard_interrupt_cancels_the_turn(settings: Settings, tiny_installed: InstalledModel, monkeypatch: pytest.MonkeyPatch, slow_decoding: Callable[[float], None]) -> None:
    slow_decoding(0.005)  # before the model loads: its worker reads the delay at start
    conv = Assistant(replace(settings, max_tokens=400)).conversation("tiny", save=False)
    original_get = queue.Queue.get
    calls = {"n": 0}

    def get(self: queue.Queue[Any], *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(0.2)  # decoding is under way
            raise KeyboardInterrupt  # the user pressed Ctrl-C while waiting for tokens
        return original_get(self, *args, **kwargs)

    monkeypatch.setattr(queue.Queue, "get", get)
    result = result_of(stream_in_thread(conv, lambda: conv.turn("Write a long story")))
    assert result.finish_reason == "cancelled"
    assert result.usage is not None and result.usage.completion_tokens < 400
    assert conv.messages == []  # a cancelled answer is not part of the conversation
    monkeypatch.setattr(queue.Queue, "get", original_get)
    again = result_of(stream_in_thread(conv, lambda: conv.turn("And now?")))
    assert again.finish_reason == "length"


def test_ctrl_c_outside_the_wait_never_aborts_the_cli(settings: Settings, tiny_installed: InstalledModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SIGINT can land while the CLI handles an event (printing it), not only
    while it waits for the next one: it must cancel the turn, never abort the chat."""
    import os
    import signal

    from assistant.app import turns as chat
    from assistant.cli.chat import _run_turn

    conv = Assistant(replace(settings, max_tokens=40)).conversation("tiny", save=False)
    original_feed = chat.TurnCollector.feed
    sent = {"done": False}

    def feed(self: chat.TurnCollector, event: Any) -> Any:
        if not sent["done"]:
            sent["done"] = True
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while an event is handled
        return original_feed(self, event)

    monkeypatch.setattr(chat.TurnCollector, "feed", feed)
    result = _run_turn(conv, "hello", as_json=True)  # raises KeyboardInterrupt without the handler
    assert sent["done"] and result.finish_reason in ("cancelled", "length")
    # The next turn starts clean: a cancel left pending would stop it before its first token.
    again = _run_turn(conv, "hello", as_json=True)
    assert again.finish_reason != "cancelled"
