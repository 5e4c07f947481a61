"""Stored conversations, as every front end uses them: list, show, search, rename,
delete and export — deletes and exports audited here, once, not by each front end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store

ExportFormat = Literal["md", "json"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("md", "json")


@dataclass(frozen=True)
class Exported:
    """One export: the text, and where it went (``None``: the caller prints it)."""

    text: str
    path: Path | None


class History:
    """The conversation history of one database."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.audit = AuditLog(store)

    @classmethod
    def open(cls, settings: Settings) -> History:
        """The history of the database ``settings`` point at (opened, migrated, unlocked)."""
        return cls(Store.open(settings))

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Conversations, most recent first, with their message count and first message."""
        return self.store.list_conversations(limit)

    def title(self, conversation_id: int) -> str:
        """The conversation's title, or its first words when it has none."""
        row = self.store.conversation(conversation_id)
        return str(row["title"] or "")

    def show(self, conversation_id: int, fmt: ExportFormat = "md") -> str:
        """The whole conversation, each answer labelled with model, sha256, engine, where."""
        return self.store.export(conversation_id, fmt)

    def search(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        """Full-text search over every message (the query is quoted: any text is safe)."""
        return self.store.search(text, limit)

    def rename(self, conversation_id: int, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            raise EnclaveError("The title is empty.", "Give the conversation a title of a few words.")
        self.store.rename(conversation_id, title)

    def delete(self, conversation_id: int, *, how: str) -> None:
        """Delete a conversation for good (messages and search-index rows); audited with
        ``how`` the user confirmed it (e.g. "--yes", "TUI confirmation")."""
        self.store.conversation(conversation_id)  # raises when there is no such conversation
        self.store.delete(conversation_id)
        self.audit.record("delete", conversation=conversation_id, messages_deleted=True, how=how)

    def export(self, conversation_id: int, fmt: ExportFormat = "md", to: Path | None = None) -> Exported:
        """The conversation as Markdown or JSON, written to ``to`` (atomically: a partial
        file, then a rename) or returned for the caller to print; audited either way."""
        if fmt not in EXPORT_FORMATS:
            raise EnclaveError(f"Unknown export format {fmt!r}.", f"Use one of {', '.join(EXPORT_FORMATS)}.")
        text = self.store.export(conversation_id, fmt)
        if to is not None:
            write_export(to, text + "\n")
        self.audit.record("export", conversation=conversation_id, format=fmt, to=str(to) if to else "stdout")
        return Exported(text, to)


def write_export(path: Path, text: str) -> None:
    """Write an export next to its target and rename it over the target, so a crash
    leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
