"""Snapshot tests of the main screens at 80×24 and 120×40 (real tiny model, stored conversation)."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from assistant.core.settings import Settings
from assistant.storage.database import Store
from tui.app import AnswerMessage, EnclaveApp

SIZES = [(80, 24), (120, 40)]


async def _settle(pilot) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    for _ in range(200):
        await pilot.pause(0.05)
        if app.conv is not None:
            break
    for widget in app.query(Input):
        widget.cursor_blink = False  # a frozen cursor: snapshots must not depend on timing
    await pilot.pause(0.2)


async def _settle_with_answer(pilot) -> None:  # type: ignore[no-untyped-def]
    """Settle, then wait until the stored conversation's answer is on screen."""
    await _settle(pilot)
    for _ in range(100):
        if pilot.app.query(AnswerMessage):
            break
        await pilot.pause(0.05)
    await pilot.pause(0.3)


def _stored(settings: Settings) -> int:
    store = Store(settings.locations.database)
    cid = store.create_conversation(
        model="tiny", engine="onnx", persona="general", system_prompt="s", context_policy="drop-oldest"
    )
    store.add_turn(cid, "How do I bleed air from the pump?", "1. **Isolate** the pump.\n2. Open the bleed screw.\n\n```\nclose when fluid runs clear\n```",
                   model="tiny", model_sha256="0" * 64, engine="onnx", where_ran="local", finish_reason="stop",
                   usage=None, context=None)  # fmt: skip
    store.rename(cid, "Pump 7 service")
    return cid


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_empty_chat(snap_compare, tui_settings: Settings, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(EnclaveApp(tui_settings), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_stored_conversation(snap_compare, tui_settings: Settings, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    cid = _stored(tui_settings)

    assert snap_compare(EnclaveApp(tui_settings, resume=cid), terminal_size=size, run_before=_settle_with_answer)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_screen(snap_compare, tui_settings: Settings, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    async def ready(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("f1")
        await pilot.pause(0.3)

    assert snap_compare(EnclaveApp(tui_settings), terminal_size=size, run_before=ready)


def test_light_theme(snap_compare, tui_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    cid = _stored(tui_settings)

    app = EnclaveApp(replace(tui_settings, theme="textual-light"), resume=cid)
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settle_with_answer)
