"""The document library: collections of files, indexed into the Enclave database.

Indexing is incremental and resumable (:mod:`assistant.retrieval.ingest`): every file is
whole in its transaction (document row, passages, FTS rows and static vectors together),
so a run killed at any moment leaves every file either fully indexed or not at all, and
the next run carries on where it stopped. A file whose size and modification time are
unchanged costs one ``stat``; a touched file is re-hashed and re-chunked only when its
content changed; files gone from a folder are removed from the index.

``docs add`` makes a collection searchable at the speed of parsing: BM25 (SQLite FTS5,
the collection inside the MATCH) plus a cheap static vector per passage
(:mod:`assistant.retrieval.static`). Contextual all-MiniLM-L6-v2 vectors are filled in
afterwards by the background embedder (:mod:`assistant.retrieval.backfill`). Search fuses
by reciprocal rank fusion: BM25, the MiniLM ranking of the passages that have a MiniLM
vector, and (at half weight, the measured best) the static ranking of those that do not
yet — so every passage is ranked by the best vector it has. With query-time re-scoring
(``rescore_top``, the setting ``docs_rescore_top``) the static-only passages of a search's
top get their MiniLM vector during that search, stored for the next ones.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from assistant.core.errors import EnclaveError
from assistant.core.files import sha256_of
from assistant.core.text import path_text
from assistant.retrieval import ann, textindex
from assistant.retrieval.chunker import LineMap, estimate_tokens
from assistant.retrieval.location import describe
from assistant.retrieval.names import NameIndex
from assistant.retrieval.parsers import file_kind
from assistant.retrieval.progress import Progress
from assistant.retrieval.vectors import (
    Matrices,
    find_space,
    passage_text,
    rescore,
    space_id,
    stream_search,
    vector_blob,
)
from assistant.storage.database import Store, StoreError, _now

if TYPE_CHECKING:
    from assistant.retrieval.static import StaticEncoder

log = logging.getLogger(__name__)

__all__ = ["DocumentsError", "Hit", "IngestReport", "Library", "Progress", "fts_query", "walk"]

#: Reciprocal rank fusion constant (the value from Cormack et al. 2009, used by most hybrid search).
RRF_K = 60
#: Candidates each ranking contributes before fusion.
CANDIDATES = 50
#: Weight of the static-vector ranking in the fusion: 0.5 beat 1 and 2 on the seeded
#: corpus (recall@5 0.700 vs 0.675 / 0.625) and tied on the real one (docs/scale-research.md §1).
STATIC_WEIGHT = 0.5


class Embedder(Protocol):
    """What the library needs from an embedding model (see assistant.retrieval.embed)."""

    sha256: str

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


class DocumentsError(EnclaveError):
    """A collection or document operation cannot be done."""


@dataclass
class Hit:
    """One ranked passage and exactly where it is."""

    chunk_id: int
    path: str
    page: int | None
    line_start: int
    line_end: int
    heading: str
    text: str
    score: float
    kind: str = "text"
    collection: str = ""
    #: Cosine similarity of the MiniLM vectors (what the evidence threshold is calibrated on).
    similarity: float | None = None
    #: Cosine similarity of the static vectors, for a passage without a MiniLM vector yet.
    static_similarity: float | None = None
    bm25_rank: int | None = None
    vector_rank: int | None = None
    document_id: int = 0
    title: str = ""
    page_label: str | None = None
    #: Source lines of each line of ``text`` (None for a blank line), when indexed with one.
    line_map: LineMap | None = None

    @property
    def unit(self) -> str:
        return "paragraphs" if self.kind == "docx" else "lines"

    def location(self, line_start: int | None = None, line_end: int | None = None) -> str:
        """``manual.pdf, page 46 (PDF page 58), lines 10–18`` (paragraphs for .docx; the
        section path for HTML); ``line_start``/``line_end`` narrow it to a sentence."""
        return describe(
            self.path,
            self.page,
            self.line_start if line_start is None else line_start,
            self.line_end if line_end is None else line_end,
            self.unit,
            page_label=self.page_label,
            heading=self.heading if self.kind == "html" else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "page": self.page,
            "page_label": self.page_label,
            "line_start": self.line_start,
            "line_end": self.line_end,
            "unit": self.unit,
            "location": self.location(),
            "heading": self.heading,
            "collection": self.collection,
            "score": round(self.score, 6),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "static_similarity": None if self.static_similarity is None else round(self.static_similarity, 4),
            "text": self.text,
        }


@dataclass
class IngestReport:
    collection: str
    files_seen: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    chunks: int = 0
    bytes: int = 0
    #: Static (cheap) vectors written; MiniLM vectors come later, in the background.
    vectors: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    #: False when nothing could be indexed into a collection that did not exist yet: it
    #: is then not created (an empty collection only hides the skip reasons).
    collection_exists: bool = True

    @property
    def nothing_indexed(self) -> bool:
        """Whether the run indexed, kept and removed nothing: it changed no collection."""
        return self.files_indexed == self.files_unchanged == self.files_removed == 0

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        data["notes"] = [{"path": p, "note": n} for p, n in self.notes]
        return data


class IndexingInterrupted(KeyboardInterrupt):
    """Indexing was interrupted (Ctrl-C, SIGINT); ``report`` is what was done by then.

    A KeyboardInterrupt still, so whatever stops on Ctrl-C stops on it too."""

    def __init__(self, report: IngestReport) -> None:
        super().__init__(report.collection)
        self.report = report


# --------------------------------------------------------------------------- walking
def walk(paths: Iterable[Path]) -> Iterator[tuple[Path, str | None]]:
    """Files under ``paths`` → (path, None) to index or (path, reason) to skip.

    Symlinks are followed only when they stay inside the folder being indexed (a link
    to a file already inside is skipped as a duplicate); folder links are never
    followed, so a symlink loop cannot trap the walk. Hidden files and folders
    (``.git``, ``.venv``…) are passed over silently.
    """
    for given in paths:
        given = Path(given).expanduser()
        if not os.path.lexists(given):
            yield given, "does not exist"
            continue
        if not given.is_dir():
            yield _check_file(given, given.parent.resolve())
            continue
        root = given.resolve()
        for folder, dirs, files in os.walk(root, followlinks=False, onerror=None):
            base = Path(folder)
            if not os.access(base, os.R_OK | os.X_OK):
                yield base, "permission denied (folder)"
                continue
            keep = []
            for name in sorted(dirs):
                if name.startswith("."):
                    continue
                sub = base / name
                if sub.is_symlink():
                    yield sub, "symlink to a folder (not followed, so links cannot loop)"
                else:
                    keep.append(name)
            dirs[:] = keep
            for name in sorted(files):
                if name.startswith("."):
                    continue
                yield _check_file(base / name, root)


def _check_file(path: Path, root: Path) -> tuple[Path, str | None]:
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return path, "broken or looping symlink"
        if not target.is_relative_to(root):
            return path, f"symlink leading outside {root} (not followed)"
        if target.is_dir():
            return path, "symlink to a folder (not followed, so links cannot loop)"
        return path, f"symlink to {target.relative_to(root)} {LINKED}"
    if not path.is_file():
        return path, "not a regular file"
    if not os.access(path, os.R_OK):
        return path, "permission denied"
    kind, why = file_kind(path)
    if kind is None:
        return path, why
    return normal_path(path), None


stored_path = path_text


def real_path(stored: str) -> Path:
    """The file a stored path names (the inverse of :func:`stored_path` for the roots)."""
    path = Path(stored)
    if "\\x" in stored and not os.path.lexists(path):
        raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), stored.encode("utf-8"))
        candidate = Path(os.fsdecode(raw))
        if os.path.lexists(candidate):
            return candidate
    return path


def normal_path(path: Path | str) -> Path:
    """One spelling per file: absolute, ``..`` and ``.`` folded, folders resolved through
    symlinks (a file that is itself a symlink keeps its own name: :func:`walk` decides
    about links), so ``docs/../docs/a.txt`` and a folder reached through a link index once."""
    absolute = Path(os.path.abspath(Path(path).expanduser()))
    if absolute.is_dir():
        return absolute.resolve()
    return absolute.parent.resolve() / absolute.name


def _under(prefix: str) -> tuple[str, str]:
    """Bounds of a range query for the paths below folder ``prefix``: ``path >= lo and path < hi``.

    A range, not ``LIKE 'prefix/%'``: ``_`` and ``%`` are wildcards in LIKE, so removing
    ``…/a_b`` used to delete the documents of ``…/a1b`` too. ``0`` is the character after
    ``/``, so the range holds exactly the strings that start with ``prefix/``."""
    base = prefix.rstrip("/")
    return base + "/", base + "0"


#: How a skipped symlink to a file inside the folder ends its reason (its target is indexed).
LINKED = "(indexed once, under that name)"


def _link_outcome(link: Path, reason: str, indexed: set[str], skipped: dict[str, str]) -> str:
    """The reason shown for a symlink to a file in the folder, once it is known whether
    that file was indexed: a link is only "indexed once" when its target really is."""
    target = os.path.realpath(link)
    if target in indexed:
        return reason
    name = Path(target).name
    if target in skipped:
        return f"symlink to {name}, which is not indexed either: {skipped[target]}"
    return f"symlink to {name}, which is not indexed (a hidden file, or not among the files given)"



_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its me my no not of on or "
    "our should so than that the their them then there these they this to was we what when where which who why "
    "will with you your".split()
)


def query_words(text: str) -> list[str]:
    """The distinct words of a question that BM25 looks for: stop words dropped (all kept
    when nothing else is left), at most 64."""
    words = [w.lower() for w in _WORD.findall(text)]
    content = [w for w in dict.fromkeys(words) if w not in _STOP]
    return (content or list(dict.fromkeys(words)))[:64]


def fts_query(text: str) -> str | None:
    """A safe FTS5 query for free text: each distinct word quoted, joined with OR
    (BM25 then rewards passages that match more and rarer words)."""
    chosen = query_words(text)
    if not chosen:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in chosen)


# --------------------------------------------------------------------------- library
class _Target:
    """The collection an indexing run writes to, created when the first file is indexed."""

    def __init__(self, library: Library, name: str) -> None:
        self.library = library
        self.name = name
        self.roots: list[Path] = []
        row = library.db.execute("select id from collections where name = ?", [name]).fetchone()
        self.cid: int | None = int(row[0]) if row else None

    def id(self) -> int:
        if self.cid is None:
            with self.library.store.transaction() as db:
                # Another window may create the same collection at the same moment.
                db.execute("insert or ignore into collections (name, created_at) values (?, ?)", [self.name, _now()])
                self.cid = int(db.execute("select id from collections where name = ?", [self.name]).fetchone()[0])
                for root in self.roots:
                    db.execute(
                        "insert or ignore into collection_roots (collection_id, path, added_at) values (?, ?, ?)",
                        [self.cid, stored_path(root), _now()],
                    )
        return self.cid


class Library:
    """Collections of documents in the store, and search over them.

    ``static`` is the cheap encoder (numpy + tokenizers); ``embedder`` the contextual
    MiniLM one, or a zero-argument callable that loads it on first use (so a search
    whose passages all lack MiniLM vectors never loads onnxruntime)."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder | Callable[[], Embedder | None] | None = None,
        *,
        static: StaticEncoder | None = None,
        count_tokens: Callable[[str], int] | None = None,
        max_file_mb: int = 200,
        parse_timeout: float = 60.0,
        parser_memory_mb: int = 1024,
        index_dir: Path | None = None,
        rescore_top: int = 0,
    ) -> None:
        self.store = store
        self._embedder: Embedder | None = None
        self._load_embedder: Callable[[], Embedder | None] | None = None
        if callable(embedder) and not hasattr(embedder, "embed"):
            self._load_embedder = embedder
        else:
            self._embedder = embedder  # type: ignore[assignment]
        self.static = static
        self.count_tokens = count_tokens or getattr(embedder, "count_tokens", None) or estimate_tokens
        self.max_file_mb = max_file_mb
        self.parse_timeout = parse_timeout
        self.parser_memory_mb = parser_memory_mb
        #: Where derived index files live (ANN); None: none are kept (encryption at rest,
        #: or an in-memory test store).
        self.index_dir = index_dir
        self._matrices = Matrices()
        self._names: tuple[tuple[Any, ...], NameIndex] | None = None
        self._ann: ann.AnnIndexes | None = None
        self._text: textindex.TextIndex | None = None
        #: Rank by the static vectors alone (BM25 + the cheap query vector: no onnxruntime,
        #: ~2 s less for one `enclave docs search` process); front ends that hold a model
        #: anyway use the best vectors.
        self.cheap_queries = False
        #: Query-time re-scoring: when the fused top this many passages holds passages
        #: that have only the static vector, MiniLM embeds exactly those now (at most this
        #: many per search), stores their vectors (the background embedder skips them, the
        #: next search is exact) and the search fuses again. 0: off. The passages users
        #: look at become exact first (docs/documents-at-scale.md: recall and latency).
        self.rescore_top = rescore_top
        #: Passages the last search embedded with MiniLM (re-scoring), for measurements.
        self.last_rescored = 0
        self._query_vector: tuple[str, np.ndarray] | None = None

    @property
    def embedder(self) -> Embedder | None:
        """The MiniLM embedder, loaded on first use when it was given as a loader."""
        if self._embedder is None and self._load_embedder is not None:
            loader, self._load_embedder = self._load_embedder, None
            self._embedder = loader()
        return self._embedder

    @embedder.setter
    def embedder(self, value: Embedder | None) -> None:
        self._embedder, self._load_embedder = value, None
        self._query_vector = None  # a query vector belongs to the model that made it

    @property
    def has_embedder(self) -> bool:
        """Whether MiniLM vectors are available (without loading the model)."""
        return self._embedder is not None or self._load_embedder is not None

    @property
    def db(self) -> Any:
        return self.store.db

    # -- collections
    def collections(self) -> list[dict[str, Any]]:
        """Every collection with its file, passage and skip counts, and its folders."""
        rows = self.db.execute(
            "select c.id, c.name, c.created_at, "
            "(select count(*) from documents d where d.collection_id = c.id), "
            "(select coalesce(sum(d.chunks), 0) from documents d where d.collection_id = c.id), "
            "(select coalesce(sum(d.size), 0) from documents d where d.collection_id = c.id), "
            "(select count(*) from document_skips s where s.collection_id = c.id), "
            "(select max(d.indexed_at) from documents d where d.collection_id = c.id) "
            "from collections c order by c.name"
        ).fetchall()
        out = []
        for cid, name, created, files, chunks, size, skipped, indexed in rows:
            roots = [r[0] for r in self.db.execute("select path from collection_roots where collection_id = ?", [cid])]
            out.append(
                {
                    "name": name,
                    "files": files,
                    "chunks": chunks,
                    "bytes": size,
                    "skipped": skipped,
                    "created_at": created,
                    "indexed_at": indexed,
                    "roots": roots,
                }
            )
        return out

    def collection_id(self, name: str, create: bool = False) -> int:
        row = self.db.execute("select id from collections where name = ?", [name]).fetchone()
        if row:
            return int(row[0])
        if not create:
            known = [c["name"] for c in self.collections()]
            raise DocumentsError(
                f"There is no document collection named {name!r}.",
                f"Collections: {', '.join(known)}." if known else "Add documents with `enclave docs add PATH`.",
            )
        with self.store.transaction() as db:
            # Another window may create the same collection at the same moment.
            db.execute("insert or ignore into collections (name, created_at) values (?, ?)", [name, _now()])
            return int(db.execute("select id from collections where name = ?", [name]).fetchone()[0])

    def names(self, wanted: Sequence[str] | None) -> list[str]:
        """Validate collection names; ``None`` or ``["all"]`` means every collection."""
        known = [str(r[0]) for r in self.db.execute("select name from collections order by name")]
        if not wanted or list(wanted) == ["all"]:
            return known
        for name in wanted:
            if name not in known:
                self.collection_id(name)  # raises, naming the collections there are
        return list(wanted)

    def skipped(self, collection: str) -> list[dict[str, Any]]:
        cid = self.collection_id(collection)
        return [
            {"path": p, "reason": r, "at": a}
            for p, r, a in self.db.execute(
                "select path, reason, at from document_skips where collection_id = ? order by path", [cid]
            )
        ]

    def documents(self, collection: str) -> list[dict[str, Any]]:
        cid = self.collection_id(collection)
        cols = ["path", "kind", "size", "chunks", "sha256", "indexed_at", "note"]
        return [
            dict(zip(cols, row, strict=True))
            for row in self.db.execute(
                f"select {', '.join(cols)} from documents where collection_id = ? order by path", [cid]
            )
        ]

    def remove(self, collection: str, path: Path | None = None) -> int:
        """Forget a whole collection, or the documents at/under ``path`` in it. Returns
        how many documents were removed. The files on disk are never touched."""
        cid = self.collection_id(collection)
        with self.store.transaction() as db:
            if path is None:
                ids = [r[0] for r in db.execute("select id from documents where collection_id = ?", [cid])]
            else:
                target = stored_path(normal_path(path))
                low, high = _under(target)
                ids = [
                    r[0]
                    for r in db.execute(
                        "select id from documents where collection_id = ? and (path = ? or (path >= ? and path < ?))",
                        [cid, target, low, high],
                    )
                ]
            for doc_id in ids:
                self._delete_document(db, doc_id)
            if path is None:
                db.execute("delete from document_skips where collection_id = ?", [cid])
                db.execute("delete from collection_roots where collection_id = ?", [cid])
                db.execute("delete from collections where id = ?", [cid])
            else:
                db.execute(
                    "delete from collection_roots where collection_id = ? and path = ?",
                    [cid, stored_path(normal_path(path))],
                )
        self._matrices.clear()
        return len(ids)

    @staticmethod
    def _delete_document(db: Any, doc_id: int) -> None:
        """Triggers delete its passages first (their FTS rows and vectors with them, and a
        tombstone each for the derived indexes: assistant/storage/scale_schema.py)."""
        db.execute("delete from documents where id = ?", [doc_id])

    # -- indexing
    def sync(self, collection: str, progress: Callable[[Progress], None] | None = None) -> IngestReport:
        """Re-walk every folder and file the collection was built from."""
        cid = self.collection_id(collection)
        roots = [
            real_path(r[0])
            for r in self.db.execute("select path from collection_roots where collection_id = ?", [cid])
        ]
        return self.add(roots, collection, progress)

    def add(
        self,
        paths: Sequence[Path],
        collection: str = "default",
        progress: Callable[[Progress], None] | None = None,
    ) -> IngestReport:
        """Index files and folders into ``collection`` (see the module docstring). The
        collection is searchable when this returns; MiniLM vectors are the background's.

        A collection that does not exist yet is created with the first file indexed
        into it: when every file is skipped, nothing is created and the report says
        why (``collection_exists`` false).

        Interrupted (Ctrl-C), it raises :class:`IndexingInterrupted` with the report so
        far: each file is written whole in its transaction, so the files indexed by then
        are kept, and the same call again carries on from there."""
        started = time.monotonic()
        report = IngestReport(collection)
        try:
            self._add(paths, report, progress)
        except KeyboardInterrupt as exc:
            if isinstance(exc, IndexingInterrupted):
                raise
            report.collection_exists = self._collection_row(collection) is not None
            raise IndexingInterrupted(report) from exc
        finally:
            report.seconds = time.monotonic() - started
            self._matrices.clear()
        return report

    def _collection_row(self, name: str) -> Any:
        return self.db.execute("select id from collections where name = ?", [name]).fetchone()

    def _add(self, paths: Sequence[Path], report: IngestReport, progress: Callable[[Progress], None] | None) -> None:
        from assistant.retrieval.ingest import IngestRun

        target = _Target(self, report.collection)
        roots = [normal_path(p) for p in paths]
        target.roots = [r for r in roots if r.exists()]
        todo: list[tuple[Path, int]] = []
        links: list[tuple[Path, str]] = []
        seen: set[str] = set()
        for path, reason in walk(roots):
            if reason is not None:
                if reason.endswith(LINKED) and path.is_symlink():
                    links.append((path, reason))
                else:
                    report.skipped.append((stored_path(path), reason))
                continue
            key = stored_path(path)
            if key in seen:
                continue
            seen.add(key)
            try:
                todo.append((path, path.stat().st_size))
            except OSError as exc:
                report.skipped.append((stored_path(path), f"cannot be read ({exc.strerror})"))
        report.files_seen = len(todo)
        state = Progress(0, len(todo), 0, sum(size for _, size in todo), "")
        run = IngestRun(self, target, report, state, progress)
        kept = run.run(todo)
        skipped = {os.path.realpath(real_path(p)): r for p, r in report.skipped}
        for link, reason in links:
            report.skipped.append((stored_path(link), _link_outcome(link, reason, run.indexed_real, skipped)))
        if target.cid is not None:
            report.files_removed = self._remove_missing(target.cid, roots, kept)
        if target.cid is not None and not report.nothing_indexed:
            # A run that indexed, kept and removed nothing leaves the collection as it was:
            # no root for a path that does not exist, no skips that only say so.
            with self.store.transaction() as db:
                for root in target.roots:
                    db.execute(
                        "insert or ignore into collection_roots (collection_id, path, added_at) values (?, ?, ?)",
                        [target.cid, stored_path(root), _now()],
                    )
                for path_text, reason in report.skipped:
                    db.execute(
                        "insert or replace into document_skips (collection_id, path, reason, at) values (?, ?, ?, ?)",
                        [target.cid, path_text, reason, _now()],
                    )
        report.collection_exists = target.cid is not None
        if self.static is not None and target.cid is not None:  # passages indexed before the static table existed
            from assistant.retrieval.backfill import Backfill

            report.vectors += Backfill(self, self.static, "static").run(batch=2048)


    def _remove_missing(self, cid: int, roots: list[Path], seen: set[str]) -> int:
        """Documents under ``roots`` whose files are gone (or now skipped) are removed."""
        removed = 0
        with self.store.transaction() as db:
            for root in roots:
                prefix = stored_path(root)
                low, high = _under(prefix)
                rows = db.execute(
                    "select id, path from documents where collection_id = ? and (path = ? or (path >= ? and path < ?))",
                    [cid, prefix, low, high],
                ).fetchall()
                for doc_id, path in rows:
                    if path not in seen:
                        self._delete_document(db, doc_id)
                        removed += 1
        return removed

    def vector_progress(self) -> dict[str, Any]:
        """How many passages have which vectors, and what the background embedder is doing."""
        from assistant.retrieval.backfill import vector_progress

        return vector_progress(self)

    def fill_vectors(self, limit: int | None = None, progress: Callable[[Progress], None] | None = None) -> int:
        """Compute missing MiniLM vectors now, in this process (the background embedder
        does the same in small, interruptible batches). Returns how many were written.
        ``progress`` gets a ``vectors`` phase whose "bytes" are passages."""
        from assistant.retrieval.backfill import Backfill

        if self.embedder is None:
            return 0
        filler = Backfill(self, self.embedder)
        state: Progress | None = None
        if progress is not None:
            counts = self.vector_progress()
            missing = counts["passages"] - counts["minilm"]
            state = Progress(0, 0, 0, missing if limit is None else min(limit, missing), "", phase="vectors")

        def report(n: int) -> None:
            if state is not None and progress is not None and n > 0:
                state.advance(0, n, n)
                progress(state)

        done = filler.run(limit=limit, report=report)
        self._matrices.clear()
        return done

    # -- scope and freshness
    def scope(self, collections: Sequence[str] | None, patterns: Sequence[str]) -> list[int]:
        """Ids of the documents of ``collections`` whose path matches one of ``patterns``:
        a glob matched against the whole path or its last parts (``GPL-*``,
        ``licenses/*``, ``*.pdf``), or a file or folder path. Raises
        :class:`DocumentsError` when nothing matches."""
        cids = [self.collection_id(n) for n in self.names(collections)]
        marks = ",".join("?" * len(cids)) or "null"
        rows = self.db.execute(f"select id, path from documents where collection_id in ({marks})", cids).fetchall()
        wanted: list[int] = []
        for doc_id, path in rows:
            if any(_path_matches(path, pattern) for pattern in patterns):
                wanted.append(int(doc_id))
        if not wanted:
            elsewhere = sorted(
                {
                    str(name)
                    for path, name in self.db.execute(
                        "select d.path, c.name from documents d join collections c on c.id = d.collection_id"
                    ).fetchall()
                    if any(_path_matches(path, pattern) for pattern in patterns)
                }
            )
            if elsewhere:
                raise DocumentsError(
                    f"No file of {', '.join(self.names(collections))} matches --path {' '.join(patterns)}; "
                    f"it is indexed in {', '.join(elsewhere)}.",
                    f"Ask with --docs {elsewhere[0]} (or --docs {','.join([*self.names(collections), elsewhere[0]])}).",
                )
            raise DocumentsError(
                f"No indexed file matches --path {' '.join(patterns)}.",
                "Give a glob such as 'GPL-*' or 'manuals/*.pdf', or a file or folder path; "
                "`enclave docs status` lists the indexed files.",
            )
        return wanted

    def freshness(self, document_ids: Iterable[int]) -> list[FileState]:
        """Whether each document's file is as it was indexed: size and modification
        time first (one ``stat``), the sha256 only when they differ."""
        out: list[FileState] = []
        for doc_id in dict.fromkeys(document_ids):
            row = self.db.execute(
                "select d.path, d.size, d.mtime_ns, d.sha256, c.name from documents d "
                "join collections c on c.id = d.collection_id where d.id = ?",
                [doc_id],
            ).fetchone()
            if row is None:
                continue
            path, size, mtime_ns, digest, collection = row
            try:
                stat = os.stat(path)
            except OSError:
                out.append(FileState(doc_id, path, collection, "missing"))
                continue
            if stat.st_size == size and stat.st_mtime_ns == mtime_ns:
                out.append(FileState(doc_id, path, collection, "fresh"))
                continue
            try:
                same = stat.st_size == size and sha256_of(Path(path)) == digest
            except OSError:
                out.append(FileState(doc_id, path, collection, "missing"))
                continue
            if same:  # touched, not changed: remember the new time, nothing to re-read
                with self.store.transaction() as db:
                    db.execute("update documents set mtime_ns = ? where id = ?", [stat.st_mtime_ns, doc_id])
            out.append(FileState(doc_id, path, collection, "fresh" if same else "changed"))
        return out

    def refresh(self, states: Sequence[FileState]) -> IngestReport:
        """Re-index changed files and forget missing ones, each in its collection."""
        report = IngestReport(", ".join(sorted({s.collection for s in states})))
        started = time.monotonic()
        from assistant.retrieval.ingest import IngestRun

        changed: dict[str, list[tuple[Path, int]]] = {}
        for state in states:
            if state.state == "missing":
                with self.store.transaction() as db:
                    self._delete_document(db, state.document_id)
                report.files_removed += 1
            elif state.state == "changed":
                path = real_path(state.path)
                try:
                    size = path.stat().st_size
                except OSError as exc:
                    report.skipped.append((state.path, f"cannot be read ({exc.strerror})"))
                    continue
                changed.setdefault(state.collection, []).append((path, size))
        for collection, todo in changed.items():
            progress = Progress(0, len(todo), 0, sum(size for _, size in todo), "")
            IngestRun(self, _Target(self, collection), report, progress, None).run(todo)
        unreadable = {path for path, _ in report.skipped}
        if unreadable:
            # A changed file that can no longer be read must not keep its old passages.
            with self.store.transaction() as db:
                for state in states:
                    if state.path in unreadable:
                        self._delete_document(db, state.document_id)
        report.seconds = time.monotonic() - started
        self._matrices.clear()
        return report

    # -- search
    def search(
        self,
        query: str,
        k: int = 5,
        collections: Sequence[str] | None = None,
        mode: str = "fused",
        paths: Sequence[str] | None = None,
        documents: Sequence[int] | None = None,
    ) -> list[Hit]:
        """The ``k`` best passages for ``query``: ``bm25``, ``vector`` or ``fused`` (RRF).
        ``documents``: only these document ids (the ones a question names), within ``paths``.

        Vector rankings: MiniLM for the passages that have a MiniLM vector, static for
        those that do not yet (weight :data:`STATIC_WEIGHT`). Without any vectors,
        ``fused`` is BM25 alone and ``vector`` is refused. ``paths`` limits the search
        to the files they match (:meth:`scope`). In fused mode, documents the query
        names by file name or title ("the LGPL 2.1", :mod:`assistant.retrieval.names`)
        get one more ranking: BM25 over their passages alone, fused like the others.
        With :attr:`rescore_top`, the static-only passages of the fused top get their
        MiniLM vector now (:meth:`_rescore`).
        """
        if mode not in ("bm25", "vector", "fused"):
            raise DocumentsError(f"Unknown search mode {mode!r}.", "Use bm25, vector or fused.")
        if mode == "vector" and not self.has_embedder and self.static is None:
            raise DocumentsError(
                "Vector search needs the embedding model, which is not installed.",
                "Build it with `enclave models build all-minilm-l6-v2`.",
            )
        known = {str(r[1]): int(r[0]) for r in self.db.execute("select id, name from collections")}
        names = self.names(collections) if collections and list(collections) != ["all"] else list(known)
        if not names:
            return []
        every = set(names) == set(known)
        cids = [known[n] for n in names]
        scoped = None if every else cids
        docs = self.scope(names, paths) if paths else None
        if documents is not None:
            docs = [d for d in documents if docs is None or d in docs] or docs
        lexical = self._bm25(query, scoped, docs) if mode in ("bm25", "fused") else []
        contextual: list[tuple[int, float]] = []
        cheap: list[tuple[int, float]] = []
        if mode in ("vector", "fused"):
            contextual, cheap = self._dense(query, scoped, docs)
        boost: list[tuple[int, float]] = []
        if mode == "fused":
            mentioned = [d for d in self.named(query, cids) if docs is None or d in docs]
            if mentioned:
                boost = self._bm25(query, scoped, mentioned)
        self.last_rescored = 0
        if mode == "bm25":
            ranked = [(cid, -s) for cid, s in lexical]
        else:
            ranked = _fuse(lexical, contextual, cheap, boost)
            if self.rescore_top > 0 and not self.cheap_queries:
                contextual, cheap, ranked = self._rescore(query, ranked, lexical, contextual, cheap, boost)
        top = ranked[:k]
        bm25_rank = {chunk_id: i + 1 for i, (chunk_id, _) in enumerate(lexical)}
        vector_rank = {chunk_id: i + 1 for i, (chunk_id, _) in enumerate(contextual)}
        static_rank = {chunk_id: i + 1 for i, (chunk_id, _) in enumerate(cheap)}
        similarity = dict(contextual)
        static_similarity = dict(cheap)
        hits = self._hits([chunk_id for chunk_id, _ in top])
        for hit in hits:
            hit.score = float(dict(top)[hit.chunk_id])
            hit.similarity = similarity.get(hit.chunk_id)
            hit.static_similarity = static_similarity.get(hit.chunk_id)
            hit.bm25_rank = bm25_rank.get(hit.chunk_id)
            hit.vector_rank = vector_rank.get(hit.chunk_id) or static_rank.get(hit.chunk_id)
        return hits

    def _rescore(
        self,
        query: str,
        ranked: list[tuple[int, float]],
        lexical: list[tuple[int, float]],
        contextual: list[tuple[int, float]],
        cheap: list[tuple[int, float]],
        boost: list[tuple[int, float]],
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[tuple[int, float]]]:
        """Give the fused top :attr:`rescore_top` passages that have only a static vector
        their MiniLM vector now, store it, and fuse again with it (see :attr:`rescore_top`).

        Returns the new (contextual, static, fused) rankings. The contextual ranking stays
        exact: it was the best :data:`CANDIDATES` of the passages that had a MiniLM vector,
        so the best of those plus the new ones are among the two lists. A passage moves
        from the static ranking to the contextual one, as in the next search. The fusion
        is :meth:`_estimated`'s: a few re-scored passages alone make a poor ranking."""
        ranked = self._estimated(query, lexical, contextual, cheap, boost) or ranked
        budget = self.rescore_top
        # Rounds: the fused top can change once the static ranking shrinks; each round
        # looks at the top again, until it holds no static-only passage or the budget is spent.
        while budget > 0:
            wanted = [chunk_id for chunk_id, _ in ranked[: self.rescore_top]]
            missing = self._without_minilm(wanted)[:budget]
            if not missing:
                break
            found = self._embed_passages(query, missing)
            if not found:
                break
            budget -= len(missing)
            self.last_rescored += len(missing)
            done = {chunk_id for chunk_id, _ in found}
            contextual = sorted(contextual + found, key=lambda item: -item[1])[:CANDIDATES]
            cheap = [(i, s) for i, s in cheap if i not in done]
            ranked = self._estimated(query, lexical, contextual, cheap, boost) or _fuse(
                lexical, contextual, cheap, boost
            )
        return contextual, cheap, ranked

    def _estimated(
        self,
        query: str,
        lexical: list[tuple[int, float]],
        contextual: list[tuple[int, float]],
        cheap: list[tuple[int, float]],
        boost: list[tuple[int, float]],
    ) -> list[tuple[int, float]] | None:
        """Fusion with one contextual ranking of every candidate: the real MiniLM
        similarity where a passage has its vector, and for the static-only ones an
        estimate from their static similarity, ``a * static + b``, fitted (least squares)
        on this query's passages that have both. None when there is nothing to estimate
        or too little to fit (then the plain fusion stands).

        Why: right after `docs add` the contextual ranking holds only the handful of
        passages re-scored by this search, so their MiniLM ranks 1..N say little against
        BM25's ranks over the whole collection; placed among the estimated rest, they rank
        as they would among every MiniLM vector. Seeded corpus, top 20 re-scored:
        recall@5 0.762 with the plain fusion, 0.800 with the estimate (full vectors: 0.838);
        docs/documents-at-scale.md."""
        if not cheap or len(contextual) < 3 or self.static is None:
            return None
        space = find_space(self.db, self.static.sha256)
        if space is None:
            return None
        both = dict(rescore(self.db, space, self.static.embed([query])[0], [i for i, _ in contextual]))
        pairs = np.array([(both[i], s) for i, s in contextual if i in both], dtype=np.float64)
        if len(pairs) < 3 or float(pairs[:, 0].std()) < 1e-6:
            return None
        slope, intercept = np.polyfit(pairs[:, 0], pairs[:, 1], 1)
        if not slope > 0:  # no agreement between the two spaces for this query: do not guess
            return None
        estimate = contextual + [(i, float(slope * s + intercept)) for i, s in cheap]
        merged = sorted(estimate, key=lambda item: -item[1])[:CANDIDATES]
        return _fuse(lexical, merged, [], boost)

    def _without_minilm(self, chunk_ids: list[int]) -> list[int]:
        """Those of ``chunk_ids`` (order kept) that have no MiniLM vector yet."""
        if not chunk_ids or not self.has_embedder:
            return []
        space, _ = self._spaces()  # without loading the model: a complete space needs none
        if space is None:
            return list(chunk_ids)
        if self._complete(space):
            return []
        marks = ",".join("?" * len(chunk_ids))
        have = {
            int(r[0])
            for r in self.db.execute(
                f"select chunk_id from passage_vectors where space = ? and chunk_id in ({marks})", [space, *chunk_ids]
            )
        }
        return [i for i in chunk_ids if i not in have]

    def _embed_passages(self, query: str, chunk_ids: list[int]) -> list[tuple[int, float]]:
        """MiniLM vectors for ``chunk_ids``, stored (``insert or ignore``: the background
        embedder may have written one meanwhile, and skips those stored here); returns
        (id, cosine with the query). A database that stays busy or is read-only costs
        the storing only: the vectors still rank this search."""
        embedder = self.embedder
        if embedder is None:
            return []
        marks = ",".join("?" * len(chunk_ids))
        rows = self.db.execute(f"select id, heading, text from chunks where id in ({marks})", chunk_ids).fetchall()
        if not rows:
            return []
        vectors = np.asarray(embedder.embed([passage_text(r[1], r[2]) for r in rows]), dtype=np.float32)
        q = self._minilm_query(query)
        try:
            with self.store.transaction() as tx:
                space = space_id(tx, embedder.sha256, "minilm", int(vectors.shape[1]))
                alive = {r[0] for r in tx.execute(f"select id from chunks where id in ({marks})", chunk_ids)}
                tx.conn.executemany(
                    "insert or ignore into passage_vectors (space, chunk_id, vector) values (?, ?, ?)",
                    [(space, r[0], vector_blob(v)) for r, v in zip(rows, vectors, strict=True) if r[0] in alive],
                )
        except StoreError as exc:
            log.warning("query-time MiniLM vectors not stored: %s", exc.message)
        # Stored as float16: rank with the same rounding the next search will see.
        rounded = vectors.astype(np.float16).astype(np.float32)
        return [(int(r[0]), float(v @ q)) for r, v in zip(rows, rounded, strict=True)]

    def _minilm_query(self, query: str) -> np.ndarray:
        """The MiniLM vector of ``query`` (one per search: kept for the last query)."""
        if self._query_vector is None or self._query_vector[0] != query:
            embedder = self.embedder
            assert embedder is not None
            self._query_vector = (query, np.asarray(embedder.embed([query])[0], dtype=np.float32))
        return self._query_vector[1]

    def named(self, query: str, cids: list[int]) -> dict[int, Any]:
        """Documents of ``cids`` that ``query`` names (id → "version" or "plain")."""
        # The names are parsed once per state of the documents table (another process may
        # add or re-index files: the fingerprint sees it), not once per search.
        fingerprint = tuple(
            self.db.execute("select count(*), max(id), max(indexed_at) from documents").fetchone() or ()
        )
        if self._names is None or self._names[0] != fingerprint:
            rows = self.db.execute("select id, collection_id, path, coalesce(title, '') from documents")
            self._names = (fingerprint, NameIndex((int(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in rows))
        return dict(self._names[1].named(query, set(cids)))

    def _bm25(
        self, query: str, cids: list[int] | None, docs: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """BM25 over the passages of ``cids`` (None: every collection) and of the documents
        ``docs``, when given (``--path``, a named document). The collection is a
        column of the FTS5 index holding one token per passage (``c<id>``), so a filter is
        part of the MATCH and FTS5 intersects posting lists instead of ranking every match
        and filtering after (100k passages, a 1 % collection: 847 -> 45 ms p50;
        docs/scale-research.md §3). The collection column has weight 0 in bm25."""
        match = fts_query(query)
        if match is None:
            return []
        # The tantivy index (when there is one) serves every query: unlike the ANN graph its
        # collection filter is part of the query, so a small collection costs no more.
        if self.index_dir is not None:
            if self._text is None:
                self._text = textindex.TextIndex(self.index_dir)
            if cids is not None:
                tail_match = "collection : (" + " OR ".join(f'"c{int(c)}"' for c in cids) + f") AND ({match})"
            else:
                tail_match = match
            found = self._text.search(self.db, query_words(query), cids, CANDIDATES, tail_match, docs)
            if found is not None:
                return found
        if cids is not None:
            match = "collection : (" + " OR ".join(f'"c{int(c)}"' for c in cids) + f") AND ({match})"
        if docs is not None:
            rows = self.db.execute(
                "select chunks_fts.rowid, bm25(chunks_fts, 0.5, 1.0, 0.0) as rank from chunks_fts "
                "join chunks c on c.id = chunks_fts.rowid "
                f"where chunks_fts match ? and c.document_id in ({','.join('?' * len(docs))}) order by rank limit ?",
                [match, *docs, CANDIDATES],
            ).fetchall()
        else:
            rows = self.db.execute(
                "select rowid, bm25(chunks_fts, 0.5, 1.0, 0.0) as rank from chunks_fts "
                "where chunks_fts match ? order by rank limit ?",
                [match, CANDIDATES],
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def _spaces(self) -> tuple[int | None, int | None]:
        """(MiniLM space id, static space id) present in the database, without loading a model."""
        minilm = None
        if self.has_embedder:
            sha = self._embedder.sha256 if self._embedder is not None else self._embedder_sha256()
            minilm = find_space(self.db, sha) if sha else None
        static = find_space(self.db, self.static.sha256) if self.static is not None else None
        return minilm, static

    def _embedder_sha256(self) -> str | None:
        """The MiniLM identity from its manifest (the loader sets ``embedder_sha256``)."""
        return getattr(self._load_embedder, "sha256", None)

    def _dense(
        self, query: str, cids: list[int] | None, docs: Sequence[int] | None = None
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(MiniLM ranking of the passages with a MiniLM vector, static ranking of the rest)."""
        minilm, static = self._spaces()
        if self.cheap_queries:
            minilm = None
        contextual: list[tuple[int, float]] = []
        if minilm is not None and self._has_vectors(minilm):
            embedder = self.embedder
            if embedder is not None:
                q = self._minilm_query(query)
                contextual = self._space_search(minilm, q, cids, docs=docs)
            else:
                minilm = None
        cheap: list[tuple[int, float]] = []
        if minilm is not None and self._complete(minilm):
            static = None  # every passage has its MiniLM vector: nothing is left to rank by the static one
        if static is not None and self.static is not None:
            q = self.static.embed([query])[0]
            if q.any():
                cheap = self._space_search(static, q, cids, without=minilm, docs=docs)
        return contextual, cheap

    def _complete(self, space: int) -> bool:
        """Whether the background embedder has passed every passage id ever given (O(1))."""
        row = self.db.execute(
            "select (select value from counters where name = ?) >= (select value from counters where name = 'chunks')",
            [f"backfill:{space}"],
        ).fetchone()
        return bool(row and row[0])

    def _has_vectors(self, space: int) -> bool:
        return self.db.execute("select 1 from passage_vectors where space = ? limit 1", [space]).fetchone() is not None

    def _space_search(
        self,
        space: int,
        query: np.ndarray,
        cids: list[int] | None,
        without: int | None = None,
        docs: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        """Exact search for small sets; the ANN index (plus the exact tail it does not cover
        yet) for large ones, when a valid index file exists (:mod:`assistant.retrieval.ann`)."""
        if self.index_dir is not None and (cids is None or self._passages_in(cids) >= ann.MIN_ENTRIES):
            if self._ann is None:
                self._ann = ann.AnnIndexes(self.index_dir)
            found = self._ann.get(self.db, space)
            if found is not None:
                tail = self._matrices.get(self.db, space, cids, without, above=int(found[1]["covered"]), docs=docs)
                return self._ann.search(self.db, space, query, CANDIDATES, cids, without, found, tail, docs)
        size = self._passages_in(cids) if cids is not None else self._passages_in(self._all_collections())
        if size > ann.MIN_ENTRIES * 5:
            # Large and no index (yet, or encrypted at rest): bounded memory, not a 1.5 GB matrix.
            return stream_search(self.db, space, query, CANDIDATES, cids, without, docs=docs)
        return self._matrices.search(self.db, space, query, CANDIDATES, cids, without, docs=docs)

    def _all_collections(self) -> list[int]:
        return [int(r[0]) for r in self.db.execute("select id from collections")]

    def _passages_in(self, cids: list[int]) -> int:
        marks = ",".join("?" * len(cids))
        row = self.db.execute(f"select coalesce(sum(chunks), 0) from documents where collection_id in ({marks})", cids)
        return int(row.fetchone()[0])

    def ann_status(self) -> dict[str, Any]:
        """What `docs status` says about the derived index files (ANN and BM25), or why there are none."""
        data = ann.status(self.db, self.index_dir, self.store.encrypted)
        if self.index_dir is not None:
            record = textindex._record(self.db)
            due = textindex.needs_build(self.db, self.index_dir)
            if record:
                text = f"BM25 tantivy index of {int(record['entries']):,} passages (unencrypted, in {self.index_dir})"
            else:
                text = f"BM25 in SQLite FTS5 (a tantivy index is built above {textindex.MIN_PASSAGES:,} passages)"
            if due:
                text += f", rebuild due: {due}"
            data["bm25"] = {"record": record, "rebuild": due, "line": text}
            data["line"] = "; ".join(x for x in (data.get("line"), text) if x)
        elif self.store.encrypted:
            data["line"] += "; BM25 stays in FTS5 inside the encrypted database"
        return data

    def _hits(self, chunk_ids: list[int]) -> list[Hit]:
        if not chunk_ids:
            return []
        marks = ",".join("?" * len(chunk_ids))
        rows = self.db.execute(
            "select c.id, d.path, c.page, c.line_start, c.line_end, c.heading, c.text, d.kind, k.name, "
            "d.id, coalesce(d.title, ''), c.page_label, c.line_map "
            "from chunks c join documents d on d.id = c.document_id join collections k on k.id = d.collection_id "
            f"where c.id in ({marks})",
            chunk_ids,
        ).fetchall()
        by_id = {
            r[0]: Hit(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], 0.0, kind=r[7], collection=r[8],
                document_id=int(r[9]), title=r[10], page_label=r[11], line_map=_line_map(r[12]),
            )  # fmt: skip
            for r in rows
        }
        return [by_id[i] for i in chunk_ids if i in by_id]


def _fuse(
    lexical: list[tuple[int, float]],
    contextual: list[tuple[int, float]],
    cheap: list[tuple[int, float]],
    boost: list[tuple[int, float]],
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of the rankings (the static one at :data:`STATIC_WEIGHT`), best first."""
    fused: dict[int, float] = {}
    for weight, ranking in ((1.0, lexical), (1.0, contextual), (STATIC_WEIGHT, cheap), (1.0, boost)):
        for rank, (chunk_id, _) in enumerate(ranking):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (RRF_K + rank + 1)
    return sorted(fused.items(), key=lambda item: -item[1])


def _line_map(raw: str | None) -> LineMap | None:
    if not raw:
        return None
    return [tuple(span) if span else None for span in json.loads(raw)]


def _path_matches(path: str, pattern: str) -> bool:
    """A glob against the whole path or its last parts; a plain path as a file or folder."""
    given = os.path.abspath(os.path.expanduser(pattern))
    if path == given or path.startswith(given.rstrip("/") + "/"):
        return True
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, "*/" + pattern.lstrip("/"))


@dataclass(frozen=True)
class FileState:
    """Whether an indexed file is still what its passages were read from."""

    document_id: int
    path: str
    collection: str
    state: Literal["fresh", "changed", "missing"]
