"""A process that opens the database twice keeps its SQLite locks, so no other process takes the WAL away.

POSIX record locks belong to a process and a file: closing any descriptor of the
database file drops all of them. Enclave used to read the file's first bytes (is it
encrypted?) with a plain open/close on every ``Store.open``, so the second Store in a
process -- the TUI's documents beside its history, a server's requests -- silently
dropped the first one's SHARED lock. The next process to close its connection then
believed it was the last, checkpointed and deleted the WAL, and every turn the first
process committed after that was gone (200 of 850 rows in the scenario below), or the
file ended up "malformed", as a shared test home did in CI.

Observed from outside: the lock table the kernel keeps (/proc/locks), and the rows a
fresh process finds. Real processes, real SQLite files.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_OPEN = """
import os, sys
from assistant.core.settings import Settings
from assistant.storage.database import Store
settings = Settings.load()
"""

_TURNS = """
def turns(store, conversation, first, count):
    for n in range(first, first + count):
        store.add_turn(conversation, f"question {n}", f"answer {n}", model="m", model_sha256="0" * 64,
                       engine="onnx", where_ran="local", finish_reason="stop", usage=None, context=None)
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ENCLAVE_DEBUG"}
    env["ENCLAVE_HOME"] = str(home)
    return env


def _posix_locks(pid: int, inode: int) -> list[str]:
    held = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "1: POSIX  ADVISORY  READ 1234 fe:00:5678 1073741826 1073742335"
        if len(fields) > 5 and fields[1] == "POSIX" and fields[4] == str(pid):
            if fields[5].rsplit(":", 1)[-1] == str(inode):
                held.append(line)
    return held


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="the kernel's lock table is read from /proc/locks (Linux)")
def test_a_second_store_and_an_encryption_check_keep_the_first_stores_lock(tmp_path: Path) -> None:
    home = tmp_path / "home"
    child = subprocess.Popen(
        [sys.executable, "-c", _OPEN + """
from assistant.storage import crypt
first = Store.open(settings, interactive=False)
first.list_conversations()
print("one", flush=True); sys.stdin.readline()
crypt.file_state(settings.locations.database)
Store.open(settings, interactive=False).close()
first.list_conversations()
print("two", flush=True); sys.stdin.readline()
"""],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(home), cwd=ROOT,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "one"
        inode = (home / "data" / "enclave.db").stat().st_ino
        before = _posix_locks(child.pid, inode)
        assert before, "an open Store holds a SHARED lock on its database file"
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "two"
        assert _posix_locks(child.pid, inode) == before
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.wait()


def test_turns_written_after_another_process_closes_are_all_kept(tmp_path: Path) -> None:
    """A keeps its Store and opens a second one; B and C write and close; every row of A's stays."""
    home = tmp_path / "home"
    writer = _OPEN + _TURNS + """
store = Store.open(settings, interactive=False)
turns(store, int(sys.argv[1]), int(sys.argv[2]), 100)
store.close()
"""
    a = subprocess.Popen(
        [sys.executable, "-c", _OPEN + _TURNS + """
store = Store.open(settings, interactive=False)
conversation = store.create_conversation(title="a", model="m", engine="onnx", persona="p", system_prompt="s", context_policy="trim")
print(conversation, flush=True)
turns(store, conversation, 0, 25)
Store.open(settings, interactive=False).close()  # a second Store in this process
print("opened", flush=True); sys.stdin.readline()
turns(store, conversation, 25, 100)
print("wrote", flush=True); sys.stdin.readline()
turns(store, conversation, 125, 100)
store.close()
"""],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(home), cwd=ROOT,
    )  # fmt: skip
    assert a.stdin is not None and a.stdout is not None
    try:
        conversation = a.stdout.readline().strip()
        assert a.stdout.readline().strip() == "opened"
        for first in ("1000", "2000"):
            subprocess.run([sys.executable, "-c", writer, conversation, first], check=True, env=_env(home), cwd=ROOT,
                           timeout=120)  # fmt: skip
            a.stdin.write("\n")
            a.stdin.flush()
            if first == "1000":
                assert a.stdout.readline().strip() == "wrote"
        assert a.wait(timeout=120) == 0
    finally:
        a.kill()
        a.wait()
    db = sqlite3.connect(home / "data" / "enclave.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        users = {row[0] for row in db.execute("SELECT content FROM messages WHERE role = 'user'")}
    finally:
        db.close()
    expected = {f"question {n}" for n in [*range(225), *range(1000, 1100), *range(2000, 2100)]}
    assert users == expected
