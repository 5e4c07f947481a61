"""Where the user types: several lines when needed (paste, Shift+Enter, Ctrl+J), Enter sends."""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

#: Short enough for the 46 columns the input has at 80x24 with documents on.
PLACEHOLDER = "Ask anything — /help for commands"


class PromptArea(TextArea):
    """A multi-line input that grows with its text (up to a few lines).

    Enter posts :class:`Submitted`; Shift+Enter (in terminals that report it) and
    Ctrl+J insert a newline; a paste keeps its lines. Up in an empty prompt posts
    :class:`EditLast`. PageUp/PageDown scroll the conversation, not the prompt.
    """

    BINDINGS = [
        Binding("pageup", "app.scroll_log(-1)", "Scroll up", show=False),
        Binding("pagedown", "app.scroll_log(1)", "Scroll down", show=False),
    ]

    class Submitted(Message):
        """The user pressed Enter: ``text`` is what they wrote."""

        def __init__(self, prompt: PromptArea, text: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.text = text

    class EditLast(Message):
        """Up in an empty prompt: the user wants to change their last message."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus", placeholder=PLACEHOLDER)

    @property
    def value(self) -> str:
        """The text, as an :class:`~textual.widgets.Input` calls it."""
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.text = text
        self.move_cursor(self.document.end)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        if event.key == "up" and not self.text:
            event.stop()
            event.prevent_default()
            self.post_message(self.EditLast())
            return
        await super()._on_key(event)
