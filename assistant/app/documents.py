"""Documents, as every front end uses them: the `/docs` switch of a conversation (one
parser for `ask --docs`, `chat`'s `/docs` and the TUI's), and the collection use cases
behind `enclave docs` — indexing, search, status, removal — audited here, once.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.retrieval import open_library
from assistant.retrieval.index import Hit, IngestReport, Library, Progress
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store

if TYPE_CHECKING:
    from assistant.app.turns import Conversation

__all__ = ["Documents", "DocsSwitch", "Hit", "IngestReport", "Progress", "parse_switch", "switch_documents"]

#: Words that mean "every collection" in a `/docs` argument.
ALL = ("", "all", "on")


@dataclass(frozen=True)
class DocsSwitch:
    """What a `/docs ARG` asks for: documents off, or on for some collections (None: all)."""

    on: bool
    collections: list[str] | None = None


def parse_switch(arg: str | None) -> DocsSwitch:
    """The one parser of the documents switch: ``off``; ``all``/``on``/nothing; or
    collection names separated by commas or spaces."""
    text = (arg or "").strip()
    if text.lower() == "off":
        return DocsSwitch(False)
    if text.lower() in ALL:
        return DocsSwitch(True)
    names = [name for name in text.replace(",", " ").split() if name]
    return DocsSwitch(True, names)


def switch_documents(conv: Conversation, arg: str | None, store: Store | None = None) -> str:
    """Turn documents on or off for ``conv`` as ``arg`` asks; the sentence to show.
    Raises :class:`EnclaveError` for an unknown collection or an empty library."""
    switch = parse_switch(arg)
    if not switch.on:
        conv.use_documents(None)
        return "Documents off: answers come from the model alone."
    library = open_library(conv.settings, store or conv.store or Store.open(conv.settings))
    if not library.collections():
        raise EnclaveError("There are no indexed documents yet.", "Add some with `enclave docs add PATH`.")
    conv.use_documents(library, switch.collections)
    names = ", ".join(conv.collections or []) or "all collections"
    search = "keyword + vector" if library.embedder is not None else "keyword-only"
    return f"Documents on ({names}, {search} search): answers cite their sources."


def documents_state(conv: Conversation) -> str:
    """Which documents this conversation answers from, in one sentence."""
    if not conv.documents_on:
        return "Documents off. `/docs` turns them on (all collections), `/docs NAME` one collection."
    return f"Documents on: {', '.join(conv.collections or []) or 'all collections'}. `/docs off` turns them off."


class Documents:
    """The collections of one database, with the embedding model when it is built."""

    def __init__(self, settings: Settings, store: Store, library: Library) -> None:
        self.settings = settings
        self.store = store
        self.library = library
        self._audit = AuditLog(store)

    @classmethod
    def open(cls, settings: Settings, store: Store | None = None) -> Documents:
        """The documents of the database ``settings`` point at."""
        store = store or Store.open(settings)
        return cls(settings, store, open_library(settings, store))

    @staticmethod
    def embedder_missing(settings: Settings) -> bool:
        """Whether the first ``docs add`` should build the embedding model now: it is not
        built, the settings allow it and this installation has the build tools."""
        from assistant.retrieval.embed import load_embedder

        return settings.docs_build_embedder and load_embedder(settings) is None and build_tools_installed()

    @staticmethod
    def build_embedder(settings: Settings, progress: Callable[[Any], None]) -> None:
        """Build the embedding model (vector search), about 30 s once."""
        from assistant.retrieval.embed import build_embedder

        build_embedder(settings, progress=progress)

    def close(self) -> None:
        self.store.close()

    @property
    def vector_search(self) -> bool:
        return self.library.embedder is not None

    @property
    def embedder_sha256(self) -> str | None:
        return getattr(self.library.embedder, "sha256", None)

    def names(self) -> list[str]:
        return [str(c["name"]) for c in self.library.collections()]

    def collections(self) -> list[dict[str, Any]]:
        return self.library.collections()

    def add(self, paths: list[Path], collection: str, progress: Callable[[Progress], None] | None) -> IngestReport:
        """Index ``paths`` into ``collection`` (incremental, resumable); audited."""
        report = self.library.add(paths, collection, progress)
        self._audit.record(
            "documents_indexed",
            collection=collection,
            paths=[str(p) for p in paths],
            indexed=report.files_indexed,
            removed=report.files_removed,
            skipped=len(report.skipped),
        )
        return report

    def sync(self, collection: str, progress: Callable[[Progress], None] | None) -> IngestReport:
        """Re-walk a collection's folders; audited."""
        report = self.library.sync(collection, progress)
        self._audit.record(
            "documents_synced", collection=collection, indexed=report.files_indexed, removed=report.files_removed
        )
        return report

    def status(self, collection: str) -> dict[str, Any]:
        """Every file of a collection, and every skipped one with why."""
        return {
            "name": collection,
            "documents": self.library.documents(collection),
            "skipped": self.library.skipped(collection),
        }

    def check(self, collection: str) -> None:
        """Raise the "no such collection" error (with the known names) unless it exists."""
        self.library.collection_id(collection)

    def remove(self, collection: str, path: Path | None, *, how: str) -> int:
        """Forget a collection, or one file or folder in it (the files are never touched);
        audited with how the user confirmed it."""
        count = self.library.remove(collection, path)
        self._audit.record(
            "documents_removed", collection=collection, path=str(path) if path else None, documents=count, how=how
        )
        return count

    def search(self, text: str, k: int, collections: list[str] | None, mode: str) -> list[Hit]:
        return self.library.search(text, k=k, collections=collections, mode=mode)


def build_tools_installed() -> bool:
    """Whether this installation can build models (the ``build`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "onnx"))
