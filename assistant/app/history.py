"""Stored conversations, as every front end uses them: list, show, search, rename,
delete and export — deletes and exports audited here, once, not by each front end.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.core.errors import EnclaveError
from assistant.core.files import PRIVATE_FILE, replace_atomically
from assistant.core.settings import Settings
from assistant.core.text import inline
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store, StoredMessage

#: Longest automatic title, in characters (the sidebar shows about 40, `history list` 60).
TITLE_LENGTH = 48

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
    def open(cls, settings: Settings, *, write: bool = True) -> History:
        """The history of the database ``settings`` point at (opened, migrated, unlocked);
        ``write=False`` for listing, showing and searching, which then work on a read-only home."""
        return cls(Store.open(settings, write=write))

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Conversations, most recent first, with their message count and first message."""
        return self.store.list_conversations(limit)

    def title(self, conversation_id: int) -> str:
        """The conversation's title, or its first words when it has none."""
        row = self.store.conversation(conversation_id)
        return str(row["title"] or "")

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        """The conversation's messages, in order, each answer with its model, engine and sources."""
        return self.store.messages(conversation_id)

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

    def export(
        self, conversation_id: int, fmt: ExportFormat = "md", to: Path | None = None, *, force: bool = False
    ) -> Exported:
        """The conversation as Markdown or JSON, written to ``to`` (:func:`write_export`:
        never over anything but a regular file unless ``force``) or returned for the
        caller to print; audited either way."""
        if fmt not in EXPORT_FORMATS:
            raise EnclaveError(f"Unknown export format {fmt!r}.", f"Use one of {', '.join(EXPORT_FORMATS)}.")
        text = self.store.export(conversation_id, fmt)
        if to is not None:
            write_export(to, text + "\n", force=force)
        self.audit.record("export", conversation=conversation_id, format=fmt, to=str(to.absolute()) if to else "stdout")
        return Exported(text, to)


ExportTarget = Literal["new", "file", "stream"]  # stream: a device or FIFO, written into


def check_export_target(path: Path, *, force: bool = False) -> ExportTarget:
    """Whether an export may be written to ``path``: ``new`` (nothing there) or ``file``
    (a regular file it replaces). Anything else is refused without ``force``: a symlink
    (the link itself would be replaced, not its target), a directory, a device node such
    as ``/dev/null`` (renaming over it replaces the device for every program on the
    machine), a FIFO or a socket. Raises :class:`~assistant.core.errors.EnclaveError`."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise EnclaveError(
                f"Cannot write {inline(str(path))}: the folder {inline(str(path.parent))} does not exist.",
                "Create the folder first, or choose another path.",
            ) from None
        return "new"
    if stat.S_ISREG(info.st_mode):
        return "file"
    if stat.S_ISDIR(info.st_mode):
        raise EnclaveError(
            f"{inline(str(path))} is a directory; an export is written to a file.",
            f"Give a file name inside it, e.g. {inline(str(path / 'export.md'))}.",
        )
    what = _kind(info.st_mode)
    # A device or a FIFO is written into (as a shell's `> /dev/null` does), never renamed
    # over: that would replace /dev/null with a file for every program on the machine.
    stream = stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) or stat.S_ISFIFO(info.st_mode)
    if stat.S_ISSOCK(info.st_mode):
        raise EnclaveError(
            f"{inline(str(path))} is {what}; an export cannot be written into it.", "Choose another file name."
        )
    if not force:
        raise EnclaveError(
            f"{inline(str(path))} is {what}, not a regular file, so the export will not "
            + ("write into it." if stream else "replace it."),
            "Choose another file name, or add --force to "
            + ("write into it anyway." if stream else "replace it anyway."),
        )
    return "stream" if stream else "file"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def write_export(path: Path, text: str, *, force: bool = False) -> None:
    """The one export writer (history and audit exports, the TUI's /export).

    Checked first (:func:`check_export_target`: only a regular file is replaced unless
    ``force``); written next to the target under a name unique to this process, fsynced,
    and renamed over it, so a crash leaves the old file or the new one, never half of
    one. A new export is 0600 (it holds a conversation); a replaced file keeps its mode.
    """
    target = check_export_target(path, force=force)
    if target == "stream":  # a device or FIFO, forced: written into, never replaced
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
        return
    mode = PRIVATE_FILE
    if target == "file":
        try:
            info = os.stat(path)  # a forced symlink: the mode of what it pointed at
            if stat.S_ISREG(info.st_mode):
                mode = stat.S_IMODE(info.st_mode)
        except OSError:
            pass
    replace_atomically(path, text.encode("utf-8"), mode)


def title_for(text: str, limit: int = TITLE_LENGTH) -> str:
    """A conversation's automatic title: its first message on one line, cut at a word
    boundary (with "…") when longer than ``limit`` characters. A word longer than the
    limit (a path, a URL) is cut inside."""
    words = " ".join(text.split())
    if len(words) <= limit:
        return words
    cut = words[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"
