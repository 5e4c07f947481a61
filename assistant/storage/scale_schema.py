"""The schema step for documents at scale (issue 18): one migration, appended last.

What it changes, and why:

- **Passage ids only grow.** SQLite gives a new row ``max(id) + 1``, so deleting the
  last file's passages and indexing it again reuses their ids. The ANN and BM25 index
  files beside the database are derived data that record "every passage up to id N is
  in me" (the last covered chunk id, with their sha256); a reused id would slip under
  that mark unseen. ``counters`` keeps the highest id ever given; passages are inserted
  with explicit ids above it (:mod:`assistant.retrieval.ingest`), and a trigger refuses
  an insert that would reuse one, so the rule cannot be broken silently.
- **Deleted passages are remembered** (``chunk_tombstones``) until every derived index
  has dropped them.
- **Vectors per space** (``vector_spaces`` + ``passage_vectors``): a passage has a cheap
  static vector at once and a MiniLM vector later; each space is named by its model's
  sha256 once (a 64-character text per vector row was 128 MB per space at 1M passages)
  and deleting a passage deletes its vectors (a trigger: nothing else has to remember).
  The old ``chunk_vectors`` rows move over.
- **The collection inside the full-text index**: ``chunks_fts`` gets a ``collection``
  column holding one token (``c<id>``), so a collection filter is part of the MATCH and
  FTS5 intersects posting lists instead of ranking every match and filtering after
  (100k passages, 1 % collection: 847 → 45 ms p50; docs/scale-research.md §3). Its
  content comes from a view over chunks and documents; deleting a document deletes
  its passages first (a trigger), so the FTS delete always sees the document's
  collection.
- ``derived_indexes``: each index file's sha256, size, mtime, last covered chunk id and
  applied tombstone; ``background_status``: what the background embedder is doing
  (``enclave docs status`` shows it).
"""

from __future__ import annotations

from typing import Any

FTS_VIEW = "chunk_search_rows"


def migrate(db: Any) -> None:
    """Run inside the migration's transaction (``Store._migrate``)."""
    ex = db.execute
    ex("create table counters (name text primary key, value integer not null)")
    ex("insert into counters (name, value) select 'chunks', coalesce(max(id), 0) from chunks")
    ex(
        "create trigger chunks_ids_increase after insert on chunks begin "
        "select raise(abort, 'passage ids must increase (insert passages through assistant.retrieval.ingest)') "
        "where new.id <= (select value from counters where name = 'chunks'); "
        "update counters set value = new.id where name = 'chunks'; end"
    )
    ex("create table chunk_tombstones (seq integer primary key autoincrement, chunk_id integer not null)")
    ex(
        "create table vector_spaces (id integer primary key, sha256 text not null unique, "
        "kind text not null, dim integer not null)"
    )
    ex(
        "create table passage_vectors (id integer primary key autoincrement, "
        "space integer not null references vector_spaces(id), "
        "chunk_id integer not null, vector blob not null)"
    )
    ex("create unique index passage_vectors_space on passage_vectors (space, chunk_id)")
    ex(
        "insert into vector_spaces (sha256, kind, dim) "
        "select embedder, 'minilm', length(min(vector)) / 2 from chunk_vectors group by embedder"
    )
    ex(
        "insert into passage_vectors (space, chunk_id, vector) select s.id, v.chunk_id, v.vector "
        "from chunk_vectors v join vector_spaces s on s.sha256 = v.embedder order by s.id, v.chunk_id"
    )
    ex("drop table chunk_vectors")
    ex(
        "create trigger chunks_forget after delete on chunks begin "
        "delete from passage_vectors where space in (select id from vector_spaces) and chunk_id = old.id; "
        "insert into chunk_tombstones (chunk_id) values (old.id); end"
    )
    ex(
        "create trigger documents_forget_chunks before delete on documents begin "
        "delete from chunks where document_id = old.id; end"
    )
    # The full-text index again, with the collection as a column of its own.
    for trigger in ("chunks_ai", "chunks_ad", "chunks_au"):
        ex(f"drop trigger if exists {trigger}")
    ex("drop table if exists chunks_fts")
    ex(
        f"create view {FTS_VIEW} as select c.id as id, c.heading as heading, c.text as text, "
        "'c' || d.collection_id as collection from chunks c join documents d on d.id = c.document_id"
    )
    ex(
        "create virtual table chunks_fts using fts5(heading, text, collection, "
        f"content='{FTS_VIEW}', content_rowid='id', tokenize='porter unicode61')"
    )
    collection = "(select 'c' || collection_id from documents where id = {}.document_id)"
    ex(
        "create trigger chunks_fts_insert after insert on chunks begin "
        "insert into chunks_fts (rowid, heading, text, collection) "
        f"values (new.id, new.heading, new.text, {collection.format('new')}); end"
    )
    ex(
        "create trigger chunks_fts_delete after delete on chunks begin "
        "insert into chunks_fts (chunks_fts, rowid, heading, text, collection) "
        f"values ('delete', old.id, old.heading, old.text, {collection.format('old')}); end"
    )
    ex(
        "create trigger chunks_fts_update after update of heading, text, document_id on chunks begin "
        "insert into chunks_fts (chunks_fts, rowid, heading, text, collection) "
        f"values ('delete', old.id, old.heading, old.text, {collection.format('old')}); "
        "insert into chunks_fts (rowid, heading, text, collection) "
        f"values (new.id, new.heading, new.text, {collection.format('new')}); end"
    )
    ex("insert into chunks_fts (chunks_fts) values ('rebuild')")
    ex(
        "create table derived_indexes (name text primary key, kind text not null, path text not null, "
        "sha256 text not null, size integer not null, mtime_ns integer not null, covered integer not null, "
        "tombstone integer not null, entries integer not null, built_at text not null)"
    )
    ex(
        "create table background_status (name text primary key, state text not null, detail text not null, "
        "rate real, updated_at real not null)"
    )
