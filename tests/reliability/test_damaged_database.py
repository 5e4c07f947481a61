"""A damaged database is named with its fix, and `enclave doctor --repair` gets back every readable row.

The database is a real SQLite file written by Enclave's Store; one page in the middle of
the messages is overwritten on disk, the way a torn write or a lost -wal leaves a file.
Every command runs as a user's would, in its own process.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.core.settings import Settings
from assistant.storage.database import Store
from tests.cli.test_cli import enclave

CONVERSATIONS = 2
TURNS = 300


def _fill(home: Path, *, checkpoint: bool = True) -> list[int]:
    """Two conversations of 300 turns each, every message carrying a findable marker."""
    store = Store.open(Settings.load(), interactive=False)
    ids = []
    try:
        for c in range(CONVERSATIONS):
            cid = store.create_conversation(
                model="m", engine="onnx", persona="default", system_prompt="", context_policy="drop-oldest"
            )
            ids.append(cid)
            for i in range(TURNS):
                store.add_turn(
                    cid,
                    f"question marker-{c}-{i} about the pump " + "lorem ipsum " * 8,
                    f"answer marker-{c}-{i} the pressure is {i} kPa " + "dolor sit amet " * 8,
                    model="m", model_sha256="0" * 64, engine="onnx", where_ran="local",
                    finish_reason="stop", usage=None, context=None,
                )  # fmt: skip
    finally:
        store.close()
    database = home / "data" / "enclave.db"
    if checkpoint:  # everything in the main file before it is damaged (the last close does it too)
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not database.with_name("enclave.db-wal").exists() or not database.with_name("enclave.db-wal").stat().st_size
    return ids


def _damage(database: Path, marker: bytes) -> int:
    """Overwrite the page that holds ``marker`` with garbage; the page's number."""
    data = database.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    where = data.index(marker)
    page = where // page_size
    with database.open("r+b") as handle:
        handle.seek(page * page_size)
        handle.write(b"\xa5" * page_size)
        handle.flush()
        os.fsync(handle.fileno())
    return page + 1


def _no_traceback(proc: object) -> None:
    stderr = proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr and "internal error" not in stderr.lower(), stderr


@pytest.fixture
def damaged(enclave_home: Path) -> tuple[Path, list[int]]:
    ids = _fill(enclave_home)
    database = enclave_home / "data" / "enclave.db"
    _damage(database, b"marker-0-150 ")
    return database, ids


def test_a_damaged_database_is_named_with_its_fix_and_repaired(damaged: tuple[Path, list[int]], enclave_home: Path) -> None:
    database, (first, second) = damaged
    # Reading the damaged conversation: a message that names the file and the command.
    shown = enclave("history", "show", str(first), home=enclave_home, check=False)
    assert shown.returncode == 1, shown.stdout[-500:] + shown.stderr
    _no_traceback(shown)
    assert "is damaged" in shown.stderr and str(database) in shown.stderr
    assert "enclave doctor --repair" in shown.stderr

    doctor = enclave("doctor", home=enclave_home, check=False)
    assert doctor.returncode != 0
    assert "FAIL damaged" in doctor.stdout and "doctor --repair" in doctor.stdout

    fixed = enclave("doctor", "--repair", "--json", home=enclave_home)
    report = json.loads(fixed.stdout)  # JSON alone on stdout
    assert report["damaged"] is True and report["problems"]
    kept = Path(report["kept"])
    assert kept.is_file() and kept.parent == database.parent and kept.name.startswith("enclave.db.damaged-")
    assert kept.stat().st_mode & 0o077 == 0  # the kept copy is as private as the database
    assert report["unreadable"].get("messages", 0) >= 1
    total = CONVERSATIONS * TURNS * 2
    # One 4 KiB page holds a handful of messages; all the others come back.
    assert total - 40 <= report["copied"]["messages"] < total, report["copied"]
    assert report["copied"]["conversations"] == CONVERSATIONS
    # What was lost is counted, from the full-text index the damage did not reach.
    assert report["lost_rows"] == {"messages": total - report["copied"]["messages"]}

    # The repaired file passes SQLite's full check, from outside Enclave.
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept_rows = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert kept_rows == report["copied"]["messages"]

    # Both conversations read again; the one that was not touched is whole.
    again = enclave("history", "show", "--json", str(second), home=enclave_home)
    messages = json.loads(again.stdout)["messages"]
    assert len(messages) == TURNS * 2
    first_again = enclave("history", "show", "--json", str(first), home=enclave_home)
    contents = [m["content"] for m in json.loads(first_again.stdout)["messages"]]
    assert any("marker-0-0 " in text for text in contents) and any("marker-0-299 " in text for text in contents)
    # Full-text search is rebuilt from the copied rows.
    found = enclave("history", "search", "--json", "marker-1-123", home=enclave_home)
    assert any(row["conversation_id"] == second for row in json.loads(found.stdout))

    # The repair is in the audit trail, and the chain still verifies.
    verified = enclave("audit", "verify", home=enclave_home, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    log = enclave("audit", "list", home=enclave_home)
    assert "database_repaired" in log.stdout

    doctor = enclave("doctor", home=enclave_home, check=False)
    assert "ok   intact" in doctor.stdout and "FAIL damaged" not in doctor.stdout
    # A second run finds nothing to do and changes nothing.
    before = database.stat().st_ino
    second_run = json.loads(enclave("doctor", "--repair", "--json", home=enclave_home).stdout)
    assert second_run["damaged"] is False and second_run["kept"] == ""
    assert database.stat().st_ino == before


def _rows_that_read(database: Path, upto: int) -> set[int]:
    """Rowids of messages that read one by one from ``database`` (seen from outside Enclave)."""
    readable = set()
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        for rowid in range(1, upto + 1):
            try:
                if conn.execute("SELECT content FROM messages WHERE rowid = ?", [rowid]).fetchone():
                    readable.add(rowid)
            except sqlite3.DatabaseError:
                continue
    return readable


@pytest.mark.parametrize("marker", [b"answer marker-0-0 ", b"marker-0-150 "], ids=["first-page", "middle-page"])
def test_every_row_that_reads_is_copied_and_every_other_counted_lost(enclave_home: Path, marker: bytes) -> None:
    """Found by a tester: after a damaged page the repair stepped over readable rows with
    it (probing +1, +2, +4, … and never back), and a damaged *first* page lost the whole
    table (probes started at rowid -2^63)."""
    _fill(enclave_home)
    database = enclave_home / "data" / "enclave.db"
    _damage(database, marker)
    total = CONVERSATIONS * TURNS * 2
    report = json.loads(enclave("doctor", "--repair", "--json", home=enclave_home).stdout)
    readable = _rows_that_read(Path(report["kept"]), total)
    assert total - 40 <= len(readable) < total  # one page's worth is gone, no more
    with sqlite3.connect(database) as conn:
        copied = {int(r) for (r,) in conn.execute("SELECT rowid FROM messages")}
    assert copied == readable
    assert report["copied"]["messages"] == len(readable)
    assert report["lost_rows"] == {"messages": total - len(readable)}


def test_an_encrypted_database_is_repaired_past_a_page_that_fails_its_hmac(
    enclave_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLCipher keeps a page that fails its HMAC as a lasting error of the connection:
    the repair reads on with a fresh one, so it copies as much as from a plaintext file."""
    monkeypatch.setenv("ENCLAVE_DB_KEY", "x'" + "ab" * 32 + "'")
    enclave("init", "--encrypt", "--key-from-env", home=enclave_home, stdin="")
    _fill(enclave_home, checkpoint=False)
    database = enclave_home / "data" / "enclave.db"
    assert not database.read_bytes().startswith(b"SQLite format 3")
    pages = database.stat().st_size // 4096
    with database.open("r+b") as handle:  # a page among the messages (the file is random bytes)
        handle.seek(4096 * (pages * 3 // 4))
        handle.write(b"\xa5" * 4096)
    doctor = enclave("doctor", home=enclave_home, check=False)
    assert "FAIL damaged" in doctor.stdout and "***" not in doctor.stdout

    report = json.loads(enclave("doctor", "--repair", "--json", home=enclave_home).stdout)
    total = CONVERSATIONS * TURNS * 2
    assert report["damaged"] is True and report["unreadable"].get("messages", 0) >= 1
    assert total - 40 <= report["copied"]["messages"] < total, report["copied"]
    assert report["copied"]["audit"] == 1  # the `init` entry, in a table after the bad page
    assert not database.read_bytes().startswith(b"SQLite format 3")  # still encrypted
    doctor = enclave("doctor", home=enclave_home, check=False)
    assert "ok   intact" in doctor.stdout
    verified = enclave("audit", "verify", home=enclave_home, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_repair_refuses_while_another_enclave_has_the_database_open(
    damaged: tuple[Path, list[int]], enclave_home: Path
) -> None:
    database, _ = damaged
    size = database.stat().st_size
    holder = Store.open(Settings.load(), interactive=False, write=False)
    try:
        refused = enclave("doctor", "--repair", home=enclave_home, check=False)
    finally:
        holder.close()
    assert refused.returncode == 1
    _no_traceback(refused)
    assert "in use by another Enclave process" in refused.stderr
    assert database.stat().st_size == size
    assert not list(database.parent.glob("enclave.db.damaged-*"))
    assert not database.with_name("enclave.db.repairing").exists()


def test_repair_of_a_home_without_a_database_does_nothing(enclave_home: Path) -> None:
    report = json.loads(enclave("doctor", "--repair", "--json", home=enclave_home).stdout)
    assert report["damaged"] is False
    assert not (enclave_home / "data" / "enclave.db").exists()


def test_a_file_that_is_not_a_database_is_kept_and_enclave_starts_again(enclave_home: Path) -> None:
    database = enclave_home / "data" / "enclave.db"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"this is not a database\n" * 200)
    listed = enclave("history", "list", home=enclave_home, check=False)
    assert listed.returncode == 1 and "enclave doctor --repair" in listed.stderr
    _no_traceback(listed)
    doctor = enclave("doctor", home=enclave_home, check=False)
    _no_traceback(doctor)
    assert "doctor --repair" in doctor.stdout

    report = json.loads(enclave("doctor", "--repair", "--json", home=enclave_home).stdout)
    assert report["damaged"] is True and "not a database" in report["unreadable_file"]
    kept = Path(report["kept"])
    assert kept.read_bytes() == b"this is not a database\n" * 200  # kept byte for byte
    assert kept.stat().st_mode & 0o077 == 0
    assert enclave("history", "list", home=enclave_home).stdout.strip() == "No conversations yet."


def test_every_front_end_gets_the_fix_from_the_store_itself(damaged: tuple[Path, list[int]]) -> None:
    """The TUI and the server call the Store directly: its errors carry the fix, not SQLite's text alone."""
    from assistant.core.errors import EnclaveError

    database, (first, second) = damaged
    store = Store(database)
    try:
        with pytest.raises(EnclaveError) as info:
            store.messages(first)
        assert "is damaged" in info.value.message and "enclave doctor --repair" in info.value.hint
        assert len(store.messages(second)) == TURNS * 2  # the intact conversation still reads
    finally:
        store.close()


def _can_mount() -> bool:
    try:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs x /mnt"], capture_output=True)
    except FileNotFoundError:
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs a private mount namespace (root or user namespaces)")
def test_a_disk_too_full_for_the_copy_leaves_the_database_as_it_was(
    damaged: tuple[Path, list[int]], enclave_home: Path, tmp_path: Path
) -> None:
    """The data directory on a small file system (tmpfs in a private mount namespace) with
    room for the database but not for its repaired copy."""
    database, _ = damaged
    original = tmp_path / "original.db"
    shutil.copy2(database, original)
    data = enclave_home / "data"
    size_kib = database.stat().st_size // 1024 + 96
    command = " ".join([sys.executable, "-m", "assistant", "doctor", "--repair"])
    script = (
        f"set -e; cp -a '{data}' '{tmp_path}/data-copy'; mount -t tmpfs -o size={size_kib}k x '{data}'; "
        f"cp -a '{tmp_path}/data-copy/.' '{data}/'; set +e; {command}; echo \"rc=$?\" >&2; "
        f"cmp '{data}/enclave.db' '{original}' && echo same; ls '{data}'"
    )
    env = dict(os.environ, ENCLAVE_HOME=str(enclave_home))
    env.pop("ENCLAVE_DEBUG", None)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "rc=1" in proc.stderr, proc.stderr
    _no_traceback(proc)
    assert "could not be written" in proc.stderr and "Free disk space" in proc.stderr, proc.stderr
    listed = proc.stdout.split()
    assert "same" in listed  # the database is byte for byte what it was
    assert not [name for name in listed if ".repairing" in name or ".damaged-" in name], listed


def test_a_repair_that_loses_history_says_so_and_the_audit_notes_where_its_chain_restarts(enclave_home: Path) -> None:
    """Found by a tester: a truncated file gave "0 rows copied … the new database is empty"
    with exit 0, and `audit verify` then said "ok 1 entries, chain intact" as if the log
    had always been one entry long."""
    _fill(enclave_home)
    database = enclave_home / "data" / "enclave.db"
    with database.open("r+b") as handle:
        handle.truncate(database.stat().st_size * 9 // 10)
    repaired = enclave("doctor", "--repair", home=enclave_home, check=False)
    _no_traceback(repaired)
    report_lines = repaired.stdout + repaired.stderr
    assert repaired.returncode == 1, report_lines
    assert "keep it" in repaired.stderr and "only there" in repaired.stderr
    verified = enclave("audit", "verify", home=enclave_home, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "note entry 1" in verified.stdout and "rebuilt by `enclave doctor --repair`" in verified.stdout
    assert "enclave.db.damaged-" in verified.stdout
