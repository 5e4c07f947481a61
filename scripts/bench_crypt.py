#!/usr/bin/env python
"""What encryption at rest costs: open time, turn writes, search, and converting in place.

    python scripts/bench_crypt.py [--turns 2000]

Plaintext vs SQLCipher with a passphrase (PBKDF2, 256 000 iterations) vs a raw key,
on real files in a temporary directory (synchronous=FULL, as Enclave runs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.storage import crypt  # noqa: E402
from assistant.storage.database import Store  # noqa: E402

KEYS = {
    "plaintext": None,
    "passphrase": crypt.DatabaseKey("a reasonably long passphrase", "bench"),
    "raw key": crypt.DatabaseKey("x'" + "3c" * 32 + "'", "bench"),
}


def _turns(store: Store, n: int) -> float:
    cid = store.create_conversation(
        model="m", engine="onnx", persona="general", system_prompt="s", context_policy="drop-oldest"
    )
    started = time.perf_counter()
    for i in range(n):
        store.add_turn(
            cid, f"question {i} about the pump " + "text " * 60, f"answer {i} " + "words " * 80, model="m",
            model_sha256="0" * 64, engine="onnx", where_ran="local", finish_reason="stop", usage=None, context=None,
        )  # fmt: skip
    return (time.perf_counter() - started) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=2000)
    args = parser.parse_args()
    print(f"SQLCipher {crypt.sqlcipher_version()}, {args.turns} turns")
    print(f"{'':12} {'open ms':>8} {'turn write ms':>14} {'search ms':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, key in KEYS.items():
            db = Path(tmp) / name.replace(" ", "-") / "enclave.db"
            Store(db, key).close()
            started = time.perf_counter()
            store = Store(db, key)
            open_ms = (time.perf_counter() - started) * 1000
            write_ms = _turns(store, args.turns)
            started = time.perf_counter()
            for _ in range(20):
                store.search("pump question")
            search_ms = (time.perf_counter() - started) / 20 * 1000
            store.close()
            print(f"{name:12} {open_ms:8.1f} {write_ms:14.2f} {search_ms:10.2f}")
        plain = Path(tmp) / "plaintext" / "enclave.db"
        size = plain.stat().st_size
        started = time.perf_counter()
        crypt.encrypt_in_place(plain, KEYS["passphrase"])  # type: ignore[arg-type]
        took = time.perf_counter() - started
        print(f"encrypt in place: {size / 2**20:.1f} MiB in {took:.2f} s")
        started = time.perf_counter()
        crypt.decrypt_in_place(plain, KEYS["passphrase"])  # type: ignore[arg-type]
        print(f"decrypt in place: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
