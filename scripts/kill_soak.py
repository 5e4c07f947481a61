#!/usr/bin/env python
"""Durability soak: kill a writer with SIGKILL at random moments, many times.

Same check as tests/reliability/test_kill.py (50 kills there), for as many kills
as you like: after every kill the database passes ``PRAGMA integrity_check`` and
every turn the writer acknowledged (after its transaction committed) is present.

    python scripts/kill_soak.py [--kills 500] [--seed 1] [--encrypt]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.storage import crypt  # noqa: E402
from tests.reliability.test_kill import RAW_KEY, WRITER  # noqa: E402 - one writer for the test and the soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--encrypt", action="store_true", help="a SQLCipher-encrypted database")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "enclave.db"
        script = Path(tmp) / "writer.py"
        script.write_text(WRITER)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop(crypt.KEY_ENV, None)
        key = None
        if args.encrypt:
            env[crypt.KEY_ENV] = RAW_KEY
            key = crypt.DatabaseKey(RAW_KEY, "the soak")
        acknowledged: set[int] = set()
        next_turn = 0
        started = time.monotonic()
        for kill in range(1, args.kills + 1):
            proc = subprocess.Popen(
                [sys.executable, str(script), str(db), str(next_turn)], stdout=subprocess.PIPE, text=True, env=env
            )
            assert proc.stdout is not None
            acknowledged.add(int(proc.stdout.readline()))
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate()
            acknowledged.update(int(line) for line in rest.split())
            with contextlib.closing(crypt.connect(db, key)) as conn:
                ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
                stored = {
                    int(c.split()[1]) for (c,) in conn.execute("select content from messages where role = 'assistant'")
                }
            lost = acknowledged - stored
            if ok != "ok" or lost:
                sys.exit(f"kill {kill}: integrity {ok!r}, lost acknowledged turns {sorted(lost)[:10]}")
            next_turn = max(stored) + 1
            if kill % 50 == 0:
                print(f"{kill} kills, {len(stored)} turns stored, all acknowledged turns present", flush=True)
        print(
            f"{args.kills} kills in {time.monotonic() - started:.0f} s: integrity ok every time, 0 acknowledged turns lost"
        )


if __name__ == "__main__":
    main()
