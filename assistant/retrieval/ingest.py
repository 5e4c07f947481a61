"""Making files searchable at the speed of parsing: the ``docs add`` pipeline.

One run, for the files a walk found (:meth:`assistant.retrieval.index.Library.add`):

1. **parse in parallel**: two parser children (one per core, each with its memory and
   time limits), fed by two threads that also hash the files, so parsing, hashing and
   the main thread's work overlap; results come back in the order given, so passage
   ids do not depend on timing;
2. **tokenize once**: every block of a file goes through the word-piece tokenizer in
   one batch; the chunker counts pieces from that cache (counting paragraph by
   paragraph cost 3.4 CPU-s per 12 MB of HTML, more than parsing), and each passage's
   static vector is summed from its pieces (:mod:`assistant.retrieval.static`);
3. **write in few statements**: ``executemany`` per file (sqlite-utils' row-by-row
   inserts were 1.41 vs 0.54 CPU-s per 12 MB), several files per transaction (one
   fsync each ~0.25 s instead of one per file); every file is whole in its
   transaction, so a kill leaves each file indexed completely or not at all.

MiniLM vectors are not computed here (35 passages/s would be 0.01 MB/s): the
background embedder fills them in (:mod:`assistant.retrieval.backfill`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from assistant.core.files import sha256_of
from assistant.core.text import path_text
from assistant.retrieval.chunker import Chunk, chunk_blocks, estimate_tokens
from assistant.retrieval.parsers import PARSER_VERSION
from assistant.retrieval.vectors import space_id, vector_blob
from assistant.retrieval.worker import Parsed, ParseFailed, ParserPool
from assistant.storage.database import _now

if TYPE_CHECKING:
    from assistant.retrieval.index import IngestReport, Library, _Target
    from assistant.retrieval.progress import Progress
    from assistant.retrieval.static import StaticEncoder

#: Parser children: one per core, at most two (a third on two cores only queued).
PARSERS = max(1, min(2, os.cpu_count() or 1))
#: Commit when this much time or text is pending: one fsync per ~0.25 s instead of per file.
COMMIT_EVERY_S = 0.25
COMMIT_EVERY_BYTES = 8 * 2**20

Outcome = Literal["indexed", "unchanged", "touched", "skipped"]


@dataclass
class FileJob:
    """A file to look at, with what the database already knows of it."""

    path: Path
    size: int
    mtime_ns: int
    known: tuple[int, str] | None  # (document id, sha256) when indexed before
    #: Whether the known version was read by the current parser (an older one is re-read).
    current: bool = True

    @property
    def key(self) -> str:
        """The path as the database stores it."""
        return path_text(self.path)


@dataclass
class FileResult:
    job: FileJob
    outcome: Outcome
    digest: str = ""
    parsed: Parsed | None = None
    reason: str = ""


class TokenCounter:
    """Word pieces per text, from one batch tokenization of a file's blocks.

    The chunker asks for the count of every block and of every piece it cuts; blocks
    are looked up in the cache filled by :meth:`prepare`, pieces (rare) are tokenized
    on demand. Counts include [CLS] and [SEP], as MiniLM's truncation counts them.
    The cached ids also make each passage's static vector (:meth:`passage_ids`), so a
    file is tokenized once (twice cost 7 of the 13 CPU-s of 12 MB of HTML)."""

    def __init__(self, encoder: StaticEncoder | None, fallback: Callable[[str], int] = estimate_tokens) -> None:
        self.encoder = encoder
        self.fallback = fallback
        self._ids: dict[str, list[int]] = {}

    def prepare(self, texts: Sequence[str]) -> None:
        self._ids.clear()
        if self.encoder is not None and texts:
            self._fill(list(dict.fromkeys(texts)))

    def _fill(self, texts: list[str]) -> None:
        assert self.encoder is not None
        for text, ids in zip(texts, self.encoder.token_ids(texts), strict=True):
            self._ids[text] = ids

    def __call__(self, text: str) -> int:
        ids = self._ids.get(text)
        if ids is not None:
            return len(ids) + 2
        if self.encoder is None:
            return self.fallback(text)
        return self.encoder.count_tokens(text)

    def passage_ids(self, chunks: Sequence[Chunk]) -> list[list[int]]:
        """The word-piece ids of each chunk's indexed text (heading, then its paragraphs),
        from the cache. BERT's pre-tokenizer splits at whitespace, so the ids of
        paragraphs joined by blank lines are the paragraphs' ids end to end; the few parts
        not cached (headings, pieces of cut paragraphs) are tokenized in one batch."""
        parts = [([c.heading] if c.heading else []) + c.text.split("\n\n") for c in chunks]
        missing = list(dict.fromkeys(p for ps in parts for p in ps if p not in self._ids))
        if missing:
            self._fill(missing)
        return [[i for p in ps for i in self._ids[p]] for ps in parts]


def write_document(
    db: Any,
    cid: int,
    job: FileJob,
    digest: str,
    parsed: Parsed,
    chunks: list[Chunk],
    static: tuple[int, np.ndarray] | None,
) -> int | None:
    """Insert one document, its passages (ids above every id ever given; the FTS5
    trigger indexes them) and their static vectors, inside the caller's transaction.
    An older version of the file is deleted first (its passages and vectors go with it,
    by trigger). Returns the new document id, or None when another `docs add` indexed
    this very version meanwhile (the row is read again under the write lock)."""
    key = job.key
    row = db.execute(
        "select id, sha256, parser_version from documents where collection_id = ? and path = ?", [cid, key]
    ).fetchone()
    if row and row[1] == digest and (row[2] or 1) >= PARSER_VERSION:
        return None
    if row:
        db.execute("delete from documents where id = ?", [row[0]])
    doc_id = int(
        db.execute(
            "insert into documents (collection_id, path, sha256, size, mtime_ns, kind, note, chunks, indexed_at, "
            "title, parser_version) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                cid, key, digest, job.size, job.mtime_ns, parsed.kind, parsed.note or None, len(chunks), _now(),
                parsed.title or None, PARSER_VERSION,
            ],  # fmt: skip
        ).lastrowid
    )
    first = int(db.execute("select value from counters where name = 'chunks'").fetchone()[0]) + 1
    db.conn.executemany(
        "insert into chunks (id, document_id, seq, page, line_start, line_end, heading, text, tokens, "
        "page_label, line_map) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                first + seq, doc_id, seq, c.page, c.line_start, c.line_end, c.heading, c.text, c.tokens,
                c.page_label, json.dumps(c.line_map) if c.line_map is not None else None,
            )  # fmt: skip
            for seq, c in enumerate(chunks)
        ],
    )
    if static is not None and chunks:
        space, vectors = static
        db.conn.executemany(
            "insert into passage_vectors (space, chunk_id, vector) values (?, ?, ?)",
            [(space, first + seq, vector_blob(vectors[seq])) for seq in range(len(chunks))],
        )
    db.execute("delete from document_skips where collection_id = ? and path = ?", [cid, key])
    return doc_id



class IngestRun:
    """Index a list of files into one collection (see the module docstring)."""

    def __init__(
        self,
        library: Library,
        target: _Target,
        report: IngestReport,
        state: Progress,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.library = library
        self.target = target
        #: Real paths of the files now in the index (a symlink to one of them is "indexed once").
        self.indexed_real: set[str] = set()
        self.report = report
        self.state = state
        self.progress = progress
        self.static = library.static
        self.count = TokenCounter(self.static, library.count_tokens)
        self._pools = threading.local()
        self._all_pools: list[ParserPool] = []
        self._lock = threading.Lock()
        self._space: int | None = None
        #: Set when the run stops early: a parser thread starts no new parse (or parser).
        self._stopping = threading.Event()

    # -- the parser side (threads)
    def _pool(self) -> ParserPool:
        pool = getattr(self._pools, "pool", None)
        if pool is None:
            lib = self.library
            pool = ParserPool(lib.parse_timeout, lib.parser_memory_mb, lib.max_file_mb * 2**20)
            self._pools.pool = pool
            with self._lock:
                self._all_pools.append(pool)
        return pool

    def _read(self, job: FileJob) -> FileResult:
        try:
            digest = sha256_of(job.path)
        except OSError as exc:
            return FileResult(job, "skipped", reason=f"cannot be read ({exc.strerror})")
        if job.known is not None and job.current and job.known[1] == digest:
            return FileResult(job, "touched", digest)  # touched, not changed
        if self._stopping.is_set():
            return FileResult(job, "skipped", digest, reason="interrupted")
        try:
            parsed = self._pool().parse(job.path)
        except ParseFailed as exc:
            return FileResult(job, "skipped", digest, reason=str(exc))
        return FileResult(job, "indexed", digest, parsed)

    def _results(self, jobs: list[FileJob]) -> Generator[FileResult, None, None]:
        """Each job's result, in order, with up to 2 × PARSERS files in flight."""
        with ThreadPoolExecutor(PARSERS, thread_name_prefix="enclave-parse") as executor:
            pending: deque[Future[FileResult]] = deque()
            queue = iter(jobs)
            try:
                for job in queue:
                    pending.append(executor.submit(self._read, job))
                    if len(pending) >= 2 * PARSERS:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            except BaseException:
                # Interrupted (Ctrl-C, or the main thread failed): the files still being
                # parsed will not be written, so their parsers are killed rather than
                # waited for (a long PDF would hold up the stop), and killed rather than
                # closed under a thread that is reading from them.
                self._stopping.set()
                for future in pending:
                    future.cancel()
                with self._lock:
                    pools = list(self._all_pools)
                for pool in pools:
                    pool.kill()
                raise
            for pool in self._all_pools:
                pool.close()

    # -- the main thread: chunk, vectors, write
    def run(self, paths: list[tuple[Path, int]]) -> set[str]:
        """Index ``paths`` ((path, size) pairs); returns the paths (as stored) now in the index."""
        jobs: list[FileJob] = []
        indexed: set[str] = set()
        for path, size in paths:
            job = self._job(path)
            if job is None:
                continue
            row = (
                self.library.db.execute("select size, mtime_ns from documents where id = ?", [job.known[0]]).fetchone()
                if job.known and job.current
                else None
            )
            if row and row[0] == job.size and row[1] == job.mtime_ns:
                self.report.files_unchanged += 1
                indexed.add(job.key)
                self.indexed_real.add(os.path.realpath(path))
                self._advance(1, size, 0)
                continue
            jobs.append(job)
        results = self._results(jobs)
        try:
            indexed |= self._write(results)
        finally:
            results.close()  # at once, if this stopped early (Ctrl-C): its parsers are killed
        return indexed

    def _write(self, results: Iterator[FileResult]) -> set[str]:
        """Chunk, embed (static vectors) and write each parsed file, several per transaction."""
        store = self.library.store
        indexed: set[str] = set()
        pending: list[tuple[FileResult, list[Chunk], np.ndarray | None]] = []
        pending_bytes = 0
        last_commit = time.monotonic()
        for result in results:
            if result.outcome == "skipped":
                self.report.skipped.append((result.job.key, result.reason))
                self._advance(1, result.job.size, 0)
                continue
            indexed.add(result.job.key)
            self.indexed_real.add(os.path.realpath(result.job.path))
            if result.outcome == "touched":
                with store.transaction() as db:
                    db.execute(
                        "update documents set mtime_ns = ?, size = ? where id = ?",
                        [result.job.mtime_ns, result.job.size, result.job.known[0] if result.job.known else 0],
                    )
                self.report.files_unchanged += 1
                self._advance(1, result.job.size, 0)
                continue
            assert result.parsed is not None
            chunks, vectors = self._chunk(result.parsed)
            pending.append((result, chunks, vectors))
            pending_bytes += result.job.size
            if pending_bytes >= COMMIT_EVERY_BYTES or time.monotonic() - last_commit >= COMMIT_EVERY_S:
                self._commit(pending)
                pending, pending_bytes, last_commit = [], 0, time.monotonic()
        self._commit(pending)
        return indexed

    def _job(self, path: Path) -> FileJob | None:
        try:
            stat = path.stat()
        except OSError as exc:
            self.report.skipped.append((path_text(path), f"cannot be read ({exc.strerror})"))
            return None
        row = None
        if self.target.cid is not None:
            row = self.library.db.execute(
                "select id, sha256, parser_version from documents where collection_id = ? and path = ?",
                [self.target.cid, path_text(path)],
            ).fetchone()
        return FileJob(
            path,
            stat.st_size,
            stat.st_mtime_ns,
            (int(row[0]), str(row[1])) if row else None,
            current=row is None or (row[2] or 1) >= PARSER_VERSION,
        )

    def _chunk(self, parsed: Parsed) -> tuple[list[Chunk], np.ndarray | None]:
        self.count.prepare([b.text for b in parsed.blocks if not b.level])
        chunks = chunk_blocks(parsed.blocks, self.count)
        if self.static is None or not chunks:
            return chunks, None
        return chunks, self.static.embed_ids(self.count.passage_ids(chunks))

    def _commit(self, pending: list[tuple[FileResult, list[Chunk], np.ndarray | None]]) -> None:
        if not pending:
            return
        cid = self.target.id()  # the collection is created with its first indexed file
        written: list[tuple[FileResult, list[Chunk], np.ndarray | None]] = []
        with self.library.store.transaction() as db:
            if self.static is not None and self._space is None:
                self._space = space_id(db, self.static.sha256, "static", self.static.dim)
            for result, chunks, vectors in pending:
                assert result.parsed is not None
                static = (self._space, vectors) if self._space is not None and vectors is not None else None
                if write_document(db, cid, result.job, result.digest, result.parsed, chunks, static) is None:
                    self.report.files_unchanged += 1
                    self._advance(1, result.job.size, 0)
                else:
                    written.append((result, chunks, vectors))
        for result, chunks, _ in written:
            self.report.files_indexed += 1
            self.report.chunks += len(chunks)
            self.report.vectors += len(chunks) if self._space is not None else 0
            self.report.bytes += result.job.size
            if result.parsed is not None and result.parsed.note:
                self.report.notes.append((result.job.key, result.parsed.note))
            self._advance(1, result.job.size, len(chunks))

    def _advance(self, files: int, size: int, passages: int) -> None:
        self.state.advance(files, size, passages)
        if self.progress:
            self.progress(self.state)
