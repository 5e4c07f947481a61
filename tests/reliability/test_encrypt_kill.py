"""Converting in place is safe: `init --encrypt` / `--decrypt` killed at random instants
always leaves the old database or the new one, complete — never neither — and a
rerun finishes the job without a plaintext byte left behind."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.storage import crypt
from assistant.storage.database import Store

ROOT = Path(__file__).resolve().parents[2]
KEY = crypt.DatabaseKey("conversion kill test", "the test")
TURNS = 1500
CANARY = "ibexcanary9031"

# What `enclave init --encrypt` / `--decrypt` run, without the CLI's start-up time,
# so that the random kills land inside the conversion.
CONVERTER = """
import sys
from assistant.storage import crypt, encryption
from assistant.core.settings import Settings
settings = Settings.load()
print("go", flush=True)
if sys.argv[1] == "encrypt":
    encryption.enable(settings, crypt.key_from_env())
else:
    encryption.disable(settings, crypt.key_from_env())
"""


def _pristine(folder: Path, encrypted: bool) -> Path:
    db = folder / "data" / "enclave.db"
    store = Store(db, KEY if encrypted else None)
    store.db.execute("PRAGMA synchronous = OFF")  # only to build the test data fast
    cid = store.create_conversation(
        model="tiny", engine="onnx", persona="general", system_prompt="s", context_policy="drop-oldest"
    )
    for i in range(TURNS):
        store.add_turn(
            cid, f"{CANARY} question {i} " + "x" * 300, f"answer {i}", model="tiny", model_sha256="0" * 64,
            engine="onnx", where_ran="local", finish_reason="stop", usage=None, context=None,
        )  # fmt: skip
    store.close()
    return folder


def _count(db: Path) -> int:
    """Rows in the database, whichever form it is in; asserts it is complete and intact."""
    state = crypt.file_state(db)
    assert state in ("plain", "encrypted"), state
    with contextlib.closing(crypt.connect(db, KEY if state == "encrypted" else None)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute("select count(*) from messages").fetchone()[0])


def _run(home: Path, direction: str, kill_after: float | None) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), ENCLAVE_HOME=str(home), ENCLAVE_DB_KEY=KEY.secret)
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    proc = subprocess.Popen([sys.executable, "-c", CONVERTER, direction], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
    started = time.monotonic()
    if kill_after is not None:
        time.sleep(kill_after)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return time.monotonic() - started


def _plaintext_hits(folder: Path) -> list[str]:
    needles = [CANARY.encode(), CANARY.encode("utf-16-le")]
    return [str(p) for p in folder.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_a_kill_at_any_instant_leaves_one_complete_database(tmp_path: Path, direction: str) -> None:
    pristine = _pristine(tmp_path / "pristine", encrypted=direction == "decrypt")
    home = tmp_path / "home"
    shutil.copytree(pristine, home)
    duration = _run(home, direction, None)  # how long one whole conversion takes here
    assert _count(home / "data" / "enclave.db") == 2 * TURNS
    rng = random.Random(7)
    outcomes: set[str] = set()
    kills = 10
    # Spread over the whole run (so both sides of the rename are hit), jittered. The
    # machine's speed can change between the timing run and the kills (a loaded CI
    # box), so while one side of the rename has not been hit yet, more kills follow,
    # later (or earlier) each time.
    delays = [duration * (i + rng.random()) / kills for i in range(kills)]
    extra = 0
    while delays:
        delay = delays.pop(0)
        shutil.rmtree(home)
        shutil.copytree(pristine, home)
        _run(home, direction, delay)
        db = home / "data" / "enclave.db"
        assert _count(db) == 2 * TURNS  # old or new, complete
        outcomes.add(crypt.file_state(db))
        # A rerun finishes the job; nothing of the plaintext is left when encrypted.
        _run(home, direction, None)
        assert _count(db) == 2 * TURNS
        if direction == "encrypt":
            assert crypt.file_state(db) == "encrypted"
            assert _plaintext_hits(home) == []
        else:
            assert crypt.file_state(db) == "plain"
        if not delays and len(outcomes) < 2 and extra < 20:
            extra += 1
            source = "plain" if direction == "encrypt" else "encrypted"
            late = source in outcomes  # only the old file was seen: kill later
            delays.append(duration * (0.9 + extra / 10) if late else duration * rng.random() / (4 * extra))
    # The kills landed both before and after the rename at least once.
    assert outcomes == {"plain", "encrypted"}
