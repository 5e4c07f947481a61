"""The passages behind the last answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Label, Static

from tui.safety import displayable


class SourcesPanel(VerticalScroll):
    """The passages behind the last answer: number, file, page, lines, and the text."""

    def compose(self) -> ComposeResult:
        yield Label("Sources", classes="sidebar-title")
        yield Static(Text("Ask a question: the passages it is answered from appear here."), id="sources-body")

    def show_citations(self, citations: list[dict[str, Any]] | None, note: str = "") -> None:
        body = Text()
        if note:
            body.append(note + "\n", style="italic")
        for c in citations or []:
            where = [Path(c["path"]).name]
            if c.get("page") is not None:
                where.append(f"p. {c['page']}")
            span = str(c["line_start"]) if c["line_start"] == c["line_end"] else f"{c['line_start']}–{c['line_end']}"
            where.append(f"{c['unit'][0] if c.get('unit') else 'l'}. {span}")
            status = "cited" if c.get("cited") else ("matches the answer" if c.get("supports") else "not used")
            body.append(f"[{c['n']}] {', '.join(where)}", style="bold")
            body.append(f"  {status}\n", style="dim")
            body.append(displayable(c["path"]) + "\n", style="dim")
            text = displayable(c["text"])
            body.append((text if len(text) <= 600 else text[:600] + " …") + "\n\n")
        self.query_one("#sources-body", Static).update(body)
        self.scroll_home(animate=False)
