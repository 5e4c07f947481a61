"""F1: every key and command, in a box that scrolls when the terminal is short."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from assistant.app.commands import help_rows

#: Every key of the terminal UI, in the order a newcomer needs them.
KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "send the message"),
    ("Shift+Enter, Ctrl+J", "a new line in the message (a paste keeps its lines)"),
    ("Esc", "stop the answer being written (your message comes back), or stop editing"),
    ("Up (empty input)", "edit your last message; Enter answers it again"),
    ("Ctrl+R", "answer the last message again (replaces the last answer)"),
    ("PgUp, PgDn", "scroll the conversation; Ctrl+End jumps to the newest answer"),
    ("Tab, Shift+Tab", "move between the input, the conversation, the sources and the sidebar"),
    ("Ctrl+N", "new conversation (same model, settings and documents)"),
    ("Ctrl+O", "choose a model and engine"),
    ("F3", "documents on or off for this conversation"),
    ("F4", "show or hide the sources panel"),
    ("Ctrl+B", "show or hide the conversations (on a narrow screen: over the chat)"),
    ("Ctrl+Y", "copy the last answer (OSC 52)"),
    ("Ctrl+K", "copy the last code block of the last answer"),
    ("Ctrl+E", "export this conversation to Markdown"),
    ("F2", "rename this conversation"),
    ("Delete", "(in the sidebar) delete the selected conversation, after confirmation"),
    ("Ctrl+P", "command palette (add documents, persona, theme, …)"),
    ("F1", "this help"),
    ("Ctrl+Q", "quit"),
)

PRIVACY = (
    "Everything runs on this computer. The badge in the status bar says offline while nothing can leave it, "
    "and names the host, in a warning colour, while cloud fallback is on for this conversation."
)


def _table(title: str, rows: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, expand=True, padding=(0, 1))
    table.add_column(style="bold", ratio=2, overflow="fold")
    table.add_column(ratio=5)
    for key, what in rows:
        table.add_row(Text(key), Text(what))
    return table


class HelpScreen(ModalScreen[None]):
    """Keys and commands; ↑↓ PgUp PgDn scroll, Esc (or F1, q) closes."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            with VerticalScroll(id="help-scroll"):
                yield Static(_table("Keys", KEYS), id="help-keys")
                yield Static(_table("Commands (type them in the input)", help_rows("tui")), id="help-commands")
                yield Static(Text(PRIVACY, style="dim"), id="help-privacy")
            yield Static("↑↓ PgUp PgDn scroll · Esc closes", classes="dim", id="help-hint")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
