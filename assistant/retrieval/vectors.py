"""Vector search over one vector space: the passages' float16 rows, ranked by cosine.

A passage can have vectors in two spaces: the static space (the cheap vector written by
``docs add``) and the contextual MiniLM space (filled in by the background embedder,
:mod:`assistant.retrieval.backfill`). Search ranks each passage by the best vector it has
(:meth:`assistant.retrieval.index.Library.search`): the MiniLM ranking covers the passages
with a MiniLM vector, the static ranking only those still without one.

Small sets are ranked exactly (a float32 matrix held in RAM, cached until the passages
or vectors change); large spaces use the approximate index (:mod:`assistant.retrieval.ann`)
with its top candidates re-scored exactly from the stored float16 rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def space_id(db: Any, sha256: str, kind: str, dim: int) -> int:
    """The id of a vector space (a model's sha256), created on first use."""
    row = db.execute("select id from vector_spaces where sha256 = ?", [sha256]).fetchone()
    if row:
        return int(row[0])
    return int(
        db.execute("insert into vector_spaces (sha256, kind, dim) values (?, ?, ?)", [sha256, kind, dim]).lastrowid
    )


def find_space(db: Any, sha256: str) -> int | None:
    row = db.execute("select id from vector_spaces where sha256 = ?", [sha256]).fetchone()
    return int(row[0]) if row else None


def passage_text(heading: str | None, text: str) -> str:
    """What a passage's MiniLM vector is computed from: its heading line, then its text."""
    return f"{heading}\n{text}" if heading else text


def vector_blob(vector: npt.NDArray[Any]) -> bytes:
    """How a vector is stored: float16 (half the disk; re-scoring needs no more)."""
    return np.asarray(vector, dtype=np.float16).tobytes()


def stamp(db: Any) -> tuple[int, int, int]:
    """Changes whenever a passage or a vector is added or deleted: (highest passage id
    ever given, tombstones written, highest vector row id). Three O(1) look-ups."""
    row = db.execute(
        "select (select value from counters where name = 'chunks'), "
        "coalesce((select seq from sqlite_sequence where name = 'chunk_tombstones'), 0), "
        "coalesce((select max(id) from passage_vectors), 0)"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def top(scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], k: int) -> list[tuple[int, float]]:
    """The ``k`` best (id, score) pairs, best first."""
    if len(ids) == 0 or k <= 0:
        return []
    take = min(k, len(ids))
    best = np.argpartition(-scores, take - 1)[:take]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(ids[i]), float(scores[i])) for i in best]


def rescore(db: Any, space: int, query: npt.NDArray[np.float32], ids: Sequence[int]) -> list[tuple[int, float]]:
    """Exact cosine of ``query`` with the stored rows of ``ids`` (those that still exist), best first."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"select chunk_id, vector from passage_vectors where space = ? and chunk_id in ({marks})", [space, *ids]
    ).fetchall()
    if not rows:
        return []
    found = np.array([r[0] for r in rows], dtype=np.int64)
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), -1).astype(np.float32)
    return top(matrix @ query, found, len(rows))


class Matrices:
    """Exact search: each (space, collections, exclusion) set as one float32 matrix,
    cached until :func:`stamp` changes. Float32 in RAM (1.5 KB per 384-d passage) because
    converting float16 on every query cost ~150 ms at 100k passages; above
    :data:`assistant.retrieval.ann.MIN_ENTRIES` the ANN index is used instead."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = {}
        self._stamp: tuple[int, int, int] | None = None

    def clear(self) -> None:
        self._cache.clear()
        self._stamp = None

    def get(
        self,
        db: Any,
        space: int,
        cids: Sequence[int] | None,
        without: int | None = None,
        above: int | None = None,
        docs: Sequence[int] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Ids and rows of ``space`` for the passages of ``cids`` (None: all), leaving out
        the passages that have a vector in space ``without``; with ``above``, only the
        vector rows written after that row id (what an ANN index does not cover yet); with
        ``docs``, only the passages of those documents."""
        now = stamp(db)
        if now != self._stamp:
            self._cache.clear()
            self._stamp = now
        key = (space, tuple(cids) if cids is not None else None, without, above, tuple(docs) if docs is not None else None)
        if key not in self._cache:
            sql = "select v.chunk_id, v.vector from passage_vectors v"
            args: list[Any] = []
            where = ["v.space = ?"]
            args.append(space)
            if above is not None:
                where.insert(0, "v.id > ?")
                args.insert(0, above)
            if cids is not None or docs is not None:
                sql += " join chunks c on c.id = v.chunk_id join documents d on d.id = c.document_id"
            if cids is not None:
                where.append(f"d.collection_id in ({','.join('?' * len(cids))})")
                args.extend(cids)
            if docs is not None:
                where.append(f"d.id in ({','.join('?' * len(docs))})")
                args.extend(docs)
            if without is not None:
                where.append(
                    "not exists (select 1 from passage_vectors m where m.space = ? and m.chunk_id = v.chunk_id)"
                )
                args.append(without)
            rows = db.execute(f"{sql} where {' and '.join(where)}", args).fetchall()
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            matrix: npt.NDArray[np.float32] = np.zeros((0, 1), dtype=np.float32)
            if rows:
                half = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), -1)
                matrix = half.astype(np.float32)
            self._cache[key] = (ids, matrix)
        return self._cache[key]

    def search(
        self,
        db: Any,
        space: int,
        query: npt.NDArray[np.float32],
        k: int,
        cids: Sequence[int] | None,
        without: int | None = None,
        docs: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        ids, matrix = self.get(db, space, cids, without, docs=docs)
        if len(ids) == 0:
            return []
        return top(matrix @ query, ids, k)


def scope_sql(
    chunk: str, cids: Sequence[int] | None, docs: Sequence[int] | None, without: int | None
) -> tuple[str, list[Any]]:
    """SQL conditions (each starting " and") keeping the passages ``chunk`` names (a
    column) to the collections ``cids`` and documents ``docs`` (``d`` is the documents
    table, joined) and to those without a vector in the space ``without``; with their
    arguments in order."""
    sql = ""
    args: list[Any] = []
    if cids is not None:
        sql += f" and d.collection_id in ({','.join('?' * len(cids))})"
        args.extend(cids)
    if docs is not None:
        sql += f" and d.id in ({','.join('?' * len(docs))})"
        args.extend(docs)
    if without is not None:
        sql += f" and not exists (select 1 from passage_vectors m where m.space = ? and m.chunk_id = {chunk})"
        args.append(without)
    return sql, args


def stream_search(
    db: Any,
    space: int,
    query: npt.NDArray[np.float32],
    k: int,
    cids: Sequence[int] | None,
    without: int | None = None,
    block: int = 50_000,
    docs: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """Exact search that never holds more than ``block`` rows: for a large set whose ANN
    index is not built yet (or is being repaired). At 1M × 384 a cached float32 matrix
    would be 1.5 GB; this costs time instead (a scan per query), and only until the
    background process has built the index."""
    best: list[tuple[int, float]] = []
    last = 0
    where = "v.space = ? and v.id > ?"
    joins = ""
    if cids is not None or docs is not None:
        joins = " join chunks c on c.id = v.chunk_id join documents d on d.id = c.document_id"
    scope, extra = scope_sql("v.chunk_id", cids, docs, without)
    where += scope
    while True:
        rows = db.execute(
            f"select v.id, v.chunk_id, v.vector from passage_vectors v{joins} where {where} order by v.id limit ?",
            [space, last, *extra, block],
        ).fetchall()
        if not rows:
            break
        ids = np.array([r[1] for r in rows], dtype=np.int64)
        half = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float16).reshape(len(rows), -1)
        best = sorted(best + top(half.astype(np.float32) @ query, ids, k), key=lambda item: -item[1])[:k]
        last = int(rows[-1][0])
    return best
