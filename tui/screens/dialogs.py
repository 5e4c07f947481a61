"""Small modal dialogs: confirm, cloud consent, pick one of a list."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from assistant.cloud.policy import CloudRequest
from tui.safety import displayable


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


class PickerScreen(ModalScreen[str | None]):
    """Pick one of a list of options (models, personas)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, title: str, options: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.options = options

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Label(self.title_text)
            yield OptionList(*[Option(Text(label), id=value) for value, label in self.options])

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
