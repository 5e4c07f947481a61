"""Durability: a writer killed with SIGKILL at random moments never loses an acknowledged turn.

Run on a plaintext and on a SQLCipher-encrypted database (the writer takes its key from
ENCLAVE_DB_KEY, as Enclave does).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.storage import crypt

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from pathlib import Path
from assistant.storage.crypt import key_from_env
from assistant.storage.database import Store
store = Store(Path(sys.argv[1]), key_from_env())
cid = store.latest_conversation() or store.create_conversation(
    model="tiny", engine="onnx", persona="general", system_prompt="s", context_policy="drop-oldest")
start = int(sys.argv[2])
for i in range(start, start + 100000):
    store.add_turn(cid, f"question {i} " + "x" * (i % 200), f"answer {i}", model="tiny", model_sha256="0" * 64,
                   engine="onnx", where_ran="local", finish_reason="stop", usage={"n": i}, context=None)
    print(i, flush=True)  # acknowledged: add_turn returned, the transaction is committed
"""

KILLS = 50


#: A raw key (SQLCipher's x'…' form) skips the ~0.2 s key derivation at each of the 100
#: opens; the pages are encrypted and written exactly as with a passphrase.
RAW_KEY = "x'" + "5e" * 32 + "'"


@pytest.mark.parametrize("key", [None, RAW_KEY], ids=["plaintext", "encrypted"])
def test_sigkill_at_random_moments_loses_no_acknowledged_turn(tmp_path: Path, key: str | None) -> None:
    db = tmp_path / "enclave.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(20261127)
    acknowledged: list[int] = []
    next_turn = 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(crypt.KEY_ENV, None)
    if key is not None:
        env[crypt.KEY_ENV] = key
    db_key = crypt.DatabaseKey(key, "the test") if key is not None else None
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(db), str(next_turn)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        # Wait until it is writing, then kill it at a random instant.
        first = proc.stdout.readline()
        assert first.strip(), "writer did not start"
        acknowledged.append(int(first))
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        acknowledged.extend(int(line) for line in rest.split())
        with contextlib.closing(crypt.connect(db, db_key)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {
                int(content.split()[1])
                for (content,) in conn.execute("select content from messages where role = 'assistant'")
            }
            users = conn.execute("select count(*) from messages where role = 'user'").fetchone()[0]
        missing = set(acknowledged) - stored
        assert not missing, f"acknowledged turns lost: {sorted(missing)[:5]}"
        assert users == len(stored)  # never half a turn
        next_turn = max(stored) + 1
    assert len(acknowledged) > KILLS
    assert crypt.file_state(db) == ("plain" if key is None else "encrypted")
