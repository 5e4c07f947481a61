"""An append-only, hash-chained audit log a compliance review can check.

Each entry's hash covers its sequence number, time, kind, details and the hash
of the entry before it, so editing, removing or reordering any entry breaks the
chain. SQLite triggers refuse UPDATE and DELETE on the table; a head file next
to the database (``audit.head``: last sequence number and hash, replaced
atomically after each append) catches the one thing a chain alone cannot: the
newest entries being cut off.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from assistant.storage.database import Store

GENESIS = "0" * 64


def _digest(seq: int, at: str, kind: str, detail: str, prev: str) -> str:
    return hashlib.sha256(f"{seq}\x1f{at}\x1f{kind}\x1f{detail}\x1f{prev}".encode()).hexdigest()


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.what}"


class AuditLog:
    """The audit table in Enclave's database, plus its head file."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.head_path = store.path.with_name("audit.head")

    def record(self, kind: str, **detail: Any) -> int:
        """Append one entry; returns its sequence number."""
        text = json.dumps(detail, sort_keys=True, ensure_ascii=False, default=str)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.store.transaction() as db:
            row = db.execute("select seq, hash from audit order by seq desc limit 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            digest = _digest(seq, at, kind, text, prev)
            db.execute(
                "insert into audit (seq, at, kind, detail, prev, hash) values (?, ?, ?, ?, ?, ?)",
                [seq, at, kind, text, prev, digest],
            )
        self._write_head(seq, digest)
        return int(seq)

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        tmp.write_text(f"{seq} {digest}\n", encoding="utf-8")
        os.replace(tmp, self.head_path)

    def entries(self) -> list[dict[str, Any]]:
        with self.store._lock:
            return list(self.store.db.query("select * from audit order by rowid"))

    def verify(self) -> list[Problem]:
        """Every problem with the chain; empty when intact."""
        problems: list[Problem] = []
        rows = self.entries()
        prev_hash = GENESIS
        expected = 1
        for row in rows:
            seq = int(row["seq"])
            if seq != expected:
                if seq > expected:
                    missing = f"{expected}" if seq == expected + 1 else f"{expected}–{seq - 1}"
                    problems.append(Problem(seq, f"entries {missing} are missing before it"))
                else:
                    problems.append(Problem(seq, "is out of order"))
            if row["prev"] != prev_hash:
                problems.append(Problem(seq, "does not follow the entry before it (removed or reordered entries)"))
            if _digest(seq, row["at"], row["kind"], row["detail"], row["prev"]) != row["hash"]:
                problems.append(Problem(seq, "was edited after it was written (hash mismatch)"))
            prev_hash = row["hash"]
            expected = seq + 1
        last_seq, last_hash = (int(rows[-1]["seq"]), rows[-1]["hash"]) if rows else (0, GENESIS)
        if self.head_path.exists():
            head_seq_text, _, head_hash = self.head_path.read_text(encoding="utf-8").strip().partition(" ")
            head_seq = int(head_seq_text or 0)
            if head_seq > last_seq:
                problems.append(Problem(last_seq + 1, f"entries {last_seq + 1}–{head_seq} were removed from the end"))
            elif (head_seq, head_hash) != (last_seq, last_hash):
                problems.append(Problem(head_seq, "the head file does not match the last entry"))
        elif rows:
            problems.append(Problem(last_seq, "the head file audit.head is missing"))
        return problems

    def export(self) -> str:
        """JSON Lines, one entry per line, with the hashes, for an external review."""
        return "\n".join(json.dumps(row, ensure_ascii=False) for row in self.entries())
