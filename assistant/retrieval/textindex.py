"""BM25 for large collections: a tantivy index beside the database (derived data).

SQLite FTS5 has no dynamic pruning: an OR query of a question's words computes bm25 for
every passage that contains any of them, then sorts, so its cost grows with the corpus
(100k passages: 174 / 403 ms p50 / p95 unfiltered on the loaded 2-core machine; 1M: seconds).
tantivy (Lucene-like, block-max WAND) returns the top candidates without scoring every
match: 1.0 / 102 ms at 100k and 90 / 201 ms at 1M in docs/scale-research.md §3 under the
same load. Above :data:`MIN_PASSAGES` passages, and only without encryption at rest, the
background process builds one (:func:`maintain`); FTS5 stays the source of truth and
answers alone below that size, with encryption on, and whenever the index is missing,
damaged or being rebuilt.

The same rules as the ANN files (:mod:`assistant.retrieval.ann`): a directory
``<data>/index/bm25-tantivy``, recorded in ``derived_indexes`` with the highest passage id
it covers and the last tombstone it has seen; passages added since are searched by FTS5
restricted to ``rowid > covered`` and merged by score (both are BM25 with k1 1.2, b 0.75;
the tail's IDF comes from FTS5's statistics, an approximation while the tail is small);
deleted passages are filtered out; a tail or deletions above 10 % of the index, or a
``meta.json`` that no longer matches the record, trigger a rebuild. Words are stemmed by
tantivy's ``en_stem`` (Snowball English) where FTS5 uses ``porter``. Both fields count
equally: weighting the heading at 0.5, as the FTS5 query does, cost 6 points of fused
recall@5 on the seeded corpus (static vectors + tantivy BM25: 0.637 at 0.5, 0.700 at 1.0;
FTS5: 0.713), because tantivy scores each field with its own length normalisation.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Below this many passages FTS5 is fast enough (30k: ~35 ms filtered) and no index is kept.
MIN_PASSAGES = int(os.environ.get("ENCLAVE_DOCS_TEXT_INDEX_MIN", "20000"))
STALE_SHARE = 0.1
NAME = "bm25"
FOLDER = "bm25-tantivy"


def _schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("id", stored=True, indexed=True, fast=True)
    builder.add_integer_field("coll", stored=False, indexed=True, fast=True)
    builder.add_text_field("heading", stored=False, tokenizer_name="en_stem")
    builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
    return builder.build()


def _record(db: Any) -> dict[str, Any] | None:
    row = db.execute(
        "select path, size, mtime_ns, covered, tombstone, entries from derived_indexes where name = ?", [NAME]
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("path", "size", "mtime_ns", "covered", "tombstone", "entries"), row, strict=True))


def _meta(folder: Path) -> tuple[int, int] | None:
    try:
        st = (folder / "meta.json").stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _tombstone_seq(db: Any) -> int:
    row = db.execute("select seq from sqlite_sequence where name = 'chunk_tombstones'").fetchone()
    return int(row[0]) if row else 0


class TextIndex:
    """The open tantivy index, checked against its record before each use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / FOLDER
        self._open: tuple[tuple[int, int, int], Any, Any] | None = None
        self.problem = ""

    def get(self, db: Any) -> tuple[Any, Any, dict[str, Any]] | None:
        record = _record(db)
        if record is None:
            return None
        meta = _meta(Path(record["path"]))
        if meta is None or meta != (record["size"], record["mtime_ns"]):
            self.problem = "the BM25 index does not match its record (changed or damaged)"
            return None
        key = (meta[0], meta[1], int(record["covered"]))
        if self._open is None or self._open[0] != key:
            import tantivy

            try:
                index = tantivy.Index(_schema(), path=record["path"], reuse=True)
                searcher = index.searcher()
            except (OSError, ValueError, RuntimeError) as exc:
                self.problem = f"the BM25 index cannot be opened ({exc})"
                return None
            self._open = (key, index, searcher)
        return self._open[1], self._open[2], record

    def search(
        self,
        db: Any,
        words: list[str],
        cids: Sequence[int] | None,
        k: int,
        fts_match: str,
        docs: Sequence[int] | None = None,
    ) -> list[tuple[int, float]] | None:
        """The ``k`` best (passage id, -score) — negative, as FTS5's rank — or None without
        a valid index. ``fts_match`` is the FTS5 query for the tail; ``docs`` keeps only
        the passages of those documents (filtered after the search, from more hits)."""
        found = self.get(db)
        if found is None:
            return None
        import tantivy

        index, searcher, record = found
        query = index.parse_query(" ".join(f'"{w}"' for w in words), ["heading", "text"])
        if cids is not None:
            allowed = tantivy.Query.boolean_query(
                [(tantivy.Occur.Should, tantivy.Query.term_query(index.schema, "coll", int(c))) for c in cids]
            )
            query = tantivy.Query.boolean_query([(tantivy.Occur.Must, query), (tantivy.Occur.Must, allowed)])
        hits = searcher.search(query, k * (16 if docs is not None else 2), count=False).hits
        scored = [(int(searcher.doc(address)["id"][0]), -float(score)) for score, address in hits]
        if _tombstone_seq(db) > int(record["tombstone"]):
            gone = {
                int(r[0])
                for r in db.execute("select chunk_id from chunk_tombstones where seq > ?", [int(record["tombstone"])])
            }
            scored = [(i, s) for i, s in scored if i not in gone]
        if docs is not None and scored:
            marks = ",".join("?" * len(docs))
            wanted = {
                int(r[0])
                for r in db.execute(
                    f"select id from chunks where document_id in ({marks}) and id in ({','.join('?' * len(scored))})",
                    [*docs, *(i for i, _ in scored)],
                )
            }
            scored = [(i, s) for i, s in scored if i in wanted]
        only = f" and rowid in (select id from chunks where document_id in ({','.join('?' * len(docs))}))" if docs else ""
        tail = db.execute(
            "select rowid, bm25(chunks_fts, 0.5, 1.0, 0.0) as rank from chunks_fts "
            f"where chunks_fts match ? and rowid > ?{only} order by rank limit ?",
            [fts_match, int(record["covered"]), *(docs or []), k],
        ).fetchall()
        if tail:
            scored += [(int(r[0]), float(r[1])) for r in tail]
            scored.sort(key=lambda item: item[1])
        return scored[:k]

    def close(self) -> None:
        self._open = None


# --------------------------------------------------------------------------- building
def needs_build(db: Any, folder: Path | None) -> str | None:
    if folder is None:
        return None
    covered_now = int(db.execute("select value from counters where name = 'chunks'").fetchone()[0])
    record = _record(db)
    if record is None:
        count = int(db.execute("select count(*) from chunks").fetchone()[0])
        return "no BM25 index yet" if count >= MIN_PASSAGES else None
    meta = _meta(Path(record["path"]))
    if meta is None or meta != (record["size"], record["mtime_ns"]):
        return "the BM25 index does not match its record"
    entries = max(1, int(record["entries"]))
    added = (
        int(db.execute("select count(*) from chunks where id > ?", [int(record["covered"])]).fetchone()[0])
        if covered_now > int(record["covered"])
        else 0
    )
    removed = _tombstone_seq(db) - int(record["tombstone"])
    if added > STALE_SHARE * entries or removed > STALE_SHARE * entries:
        return f"{added:,} passages added and {removed:,} removed since the BM25 index was built"
    return None


def build(store: Any, folder: Path, threads: int = 0, block: int = 20_000) -> dict[str, Any]:
    """Build the index from the passages into a new directory, swap it in, record it."""
    import tantivy

    db = store.db
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / FOLDER
    partial = folder / (FOLDER + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700)
    tombstone = _tombstone_seq(db)
    covered = int(db.execute("select value from counters where name = 'chunks'").fetchone()[0])
    index = tantivy.Index(_schema(), path=str(partial))
    writer = index.writer(heap_size=128 * 2**20, num_threads=max(1, min(2, threads or (os.cpu_count() or 1))))
    last = entries = 0
    while True:
        rows = db.execute(
            "select c.id, d.collection_id, c.heading, c.text from chunks c join documents d on d.id = c.document_id "
            "where c.id > ? and c.id <= ? order by c.id limit ?",
            [last, covered, block],
        ).fetchall()
        if not rows:
            break
        for pid, cid, heading, text in rows:
            writer.add_document(tantivy.Document(id=int(pid), coll=int(cid), heading=heading, text=text))
        last = int(rows[-1][0])
        entries += len(rows)
    writer.commit()
    writer.wait_merging_threads()
    del writer, index
    for path in partial.rglob("*"):
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600 if path.is_file() else 0o700)
    old = folder / (FOLDER + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    partial.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    meta = _meta(target)
    assert meta is not None
    with store.transaction() as tx:
        tx.execute(
            "insert or replace into derived_indexes (name, kind, path, sha256, size, mtime_ns, covered, tombstone, "
            "entries, built_at) values (?, 'tantivy', ?, '', ?, ?, ?, ?, ?, ?)",
            [
                NAME,
                str(target),
                meta[0],
                meta[1],
                covered,
                tombstone,
                entries,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            ],
        )
    return {"entries": entries, "covered": covered}


def maintain(store: Any, folder: Path | None, threads: int = 0) -> list[str]:
    reason = needs_build(store.db, folder)
    if not reason or folder is None:
        return []
    started = time.monotonic()
    done = build(store, folder, threads)
    return [f"BM25: {reason}; indexed {done['entries']:,} passages in {time.monotonic() - started:.1f} s"]
