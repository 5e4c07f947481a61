"""The audit chain: every edit, removal and reordering is detected."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from assistant.storage.audit import AuditLog
from assistant.storage.database import Store
from tests.cli.test_cli import enclave


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(Store(tmp_path / "enclave.db"))
    for i in range(6):
        audit.record("model_load", model=f"m{i}", sha256="ab" * 32)
    return audit


def _tamper(log: AuditLog, *sql: str) -> None:
    # An attacker with the file: bypasses the append-only triggers.
    with sqlite3.connect(log.store.path) as conn:
        conn.execute("drop trigger audit_no_update")
        conn.execute("drop trigger audit_no_delete")
        for statement in sql:
            conn.execute(statement)


def test_an_intact_chain_verifies(log: AuditLog) -> None:
    assert log.verify() == []


def test_the_database_refuses_changes(log: AuditLog) -> None:
    with sqlite3.connect(log.store.path) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("update audit set kind = 'x' where seq = 2")
    with sqlite3.connect(log.store.path) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("delete from audit where seq = 2")


def test_an_edited_entry_is_reported(log: AuditLog) -> None:
    _tamper(log, """update audit set detail = '{"model": "other"}' where seq = 3""")
    problems = [str(p) for p in log.verify()]
    assert problems == ["entry 3: was edited after it was written (hash mismatch)"]


def test_a_removed_entry_is_reported(log: AuditLog) -> None:
    _tamper(log, "delete from audit where seq = 4")
    problems = [str(p) for p in log.verify()]
    assert "entry 5: entries 4 are missing before it" in problems
    assert any("does not follow" in p for p in problems)


def test_removed_newest_entries_are_reported(log: AuditLog) -> None:
    _tamper(log, "delete from audit where seq >= 5")
    assert [str(p) for p in log.verify()] == ["entry 5: entries 5–6 were removed from the end"]


def test_reordered_entries_are_reported(log: AuditLog) -> None:
    rows = {r["seq"]: r for r in log.entries()}
    a, b = rows[2], rows[3]
    _tamper(
        log,
        "delete from audit where seq in (2, 3)",
        f"insert into audit values (2, '{b['at']}', '{b['kind']}', '{b['detail']}', '{b['prev']}', '{b['hash']}')",
        f"insert into audit values (3, '{a['at']}', '{a['kind']}', '{a['detail']}', '{a['prev']}', '{a['hash']}')",
    )
    problems = [str(p) for p in log.verify()]
    assert any(p.startswith("entry 2:") for p in problems) and any(p.startswith("entry 3:") for p in problems)


def test_cli_records_model_loads_exports_and_deletions(enclave_home: Path, tiny_dir: Path, tmp_path: Path) -> None:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    cid = json.loads(enclave("ask", "-m", "tiny", "--json", "--max-tokens", "2", "hi", home=enclave_home).stdout)[
        "conversation_id"
    ]
    enclave("history", "export", str(cid), "-o", str(tmp_path / "c.md"), home=enclave_home)
    enclave("history", "delete", str(cid), "--yes", home=enclave_home)
    assert enclave("audit", "verify", home=enclave_home).stdout.startswith("ok   ")
    out = tmp_path / "audit.jsonl"
    enclave("audit", "export", "-o", str(out), home=enclave_home)
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [e["kind"] for e in entries]
    assert kinds == ["model_load", "export", "delete"]
    assert json.loads(entries[0]["detail"])["model"] == "tiny" and len(json.loads(entries[0]["detail"])["sha256"]) == 64
    assert all(len(e["hash"]) == 64 for e in entries)
    # Tampering shows up in the CLI.
    with sqlite3.connect(enclave_home / "data" / "enclave.db") as conn:
        conn.execute("drop trigger audit_no_update")
        conn.execute("update audit set detail = '{}' where seq = 1")
    bad = enclave("audit", "verify", home=enclave_home, check=False)
    assert bad.returncode == 1 and "FAIL entry 1: was edited" in bad.stdout
