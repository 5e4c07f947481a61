"""A second Enclave on the same home loses nothing: chats, indexing and audit writers at once.

Real processes of `enclave` on one ENCLAVE_HOME, started together (scripts/concurrency_soak.py),
each bounded in time; the database is then read from outside. Before BEGIN IMMEDIATE, a
run like this lost turns and ended chats, `docs add` and `audit export` with "database is
locked" (exit 70).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _soak(tmp_path: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "concurrency_soak.py"), "--home", str(tmp_path / "home"),
         "--timeout", "240", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def test_two_chats_an_indexing_run_and_audit_writers_lose_nothing(tmp_path: Path) -> None:
    report = _soak(tmp_path, "--chats", "2", "--questions", "20", "--docs", "1", "--exports", "6")
    assert report["errors"] == []
    assert report["sent"] == report["answered"] == report["stored"] == 40 and report["lost"] == 0
    assert report["locked"] == report["failed"] == report["internal"] == report["timeouts"] == 0
    assert report["docs_indexed"] == [40]
    # 2 model loads (each with its privacy state), 1 indexing run, 6 exports: every
    # writer's entry is in one intact chain.
    assert report["audit_entries"] == 11 and report["audit_ok"]


def test_two_indexing_runs_of_one_folder_into_one_collection_index_it_once(tmp_path: Path) -> None:
    report = _soak(tmp_path, "--chats", "0", "--docs", "2", "--exports", "0", "--one-collection")
    assert report["errors"] == [] and report["failed"] == report["locked"] == 0
    assert report["documents"] == 40 and sum(report["docs_indexed"]) == 40
