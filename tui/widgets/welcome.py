"""What an empty conversation shows: where you are, and three things to try."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

TRIES: tuple[tuple[str, str], ...] = (
    ("Ask a question", "type it below and press Enter, e.g. How do I bleed air from a hydraulic pump?"),
    ("Ask your own documents", "/docs add ~/manuals, then ask: answers cite the file, page and lines (F3 on/off)"),
    ("Try another model or engine", "Ctrl+O; /set temperature 0.7 for varied answers, Ctrl+R to answer again"),
)


class Welcome(Static):
    """Shown in an empty conversation; removed with its first message."""

    def __init__(self, model: str = "") -> None:
        text = Text()
        text.append("Welcome to Enclave", style="bold")
        text.append(f" — {model}, " if model else " — ")
        text.append("running on this computer. Nothing you type leaves it.\n\n")
        text.append("Three things to try\n", style="bold")
        for i, (what, how) in enumerate(TRIES, start=1):
            text.append(f" {i}  ", style="bold")
            text.append(what, style="bold")
            text.append(f": {how}\n")
        text.append("\nF1 lists every key and command · Ctrl+P opens the command palette", style="dim")
        super().__init__(text, id="welcome")
