"""The terminal UI driven by Pilot on the real onnxruntime-genai engine (tiny model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from textual.widgets import Input, ListView, Markdown, Static

from assistant.core.settings import Settings
from assistant.storage.database import Store
from tui.app import AnswerMessage, EnclaveApp, UserMessage


async def _ready(pilot) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    for _ in range(100):
        await pilot.pause(0.05)
        if app.conv is not None:
            return
    raise AssertionError("the app never loaded its model")


async def _ask(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    prompt = app.query_one("#prompt", Input)
    prompt.value = text
    await pilot.press("enter")
    for _ in range(200):
        await pilot.pause(0.05)
        if not app._busy and app.query(AnswerMessage):
            return
    raise AssertionError("the answer never finished")


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
        context = _text(app.query_one("#status-context", Static))
        assert "/512" in context and "+24" in context
        assert "tiny · onnx · local" in _text(answers.first().query_one(".answer-footer", Static))
        # The turn is stored, with the text that was shown.
        conv_id = app.conv.id
    store = Store(tui_settings.locations.database)
    messages = store.messages(conv_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == body.source and messages[1].model == "tiny"


async def test_escape_cancels_and_restores_the_prompt(tui_settings: Settings, slow_decoding) -> None:  # type: ignore[no-untyped-def]
    slow_decoding(0.02)  # a slow machine: ~50 tok/s
    settings = tui_settings.__class__(**{**tui_settings.__dict__, "max_tokens": 400})
    app = EnclaveApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        app.query_one("#prompt", Input).value = "Write a long report"
        await pilot.press("enter")
        await pilot.pause(0.4)
        assert app._busy
        await pilot.press("escape")
        for _ in range(100):
            await pilot.pause(0.05)
            if not app._busy:
                break
        assert not app._busy
        answer = app.query(AnswerMessage).first()
        assert answer.has_class("cancelled")
        assert "cancelled" in _text(answer.query_one(".answer-footer", Static))
        assert app.query_one("#prompt", Input).value == "Write a long report"
        assert app.conv.messages == []  # a cancelled answer is not part of the conversation
        assert app.conv.id is None  # and nothing was saved


async def test_switch_conversations_and_resume_after_restart(tui_settings: Settings) -> None:
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        await _ask(pilot, "First conversation about pumps")
        first = app.conv.id
        await pilot.press("ctrl+n")
        await pilot.pause(0.3)
        assert not app.query(UserMessage)
        await _ask(pilot, "Second conversation about valves")
        second = app.conv.id
        assert first != second
        await pilot.pause(0.3)
        view = app.query_one("#conversation-list", ListView)
        ids = [item.id for item in view.children]
        assert f"conv-{first}" in ids and f"conv-{second}" in ids
        # Switch back to the first from the sidebar.
        view.index = ids.index(f"conv-{first}")
        view.action_select_cursor()
        for _ in range(100):
            await pilot.pause(0.05)
            if app.conv.id == first and app.query(UserMessage) and not app._busy:
                break
        await pilot.pause(0.2)
        assert app.conv.id == first
        assert "pumps" in _text(app.query(UserMessage).first())

    # A new app process resumes the conversation from the database.
    again = EnclaveApp(tui_settings, resume=second)
    async with again.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        assert again.conv.id == second
        assert "valves" in _text(again.query(UserMessage).first())
        await _ask(pilot, "And the seals?")
        usage = again.query(AnswerMessage).last()
        assert usage is not None
        assert len(again.conv.messages) == 4
    assert len(Store(tui_settings.locations.database).messages(second)) == 4


async def test_export_and_slash_commands(tui_settings: Settings, tmp_path: Path) -> None:
    app = EnclaveApp(tui_settings)
    target = tmp_path / "out.md"
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        await _ask(pilot, "Export me")
        app.query_one("#prompt", Input).value = f"/export {target}"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert target.is_file() and "Export me" in target.read_text()
        app.query_one("#prompt", Input).value = "/rename Pump job 7"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert Store(tui_settings.locations.database).conversation(app.conv.id)["title"] == "Pump job 7"
        app.query_one("#prompt", Input).value = "/help"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        app.query_one("#prompt", Input).value = "/nonsense[/x] [bold]"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.screen.__class__.__name__ != "HelpScreen"
        assert any("Unknown command /nonsense[/x]" in n.message for n in app._notifications)
        # Answers never open links (a URL the model wrote would leave the machine).
        assert all(not m._open_links for m in app.query(Markdown) if "answer-body" in m.classes)


async def test_a_missing_model_offers_to_build_instead_of_crashing(fresh_home_settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from assistant.catalog.convert import recipes
    from assistant.core.errors import BuildError
    from tui import app as app_module

    seen = []

    def build(catalog, name, engine="onnx", progress=None, force=False):  # type: ignore[no-untyped-def]
        # The real build is exercised by the slow tests; here: its progress and failure reach the screen.
        seen.append(name)
        progress(recipes.Step(1, 4, "Finding the source weights"))
        progress(recipes.Step(2, 4, "Converting GGUF to a transformers folder", None, "loading tensors"))
        raise BuildError("The model build tools are not installed.", "Install them with pip install -e '.[build]'.")

    monkeypatch.setattr(recipes, "build", build)
    settings = replace(fresh_home_settings, model="smollm2-135m-instruct")
    app = EnclaveApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.5)
        assert isinstance(app.screen, app_module.BuildScreen)
        text = " ".join(str(w.render()) for w in app.screen.query(Static))
        assert "needs to build its model 'smollm2-135m-instruct'" in text
        assert "The build failed: The model build tools are not installed." in text
        assert seen == ["smollm2-135m-instruct"]


async def test_a_broken_model_is_a_notice_not_a_crash(tui_settings: Settings, tiny_dir: Path) -> None:
    (tiny_dir / "model.onnx.data").write_bytes(b"broken")
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.5)
        assert app.conv is None
        notices = [n.message for n in app._notifications]
        assert any("does not match its manifest" in m for m in notices)
        assert any("enclave models" in m for m in notices)


async def test_quitting_mid_answer_stops_the_answer_first(tui_settings: Settings, slow_decoding) -> None:  # type: ignore[no-untyped-def]
    slow_decoding(0.02)
    settings = tui_settings.__class__(**{**tui_settings.__dict__, "max_tokens": 400})
    app = EnclaveApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(pilot)
        app.query_one("#prompt", Input).value = "Write a long report"
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app._busy
        await pilot.press("ctrl+q")
        await pilot.pause(0.5)
        assert not app._busy  # the decode thread finished before the engine was closed


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
        app.query_one("#prompt", Input).value = "/docs manuals"
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause(0.05)
            if app.conv.documents_on:
                break
        assert panel.display and _text(app.query_one("#status-docs", Static)) == "docs: manuals"
        await _ask(pilot, "How do I reset the pressure?")
        sources = _text(app.query_one("#sources-body", Static))
        assert "[1] pump.md, l. 3" in sources and "Hold the red RESET button" in sources
        assert str(docs / "pump.md") in sources
        assert "1 source" in _text(app.query(AnswerMessage).last().query_one(".answer-footer", Static))
        await _ask(pilot, "Which wine goes with salmon?")
        assert "Nothing relevant" in _text(app.query_one("#sources-body", Static))
        assert "found nothing relevant" in app.conv.messages[-1]["content"]
        app.query_one("#prompt", Input).value = "/docs nosuch"
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.conv.collections == ["manuals"]  # unchanged; the error was shown
        await pilot.press("f3")
        await pilot.pause(0.2)
        assert not app.conv.documents_on and not panel.display
        assert _text(app.query_one("#status-docs", Static)) == ""
