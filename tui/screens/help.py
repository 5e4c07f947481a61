"""F1: every key and command."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Enclave — keys and commands

| key | action |
|---|---|
| Enter | send the message |
| Esc | cancel the answer being written (your message comes back to the input) |
| Ctrl+N | new conversation |
| Ctrl+B | show or hide the conversations sidebar |
| Ctrl+Y | copy the last answer to the clipboard (OSC 52) |
| Ctrl+K | copy the last code block of the last answer |
| Ctrl+E | export this conversation to Markdown |
| Ctrl+O | choose a model |
| Ctrl+R | choose a persona |
| Ctrl+P | command palette |
| Delete | (in the sidebar) delete the selected conversation, after confirmation |
| F2 | rename this conversation |
| F3 | documents on or off for this conversation (all collections) |
| F1 | this help |
| Ctrl+Q | quit |

| command | what it does |
|---|---|
| `/new` | start a new conversation |
| `/model [NAME]` | choose a model |
| `/persona [NAME]` | choose a persona |
| `/export [PATH]` | export this conversation to Markdown |
| `/rename TITLE` | rename this conversation |
| `/docs [COLLECTION or off]` | answer from your indexed documents (all, or one collection), with sources; `off` stops |
| `/clear` | clear the screen (the conversation is kept in the history) |
| `/cloud on`, `/cloud off` | cloud fallback for this conversation (needs `cloud_base_url`); each request is shown first |
| `/help` | this help |

Everything runs on this computer. The badge in the status bar says **offline**
while nothing can leave it, and names the host, in a warning colour, while cloud
fallback is on for this conversation.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP)
