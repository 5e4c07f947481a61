"""Stored conversations, with a search box."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, ListItem, ListView

from assistant.app.history import title_for
from tui.safety import displayable


class Sidebar(Vertical):
    """Stored conversations, most recent first, with a search box."""

    def compose(self) -> ComposeResult:
        yield Label("Conversations", classes="sidebar-title")
        yield Input(placeholder="search…", id="sidebar-search")
        yield ListView(id="conversation-list")

    async def fill(self, rows: Iterable[dict[str, Any]], current: int | None) -> None:
        view = self.query_one(ListView)
        await view.clear()
        items = [
            ListItem(
                Label(Text(displayable(title_for(row.get("title") or row.get("first") or "(empty)", 60)))),
                id=f"conv-{row['id']}",
            )
            for row in rows
        ]
        await view.extend(items)
        if current is not None:
            for i, item in enumerate(view.children):
                if item.id == f"conv-{current}":
                    view.index = i
