"""The terminal UI when the engine's worker process crashes: a notice, and the next message restarts it.

The worker aborts itself (SIGABRT) through a test-only hook it honours only with
``ENCLAVE_TEST_HOOKS=1``; see tests/reliability/test_crash.py for the same at the
conversation level.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import Static

from assistant.core.settings import Settings
from assistant.storage.database import Store
from tui.app import AnswerMessage, EnclaveApp
from tui.widgets.prompt import PromptArea


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_TEST_HOOKS", "1")  # read by the worker when it starts


async def test_the_tui_says_the_engine_stopped_and_the_next_message_restarts_it(
    tui_settings: Settings, hooks: None
) -> None:
    app = EnclaveApp(tui_settings)
    said: list[str] = []
    async with app.run_test(size=(100, 30)) as pilot:
        notify = app.notify

        def record(message: str, **kw: Any) -> None:
            said.append(message)
            notify(message, **kw)

        app.notify = record  # type: ignore[method-assign]
        for _ in range(200):
            await pilot.pause(0.05)
            if app.conv is not None:
                break
        assert app.conv is not None
        engine: Any = app.conv.engine
        engine.test_hook("abort-after", 0)

        async def ask(text: str) -> str:
            """Send ``text``; the answer's footer once the turn has ended."""
            before = len(app.query(AnswerMessage))
            app.query_one("#prompt", PromptArea).value = text
            await pilot.press("enter")
            for _ in range(400):
                await pilot.pause(0.05)
                answers = app.query(AnswerMessage)
                if len(answers) > before:
                    footer = str(answers.last().query_one(".answer-footer", Static).render())
                    if footer != "…":
                        return footer
            raise AssertionError("the turn never ended")

        assert (await ask("Hello")).startswith("error: The engine process stopped")
        assert any("engine process stopped (signal 6 (SIGABRT))" in s and "Send your message again" in s for s in said)
        assert "tiny · onnx · local" in await ask("Hello again")
        assert any("restarted" in s and "SIGABRT" in s for s in said)
        assert app.conv is not None and app.conv.id is not None  # the turn after the restart was saved
    store = Store(tui_settings.locations.database)
    assert [m.content for m in store.messages(app.conv.id) if m.role == "user"] == ["Hello again"]
