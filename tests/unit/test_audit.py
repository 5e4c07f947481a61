"""The audit log against someone who has the files: every tamper of the red-team list is caught.

The attacker here holds the data directory (the database and ``audit.head``) — a copied
disk, a restored backup, a synced folder — and edits it with plain ``sqlite3``, dropping
the append-only triggers; the audit key stays where Enclave keeps it, outside the data
directory. Each test is one tamper; the last ones show what cannot be detected.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from assistant.storage import crypt
from assistant.storage.audit import GENESIS, STATE_NAME, AuditLog, _digest
from assistant.storage.database import MIGRATIONS, Store
from tests.cli.test_cli import enclave

RAW_KEY = crypt.DatabaseKey("x'" + "3c" * 32 + "'", "the test")


class Home:
    """A data and a config directory, as Enclave lays them out."""

    def __init__(self, root: Path, key: crypt.DatabaseKey | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.config = root / "config"
        self.db = self.data / "enclave.db"
        self.key = key

    def store(self) -> Store:
        return Store(self.db, self.key, config_dir=self.config)

    def log(self) -> AuditLog:
        return AuditLog(self.store())

    def problems(self) -> list[str]:
        store = self.store()
        try:
            return [str(p) for p in AuditLog(store).verify()]
        finally:
            store.close()

    def sql(self, *statements: str, params: tuple[object, ...] = ()) -> None:
        """Edit the database as an attacker with the file would (triggers dropped)."""
        conn = crypt.connect(self.db, self.key)
        try:
            conn.execute("drop trigger if exists audit_no_update")
            conn.execute("drop trigger if exists audit_no_delete")
            for statement in statements:
                conn.execute(statement, params if "?" in statement else ())
            conn.commit()
        finally:
            conn.close()

    def rows(self) -> list[dict[str, object]]:
        store = self.store()
        try:
            return AuditLog(store).entries()
        finally:
            store.close()


def _fill(home: Home, n: int = 6, start: int = 0) -> None:
    store = home.store()
    log = AuditLog(store)
    for i in range(start, start + n):
        log.record("model_load", model=f"m{i}", sha256="ab" * 32)
    store.close()


@pytest.fixture(params=["plaintext", "encrypted"])
def home(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Home]:
    h = Home(tmp_path / "home", RAW_KEY if request.param == "encrypted" else None)
    _fill(h)
    yield h


def _rehash_from(home: Home, first: int) -> None:
    """Recompute the SHA-256 chain from entry ``first`` on, as a careful attacker would."""
    rows = home.rows()
    prev = GENESIS if first == 1 else str(next(r for r in rows if r["seq"] == first - 1)["hash"])
    for row in rows:
        if int(str(row["seq"])) < first:
            continue
        digest = _digest(int(str(row["seq"])), str(row["at"]), str(row["kind"]), str(row["detail"]), prev)
        home.sql("update audit set prev = ?, hash = ? where seq = ?", params=(prev, digest, row["seq"]))
        prev = digest


def _head_to_newest(home: Home) -> None:
    """Rewrite audit.head (unkeyed, as the attacker can) to name the newest entry."""
    last = home.rows()[-1]
    (home.data / "audit.head").write_text(f"{last['seq']} {last['hash']}\n")


# ----------------------------------------------------------------------- intact
def test_an_intact_chain_verifies(home: Home) -> None:
    assert home.problems() == []
    verdict = home.log().check()
    assert verdict.keyed_from == 1 and verdict.key == "file" and verdict.counter == 6


def test_the_database_refuses_changes(home: Home) -> None:
    conn = crypt.connect(home.db, home.key)
    with pytest.raises(crypt.INTEGRITY_ERRORS, match="append-only"):
        conn.execute("update audit set kind = 'x' where seq = 2")
    with pytest.raises(crypt.INTEGRITY_ERRORS, match="append-only"):
        conn.execute("delete from audit where seq = 2")
    conn.close()


def test_the_key_lives_outside_the_data_directory(home: Home) -> None:
    key_file = home.config / "audit.key"
    assert key_file.is_file() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert not any(home.config.name in str(p) for p in home.data.rglob("*"))
    # The key is not in the database (plaintext case: the bytes are readable).
    if home.key is None:
        assert bytes.fromhex(key_file.read_text().strip()) not in home.db.read_bytes()


# ----------------------------------------------------------------------- the tampers
def test_tamper_01_edit_an_entry(home: Home) -> None:
    home.sql("""update audit set detail = '{"model": "other"}' where seq = 3""")
    assert "entry 3: was edited after it was written (hash mismatch)" in home.problems()


def test_tamper_02_edit_an_entry_and_recompute_every_hash(home: Home) -> None:
    home.sql("""update audit set detail = '{"model": "other"}' where seq = 3""")
    _rehash_from(home, 3)
    _head_to_newest(home)
    problems = home.problems()
    assert "entry 3: was forged or rewritten: its MAC does not match the audit key" in problems
    assert not any("hash mismatch" in p for p in problems)  # the SHA-256 chain alone was fooled


def test_tamper_03_delete_the_newest_entry_and_rewrite_the_head(home: Home) -> None:
    home.sql("delete from audit where seq = 6")
    _head_to_newest(home)
    problems = home.problems()
    assert any("audit.head names a keyed entry but is not signed" in p for p in problems)
    assert any("counter outside the data directory" in p and "reached 6" in p for p in problems)


def test_tamper_04_delete_the_newest_entries_and_put_back_an_old_signed_head(home: Home) -> None:
    store = home.store()
    AuditLog(store).record("export", to="x")  # 7
    store.close()
    shutil.copy(home.data / "audit.head", home.root / "head-at-7")
    _fill(home, 2, start=10)  # 8, 9
    home.sql("delete from audit where seq >= 8")
    shutil.copy(home.root / "head-at-7", home.data / "audit.head")  # genuine, correctly signed
    assert any("reached 9" in p and "older copy" in p for p in home.problems())


def test_tamper_05_delete_an_entry_in_the_middle(home: Home) -> None:
    home.sql("delete from audit where seq = 4")
    problems = home.problems()
    assert "entry 5: entries 4 are missing before it" in problems
    assert any("does not follow" in p for p in problems)


def test_tamper_06_delete_in_the_middle_renumber_and_rehash(home: Home) -> None:
    home.sql("delete from audit where seq = 4", "update audit set seq = seq - 1 where seq > 4")
    _rehash_from(home, 4)
    _head_to_newest(home)
    problems = home.problems()
    assert any("MAC does not match" in p for p in problems)


def test_tamper_07_forge_an_entry_at_the_end(home: Home) -> None:
    last = home.rows()[-1]
    detail = json.dumps({"conversation": 1, "to": "stdout"})
    digest = _digest(7, "2026-01-01T00:00:00Z", "export", detail, str(last["hash"]))
    home.sql(
        "insert into audit (seq, at, kind, detail, prev, hash) values (?, ?, ?, ?, ?, ?)",
        params=(7, "2026-01-01T00:00:00Z", "export", detail, last["hash"], digest),
    )
    _head_to_newest(home)
    problems = home.problems()
    assert any(p.startswith("entry 7: has no MAC") for p in problems)


def test_tamper_08_forge_an_entry_with_a_made_up_mac(home: Home) -> None:
    last = home.rows()[-1]
    digest = _digest(7, "2026-01-01T00:00:00Z", "export", "{}", str(last["hash"]))
    home.sql(
        "insert into audit (seq, at, kind, detail, prev, hash, mac) values (?, ?, ?, ?, ?, ?, ?)",
        params=(7, "2026-01-01T00:00:00Z", "export", "{}", last["hash"], digest, "ab" * 32),
    )
    assert "entry 7: was forged or rewritten: its MAC does not match the audit key" in home.problems()


def test_tamper_09_reorder_two_entries(home: Home) -> None:
    home.sql(
        "update audit set seq = 100 where seq = 2",
        "update audit set seq = 2 where seq = 3",
        "update audit set seq = 3 where seq = 100",
    )
    problems = home.problems()
    assert any(p.startswith("entry 2:") for p in problems) and any(p.startswith("entry 3:") for p in problems)


def test_tamper_10_strip_the_macs_to_pass_as_an_old_unkeyed_log(home: Home) -> None:
    home.sql("""update audit set mac = null, detail = '{"model": "other"}' where seq = 2""")
    _rehash_from(home, 2)
    home.sql("update audit set mac = null")
    _head_to_newest(home)
    problems = home.problems()
    assert any("has no MAC although the log is keyed from entry 1" in p for p in problems)


def test_tamper_11_wipe_every_entry_and_the_head(home: Home) -> None:
    home.sql("delete from audit")
    (home.data / "audit.head").unlink()
    assert any("holds 0 entries" in p and "wiped" in p for p in home.problems())


def test_tamper_12_replace_the_database_with_a_new_one(home: Home) -> None:
    for path in home.data.glob("enclave.db*"):
        path.unlink()
    (home.data / "audit.head").unlink()
    assert any("reached 6" in p for p in home.problems())


@pytest.mark.parametrize("what", ["database", "data directory"])
def test_tamper_13_roll_back_to_an_older_copy(home: Home, what: str) -> None:
    """A deleted conversation reappears: the copy is genuine, only older (encrypted too)."""
    store = home.store()
    cid = store.create_conversation(model="m", engine="onnx", persona="p", system_prompt="s", context_policy="stop")
    store.close()
    backup = home.root.parent / "backup"
    shutil.copytree(home.data, backup)
    store = home.store()
    from assistant.app.history import History

    History(store).delete(cid, how="--yes")  # audited: entry 7
    store.close()
    if what == "database":
        for path in home.data.glob("enclave.db*"):
            path.unlink()
        for path in backup.glob("enclave.db*"):
            shutil.copy(path, home.data / path.name)
    else:
        shutil.rmtree(home.data)
        shutil.copytree(backup, home.data)
    store = home.store()
    assert store.conversation(cid)  # it is back
    store.close()
    problems = home.problems()
    assert any("reached 7" in p and "older copy of the database" in p for p in problems), problems


def test_tamper_14_garbage_in_the_head_file_is_a_message(home: Home) -> None:
    (home.data / "audit.head").write_bytes(b"\xff\xfe garbage \x00\n")
    problems = home.problems()
    assert len(problems) == 1 and "audit.head is unreadable" in problems[0]
    (home.data / "audit.head").write_text("seven f00\n")
    assert home.problems() == ["entry 6: the head file audit.head is damaged (it is not 'sequence hash [mac]')"]


def test_tamper_15_edit_the_counter_outside_the_data_directory(home: Home) -> None:
    state = home.config / STATE_NAME
    data = json.loads(state.read_text())
    data["seq"] = 2
    state.write_text(json.dumps(data))
    assert any("audit counter" in p and "was edited" in p for p in home.problems())
    state.write_text("{not json")
    assert any("audit counter" in p and "unreadable" in p for p in home.problems())


def test_tamper_16_delete_the_counter(home: Home) -> None:
    (home.config / STATE_NAME).unlink()
    assert any("audit counter" in p and "is missing" in p for p in home.problems())


def test_tamper_17_put_in_another_homes_database(home: Home, tmp_path: Path) -> None:
    other = Home(tmp_path / "other", home.key)
    _fill(other, 8)
    for path in home.data.glob("enclave.db*"):
        path.unlink()
    shutil.copy(other.db, home.db)
    shutil.copy(other.data / "audit.head", home.data / "audit.head")
    problems = home.problems()
    assert any("MAC does not match" in p for p in problems)


def test_tamper_18_delete_the_key(home: Home) -> None:
    (home.config / "audit.key").unlink()
    problems = home.problems()
    assert any("cannot be checked" in p and "audit.key is missing" in p for p in problems)
    with pytest.raises(Exception, match="audit.key is missing"):
        home.log().record("x")


# ----------------------------------------------------------------------- what is not detected
def test_limit_rolling_back_the_whole_home_is_not_detected(home: Home) -> None:
    """Data and config directories copied back together look like an earlier day: the
    README says so. (With the key in a keyring, the keyring entry survives, but the
    counter still rolls back with the config directory.)"""
    backup = home.root.parent / "whole-home"
    shutil.copytree(home.root, backup)
    _fill(home, 2, start=20)
    shutil.rmtree(home.root)
    shutil.copytree(backup, home.root)
    assert home.problems() == []


# ----------------------------------------------------------------------- keyring, migration, crashes
def test_the_key_goes_to_the_keyring_when_there_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring

    from tests.keyring_backend import FileKeyring

    monkeypatch.setenv("ENCLAVE_TEST_KEYRING", str(tmp_path / "keyring.json"))
    previous = keyring.get_keyring()
    keyring.set_keyring(FileKeyring())  # type: ignore[no-untyped-call]  # keyring is untyped
    try:
        h = Home(tmp_path / "home")
        _fill(h, 3)
        assert not (h.config / "audit.key").exists()
        stored = json.loads((tmp_path / "keyring.json").read_text())
        assert any(k.startswith("enclave-audit\x1f") for k in stored)
        assert h.log().check().key == "keyring" and h.problems() == []
        h.sql("""update audit set detail = '{}' where seq = 2""")
        _rehash_from(h, 2)
        _head_to_newest(h)
        assert any("MAC does not match" in p for p in h.problems())
    finally:
        keyring.set_keyring(previous)


def _legacy_database(path: Path, entries: int) -> None:
    """A database as Enclave wrote it before keying: schema version 3, SHA-256 chain, plain head."""
    path.parent.mkdir(parents=True)
    db = sqlite_utils.Database(path)
    for number, step in enumerate(MIGRATIONS[:3], start=1):
        step(db)
        db.execute(f"PRAGMA user_version = {number}")
    prev = GENESIS
    for seq in range(1, entries + 1):
        detail = json.dumps({"n": seq})
        digest = _digest(seq, "2025-06-01T00:00:00Z", "model_load", detail, prev)
        db.execute(
            "insert into audit values (?, ?, ?, ?, ?, ?)",
            [seq, "2025-06-01T00:00:00Z", "model_load", detail, prev, digest],
        )
        prev = digest
    db.conn.commit()
    db.close()
    (path.parent / "audit.head").write_text(f"{entries} {prev}\n")


def test_a_log_from_before_keying_verifies_and_continues_keyed(tmp_path: Path) -> None:
    h = Home(tmp_path / "home")
    _legacy_database(h.db, 4)
    verdict = h.log().check()
    assert verdict.problems == [] and verdict.keyed_from is None and "unkeyed" in verdict.protection
    _fill(h, 2)  # entries 5 and 6 are keyed; 5's MAC covers 4's hash
    verdict = h.log().check()
    assert verdict.problems == [] and verdict.keyed_from == 5 and verdict.counter == 6
    assert [bool(r["mac"]) for r in h.rows()] == [False] * 4 + [True] * 2
    # The unkeyed part is sealed: re-hashing an old entry breaks the first keyed one.
    h.sql("""update audit set detail = '{"n": 99}' where seq = 2""")
    _rehash_from(h, 2)
    _head_to_newest(h)
    assert any(p.startswith("entry 5:") and "MAC" in p for p in h.problems())


def test_a_kill_between_commit_and_head_leaves_a_log_that_verifies(home: Home) -> None:
    """The counters are written after the commit: losing that write leaves the database one
    entry ahead, which its MAC proves genuine — not a false alarm."""
    head = (home.data / "audit.head").read_bytes()
    state = (home.config / STATE_NAME).read_bytes()
    _fill(home, 1, start=30)
    (home.data / "audit.head").write_bytes(head)
    (home.config / STATE_NAME).write_bytes(state)
    assert home.problems() == []


# ----------------------------------------------------------------------- the command
def test_cli_records_model_loads_exports_and_deletions(enclave_home: Path, tiny_dir: Path, tmp_path: Path) -> None:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    cid = json.loads(enclave("ask", "-m", "tiny", "--json", "--max-tokens", "2", "hi", home=enclave_home).stdout)[
        "conversation_id"
    ]
    import subprocess

    # A relative path is recorded as the file it wrote, so a reviewer can find it.
    subprocess.run(
        [sys.executable, "-m", "assistant", "history", "export", str(cid), "-o", "c.md"],
        cwd=tmp_path, env={**os.environ, "ENCLAVE_HOME": str(enclave_home)}, check=True, capture_output=True,
    )  # fmt: skip
    enclave("history", "delete", str(cid), "--yes", home=enclave_home)
    ok = enclave("audit", "verify", home=enclave_home).stdout
    assert ok.startswith("ok   ") and "keyed with HMAC-SHA256" in ok
    out = tmp_path / "audit.jsonl"
    enclave("audit", "export", "-o", str(out), home=enclave_home)
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [e["kind"] for e in entries]
    assert kinds == ["model_load", "privacy_state", "export", "delete"]
    assert json.loads(entries[2]["detail"])["to"] == str(tmp_path / "c.md")
    assert json.loads(entries[0]["detail"])["model"] == "tiny" and len(json.loads(entries[0]["detail"])["sha256"]) == 64
    # Each model load records how the process running it is sealed, as the kernel reported it.
    state = json.loads(entries[1]["detail"])
    assert state["engine_process"] == "sealed worker" and state["seccomp"] == "active"
    assert state["network_namespace"] in ("active", "refused") and state["switches_missing"] == []
    assert state["front_end_guard"] is True and state["front_end_runtimes_loaded"] == []
    assert all(len(e["hash"]) == 64 and len(e["mac"]) == 64 for e in entries)
    # Tampering shows up in the CLI, as a message and exit status 1.
    with sqlite3.connect(enclave_home / "data" / "enclave.db") as conn:
        conn.execute("drop trigger audit_no_update")
        conn.execute("update audit set detail = '{}' where seq = 1")
    bad = enclave("audit", "verify", home=enclave_home, check=False)
    assert bad.returncode == 1 and "FAIL entry 1: was edited" in bad.stdout
    (enclave_home / "data" / "audit.head").write_bytes(b"\x00\x01garbage")
    bad = enclave("audit", "verify", home=enclave_home, check=False)
    assert bad.returncode == 1 and "audit.head is" in bad.stdout and "internal error" not in bad.stderr
