"""Snapshot tests of the main screens at 80×24 and 120×40 (the real tiny model, stored
conversations): the welcome, a conversation, the help, documents on with the sources of
a long answer, the model picker with one model built for two engines, the sidebar over
the chat on a narrow screen, and the first-run question."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from assistant.catalog.manifests import Catalog
from assistant.core.settings import Settings
from assistant.retrieval.index import Library
from assistant.storage.database import Store
from tests.conftest import ROOT
from tests.tui.helpers import until
from tui.app import AnswerMessage, EnclaveApp, PickerScreen
from tui.screens.build import BuildScreen

SIZES = [(80, 24), (120, 40)]
SnapCompare = Callable[..., bool]

LONG_ANSWER = "\n\n".join(
    [
        "To reset the pressure on the P-200 pump [1]:",
        "1. **Isolate** the pump: close the inlet valve and switch the motor off at the panel.",
        "2. Hold the red **RESET** button for five seconds, until the display shows `P 0.0`.",
        "3. Open the inlet valve slowly; the pressure should rise to 4.2 bar within a minute.",
        "4. If the display shows `E14`, the pressure sensor is faulty: replace it before the next run.",
        "5. Write the time of the reset and the pressure reached in the maintenance log.",
        "Do not reset more than three times in an hour: the relief valve needs time to cool [1].",
    ]
)
CITATION = {
    "n": 1,
    "path": "/srv/manuals/p200-pump.md",
    "page": None,
    "line_start": 12,
    "line_end": 18,
    "unit": "lines",
    "heading": "P-200 › Reset",
    "score": 0.8,
    "similarity": 0.71,
    "text": "Hold the red RESET button for five seconds to reset the pressure. The display shows P 0.0.",
    "cited": True,
    "supports": 2,
}


async def _settle(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, EnclaveApp)
    await until(pilot, lambda: app.conv is not None and not app.opening, "the model loaded")
    _freeze(app)
    await pilot.pause(0.3)


def _freeze(app: Any) -> None:
    for widget in [*app.query(Input), *app.query(TextArea)]:
        widget.cursor_blink = False  # a frozen cursor: snapshots must not depend on timing


async def _settle_with_answer(pilot: Pilot[None]) -> None:
    """Settle, then wait until the stored conversation's answer is on screen."""
    await _settle(pilot)
    await until(pilot, lambda: bool(pilot.app.query(AnswerMessage)), "the stored answer")
    await pilot.pause(0.3)


def _stored(settings: Settings, answer: str | None = None, citations: list[dict[str, Any]] | None = None) -> int:
    store = Store(settings.locations.database)
    cid = store.create_conversation(
        model="tiny", engine="onnx", persona="general", system_prompt="s", context_policy="drop-oldest"
    )
    text = answer or "1. **Isolate** the pump.\n2. Open the bleed screw.\n\n```\nclose when fluid runs clear\n```"
    store.add_turn(cid, "How do I bleed air from the pump?", text, model="tiny", model_sha256="0" * 64,
                   engine="onnx", where_ran="local", finish_reason="stop", usage=None, context=None,
                   citations=citations)  # fmt: skip
    store.rename(cid, "Pump 7 service")
    if citations:
        Library(store).collection_id("manuals", create=True)
        store.update_conversation(cid, documents=["manuals"])
    store.close()
    return cid


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_empty_chat(snap_compare: SnapCompare, tui_settings: Settings, size: tuple[int, int]) -> None:
    assert snap_compare(EnclaveApp(tui_settings), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_stored_conversation(snap_compare: SnapCompare, tui_settings: Settings, size: tuple[int, int]) -> None:
    cid = _stored(tui_settings)
    assert snap_compare(EnclaveApp(tui_settings, resume=cid), terminal_size=size, run_before=_settle_with_answer)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_documents_on_with_sources_and_a_long_answer(
    snap_compare: SnapCompare, tui_settings: Settings, size: tuple[int, int]
) -> None:
    """Resumed with its documents: the chat keeps 50+ columns beside the sources at 80×24,
    and the log shows the end of the long answer."""
    cid = _stored(replace(tui_settings), LONG_ANSWER, [CITATION])
    app = EnclaveApp(tui_settings, resume=cid)
    assert snap_compare(app, terminal_size=size, run_before=_settle_with_answer)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_screen(snap_compare: SnapCompare, tui_settings: Settings, size: tuple[int, int]) -> None:
    async def ready(pilot: Pilot[None]) -> None:
        await _settle(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: pilot.app.screen.__class__.__name__ == "HelpScreen", "the help")
        await pilot.pause(0.3)

    assert snap_compare(EnclaveApp(tui_settings), terminal_size=size, run_before=ready)


@pytest.fixture
def two_engines(tui_settings: Settings, tmp_path: Path) -> Settings:
    """The tiny model "built" for both engines (the tiny LiteRT-LM bundle under the same name)."""
    bundle = tmp_path / "tiny.litertlm"
    shutil.copyfile(ROOT / "tests" / "assets" / "tiny-gemma.litertlm", bundle)
    Catalog(tui_settings).add(bundle, name="tiny")
    return tui_settings


def _then(*keys: str, until_screen: type[Any] | None = None) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        await _settle(pilot)
        await pilot.press(*keys)
        if until_screen is not None:
            await until(pilot, lambda: isinstance(pilot.app.screen, until_screen), until_screen.__name__)
        await pilot.pause(0.3)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_model_picker_with_two_engines(snap_compare: SnapCompare, two_engines: Settings, size: tuple[int, int]) -> None:
    app = EnclaveApp(two_engines, engine="onnx")
    assert snap_compare(app, terminal_size=size, run_before=_then("ctrl+o", until_screen=PickerScreen))


def test_sidebar_over_the_chat_at_80x24(snap_compare: SnapCompare, tui_settings: Settings) -> None:
    cid = _stored(tui_settings)
    assert snap_compare(EnclaveApp(tui_settings, resume=cid), terminal_size=(80, 24), run_before=_then("ctrl+b"))


def test_first_run_asks_before_building(snap_compare: SnapCompare, fresh_home_settings: Settings) -> None:
    async def ready(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: isinstance(pilot.app.screen, BuildScreen), "the build screen")
        await pilot.pause(0.3)

    app = EnclaveApp(replace(fresh_home_settings, model="smollm2-135m-instruct"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)


def test_light_theme(snap_compare: SnapCompare, tui_settings: Settings) -> None:
    cid = _stored(tui_settings)
    app = EnclaveApp(replace(tui_settings, theme="textual-light"), resume=cid)
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settle_with_answer)
