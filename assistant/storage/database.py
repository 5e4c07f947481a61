"""One SQLite database for everything Enclave keeps: conversations, messages, context events.

Opened through sqlite-utils, it migrates itself on open (ordered steps, each in a
transaction, tracked by ``PRAGMA user_version``), runs in WAL mode with
``synchronous=FULL`` (a committed turn survives a power cut), and writes every
turn — the user message and the answer — in one transaction, so a crash at any
instant leaves either both or neither.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from assistant.core.errors import EnclaveError
from assistant.retrieval.location import describe
from assistant.storage import crypt

if TYPE_CHECKING:
    from assistant.core.settings import Settings


class StoreError(EnclaveError):
    """The database cannot be opened or written."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m1_conversations, _m2_audit, _m3_documents, _m4_edge]


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
    """The database. Safe to share between threads (one lock around each operation).

    ``key`` opens (or creates) it encrypted with SQLCipher; None is plaintext.
    Front ends call :meth:`open`, which checks the file against the settings and
    finds the key.
    """

    def __init__(self, path: Path, key: crypt.DatabaseKey | None = None) -> None:
        self.path = path
        self.encrypted = key is not None
        self._lock = threading.RLock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Shared while open: `enclave init --encrypt` converts only when no one holds it.
        self._file_lock = crypt.open_lock(path, exclusive=False)
        try:
            crypt.remove_leftovers(path)
            conn = crypt.connect(path, key)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            # Deleted text is overwritten, not left in free pages.
            self.db.execute("PRAGMA secure_delete=ON")
            self._migrate()
        except crypt.EncryptionError:
            crypt.release(self._file_lock)
            raise
        except crypt.DATABASE_ERRORS as exc:
            crypt.release(self._file_lock)
            if "not a database" in str(exc) and key is None and crypt.file_state(path) == "encrypted":
                raise crypt.missing_key(path) from None
            raise StoreError(
                f"The database {path} cannot be opened: {exc}.",
                "If the disk is full, free space and retry; if the file is damaged, move it aside "
                "(Enclave starts a new one) and keep the old copy for recovery.",
            ) from exc

    @classmethod
    def open(cls, settings: Settings, *, interactive: bool | None = None) -> Store:
        """The database the settings name, encrypted or not as ``settings.encrypt`` says.

        The key comes from ``ENCLAVE_DB_KEY``, the system keyring, or (``interactive``,
        default: stdin is a terminal) a hidden prompt. Raises
        :class:`~assistant.storage.crypt.EncryptionError` when the file and the setting disagree
        or the key is missing or wrong.
        """
        path = settings.locations.database
        return cls(path, crypt.key_for(path, settings.encrypt, interactive=interactive))

    # -- schema
    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            for number, step in enumerate(MIGRATIONS, start=1):
                if self.version >= number:
                    continue
                with self.db.atomic():
                    step(self.db)
                    self.db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        with self._lock:
            try:
                with self.db.atomic():
                    yield self.db
            except crypt.INTEGRITY_ERRORS as exc:
                raise StoreError(
                    f"Could not save: {exc} (the conversation may have been deleted meanwhile).",
                    "Start a new conversation; nothing else was changed.",
                ) from exc
            except crypt.OPERATIONAL_ERRORS as exc:
                if "disk" in str(exc).lower() or "full" in str(exc).lower():
                    raise StoreError(
                        f"Could not save to {self.path}: {exc}.",
                        "Free some disk space; nothing already saved was lost.",
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
            table = db.table("conversations").insert(
                {
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
        return rows[0]

    def latest_conversation(self) -> int | None:
        with self._lock:
            row = self.db.execute("select id from conversations order by updated_at desc, id desc limit 1").fetchone()
        return int(row[0]) if row else None

    def list_conversations(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            return list(
                self.db.query(
                    "select c.*, (select count(*) from messages m where m.conversation_id = c.id) as messages, "
                    "(select content from messages m where m.conversation_id = c.id order by seq limit 1) as first "
                    "from conversations c order by c.updated_at desc, c.id desc limit ?",
                    [limit],
                )
            )

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
    ) -> tuple[int, int]:
        """Store one exchange atomically; returns the two message ids."""
        with self.transaction() as db:
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
            title = db.execute("select title from conversations where id = ?", [conversation_id]).fetchone()[0]
            update: dict[str, Any] = {"updated_at": now}
            if not title:
                update["title"] = " ".join(user.split())[:60]
            db.table("conversations").update(conversation_id, update)
            return int(user_id), int(answer_id)  # type: ignore[arg-type]

    def context_events(self, conversation_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(
                self.db.query("select * from context_events where conversation_id = ? order by id", [conversation_id])
            )

    def search(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        """Full-text search (FTS5, BM25) over every message."""
        with self._lock:
            return list(
                self.db.query(
                    "select m.id, m.conversation_id, m.seq, m.role, m.created_at, c.title, "
                    "snippet(messages_fts, 0, '[', ']', '…', 12) as snippet "
                    "from messages_fts join messages m on m.rowid = messages_fts.rowid "
                    "join conversations c on c.id = m.conversation_id "
                    "where messages_fts match ? order by rank limit ?",
                    [self.db.quote_fts(text), limit],
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
            lines.append(m.content)
            lines.append("")
            if m.role == "assistant":
                where = m.where_ran or "local"
                sha = (m.model_sha256 or "")[:12]
                lines.append(f"*{m.model} · {m.engine} · {where} · sha256 {sha}… · {m.created_at}*")
                lines.append("")
                for c in m.citations or []:
                    where = describe(c["path"], c.get("page"), c["line_start"], c["line_end"], c.get("unit", "lines"))
                    lines.append(f"- [{c['n']}] {where}")
                if m.citations:
                    lines.append("")
        return "\n".join(lines)
