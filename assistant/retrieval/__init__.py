"""Documents on disk: ingest (read, chunk, hash), index (SQLite FTS5 + vectors), search (rank, cite)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assistant.core.settings import Settings
    from assistant.retrieval.embed import Embedder, SealedEmbedder
    from assistant.retrieval.index import Library
    from assistant.storage.database import Store


class _Loader:
    """Loads the MiniLM embedder on first use; knows its identity (manifest hash) before."""

    def __init__(self, settings: Settings, sha256: str) -> None:
        self.settings = settings
        self.sha256 = sha256

    def __call__(self) -> Any:
        from assistant.retrieval.embed import load_embedder

        return load_embedder(self.settings)


def open_library(settings: Settings, store: Store, embedder: Embedder | SealedEmbedder | None = None, *, lazy: bool = False) -> Library:
    """The document library over ``store``: the static encoder (cheap vectors; numpy +
    tokenizers) and the MiniLM embedder when they are built. With ``lazy``, MiniLM is
    loaded only when a search needs it (``enclave docs search`` starts faster). Without
    either, search is BM25 only and says so."""
    from assistant.retrieval.index import Library
    from assistant.retrieval.static import load_static

    static = load_static(settings)
    source: Any = embedder
    if source is None:
        from assistant.core.records import MANIFEST_NAME
        from assistant.retrieval.embed import embedder_folder, load_embedder

        manifest = embedder_folder(settings) / MANIFEST_NAME
        if lazy and manifest.is_file():
            import json

            source = _Loader(settings, str(json.loads(manifest.read_text(encoding="utf-8")).get("sha256", "")))
        else:
            source = load_embedder(settings)
    index_dir = None if store.encrypted else settings.locations.data / "index"
    return Library(
        store,
        source,
        static=static,
        count_tokens=getattr(static, "count_tokens", None),
        max_file_mb=settings.docs_max_file_mb,
        parse_timeout=settings.docs_parse_timeout,
        index_dir=index_dir,
        rescore_top=settings.docs_rescore_top,
    )
