"""Driving the real app in tests: wait until something is true, type, ask."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.pilot import Pilot

from assistant.app.turns import Conversation
from tui.app import AnswerMessage, EnclaveApp
from tui.widgets.prompt import PromptArea

#: Seconds a test waits for the app before it fails (the CI machine is slow and shared).
PATIENCE = 30.0


async def until(pilot: Pilot[None], check: Callable[[], object], what: str, timeout: float = PATIENCE) -> None:
    """Let the app run until ``check()`` is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await pilot.pause(0.05)


def app_of(pilot: Pilot[None]) -> EnclaveApp:
    app = pilot.app
    assert isinstance(app, EnclaveApp)
    return app


async def ready(pilot: Pilot[None]) -> EnclaveApp:
    """The app with its model loaded and its conversation on screen."""
    app = app_of(pilot)
    await until(pilot, lambda: app.conv is not None and not app.opening, "the model loaded")
    return app


async def type_line(pilot: Pilot[None], text: str) -> None:
    """Type ``text`` into the input and press Enter."""
    app = app_of(pilot)
    app.query_one(PromptArea).value = text
    app.query_one(PromptArea).focus()
    await pilot.press("enter")


async def ask(pilot: Pilot[None], text: str) -> AnswerMessage:
    """Ask ``text`` and wait for the answer to finish; the answer's widget."""
    app = app_of(pilot)
    before = app.last_result
    await type_line(pilot, text)
    await until(pilot, lambda: not app.busy and app.last_result is not before, f"the answer to {text!r}")
    return app.query(AnswerMessage).last()


def conv_of(app: EnclaveApp) -> Conversation:
    """The open conversation (the test fails if there is none)."""
    assert app.conv is not None, "no conversation is open"
    return app.conv


def conv_id(app: EnclaveApp) -> int:
    """The id of the open conversation (the test fails if it has not been saved)."""
    saved = conv_of(app).id
    assert saved is not None, "the conversation has not been saved"
    return saved
