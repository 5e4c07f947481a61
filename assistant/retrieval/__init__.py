"""Documents on disk: ingest (read, chunk, hash), index (SQLite FTS5 + vectors), search (rank, cite)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant.core.settings import Settings
    from assistant.retrieval.embed import Embedder
    from assistant.retrieval.index import Library
    from assistant.storage.database import Store


def open_library(settings: Settings, store: Store, embedder: Embedder | None = None) -> Library:
    """The document library over ``store``, with the embedding model when it is built
    (without it, search is BM25 only and says so)."""
    from assistant.retrieval.index import Library

    if embedder is None:
        from assistant.retrieval.embed import load_embedder

        embedder = load_embedder(settings)
    return Library(
        store,
        embedder,
        max_file_mb=settings.docs_max_file_mb,
        parse_timeout=settings.docs_parse_timeout,
    )
