"""Ctrl-C while an answer streams cancels that answer; the stream still ends cleanly."""

from __future__ import annotations

import queue
import time
from dataclasses import replace

from assistant.app.turns import Assistant, result_of, stream_in_thread


def test_keyboard_interrupt_cancels_the_turn(settings, tiny_installed, monkeypatch, slow_decoding) -> None:  # type: ignore[no-untyped-def]
    conv = Assistant(replace(settings, max_tokens=400)).conversation("tiny", save=False)
    slow_decoding(0.005)
    original_get = queue.Queue.get
    calls = {"n": 0}

    def get(self, *args, **kwargs):  # type: ignore[no-untyped-def]
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


def test_ctrl_c_outside_the_wait_never_aborts_the_cli(settings, tiny_installed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The SIGINT can land while the CLI handles an event (printing it), not only
    while it waits for the next one: it must cancel the turn, never abort the chat."""
    import os
    import signal

    from assistant.app import turns as chat
    from assistant.cli.chat import _run_turn

    conv = Assistant(replace(settings, max_tokens=40)).conversation("tiny", save=False)
    original_feed = chat.TurnCollector.feed
    sent = {"done": False}

    def feed(self, event):  # type: ignore[no-untyped-def]
        if not sent["done"]:
            sent["done"] = True
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while an event is handled
        return original_feed(self, event)

    monkeypatch.setattr(chat.TurnCollector, "feed", feed)
    result = _run_turn(conv, "hello", as_json=True)  # raises KeyboardInterrupt without the handler
    assert sent["done"] and result.finish_reason in ("cancelled", "length")
    assert not conv.session._cancel.is_set()  # the next turn starts clean
