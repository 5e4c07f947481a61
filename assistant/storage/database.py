"""One SQLite database for everything Enclave keeps: conversations, messages, context events.

Opened through sqlite-utils, it migrates itself on open (ordered steps, each in a
transaction, tracked by ``PRAGMA user_version``), runs in WAL mode with
``synchronous=FULL`` (a committed turn survives a power cut), and writes every
turn — the user message and the answer — in one transaction, so a crash at any
instant leaves either both or neither.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from assistant.core.errors import EnclaveError
from assistant.core.files import create_private
from assistant.retrieval.location import describe
from assistant.storage import crypt

if TYPE_CHECKING:
    from assistant.core.settings import Settings


class StoreError(EnclaveError):
    """The database cannot be opened or written."""


class DiskFull(StoreError):
    """A write failed because the disk (or the file system holding the database) is full;
    nothing already saved is lost, and work that needs no saving can go on."""


#: The command that rebuilds a damaged database (assistant/storage/repair.py).
REPAIR_COMMAND = "enclave doctor --repair"


def damaged(path: Path, exc: BaseException) -> StoreError:
    """The message for SQLite saying the database file is damaged: what, and the command that fixes it."""
    return StoreError(
        f"The database {path} is damaged (SQLite: {exc}).",
        f"Run `{REPAIR_COMMAND}`: it keeps the damaged file beside it and rebuilds the "
        "database from every row that can still be read.",
    )


class _Guard:
    """The store's lock. An SQLite error raised while it is held that says the file is
    damaged leaves as :func:`damaged`'s StoreError, so every front end shows the fix."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.RLock()
        self._path = path

    def __enter__(self) -> _Guard:
        self._lock.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._lock.release()
        if exc is not None and not isinstance(exc, StoreError) and crypt.is_damage(exc):
            raise damaged(self._path, exc) from exc


#: Less free space than this and a database that cannot be opened is called full: SQLite
#: needs room for its write-ahead log and shared-memory index (tens of KiB) to open one.
_FULL_BELOW = 1 << 20


def free_bytes(folder: Path) -> int | None:
    """Bytes free on the file system holding ``folder``; None when it cannot be read."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _busy(path: Path) -> StoreError:
    return StoreError(
        f"The database {path} stayed busy for {crypt.BUSY_TIMEOUT_S:.0f} s: another Enclave process kept writing.",
        "Wait for the other window or command (an indexing run, say) to finish, then try again; "
        "nothing already saved was lost.",
    )


def writable(path: Path) -> bool:
    """Whether this process can write the database (and create its -wal and lock files)."""
    folder = path.parent
    if not folder.exists():
        return writable(folder) if folder.parent != folder else False
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(folder, os.W_OK | os.X_OK)


# --------------------------------------------------------------------------- migrations
def _m1_conversations(db: sqlite_utils.Database) -> None:
    db.table("conversations").create(
        {
            "id": int,
            "title": str,
            "created_at": str,
            "updated_at": str,
            "model": str,
            "engine": str,
            "persona": str,
            "system_prompt": str,
            "context_policy": str,
        },
        pk="id",
    )
    db.table("messages").create(
        {
            "id": int,
            "conversation_id": int,
            "seq": int,
            "role": str,
            "content": str,
            "created_at": str,
            "model": str,
            "model_sha256": str,
            "engine": str,
            "where_ran": str,
            "finish_reason": str,
            "usage": str,  # JSON
            "context": str,  # JSON: window, used, reserve, drops
        },
        pk="id",
        foreign_keys=[("conversation_id", "conversations", "id")],
    )
    db.table("messages").create_index(["conversation_id", "seq"], unique=True)
    db.table("context_events").create(
        {"id": int, "conversation_id": int, "message_id": int, "created_at": str, "kind": str, "detail": str},
        pk="id",
        foreign_keys=[("conversation_id", "conversations", "id")],
    )
    db.table("context_events").create_index(["conversation_id"])
    db.table("messages").enable_fts(["content"], create_triggers=True, tokenize="porter unicode61")


def _m2_audit(db: sqlite_utils.Database) -> None:
    db.execute(
        "create table audit (seq integer primary key, at text not null, kind text not null, "
        "detail text not null, prev text not null, hash text not null)"
    )
    # Append-only: the database itself refuses to change or remove an entry.
    db.execute(
        "create trigger audit_no_update before update on audit "
        "begin select raise(abort, 'the audit log is append-only'); end"
    )
    db.execute(
        "create trigger audit_no_delete before delete on audit "
        "begin select raise(abort, 'the audit log is append-only'); end"
    )


def _m3_documents(db: sqlite_utils.Database) -> None:
    """Document collections, their files, passages (FTS5) and passage vectors."""
    db.execute("create table collections (id integer primary key, name text not null unique, created_at text not null)")
    db.execute(
        "create table collection_roots (collection_id integer not null references collections(id), "
        "path text not null, added_at text not null, primary key (collection_id, path))"
    )
    db.execute(
        "create table documents (id integer primary key, collection_id integer not null references collections(id), "
        "path text not null, sha256 text not null, size integer not null, mtime_ns integer not null, "
        "kind text not null, note text, chunks integer not null, indexed_at text not null, "
        "unique (collection_id, path))"
    )
    db.execute(
        "create table chunks (id integer primary key, document_id integer not null references documents(id), "
        "seq integer not null, page integer, line_start integer not null, line_end integer not null, "
        "heading text not null, text text not null, tokens integer not null)"
    )
    db.execute("create index chunks_document on chunks (document_id, seq)")
    db.table("chunks").enable_fts(["heading", "text"], create_triggers=True, tokenize="porter unicode61")
    # One row per passage and embedding model: vectors are float16, L2-normalised.
    db.execute(
        "create table chunk_vectors (chunk_id integer not null references chunks(id), embedder text not null, "
        "vector blob not null, primary key (chunk_id, embedder))"
    )
    db.execute(
        "create table document_skips (collection_id integer not null references collections(id), "
        "path text not null, reason text not null, at text not null, primary key (collection_id, path))"
    )
    db.execute("alter table messages add column citations text")


def _m4_edge(db: sqlite_utils.Database) -> None:
    """Edge operations: signed model releases, the anti-rollback counter, trusted signing
    keys, drift references, engine errors and crashes, and benchmark results."""
    # One row per installed version of a model build; ``state`` is current, previous or
    # retired. ``load_attempts`` is raised before every load of the current release and
    # cleared after it succeeds, so a load that crashed the process still counts.
    db.execute(
        "create table model_releases (id integer primary key, name text not null, engine text not null, "
        "version integer not null, sha256 text not null, signer text not null, released text not null, "
        "path text not null, installed_at text not null, state text not null, "
        "load_attempts integer not null default 0, release text not null, unique (name, engine, version))"
    )
    # The highest version ever installed; it only grows (a trigger refuses anything else).
    db.execute(
        "create table release_counters (name text not null, engine text not null, highest integer not null, "
        "primary key (name, engine))"
    )
    db.execute(
        "create trigger release_counters_only_up before update on release_counters when new.highest < old.highest "
        "begin select raise(abort, 'the release counter only goes up'); end"
    )
    db.execute(
        "create table trusted_keys (id text primary key, name text not null, public_pem text not null, "
        "added_at text not null)"
    )
    db.execute(
        "create table drift_references (name text not null, engine text not null, sha256 text not null, "
        "engine_build text not null, created_at text not null, origin text not null, figures text not null, "
        "primary key (name, engine, sha256, engine_build))"
    )
    db.execute(
        "create table engine_events (id integer primary key, at text not null, model text not null, "
        "engine text not null, sha256 text not null, kind text not null, message text not null)"
    )
    db.execute("create index engine_events_at on engine_events (at)")
    db.execute(
        "create table bench_runs (id integer primary key, at text not null, model text not null, "
        "engine text not null, sha256 text not null, report text not null)"
    )


def _m5_grounding(db: sqlite_utils.Database) -> None:
    """Grounded answers (issue 13): a document's title and the parser version that read
    it (older ones are re-read on the next sync); a passage's printed page label and
    its line map (JSON: the source lines of each line of its text), so a quoted
    sentence can be located exactly."""
    db.execute("alter table documents add column title text")
    db.execute("alter table documents add column parser_version integer not null default 1")
    db.execute("alter table chunks add column page_label text")
    db.execute("alter table chunks add column line_map text")


def _m6_audit_mac(db: sqlite_utils.Database) -> None:
    """Audit entries carry an HMAC under a key kept outside the database (see storage/audit.py);
    entries written before this step keep a NULL ``mac`` and are sealed by the first keyed one."""
    db.execute("alter table audit add column mac text")


def _m7_conversation_state(db: sqlite_utils.Database) -> None:
    """What a conversation is set to, so that `--continue` brings it back as it was left:
    its documents (JSON: null = off, [] = every collection, or the names) and its
    sampling (JSON: temperature, repetition_penalty)."""
    db.execute("alter table conversations add column documents text")
    db.execute("alter table conversations add column options text")


def _m8_documents_at_scale(db: sqlite_utils.Database) -> None:
    """Growing passage ids, vectors per space, the collection inside the FTS5 index,
    derived index files and background work (assistant/storage/scale_schema.py)."""
    from assistant.storage import scale_schema

    scale_schema.migrate(db)


def _m9_conversation_ids(db: sqlite_utils.Database) -> None:
    """Conversation ids only grow: SQLite gives a new row ``max(id) + 1``, so deleting the
    newest conversation handed its id to the next one, and the audit log's "deleted
    conversation 5" then named a conversation the user never deleted. ``counters`` keeps
    the highest id ever given (as for passages); a trigger refuses a reused one."""
    db.execute("insert into counters (name, value) select 'conversations', coalesce(max(id), 0) from conversations")
    db.execute(
        "create trigger conversation_ids_increase after insert on conversations begin "
        "select raise(abort, 'conversation ids must increase (create conversations through Store)') "
        "where new.id <= (select value from counters where name = 'conversations'); "
        "update counters set value = new.id where name = 'conversations'; end"
    )


# New steps go at the end; a released step is never edited.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m1_conversations,
    _m2_audit,
    _m3_documents,
    _m4_edge,
    _m5_grounding,
    _m6_audit_mac,
    _m7_conversation_state,
    _m8_documents_at_scale,
    _m9_conversation_ids,
]

#: Conversation columns stored as JSON.
_JSON_COLUMNS = ("documents", "options")


@dataclass
class StoredMessage:
    id: int
    seq: int
    role: str
    content: str
    created_at: str
    model: str | None
    model_sha256: str | None
    engine: str | None
    where_ran: str | None
    finish_reason: str | None
    usage: dict[str, Any] | None
    context: dict[str, Any] | None
    citations: list[dict[str, Any]] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredMessage:
        return cls(
            id=row["id"],
            seq=row["seq"],
            role=row["role"],
            content=row["content"],
            created_at=row["created_at"],
            model=row.get("model"),
            model_sha256=row.get("model_sha256"),
            engine=row.get("engine"),
            where_ran=row.get("where_ran"),
            finish_reason=row.get("finish_reason"),
            usage=json.loads(row["usage"]) if row.get("usage") else None,
            context=json.loads(row["context"]) if row.get("context") else None,
            citations=json.loads(row["citations"]) if row.get("citations") else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class Store:
    """The database. Safe to share between threads (one lock around each operation) and
    between processes (a TUI, a `chat` and a `docs add` on one home at once).

    ``key`` opens (or creates) it encrypted with SQLCipher; None is plaintext.
    ``readonly`` opens it without writing anything (no lock file, no WAL switch, no
    migration): commands that only read use it on a read-only home. Front ends call
    :meth:`open`, which checks the file against the settings and finds the key.

    Concurrency: every write is one :meth:`transaction`, begun with ``BEGIN IMMEDIATE``.
    A deferred ``BEGIN`` that reads before it writes (every turn does: the next
    ``seq``) fails at once with ``SQLITE_BUSY_SNAPSHOT`` when another process
    committed meanwhile, and SQLite's busy timeout does not apply to that case;
    taking the write lock first makes the second writer wait its turn instead
    (up to :data:`~assistant.storage.crypt.BUSY_TIMEOUT_S`). Readers never wait (WAL).
    """

    def __init__(
        self,
        path: Path,
        key: crypt.DatabaseKey | None = None,
        *,
        readonly: bool = False,
        config_dir: Path | None = None,
    ) -> None:
        self.path = path
        self.encrypted = key is not None
        #: Kept for the background embedder, which gets it over a pipe (assistant/retrieval/backfill.py).
        self.key = key
        self.readonly = readonly
        #: Where the audit log keeps its key and counter (outside the data directory).
        self.config_dir = config_dir
        self._lock = _Guard(path)
        try:
            if not readonly:
                # Private from the first byte: SQLite gives the -wal and -shm files the
                # database file's mode, so creating it 0600 makes all three private.
                create_private(path)
            # Shared while open: `enclave init --encrypt` converts only when no one holds it.
            self._file_lock = crypt.open_lock(path, exclusive=False, readonly=readonly)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            raise StoreError(
                f"The data directory {path.parent} cannot be written ({exc.strerror}), so this command, "
                "which saves or records something, cannot run.",
                "Commands that only read still work here (history list/show/search, audit verify/list, "
                "docs list/status/search, models list/verify, config show, doctor); "
                "run this one where the data directory is writable.",
            ) from exc
        try:
            if not readonly:
                crypt.remove_leftovers(path)
            conn = crypt.connect(path, key, readonly=readonly)
            self.db = sqlite_utils.Database(conn)
            if readonly:
                self.db.execute("PRAGMA query_only=ON")
            else:
                self._use_wal()
                self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            # Deleted text is overwritten, not left in free pages.
            self.db.execute("PRAGMA secure_delete=ON")
            if readonly:
                self._check_current()
            else:
                self._migrate()
        except crypt.EncryptionError:
            crypt.release(self._file_lock)
            raise
        except StoreError:
            crypt.release(self._file_lock)
            raise
        except crypt.DATABASE_ERRORS as exc:
            crypt.release(self._file_lock)
            if "not a database" in str(exc) and key is None and crypt.file_state(path) == "encrypted":
                raise crypt.missing_key(path) from None
            free = free_bytes(path.parent)
            if free is not None and free < _FULL_BELOW:
                # SQLite says "disk I/O error" when it cannot create its -wal and -shm files.
                raise DiskFull(
                    f"The database {path} cannot be opened: the disk holding it is full ({free:,} bytes free).",
                    "Free some disk space and try again; nothing already saved was lost.",
                ) from exc
            raise StoreError(
                f"The database {path} cannot be opened: {exc}.",
                "If the disk is full, free space and retry; if the file is damaged, run "
                f"`{REPAIR_COMMAND}` (it keeps the damaged file and copies every readable row).",
            ) from exc

    @classmethod
    def open(cls, settings: Settings, *, interactive: bool | None = None, write: bool = True) -> Store:
        """The database the settings name, encrypted or not as ``settings.encrypt`` says.

        The key comes from ``ENCLAVE_DB_KEY``, the system keyring, or (``interactive``,
        default: stdin is a terminal) a hidden prompt. Raises
        :class:`~assistant.storage.crypt.EncryptionError` when the file and the setting disagree
        or the key is missing or wrong. ``write=False`` is for commands that only read:
        where the home cannot be written (a read-only disk or folder) the database is
        opened read-only instead of failing.
        """
        path = settings.locations.database
        key = crypt.key_for(path, settings.encrypt, interactive=interactive)
        readonly = not write and not writable(path)
        if readonly and not path.is_file():
            raise StoreError(
                f"There is no database at {path} yet, and its folder cannot be written.",
                "Run Enclave once where the data directory is writable, or point ENCLAVE_HOME elsewhere.",
            )
        return cls(path, key, readonly=readonly, config_dir=settings.locations.config)

    # -- schema
    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _use_wal(self) -> None:
        """Switch to WAL once, when the database is new; several processes may race here.

        Changing the journal mode needs the database to itself, and SQLite answers
        "database is locked" at once (no busy wait) while another connection reads it:
        retried until the busy timeout. Already in WAL, this is one read.
        """
        deadline = time.monotonic() + crypt.BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            mode = str(self.db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode == "wal":
                return
            try:
                mode = str(self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
            except crypt.OPERATIONAL_ERRORS as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            if mode == "wal":
                return
            if time.monotonic() > deadline:
                raise _busy(self.path)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _migrate(self) -> None:
        """Bring the schema up to date: one process migrates (inside ``BEGIN IMMEDIATE``),
        any other opening the file meanwhile waits for it and then finds nothing to do."""
        if self.version >= len(MIGRATIONS):
            return
        with self.transaction():
            for number, step in enumerate(MIGRATIONS, start=1):
                if self.version >= number:  # read again under the write lock
                    continue
                step(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")

    def _check_current(self) -> None:
        if self.version < len(MIGRATIONS):
            raise StoreError(
                f"The database {self.path} was written by an older Enclave and needs an upgrade, "
                "but it is opened read-only.",
                "Run any Enclave command once where the data directory is writable; it upgrades itself.",
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction: all of it is committed, or none of it.

        Begun with ``BEGIN IMMEDIATE`` (see the class docstring); a transaction inside
        another is a savepoint of the outer one.
        """
        with self._lock:
            conn = self.db.conn
            if conn.in_transaction:
                with self.db.atomic():
                    yield self.db
                return
            if self.readonly:
                raise StoreError(
                    f"The database {self.path} is open read-only (its folder cannot be written), "
                    "so nothing can be saved.",
                    "Run this where the data directory is writable.",
                )
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except crypt.INTEGRITY_ERRORS as exc:
                raise StoreError(
                    f"Could not save: {exc} (the conversation may have been deleted meanwhile).",
                    "Start a new conversation; nothing else was changed.",
                ) from exc
            except crypt.OPERATIONAL_ERRORS as exc:
                text = str(exc).lower()
                if "disk" in text or "full" in text:
                    raise DiskFull(
                        f"Could not save to {self.path}: {exc}.",
                        "Free some disk space; nothing already saved was lost.",
                    ) from exc
                if "locked" in text or "busy" in text:
                    raise _busy(self.path) from exc
                if "readonly" in text or "read-only" in text:
                    raise StoreError(
                        f"Could not save to {self.path}: the file or its folder is read-only.",
                        "Check the permissions of the data directory; nothing already saved was lost.",
                    ) from exc
                raise

    def close(self) -> None:
        with self._lock:
            self.db.close()
            crypt.release(self._file_lock)
            self._file_lock = None

    # -- conversations
    def create_conversation(
        self, *, model: str, engine: str, persona: str, system_prompt: str, context_policy: str, title: str = ""
    ) -> int:
        with self.transaction() as db:
            now = _now()
            (highest,) = db.execute("select value from counters where name = 'conversations'").fetchone()
            table = db.table("conversations").insert(
                {
                    "id": int(highest) + 1,
                    "title": title,
                    "created_at": now,
                    "updated_at": now,
                    "model": model,
                    "engine": engine,
                    "persona": persona,
                    "system_prompt": system_prompt,
                    "context_policy": context_policy,
                }
            )
            return int(table.last_pk)  # type: ignore[arg-type]

    def conversation(self, conversation_id: int) -> dict[str, Any]:
        with self._lock:
            rows = list(self.db.query("select * from conversations where id = ?", [conversation_id]))
        if not rows:
            raise EnclaveError(
                f"There is no conversation {conversation_id}.", "See `enclave history list` for the ones you have."
            )
        row = rows[0]
        for column in _JSON_COLUMNS:
            row[column] = json.loads(row[column]) if row.get(column) else None
        return row

    def update_conversation(
        self,
        conversation_id: int,
        *,
        system_prompt: str | None = None,
        documents: list[str] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Save what a conversation is set to: its system prompt, its documents (None:
        off, []: every collection) and its sampling options."""
        values: dict[str, Any] = {"documents": None if documents is None else json.dumps(documents)}
        if system_prompt is not None:
            values["system_prompt"] = system_prompt
        if options is not None:
            values["options"] = json.dumps(options)
        with self.transaction() as db:
            db.table("conversations").update(conversation_id, values)

    def latest_conversation(self) -> int | None:
        with self._lock:
            row = self.db.execute("select id from conversations order by updated_at desc, id desc limit 1").fetchone()
        return int(row[0]) if row else None

    def list_conversations(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(
                self.db.query(
                    "select c.*, (select count(*) from messages m where m.conversation_id = c.id) as messages, "
                    "(select content from messages m where m.conversation_id = c.id order by seq limit 1) as first "
                    "from conversations c order by c.updated_at desc, c.id desc limit ?",
                    [limit],
                )
            )
        for row in rows:
            for column in _JSON_COLUMNS:
                row[column] = json.loads(row[column]) if row.get(column) else None
        return rows

    def rename(self, conversation_id: int, title: str) -> None:
        self.conversation(conversation_id)
        with self.transaction() as db:
            db.table("conversations").update(conversation_id, {"title": title, "updated_at": _now()})

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation, its messages (and their full-text index rows) and events."""
        self.conversation(conversation_id)
        with self.transaction() as db:
            db.execute("delete from context_events where conversation_id = ?", [conversation_id])
            db.execute("delete from messages where conversation_id = ?", [conversation_id])
            db.execute("delete from conversations where id = ?", [conversation_id])
            # Rewrite the full-text index so no segment keeps the deleted words.
            db.execute("insert into messages_fts(messages_fts) values('optimize')")
        with self._lock:
            # And fold the WAL into the main file, so the old pages are gone from disk too.
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- messages
    def messages(self, conversation_id: int) -> list[StoredMessage]:
        with self._lock:
            rows = self.db.query("select * from messages where conversation_id = ? order by seq", [conversation_id])
            return [StoredMessage.from_row(r) for r in rows]

    def add_turn(
        self,
        conversation_id: int,
        user: str,
        answer: str,
        *,
        model: str,
        model_sha256: str,
        engine: str,
        where_ran: str,
        finish_reason: str,
        usage: dict[str, Any] | None,
        context: dict[str, Any] | None,
        citations: list[dict[str, Any]] | None = None,
        title: str | None = None,
        replace_last: bool = False,
    ) -> tuple[int, int]:
        """Store one exchange atomically; returns the two message ids. ``title`` names a
        conversation that has none yet; ``replace_last`` deletes the last exchange in the
        same transaction (an answer retried, a message edited)."""
        with self.transaction() as db:
            if replace_last:
                last = [
                    int(r[0])
                    for r in db.execute(
                        "select id from messages where conversation_id = ? order by seq desc limit 2", [conversation_id]
                    ).fetchall()
                ]
                if last:
                    marks = ",".join("?" * len(last))
                    db.execute(f"delete from context_events where message_id in ({marks})", last)
                    db.execute(f"delete from messages where id in ({marks})", last)
            row = db.execute(
                "select coalesce(max(seq), -1) from messages where conversation_id = ?", [conversation_id]
            ).fetchone()
            seq = int(row[0]) + 1
            now = _now()
            messages = db.table("messages")
            user_id = messages.insert(
                {"conversation_id": conversation_id, "seq": seq, "role": "user", "content": user, "created_at": now}
            ).last_pk
            answer_id = messages.insert(
                {
                    "conversation_id": conversation_id,
                    "seq": seq + 1,
                    "role": "assistant",
                    "content": answer,
                    "created_at": now,
                    "model": model,
                    "model_sha256": model_sha256,
                    "engine": engine,
                    "where_ran": where_ran,
                    "finish_reason": finish_reason,
                    "usage": json.dumps(usage) if usage is not None else None,
                    "context": json.dumps(context) if context is not None else None,
                    "citations": json.dumps(citations) if citations else None,
                }
            ).last_pk
            for drop in (context or {}).get("drops", []):
                db.table("context_events").insert(
                    {
                        "conversation_id": conversation_id,
                        "message_id": answer_id,
                        "created_at": now,
                        "kind": drop["kind"],
                        "detail": json.dumps(drop),
                    }
                )
            update: dict[str, Any] = {"updated_at": now}
            if not db.execute("select title from conversations where id = ?", [conversation_id]).fetchone()[0]:
                update["title"] = title if title is not None else " ".join(user.split())[:60]
            db.table("conversations").update(conversation_id, update)
            return int(user_id), int(answer_id)  # type: ignore[arg-type]

    def context_events(self, conversation_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(
                self.db.query("select * from context_events where conversation_id = ? order by id", [conversation_id])
            )

    def search(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        """Full-text search (FTS5, BM25) over every message; any text is a safe query.

        Each word is quoted as an FTS5 string (``"`` doubled inside), so quotes,
        ``NEAR(``, ``*``, ``-`` and ``AND`` are searched for, never parsed as syntax; a
        piece with no letter or digit is left out (the tokenizer would drop it anyway,
        and an empty phrase is a syntax error in FTS5)."""
        words = [w for w in text.split() if re.search(r"\w", w)]
        if not words:
            return []
        query = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        with self._lock:
            return list(
                self.db.query(
                    "select m.id, m.conversation_id, m.seq, m.role, m.created_at, c.title, "
                    "snippet(messages_fts, 0, '[', ']', '…', 12) as snippet "
                    "from messages_fts join messages m on m.rowid = messages_fts.rowid "
                    "join conversations c on c.id = m.conversation_id "
                    "where messages_fts match ? order by rank limit ?",
                    [query, limit],
                )
            )

    # -- export
    def export(self, conversation_id: int, fmt: str = "md") -> str:
        conv = self.conversation(conversation_id)
        messages = self.messages(conversation_id)
        if fmt == "json":
            return json.dumps(
                {"conversation": conv, "messages": [m.as_dict() for m in messages]}, ensure_ascii=False, indent=2
            )
        if fmt != "md":
            raise EnclaveError(f"Unknown export format {fmt!r}.", "Use md or json.")
        lines = [f"# {conv['title'] or 'Conversation ' + str(conversation_id)}", ""]
        lines.append(f"- created: {conv['created_at']}")
        lines.append(f"- model: {conv['model']} ({conv['engine']}), persona: {conv['persona']}")
        lines.append("")
        for m in messages:
            who = "You" if m.role == "user" else "Enclave"
            lines.append(f"## {who}")
            lines.append("")
            content = m.content
            if m.role == "assistant" and not m.citations:
                # Only a quote from the sources is a block quote here: a model that
                # copies that style from earlier answers ("> Harlow v Marsh is a
                # landmark case …") must not look like one.
                content = re.sub(r"(?m)^(\s*)>", r"\1\\>", content)
            lines.append(content)
            lines.append("")
            if m.role == "assistant":
                where = m.where_ran or "local"
                sha = (m.model_sha256 or "")[:12]
                context = m.context or {}
                mode = f" · answer mode {context['answer_mode']}" if context.get("answer_mode") else ""
                lines.append(f"*{m.model} · {m.engine} · {where} · sha256 {sha}… · {m.created_at}{mode}*")
                lines.append("")
                written = [s for s in context.get("answer_sentences") or [] if s.get("kind") == "model"]
                if written:
                    # The screen's verdict on each sentence the model wrote, kept with the record.
                    lines.append("Each sentence the model wrote, checked against the sources:")
                    lines.extend(f"- {s['text']} — {s['label']}" for s in written)
                    lines.append("")
                for c in m.citations or []:
                    where = c.get("location") or describe(
                        c["path"], c.get("page"), c["line_start"], c["line_end"], c.get("unit", "lines")
                    )
                    used = c.get("cited") or c.get("supports")
                    lines.append(f"- [{c['n']}] {where}{'' if used else ' (given, not used)'}")
                    if used and c.get("text"):
                        # The passage as it was quoted, so the export stands on its own.
                        lines.extend("  > " + line if line else "  >" for line in str(c["text"]).splitlines())
                if m.citations:
                    lines.append("")
        return "\n".join(lines)
