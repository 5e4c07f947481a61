"""Cloud fallback in the terminal UI: the badge, the consent dialog, the records (Pilot,
the real tiny engine, a real OpenAI-compatible server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from assistant.core.settings import Settings
from assistant.storage.database import Store
from tests.fake_openai import FakeOpenAI
from tests.tui.helpers import conv_id, conv_of, type_line, until
from tui.app import AnswerMessage, CloudConsentScreen, EnclaveApp
from tui.widgets.prompt import PromptArea


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as s:
        yield s


@pytest.fixture
def cloud_settings(tui_settings: Settings, server: FakeOpenAI) -> Settings:
    return replace(tui_settings, cloud_base_url=server.base_url, cloud_model="big-model", cloud_retries=0)


async def _command(pilot: Pilot[None], line: str) -> None:
    await type_line(pilot, line)
    await pilot.pause(0.1)


def _text(widget: Static) -> str:
    return str(widget.render())


def _footer(app: EnclaveApp) -> str:
    return _text(app.query(AnswerMessage).last().query_one(".answer-footer", Static))


async def test_cloud_on_turns_the_badge_asks_before_sending_and_labels_the_answer(
    cloud_settings: Settings, server: FakeOpenAI
) -> None:
    app = EnclaveApp(cloud_settings)
    async with app.run_test(size=(100, 34)) as pilot:
        await until(pilot, lambda: app.conv is not None, "model loaded")
        badge = app.query_one("#privacy-badge", Static)
        assert _text(badge) == "offline" and not badge.has_class("cloud")
        await _command(pilot, "/cloud on")
        assert _text(badge) == f"cloud: {server.label}" and badge.has_class("cloud")
        await _command(pilot, "Mail ops@example.com about pump 7")
        await until(pilot, lambda: isinstance(app.screen, CloudConsentScreen), "consent dialog")
        preview = _text(app.screen.query_one("#cloud-body", Static))
        assert server.label in preview and "bytes" in preview and "[email]" in preview
        assert server.requests == []  # nothing sent while the dialog is open
        await pilot.press("r")  # redaction off for this request: the dialog shows the original
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, CloudConsentScreen)
                and "ops@example.com" in _text(app.screen.query_one("#cloud-body", Static))
            ),
            "preview without redaction",
        )
        await pilot.press("y")
        await until(pilot, lambda: not app.busy and len(server.requests) == 1, "cloud answer")
        await until(pilot, lambda: "cloud:" in _footer(app), "answer footer")
        assert f"big-model · cloud · cloud:{server.label}" in _footer(app)
        assert server.requests[0].body["messages"][-1]["content"] == "Mail ops@example.com about pump 7"
        await _command(pilot, "/cloud off")
        assert _text(badge) == "offline" and not badge.has_class("cloud")
        saved = conv_id(app)
    (answer,) = [m for m in Store(cloud_settings.locations.database).messages(saved) if m.role == "assistant"]
    assert answer.where_ran == f"cloud:{server.label}" and answer.content == "Hello from the cloud."


async def test_refusing_in_the_dialog_sends_nothing_and_answers_locally(
    cloud_settings: Settings, server: FakeOpenAI
) -> None:
    app = EnclaveApp(cloud_settings)
    async with app.run_test(size=(100, 34)) as pilot:
        await until(pilot, lambda: app.conv is not None, "model loaded")
        await _command(pilot, "/cloud on")
        await _command(pilot, "Nothing of this may leave")
        await until(pilot, lambda: isinstance(app.screen, CloudConsentScreen), "consent dialog")
        await pilot.press("n")
        await until(pilot, lambda: not app.busy and app.query(AnswerMessage), "local answer")
        await until(pilot, lambda: "local" in _footer(app), "answer footer")
        assert server.requests == []
        assert "tiny · onnx · local" in _footer(app)
        assert conv_of(app).cloud_enabled  # still on: the next turn asks again
        kinds = [e["kind"] for e in app.assistant.audit.entries()]
        assert "cloud_refused" in kinds and "cloud_egress" not in kinds


async def test_a_local_failure_offers_the_cloud(cloud_settings: Settings, server: FakeOpenAI) -> None:
    settings = replace(cloud_settings, context_window=64, context_policy="stop", max_tokens=8)
    app = EnclaveApp(settings)
    async with app.run_test(size=(100, 34)) as pilot:
        await until(pilot, lambda: app.conv is not None, "model loaded")
        await _command(pilot, "Explain at length: " + "pump valve seal " * 30)
        await until(pilot, lambda: isinstance(app.screen, CloudConsentScreen), "fallback dialog")
        assert "The local model could not answer" in _text(app.screen.query_one("#cloud-question", Static))
        await pilot.press("y")
        await until(pilot, lambda: not app.busy and len(server.requests) == 1, "cloud answer")
        await until(pilot, lambda: app.query(AnswerMessage) and "cloud:" in _footer(app), "answer footer")
        assert app.query_one("#prompt", PromptArea).value == ""
        assert not conv_of(app).cloud_enabled  # a one-off: cloud stays off for the conversation


async def test_the_command_palette_offers_the_cloud_switch(cloud_settings: Settings) -> None:
    app = EnclaveApp(cloud_settings)
    async with app.run_test(size=(100, 34)) as pilot:
        await until(pilot, lambda: app.conv is not None, "model loaded")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Cloud fallback on/off" in titles
        app.action_toggle_cloud()
        assert conv_of(app).cloud_enabled
        assert "cloud:" in _text(app.query_one("#privacy-badge", Static))
