"""The document library: collections of files, indexed into the Enclave database.

Indexing is incremental and resumable. Each file is committed in its own
transaction (document row, passages, FTS rows and vectors together), so a run
killed at any moment leaves every file either fully indexed or not at all, and
the next run carries on where it stopped. A file whose size and modification time
are unchanged costs one ``stat``; a touched file is re-hashed and re-chunked only
when its content changed; files gone from a folder are removed from the index.

Search fuses two rankings by reciprocal rank fusion: SQLite FTS5 BM25 over the
passages, and cosine similarity of all-MiniLM-L6-v2 vectors kept as float16 BLOBs
and searched with numpy (the measured choice; see scripts/bench_retrieval.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assistant.core.errors import EnclaveError
from assistant.retrieval.chunker import Chunk, chunk_blocks, estimate_tokens
from assistant.retrieval.location import describe
from assistant.retrieval.parsers import FORMATS
from assistant.retrieval.worker import ParseFailed, ParserPool
from assistant.storage.database import Store, _now

#: Reciprocal rank fusion constant (the value from Cormack et al. 2009, used by most hybrid search).
RRF_K = 60
#: Candidates each ranking contributes before fusion.
CANDIDATES = 50


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
    similarity: float | None = None
    bm25_rank: int | None = None
    vector_rank: int | None = None

    @property
    def unit(self) -> str:
        return "paragraphs" if self.kind == "docx" else "lines"

    def location(self) -> str:
        """``manual.pdf, page 3, lines 10–18`` (paragraphs for .docx)."""
        return describe(self.path, self.page, self.line_start, self.line_end, self.unit)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "page": self.page,
            "line_start": self.line_start,
            "line_end": self.line_end,
            "unit": self.unit,
            "heading": self.heading,
            "collection": self.collection,
            "score": round(self.score, 6),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "text": self.text,
        }


@dataclass
class Progress:
    """Where an indexing run is; handed to the progress callback after each file."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str
    started: float = field(default_factory=time.monotonic)

    @property
    def eta(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.bytes_done <= 0 or elapsed < 0.5:
            return None
        return elapsed * (self.bytes_total - self.bytes_done) / self.bytes_done


@dataclass
class IngestReport:
    collection: str
    files_seen: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    chunks: int = 0
    bytes: int = 0
    vectors: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        data["notes"] = [{"path": p, "note": n} for p, n in self.notes]
        return data


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
        return path, "symlink to a file already in this folder (indexed once, under its own name)"
    if not path.is_file():
        return path, "not a regular file"
    if path.suffix.lower() not in FORMATS:
        return path, f"unsupported file type {path.suffix or '(no suffix)'}"
    if not os.access(path, os.R_OK):
        return path, "permission denied"
    return path.absolute(), None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its me my no not of on or "
    "our should so than that the their them then there these they this to was we what when where which who why "
    "will with you your".split()
)


def fts_query(text: str) -> str | None:
    """A safe FTS5 query for free text: each distinct word quoted, joined with OR
    (BM25 then rewards passages that match more and rarer words)."""
    words = [w.lower() for w in _WORD.findall(text)]
    content = [w for w in dict.fromkeys(words) if w not in _STOP]
    chosen = content or list(dict.fromkeys(words))
    if not chosen:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in chosen[:64])


# --------------------------------------------------------------------------- library
class Library:
    """Collections of documents in the store, and search over them."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None = None,
        *,
        count_tokens: Callable[[str], int] | None = None,
        max_file_mb: int = 200,
        parse_timeout: float = 60.0,
        parser_memory_mb: int = 1024,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.count_tokens = count_tokens or getattr(embedder, "count_tokens", None) or estimate_tokens
        self.max_file_mb = max_file_mb
        self.parse_timeout = parse_timeout
        self.parser_memory_mb = parser_memory_mb
        self._matrix: tuple[Any, np.ndarray, np.ndarray] | None = None  # (key, ids, vectors)

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
            return int(db.table("collections").insert({"name": name, "created_at": _now()}).last_pk)  # type: ignore[arg-type]

    def names(self, wanted: Sequence[str] | None) -> list[str]:
        """Validate collection names; ``None`` or ``["all"]`` means every collection."""
        known = [c["name"] for c in self.collections()]
        if not wanted or list(wanted) == ["all"]:
            return known
        for name in wanted:
            self.collection_id(name)
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
                target = str(Path(path).expanduser().absolute())
                ids = [
                    r[0]
                    for r in db.execute(
                        "select id from documents where collection_id = ? and (path = ? or path like ?)",
                        [cid, target, target.rstrip("/") + "/%"],
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
                    [cid, str(Path(path).expanduser().absolute())],
                )
        self._matrix = None
        return len(ids)

    @staticmethod
    def _delete_document(db: Any, doc_id: int) -> None:
        db.execute(
            "delete from chunk_vectors where chunk_id in (select id from chunks where document_id = ?)", [doc_id]
        )
        db.execute("delete from chunks where document_id = ?", [doc_id])
        db.execute("delete from documents where id = ?", [doc_id])

    # -- indexing
    def sync(self, collection: str, progress: Callable[[Progress], None] | None = None) -> IngestReport:
        """Re-walk every folder and file the collection was built from."""
        cid = self.collection_id(collection)
        roots = [
            Path(r[0]) for r in self.db.execute("select path from collection_roots where collection_id = ?", [cid])
        ]
        return self.add(roots, collection, progress)

    def add(
        self,
        paths: Sequence[Path],
        collection: str = "default",
        progress: Callable[[Progress], None] | None = None,
    ) -> IngestReport:
        """Index files and folders into ``collection`` (see the module docstring)."""
        started = time.monotonic()
        cid = self.collection_id(collection, create=True)
        report = IngestReport(collection)
        roots = [Path(p).expanduser().absolute() for p in paths]
        with self.store.transaction() as db:
            for root in roots:
                if root.exists():
                    db.execute(
                        "insert or ignore into collection_roots (collection_id, path, added_at) values (?, ?, ?)",
                        [cid, str(root), _now()],
                    )
        todo: list[tuple[Path, int]] = []
        seen: set[str] = set()
        for path, reason in walk(roots):
            if reason is not None:
                self._skip(cid, path, reason, report)
                continue
            key = str(path)
            if key in seen:
                continue
            seen.add(key)
            try:
                todo.append((path, path.stat().st_size))
            except OSError as exc:
                self._skip(cid, path, f"cannot be read ({exc.strerror})", report)
        report.files_seen = len(todo)
        state = Progress(0, len(todo), 0, sum(size for _, size in todo), "")
        with ParserPool(self.parse_timeout, self.parser_memory_mb, self.max_file_mb * 2**20) as pool:
            for path, size in todo:
                state.current = str(path)
                self._index_file(cid, path, pool, report)
                state.files_done += 1
                state.bytes_done += size
                if progress:
                    progress(state)
        report.files_removed = self._remove_missing(cid, roots, seen)
        report.vectors = self.fill_vectors()
        report.seconds = time.monotonic() - started
        self._matrix = None
        return report

    def _skip(self, cid: int, path: Path, reason: str, report: IngestReport) -> None:
        report.skipped.append((str(path), reason))
        with self.store.transaction() as db:
            db.execute(
                "insert or replace into document_skips (collection_id, path, reason, at) values (?, ?, ?, ?)",
                [cid, str(path), reason, _now()],
            )

    def _index_file(self, cid: int, path: Path, pool: ParserPool, report: IngestReport) -> None:
        key = str(path)
        try:
            stat = path.stat()
        except OSError as exc:
            self._skip(cid, path, f"cannot be read ({exc.strerror})", report)
            return
        row = self.db.execute(
            "select id, sha256, size, mtime_ns from documents where collection_id = ? and path = ?", [cid, key]
        ).fetchone()
        if row and row[2] == stat.st_size and row[3] == stat.st_mtime_ns:
            report.files_unchanged += 1
            return
        try:
            digest = _sha256(path)
        except OSError as exc:
            self._skip(cid, path, f"cannot be read ({exc.strerror})", report)
            return
        if row and row[1] == digest:  # touched, not changed
            with self.store.transaction() as db:
                db.execute(
                    "update documents set mtime_ns = ?, size = ? where id = ?", [stat.st_mtime_ns, stat.st_size, row[0]]
                )
            report.files_unchanged += 1
            return
        try:
            parsed = pool.parse(path)
        except ParseFailed as exc:
            self._skip(cid, path, str(exc), report)
            return
        chunks = chunk_blocks(parsed.blocks, self.count_tokens)
        vectors = self._embed(chunks)
        with self.store.transaction() as db:
            if row:
                self._delete_document(db, row[0])
            doc_id = (
                db.table("documents")
                .insert(
                    {
                        "collection_id": cid,
                        "path": key,
                        "sha256": digest,
                        "size": stat.st_size,
                        "mtime_ns": stat.st_mtime_ns,
                        "kind": parsed.kind,
                        "note": parsed.note or None,
                        "chunks": len(chunks),
                        "indexed_at": _now(),
                    }
                )
                .last_pk
            )
            for seq, chunk in enumerate(chunks):
                chunk_id = (
                    db.table("chunks")
                    .insert(
                        {
                            "document_id": doc_id,
                            "seq": seq,
                            "page": chunk.page,
                            "line_start": chunk.line_start,
                            "line_end": chunk.line_end,
                            "heading": chunk.heading,
                            "text": chunk.text,
                            "tokens": chunk.tokens,
                        }
                    )
                    .last_pk
                )
                if vectors is not None and self.embedder is not None:
                    db.execute(
                        "insert into chunk_vectors (chunk_id, embedder, vector) values (?, ?, ?)",
                        [chunk_id, self.embedder.sha256, vectors[seq].astype(np.float16).tobytes()],
                    )
            db.execute("delete from document_skips where collection_id = ? and path = ?", [cid, key])
        report.files_indexed += 1
        report.chunks += len(chunks)
        report.bytes += stat.st_size
        if parsed.note:
            report.notes.append((key, parsed.note))

    def _embed(self, chunks: list[Chunk]) -> np.ndarray | None:
        if self.embedder is None or not chunks:
            return None
        return self.embedder.embed([c.indexed_text for c in chunks])

    def _remove_missing(self, cid: int, roots: list[Path], seen: set[str]) -> int:
        """Documents under ``roots`` whose files are gone (or now skipped) are removed."""
        removed = 0
        with self.store.transaction() as db:
            for root in roots:
                prefix = str(root)
                rows = db.execute(
                    "select id, path from documents where collection_id = ? and (path = ? or path like ?)",
                    [cid, prefix, prefix.rstrip("/") + "/%"],
                ).fetchall()
                for doc_id, path in rows:
                    if path not in seen:
                        self._delete_document(db, doc_id)
                        removed += 1
        return removed

    def fill_vectors(self, batch: int = 256) -> int:
        """Embed passages that have no vector for the current embedding model (indexed
        before it was installed, or by another one). Resumable: commits per batch."""
        if self.embedder is None:
            return 0
        done = 0
        while True:
            rows = self.db.execute(
                "select c.id, c.heading, c.text from chunks c where not exists "
                "(select 1 from chunk_vectors v where v.chunk_id = c.id and v.embedder = ?) limit ?",
                [self.embedder.sha256, batch],
            ).fetchall()
            if not rows:
                return done
            texts = [f"{h}\n{t}" if h else t for _, h, t in rows]
            vectors = self.embedder.embed(texts)
            with self.store.transaction() as db:
                marks = ",".join("?" * len(rows))
                db.execute(
                    f"delete from chunk_vectors where embedder != ? and chunk_id in ({marks})",
                    [self.embedder.sha256, *[r[0] for r in rows]],
                )
                db.conn.executemany(
                    "insert or replace into chunk_vectors (chunk_id, embedder, vector) values (?, ?, ?)",
                    [
                        (r[0], self.embedder.sha256, v.astype(np.float16).tobytes())
                        for r, v in zip(rows, vectors, strict=True)
                    ],
                )
            done += len(rows)

    # -- search
    def search(
        self,
        query: str,
        k: int = 5,
        collections: Sequence[str] | None = None,
        mode: str = "fused",
    ) -> list[Hit]:
        """The ``k`` best passages for ``query``: ``bm25``, ``vector`` or ``fused`` (RRF).

        Without an embedding model, ``fused`` is BM25 alone; ``vector`` is refused.
        """
        if mode not in ("bm25", "vector", "fused"):
            raise DocumentsError(f"Unknown search mode {mode!r}.", "Use bm25, vector or fused.")
        if mode == "vector" and self.embedder is None:
            raise DocumentsError(
                "Vector search needs the embedding model, which is not installed.",
                "Build it with `enclave models build all-minilm-l6-v2`.",
            )
        names = self.names(collections)
        if not names:
            return []
        cids = [self.collection_id(n) for n in names]
        lexical = self._bm25(query, cids) if mode in ("bm25", "fused") else []
        similarity: dict[int, float] = {}
        dense: list[int] = []
        if mode in ("vector", "fused") and self.embedder is not None:
            dense, similarity = self._dense(query, cids)
        if mode == "bm25":
            ranked = [(cid, -s) for cid, s in lexical]
        elif mode == "vector":
            ranked = [(cid, similarity[cid]) for cid in dense]
        else:
            fused: dict[int, float] = {}
            for rank, (chunk_id, _) in enumerate(lexical):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
            for rank, chunk_id in enumerate(dense):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
            ranked = sorted(fused.items(), key=lambda item: -item[1])
        top = ranked[:k]
        bm25_rank = {chunk_id: i + 1 for i, (chunk_id, _) in enumerate(lexical)}
        vector_rank = {chunk_id: i + 1 for i, chunk_id in enumerate(dense)}
        hits = self._hits([chunk_id for chunk_id, _ in top])
        for hit, (chunk_id, score) in zip(hits, top, strict=True):
            hit.score = float(score)
            hit.similarity = similarity.get(chunk_id)
            hit.bm25_rank = bm25_rank.get(chunk_id)
            hit.vector_rank = vector_rank.get(chunk_id)
        return hits

    def _bm25(self, query: str, cids: list[int]) -> list[tuple[int, float]]:
        """BM25 over the passages of ``cids``. FTS5 ranks first and the collection filter
        runs on its best rows (joining every match before the limit made queries 1.5-2x
        slower at 100k passages, scripts/bench_retrieval.py); when the filter leaves too
        few, the exact filtered query runs."""
        match = fts_query(query)
        if match is None:
            return []
        marks = ",".join("?" * len(cids))
        inner = CANDIDATES * 4
        rows = self.db.execute(
            "select f.id, f.rank from (select rowid as id, bm25(chunks_fts, 0.5, 1.0) as rank from chunks_fts "
            "where chunks_fts match ? order by rank limit ?) f join chunks c on c.id = f.id "
            f"join documents d on d.id = c.document_id where d.collection_id in ({marks}) order by f.rank limit ?",
            [match, inner, *cids, CANDIDATES],
        ).fetchall()
        if len(rows) < CANDIDATES and self._match_count(match, inner) >= inner:
            rows = self.db.execute(
                "select c.id, bm25(chunks_fts, 0.5, 1.0) as rank from chunks_fts "
                "join chunks c on c.id = chunks_fts.rowid join documents d on d.id = c.document_id "
                f"where chunks_fts match ? and d.collection_id in ({marks}) order by rank limit ?",
                [match, *cids, CANDIDATES],
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def _match_count(self, match: str, cap: int) -> int:
        row = self.db.execute(
            "select count(*) from (select rowid from chunks_fts where chunks_fts match ? limit ?)", [match, cap]
        ).fetchone()
        return int(row[0])

    def _vectors(self, cids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The collections' vectors as one float32 matrix, cached until passages change.

        Stored as float16 (half the disk); held as float32, because converting on every
        query cost ~150 ms at 100k passages and float32 costs 1.5 KB per passage of RAM."""
        assert self.embedder is not None
        marks = ",".join("?" * len(cids))
        stamp = self.db.execute("select count(*), coalesce(max(id), 0) from chunks").fetchone()
        key = (tuple(cids), tuple(stamp), self.embedder.sha256)
        if self._matrix is None or self._matrix[0] != key:
            self._matrix = None  # let the old matrix go before the new one is built
            rows = self.db.execute(
                "select v.chunk_id, v.vector from chunk_vectors v join chunks c on c.id = v.chunk_id "
                f"join documents d on d.id = c.document_id where v.embedder = ? and d.collection_id in ({marks})",
                [self.embedder.sha256, *cids],
            ).fetchall()
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            matrix = np.empty((len(rows), len(rows[0][1]) // 2 if rows else 1), dtype=np.float32)
            for i, (_, blob) in enumerate(rows):
                matrix[i] = np.frombuffer(blob, dtype=np.float16)
            self._matrix = (key, ids, matrix)
        return self._matrix[1], self._matrix[2]

    def _dense(self, query: str, cids: list[int]) -> tuple[list[int], dict[int, float]]:
        assert self.embedder is not None
        ids, matrix = self._vectors(cids)
        if len(ids) == 0:
            return [], {}
        q = self.embedder.embed([query])[0].astype(np.float32)
        scores = matrix @ q
        take = min(CANDIDATES, len(ids))
        best = np.argpartition(-scores, take - 1)[:take]
        best = best[np.argsort(-scores[best])]
        return [int(ids[i]) for i in best], {int(ids[i]): float(scores[i]) for i in best}

    def _hits(self, chunk_ids: list[int]) -> list[Hit]:
        if not chunk_ids:
            return []
        marks = ",".join("?" * len(chunk_ids))
        rows = self.db.execute(
            "select c.id, d.path, c.page, c.line_start, c.line_end, c.heading, c.text, d.kind, k.name "
            "from chunks c join documents d on d.id = c.document_id join collections k on k.id = d.collection_id "
            f"where c.id in ({marks})",
            chunk_ids,
        ).fetchall()
        by_id = {r[0]: Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6], 0.0, kind=r[7], collection=r[8]) for r in rows}
        return [by_id[i] for i in chunk_ids if i in by_id]
