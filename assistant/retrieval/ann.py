"""Approximate nearest-neighbour index files for large vector spaces (usearch HNSW, int8).

Exact search over a float32 matrix is ~150 ms at 100k passages and ~10× that at 1M, and
holds 1.5 GB of float32 at 1M; an HNSW graph with int8 storage answers in ~1 ms at 100k
and is memory-mapped (``view=True``), so its pages are file-backed and the kernel can drop
them (docs/scale-research.md §2). Each query asks the graph for :data:`OVERSAMPLE` ×
the candidates it needs and re-scores them exactly from the database's float16 rows, which
makes the int8 quantisation nearly irrelevant to quality (recall@10 0.995–1.000).

The index is **derived data**; the database stays the source of truth:

- one file per vector space, ``<data>/index/space-<id>.usearch``, written to a temporary
  name, flushed and renamed, then recorded in ``derived_indexes`` (size, mtime, sha256,
  the highest passage id it covers and the last tombstone it has seen);
- before use the file's size and mtime must match the record, or it is ignored (exact
  search takes over) and rebuilt by the background process (:func:`maintain`); a file
  that usearch cannot open is treated the same way;
- vectors written after the build (vector row ids above ``covered``: the background fills
  MiniLM vectors of old passages too, so passage ids would not do) are searched exactly
  beside it;
  passages deleted after it (tombstones above ``tombstone``) are filtered out; when either
  grows past :data:`STALE_SHARE` of the index, :func:`maintain` rebuilds it;
- **with encryption at rest on, no index file is written** (``Library.index_dir`` is None):
  vectors leak text (embedding inversion recovers much of a passage) and a memory-mapped
  file cannot be encrypted, so search stays exact over the encrypted database. `enclave
  docs status` says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.core.files import sha256_of
from assistant.retrieval.vectors import rescore, scope_sql, top

log = logging.getLogger(__name__)

#: Below this many vectors in a space, exact search is as fast (10k: ~5 ms) and no file is kept.
MIN_ENTRIES = int(os.environ.get("ENCLAVE_DOCS_ANN_MIN", "20000"))
#: Candidates asked of the graph per candidate needed (filters and re-scoring eat some).
OVERSAMPLE = 2
#: Rebuild when passages added or deleted since the build exceed this share of it.
STALE_SHARE = 0.1
#: HNSW parameters measured in docs/scale-research.md §2 (M 16, ef_add 128, ef 96).
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 96


def index_path(folder: Path, space: int) -> Path:
    return folder / f"space-{space}.usearch"


def _record(db: Any, space: int) -> dict[str, Any] | None:
    row = db.execute(
        "select path, sha256, size, mtime_ns, covered, tombstone, entries, built_at from derived_indexes where name = ?",
        [f"ann:{space}"],
    ).fetchone()
    if row is None:
        return None
    keys = ("path", "sha256", "size", "mtime_ns", "covered", "tombstone", "entries", "built_at")
    return dict(zip(keys, row, strict=True))


def _tombstone_seq(db: Any) -> int:
    row = db.execute("select seq from sqlite_sequence where name = 'chunk_tombstones'").fetchone()
    return int(row[0]) if row else 0


def _space_count(db: Any, space: int) -> int:
    return int(db.execute("select count(*) from passage_vectors where space = ?", [space]).fetchone()[0])


class AnnIndexes:
    """The open (memory-mapped) index of each space, checked against its record."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._open: dict[int, tuple[tuple[int, int, int], Any]] = {}
        self.problems: dict[int, str] = {}

    def get(self, db: Any, space: int) -> tuple[Any, dict[str, Any]] | None:
        """The index of ``space`` and its record, or None (no valid index: search exactly)."""
        record = _record(db, space)
        if record is None:
            return None
        path = Path(record["path"])
        try:
            st = path.stat()
        except OSError:
            self.problems[space] = f"{path.name} is missing"
            return None
        if st.st_size != record["size"] or st.st_mtime_ns != record["mtime_ns"]:
            self.problems[space] = f"{path.name} does not match its record (changed or damaged)"
            return None
        key = (st.st_size, st.st_mtime_ns, int(record["covered"]))
        cached = self._open.get(space)
        if cached is None or cached[0] != key:
            from usearch.index import Index

            try:
                index = Index.restore(str(path), view=True)
            except (ValueError, RuntimeError, OSError) as exc:
                self.problems[space] = f"{path.name} cannot be opened ({exc})"
                return None
            if index is None:
                self.problems[space] = f"{path.name} is not a usearch index"
                return None
            self._open[space] = (key, index)
            self.problems.pop(space, None)
        return self._open[space][1], record

    def search(
        self,
        db: Any,
        space: int,
        query: npt.NDArray[np.float32],
        k: int,
        cids: Sequence[int] | None,
        without: int | None,
        found: tuple[Any, dict[str, Any]],
        tail: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None = None,
        docs: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` best (passage id, exact cosine) of ``space`` from its index ``found``
        (:meth:`get`); ``tail`` is the exact matrix of the vectors written after the build;
        ``docs`` keeps only the passages of those documents."""
        index, record = found
        want = k * OVERSAMPLE * (2 if cids is not None or without is not None or docs is not None else 1)
        matches = index.search(query, min(want, max(1, len(index))), threads=1)
        ids = [int(i) for i in np.asarray(matches.keys, dtype=np.int64)]
        dead = _tombstone_seq(db) > int(record["tombstone"])
        if cids is not None or without is not None or docs is not None or dead:
            ids = _keep(db, ids, cids, without, docs)
        scored = rescore(db, space, query, ids)  # deleted passages have no row any more
        if tail is not None and len(tail[0]):
            scored += top(tail[1] @ query, tail[0], k)
            scored.sort(key=lambda item: -item[1])
        return scored[:k]

    def close(self) -> None:
        self._open.clear()


def _keep(
    db: Any, ids: list[int], cids: Sequence[int] | None, without: int | None, docs: Sequence[int] | None = None
) -> list[int]:
    """The ``ids`` that still exist, belong to ``cids`` (and to the documents ``docs``)
    and have no vector in ``without``, in order."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    scope, args = scope_sql("c.id", cids, docs, without)
    sql = f"select c.id from chunks c join documents d on d.id = c.document_id where c.id in ({marks}){scope}"
    alive = {int(r[0]) for r in db.execute(sql, [*ids, *args])}
    return [i for i in ids if i in alive]


# --------------------------------------------------------------------------- building
def needs_build(db: Any, folder: Path | None, space: int) -> str | None:
    """Why the index of ``space`` should be (re)built now, or None."""
    if folder is None:
        return None
    count = _space_count(db, space)
    if count < MIN_ENTRIES:
        return None
    record = _record(db, space)
    if record is None:
        return "no index yet"
    path = Path(record["path"])
    try:
        st = path.stat()
    except OSError:
        return "the index file is missing"
    if st.st_size != record["size"] or st.st_mtime_ns != record["mtime_ns"]:
        return "the index file does not match its record"
    entries = max(1, int(record["entries"]))
    added = int(
        db.execute(
            "select count(*) from passage_vectors where id > ? and space = ?", [int(record["covered"]), space]
        ).fetchone()[0]
    )
    removed = _tombstone_seq(db) - int(record["tombstone"])
    if added > STALE_SHARE * entries or removed > STALE_SHARE * entries:
        return f"{added:,} passages added and {removed:,} removed since it was built"
    return None


def build(store: Any, folder: Path, space: int, threads: int = 0, block: int = 20_000) -> dict[str, Any]:
    """Build the index of ``space`` from the database's vectors; write it atomically and
    record it. Returns the record."""
    from usearch.index import Index

    db = store.db
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o700)
    tombstone = _tombstone_seq(db)
    covered = int(db.execute("select coalesce(max(id), 0) from passage_vectors").fetchone()[0])
    dim_row = db.execute("select dim from vector_spaces where id = ?", [space]).fetchone()
    index = Index(
        ndim=int(dim_row[0]),
        metric="cos",
        dtype="i8",
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )
    last = 0
    entries = 0
    while True:
        rows = db.execute(
            "select id, chunk_id, vector from passage_vectors where id > ? and id <= ? and space = ? "
            "order by id limit ?",
            [last, covered, space, block],
        ).fetchall()
        if not rows:
            break
        keys = np.array([r[1] for r in rows], dtype=np.uint64)
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float16).reshape(len(rows), -1)
        index.add(keys, vectors.astype(np.float32), threads=threads or (os.cpu_count() or 1))
        last = int(rows[-1][0])
        entries += len(rows)
    path = index_path(folder, space)
    partial = path.with_name(path.name + ".partial")
    index.save(str(partial))
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(partial, 0o600)
    os.replace(partial, path)
    st = path.stat()
    record = {
        "path": str(path),
        "sha256": sha256_of(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "covered": covered,
        "tombstone": tombstone,
        "entries": entries,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with store.transaction() as tx:
        tx.execute(
            "insert or replace into derived_indexes (name, kind, path, sha256, size, mtime_ns, covered, tombstone, "
            "entries, built_at) values (?, 'usearch-i8', ?, ?, ?, ?, ?, ?, ?, ?)",
            [f"ann:{space}", *record.values()],
        )
        # Tombstones every index has seen are no longer needed.
        oldest = tx.execute("select min(tombstone) from derived_indexes").fetchone()[0]
        if oldest is not None:
            tx.execute("delete from chunk_tombstones where seq <= ?", [int(oldest)])
    return record



def maintain(store: Any, folder: Path | None, threads: int = 0) -> list[str]:
    """Build or rebuild every index that needs it; returns what was done, one line each."""
    if folder is None:
        return []
    done = []
    for (space,) in store.db.execute("select id from vector_spaces").fetchall():
        reason = needs_build(store.db, folder, int(space))
        if reason:
            started = time.monotonic()
            record = build(store, folder, int(space), threads)
            done.append(
                f"space {space}: {reason}; rebuilt {record['entries']:,} vectors in {time.monotonic() - started:.1f} s"
            )
            log.info(done[-1])
    return done


def status(db: Any, folder: Path | None, encrypted: bool) -> dict[str, Any]:
    """What `docs status` says about the ANN index files."""
    if folder is None:
        return {
            "state": "excluded" if encrypted else "off",
            "line": "no ANN index file: encryption at rest is on, so vectors are searched exactly inside the "
            "encrypted database (an index file could not be encrypted and still memory-mapped)"
            if encrypted
            else "",
        }
    spaces = []
    for space, kind in db.execute("select id, kind from vector_spaces").fetchall():
        record = _record(db, int(space))
        reason = needs_build(db, folder, int(space))
        spaces.append({"space": int(space), "kind": kind, "record": record, "rebuild": reason})
    built = [s for s in spaces if s["record"]]
    parts = [
        f"{s['kind']} {s['record']['entries']:,} vectors (usearch i8, unencrypted file in {folder})"
        + (f", rebuild due: {s['rebuild']}" if s["rebuild"] else "")
        for s in built
    ]
    line = "; ".join(parts) if parts else f"exact search (ANN files are built above {MIN_ENTRIES:,} vectors)"
    return {"state": "on", "folder": str(folder), "spaces": spaces, "line": line}
