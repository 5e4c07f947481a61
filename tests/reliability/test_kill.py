"""Durability: a writer killed with SIGKILL at random moments never loses an acknowledged turn."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from pathlib import Path
from assistant.store import Store
store = Store(Path(sys.argv[1]))
cid = store.latest_conversation() or store.create_conversation(
    model="tiny", engine="onnx", persona="general", system_prompt="s", context_policy="drop-oldest")
start = int(sys.argv[2])
for i in range(start, start + 100000):
    store.add_turn(cid, f"question {i} " + "x" * (i % 200), f"answer {i}", model="tiny", model_sha256="0" * 64,
                   engine="onnx", where_ran="local", finish_reason="stop", usage={"n": i}, context=None)
    print(i, flush=True)  # acknowledged: add_turn returned, the transaction is committed
"""

KILLS = 50


def test_sigkill_at_random_moments_loses_no_acknowledged_turn(tmp_path: Path) -> None:
    db = tmp_path / "enclave.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(20261127)
    acknowledged: list[int] = []
    next_turn = 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
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
        with sqlite3.connect(db) as conn:
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
