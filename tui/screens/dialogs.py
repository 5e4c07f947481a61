"""Small modal dialogs: confirm, cloud consent, pick one of a list."""

from __future__ import annotations

from typing import Generic, TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from assistant.app.cloud import CloudRequest
from tui.safety import displayable

T = TypeVar("T")


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "yes", "Yes"), Binding("n,escape", "no", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(Text(self.question))
            yield Static("y = yes · n = no", classes="dim")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class CloudConsentScreen(ModalScreen[str | None]):
    """Exactly what a cloud request would send; y sends, n/Esc does not, r toggles redaction."""

    BINDINGS = [
        Binding("y", "send", "Send"),
        Binding("n,escape", "dismiss(None)", "Don't send"),
        Binding("r", "toggle_redaction", "Redaction on/off"),
    ]

    def __init__(self, request: CloudRequest, question: str) -> None:
        super().__init__()
        self.request = request
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="cloud-box"):
            yield Static(Text(self.question, style="bold"), id="cloud-question")
            with VerticalScroll(id="cloud-preview"):
                yield Static(Text(displayable(self.request.preview())), id="cloud-body")
            toggle = "off" if self.request.redacted else "on"
            yield Static(f"y = send · n / Esc = don't send (nothing leaves) · r = redaction {toggle}", classes="dim")

    def action_send(self) -> None:
        self.dismiss("send")

    def action_toggle_redaction(self) -> None:
        self.dismiss("toggle")


class PickerScreen(ModalScreen[T | None], Generic[T]):
    """Pick one of a list of options (models with their engine, personas): each option is
    a value and the label shown; the value of the chosen one is returned (None: Esc).

    Options are told apart by position, never by their value: one model can be
    installed for two engines under the same name."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, title: str, options: list[tuple[T, str]], current: T | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.options = options
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Label(self.title_text)
            yield OptionList(
                *[
                    Option(Text(("● " if value == self.current else "  ") + label), id=f"option-{i}")
                    for i, (value, label) in enumerate(self.options)
                ]
            )
            yield Static("↑↓ choose · Enter picks · Esc closes", classes="dim")

    def on_mount(self) -> None:
        picker = self.query_one(OptionList)
        for i, (value, _) in enumerate(self.options):
            if value == self.current:
                picker.highlighted = i
        picker.focus()

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.options[event.option_index][0])


class AskScreen(ModalScreen[str | None]):
    """One line of text (a path to index, a title): Enter returns it, Esc cancels."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="ask-box"):
            yield Static(Text(self.question))
            yield Input(value=self.value, placeholder=self.placeholder, id="ask-input")
            yield Static("Enter = OK · Esc = cancel", classes="dim")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)
