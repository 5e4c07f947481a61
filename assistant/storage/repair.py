"""Check the database, and rebuild a damaged one from every row that can still be read.

A database can be damaged by things outside Enclave (a disk that lies about fsync, a
copy taken while it was written, a file restored without its ``-wal``) or by the lock
bug fixed in :func:`assistant.storage.crypt.read_head`. SQLite then answers "database
disk image is malformed" on some reads and not others. :func:`repair` keeps the damaged
file (and its ``-wal``) under a dated name, builds a new database with the current
schema, copies every row it can read table by table -- skipping over unreadable pages by
rowid -- rebuilds the full-text indexes from the copied rows, checks the result and puts
it in place. Nothing is deleted: what could not be read stays in the kept copy. A file
of which not even the list of tables can be read ("file is not a database") is kept the
same way, and Enclave starts again with an empty database.

Python 3.11's ``sqlite3`` has no binding of the SQLite shell's ``.recover``; this is the
part of it Enclave needs: its own tables, whose schema it knows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.core.errors import EnclaveError
from assistant.storage import crypt
from assistant.storage.database import REPAIR_COMMAND, Store

#: What writing the repaired copy can fail with (a full disk, most often).
_BUILD_ERRORS: tuple[type[BaseException], ...] = (OSError, EnclaveError, *crypt.DATABASE_ERRORS)
#: Rows read per query while copying; a failing batch is retried one row at a time.
_BATCH = 500


@dataclass
class Repair:
    """What :func:`repair` did."""

    path: Path
    #: Where the damaged file is kept ("" when it was not damaged and nothing was done).
    kept: str = ""
    #: Rows copied, per table.
    copied: dict[str, int] = field(default_factory=dict)
    #: Stretches of rows that could not be read (and were stepped over), per table.
    unreadable: dict[str, int] = field(default_factory=dict)
    #: Tables that could not be read at all.
    lost_tables: list[str] = field(default_factory=list)
    #: Rows an index of the damaged file still counts but that could not be copied, per
    #: table: lost (a damaged table page can read as empty, without an error).
    lost_rows: dict[str, int] = field(default_factory=dict)
    #: Why nothing at all could be read ("" when the list of tables could): the new database is empty.
    unreadable_file: str = ""
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": str(self.path),
            "damaged": bool(self.kept),
            "kept": self.kept,
            "copied": self.copied,
            "unreadable": self.unreadable,
            "lost_tables": self.lost_tables,
            "lost_rows": self.lost_rows,
            "unreadable_file": self.unreadable_file,
            "problems": self.problems,
        }


def check(path: Path, key: crypt.DatabaseKey | None, *, full: bool = False) -> list[str]:
    """SQLite's ``quick_check`` (``integrity_check`` with ``full``): [] when the file is sound."""
    try:
        conn = crypt.connect(path, key, readonly=True)
    except crypt.DATABASE_ERRORS as exc:  # not even the first page reads ("file is not a database")
        return [str(exc)]
    try:
        pragma = "integrity_check" if full else "quick_check"
        # SQLCipher answers with one row holding every line; SQLite with a row per line.
        rows = [line for row in conn.execute(f"PRAGMA {pragma}(20)").fetchall() for line in str(row[0]).splitlines()]
    except crypt.DATABASE_ERRORS as exc:
        return [str(exc)]
    finally:
        conn.close()
    return [] if rows == ["ok"] else rows


def repair(path: Path, key: crypt.DatabaseKey | None, *, force: bool = False) -> Repair:
    """Rebuild the database at ``path`` if it is damaged (or with ``force``); see the module docstring.

    Holds the database's lock file exclusively, so it refuses to run while any Enclave
    has the database open (an :class:`~assistant.storage.crypt.EncryptionError` that says so).
    """
    result = Repair(path)
    try:
        lock = crypt.open_lock(path, exclusive=True, blocking=False)
    except OSError as exc:
        raise RepairError(
            f"The database {path} cannot be repaired here: its folder cannot be written ({exc.strerror}).",
            "Copy the data directory somewhere writable, set ENCLAVE_HOME to the copy, and run this again.",
        ) from exc
    try:
        problems = check(path, key, full=True)
        if not problems and not force:
            return result
        result.problems = problems
        stamp = time.strftime("%Y%m%d-%H%M%S")
        partial = path.with_name(f"{path.name}.repairing")
        _remove(partial, _sibling(partial, "-wal"), _sibling(partial, "-shm"))
        try:
            source: _Source | None = _Source(path, key)
            tables = set(_tables(source)[0])
        except crypt.DATABASE_ERRORS as exc:  # nothing readable: an empty database, the file kept
            source, tables = None, set()
            result.unreadable_file = str(exc)
        try:
            after = _build(partial, key, source, tables, result)
        except _BUILD_ERRORS as exc:  # a full disk, most often
            _remove(partial, _sibling(partial, "-wal"), _sibling(partial, "-shm"), crypt.lock_path(partial))
            raise RepairError(
                f"The repaired copy of {path} could not be written ({getattr(exc, 'message', exc)}); "
                "the database was left as it was.",
                "Free disk space (the copy needs about as much as the database) and run "
                f"`{REPAIR_COMMAND}` again.",
            ) from exc
        finally:
            if source is not None:
                source.close()
        _remove(crypt.lock_path(partial), _sibling(partial, "-wal"), _sibling(partial, "-shm"))
        if after != ["ok"]:
            raise RepairError(
                f"The rebuilt copy {partial} did not pass SQLite's integrity check ({after[0]}); "
                f"{path} was left as it was.",
                f"Free disk space and run `{REPAIR_COMMAND}` again; keep both files for recovery.",
            )
        kept = path.with_name(f"{path.name}.damaged-{stamp}")
        _keep(path, kept)
        os.replace(partial, path)
        crypt._fsync_dir(path.parent)
        result.kept = str(kept)
    finally:
        crypt.release(lock)
    return result


def _build(partial: Path, key: crypt.DatabaseKey | None, source: _Source | None, tables: set[str], result: Repair) -> list[str]:
    """A new database at ``partial`` with every readable row; SQLite's integrity check of it."""
    target = Store(partial, key)
    try:
        if source is not None:
            _copy_all(source, tables, target, result)
        after = [str(row[0]) for row in target.db.execute("PRAGMA integrity_check(20)").fetchall()]
        # Everything into the main file, and out of WAL mode: nothing of the copy is left
        # in a -wal under the temporary name when the file is renamed.
        target.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        target.db.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()
    return after


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class _Rows(list[Any]):
    """Rows already fetched, read the way a cursor's are."""

    def fetchall(self) -> list[Any]:
        return list(self)

    def fetchone(self) -> Any:
        return self[0] if self else None


class _Source:
    """The damaged database, read-only, with a fresh connection after every failed read.

    Each query is fetched whole before it returns (SQLite reports a bad page while
    rows are fetched, not when the query starts). After an error the connection is
    replaced: SQLCipher keeps a page that fails its HMAC check as a lasting error of
    the connection's pager, so every later read on it would fail too (seen: 684 of
    1,200 messages copied from a file with one bad page, against 1,169 with this).
    """

    def __init__(self, path: Path, key: crypt.DatabaseKey | None) -> None:
        self._path, self._key = path, key
        self._conn = crypt.connect(path, key, readonly=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Rows:
        try:
            return _Rows(self._conn.execute(sql, params).fetchall())
        except crypt.DATABASE_ERRORS:
            self._reopen()
            raise

    def _reopen(self) -> None:
        with contextlib.suppress(*crypt.DATABASE_ERRORS):
            self._conn.close()
        self._conn = crypt.connect(self._path, self._key, readonly=True)

    def close(self) -> None:
        self._conn.close()


class RepairError(EnclaveError):
    """The rebuilt database could not be checked, so the damaged one was left in place."""


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _keep(path: Path, kept: Path) -> None:
    """A second name for the damaged file and its WAL; then the live WAL and -shm go.

    The WAL must not stay beside the new file: its frames carry no database identity,
    and SQLite would apply them to the rebuilt database.
    """
    _link_or_copy(path, kept)
    with contextlib.suppress(OSError):  # it holds conversations: private, as the database should be
        os.chmod(kept, 0o600)
    wal = _sibling(path, "-wal")
    if wal.exists():
        _link_or_copy(wal, _sibling(kept, "-wal"))
        wal.unlink()
    _sibling(path, "-shm").unlink(missing_ok=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _tables(conn: Any) -> tuple[list[str], list[str], set[str]]:
    """Ordinary tables, FTS tables, and the names of tables that are parts of FTS tables."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    virtual = [str(name) for name, sql in rows if sql and str(sql).upper().startswith("CREATE VIRTUAL")]
    shadow = {str(name) for name, _ in rows for v in virtual if str(name).startswith(v + "_")}
    plain = [
        str(name) for name, _ in rows if name not in shadow and name not in virtual and not str(name).startswith("sqlite_")
    ]
    return plain, virtual, shadow


def _columns(conn: Any, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")').fetchall()]


def _copy_all(source: Any, have: set[str], target: Any, result: Repair) -> None:
    """Every readable row of the tables ``have`` (the source's) that the new schema has too."""
    plain, virtual, _ = _tables(target.db.conn)
    conn = target.db.conn
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in plain:
            if table not in have:
                continue
            try:
                columns = [c for c in _columns(target.db.conn, table) if c in set(_columns(source, table))]
            except crypt.DATABASE_ERRORS:
                result.lost_tables.append(table)
                continue
            if columns:
                _copy_table(source, conn, table, columns, result)
        for table in virtual:  # rebuilt from the copied rows (external content or their own)
            with contextlib.suppress(*crypt.DATABASE_ERRORS):
                conn.execute(f'INSERT INTO "{table}"("{table}") VALUES (\'rebuild\')')
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def _has_rowid(conn: Any, table: str) -> bool:
    try:
        conn.execute(f'SELECT rowid FROM "{table}" LIMIT 0').fetchall()
    except crypt.DATABASE_ERRORS:
        return False
    return True


def _copy_table(source: Any, conn: Any, table: str, columns: list[str], result: Repair) -> None:
    names = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({", ".join("?" for _ in columns)})'
    copied = 0
    if not _has_rowid(source, table):  # WITHOUT ROWID: all or nothing
        try:
            rows = source.execute(f'SELECT {names} FROM "{table}"').fetchall()
        except crypt.DATABASE_ERRORS:
            result.lost_tables.append(table)
            return
        conn.executemany(insert, rows)
        result.copied[table] = len(rows)
        return
    last = -(2**63)
    skipped = 0
    size = _BATCH  # one row at a time near damage, then batches again
    singles = 0
    while True:
        try:
            batch = source.execute(
                # >= last + 1, not > last: a seek past ``last`` starts on ``last``'s page,
                # which may be the damaged one just stepped over.
                f'SELECT rowid, {names} FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT {size}', [last + 1]
            ).fetchall()
        except crypt.DATABASE_ERRORS:
            if size > 1:
                size, singles = 1, 0
                continue
            found = _step_over(source, table, names, last)
            if found is None:
                break
            skipped += 1
            last = found - 1
            continue
        if not batch:
            break
        conn.executemany(insert, [row[1:] for row in batch])
        copied += len(batch)
        last = int(batch[-1][0])
        if size == 1:
            singles += 1
            if singles >= _BATCH:
                size = _BATCH
    result.copied[table] = copied
    if skipped:
        result.unreadable[table] = skipped
    expected = max(_indexed_count(source, table), _fts_count(source, table))
    if expected > copied:
        result.lost_rows[table] = expected - copied


def _fts_count(source: Any, table: str) -> int:
    """Rows of ``table`` a full-text index over it still lists (its FTS5 ``_docsize``
    shadow table has one row per indexed row), 0 when there is none or it does not read."""
    try:
        found = source.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%' "
            "AND (sql LIKE ? OR sql LIKE ?)",
            [f"%content=[{table}]%", f"%content='{table}'%"],
        ).fetchall()
    except crypt.DATABASE_ERRORS:
        return 0
    return _largest_count(source, [f'SELECT count(*) FROM "{name}_docsize"' for (name,) in found])


def _indexed_count(source: Any, table: str) -> int:
    """How many rows the damaged file's indexes of ``table`` still list (0 when none
    reads): an index is its own b-tree, so it may survive the table's pages."""
    try:
        indexes = source.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", [table])
        names = [str(row[0]) for row in indexes.fetchall()]
    except crypt.DATABASE_ERRORS:
        return 0
    return _largest_count(source, [f'SELECT count(*) FROM "{table}" INDEXED BY "{name}"' for name in names])


def _largest_count(source: Any, queries: list[str]) -> int:
    """The largest count any of ``queries`` reads from the damaged file (0 when none reads)."""
    best = 0
    for query in queries:
        try:
            (count,) = source.execute(query).fetchone()
        except crypt.DATABASE_ERRORS:
            continue
        best = max(best, int(count))
    return best


def _step_over(source: Any, table: str, names: str, last: int) -> int | None:
    """The first rowid after ``last`` whose row reads again (None: no later row reads).

    Probes further and further on (last+1, +2, +4, …) until a seek succeeds, then
    bisects back between the last probe that failed and the one that read, so the rows
    just after a damaged page are copied, not stepped over with it. Before the first row
    (a damaged first page) probing starts from rowid 0: SQLite gives new rows positive
    rowids."""
    if last <= -(2**62):
        last = min(-1, _first_readable_negative(source, table))

    def first_at_or_after(start: int) -> int | None | bool:
        """The first rowid >= start, None when there is none, False when the seek fails."""
        try:
            row = source.execute(
                f'SELECT rowid, {names} FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT 1', [start]
            ).fetchone()
        except crypt.DATABASE_ERRORS:
            return False
        return None if row is None else int(row[0])

    failed, step = last, 1
    while step < 2**62:
        found = first_at_or_after(last + step)
        if found is False:
            failed, step = last + step, step * 2
            continue
        if found is None:
            return None
        good = last + step
        while good - failed > 1:  # the smallest start whose seek reads, in (failed, good]
            middle = (failed + good) // 2
            probe = first_at_or_after(middle)
            if probe is False:
                failed = middle
            else:
                good, found = middle, probe
        assert isinstance(found, int)
        return found
    return None


def _first_readable_negative(source: Any, table: str) -> int:
    """Rowid -1 unless the table reads rows below 0 (rare: only rowids written explicitly)."""
    try:
        row = source.execute(f'SELECT min(rowid) FROM "{table}" WHERE rowid < 0').fetchone()
    except crypt.DATABASE_ERRORS:
        return -1
    return int(row[0]) - 1 if row and row[0] is not None else -1
