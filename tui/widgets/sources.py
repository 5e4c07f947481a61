"""The passages behind the last answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Label, Static

from assistant.app.notices import source_status
from tui.safety import displayable


class SourcesPanel(VerticalScroll):
    """The passages behind the last answer: number, file, page, lines, and the text.
    Focusable (Tab), so that its arrows and PgUp/PgDn scroll it."""

    def compose(self) -> ComposeResult:
        yield Label("Sources", classes="sidebar-title")
        yield Static(Text("Ask a question: the passages it is answered from appear here."), id="sources-body")

    def show_citations(self, citations: list[dict[str, Any]] | None, note: str = "") -> None:
        body = Text()
        if note:
            body.append(note + "\n", style="italic")
        for c in citations or []:
            # The one wording of a location (retrieval/location.py), with the file's name only.
            where = str(c.get("location") or c["path"])  # citations stored before locations were kept
            where = where.replace(c["path"], Path(c["path"]).name, 1)
            status = source_status(c)
            body.append(f"[{c['n']}] {where}", style="bold")
            body.append(f"  {status}\n", style="dim")
            body.append(displayable(c["path"]) + "\n", style="dim")
            text = displayable(c["text"])
            body.append((text if len(text) <= 600 else text[:600] + " …") + "\n\n")
        self.query_one("#sources-body", Static).update(body)
        self.scroll_home(animate=False)
