"""Model output and document text are shown as text: markup, escapes and odd scripts never crash or leak."""

from __future__ import annotations

import pytest

from assistant.core.settings import Settings
from assistant.storage.database import Store
from tests.tui.helpers import ask, until
from tui.app import AnswerMessage, EnclaveApp, UserMessage
from tui.safety import displayable

NASTY = [
    "[/]",
    "[bold]not bold[/bold] [link=https://example.com]click[/link] [@click=app.quit]quit[/]",
    "\x1b[31mred\x1b[0m \x1b[2J\x1b[H cleared?",
    "\x1b]52;c;ZXZpbA==\x07 clipboard, \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
    "\x9b31m C1 CSI \x90DCS\x9c \x07bell\x08\x00nul",
    "مرحبا بالعالم — שלום עולם — \u202eevil\u202c — 😀👩‍🔧🇫🇷 — 日本語",
    "x" * 1_000_000,
    "```python\nprint('[red]')\n```",
    "$(rm -rf /) `ls` <script>alert(1)</script> {{template}}",
]


@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
def test_displayable_removes_every_control_sequence(text: str) -> None:
    clean = displayable(text)
    assert "\x1b" not in clean and "\x9b" not in clean and "\x07" not in clean and "\x00" not in clean
    assert all(ch in "\n\t" or ord(ch) >= 0x20 and not 0x7F <= ord(ch) <= 0x9F for ch in clean)


async def test_every_widget_that_shows_model_text_survives_the_fuzz(tui_settings: Settings) -> None:
    store = Store(tui_settings.locations.database)
    cid = store.create_conversation(
        model="tiny", engine="onnx", persona="general", system_prompt="s", context_policy="drop-oldest"
    )
    for text in NASTY:
        store.add_turn(cid, text, text, model="tiny", model_sha256="0" * 64, engine="onnx", where_ran="local",
                       finish_reason="stop", usage=None, context=None)  # fmt: skip
    store.rename(cid, NASTY[1] + NASTY[2])  # the sidebar shows titles
    app = EnclaveApp(tui_settings, resume=cid)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.conv is not None and len(app.query(AnswerMessage)) == len(NASTY), "loaded")
        assert len(app.query(UserMessage)) == len(NASTY)
        assert len(app.query(AnswerMessage)) == len(NASTY)
        # Markup is shown literally, not interpreted.
        user_texts = [str(w.render()) for w in app.query(UserMessage)]
        assert any("[link=https://example.com]click[/link]" in t for t in user_texts)
        assert all("\x1b" not in t for t in user_texts)
        # And the app still works: a real turn runs after all that.
        await ask(pilot, "still alive?")
        assert len(app.query(AnswerMessage)) == len(NASTY) + 1
