"""One message in the chat log: what the user typed, and an answer with its footer."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static

from tui.safety import displayable


class UserMessage(Static):
    """What the user typed, shown as plain text (never markup)."""

    def __init__(self, text: str, footer: str = "") -> None:
        super().__init__(Text(displayable(text)), classes="user-message")
        self.text = text
        self.footer = footer


class AnswerMessage(Vertical):
    """An answer: Markdown body and a one-line footer (model, speed, where it ran)."""

    def __init__(self, text: str = "", footer: str = "") -> None:
        super().__init__(classes="answer")
        self._initial = displayable(text)
        self._footer = footer

    def compose(self) -> ComposeResult:
        # Links are not opened: a click would hand a URL (which model output controls)
        # to the system browser, outside Enclave's network guard.
        yield Markdown(self._initial, classes="answer-body", open_links=False)
        yield Static(Text(self._footer), classes="answer-footer")

    @property
    def body(self) -> Markdown:
        return self.query_one(Markdown)

    @property
    def text(self) -> str:
        """The answer as it was written (Markdown)."""
        return self.body.source

    @property
    def footer(self) -> str:
        return self._footer

    def set_footer(self, text: str) -> None:
        self._footer = text
        self.query_one(".answer-footer", Static).update(Text(text))
