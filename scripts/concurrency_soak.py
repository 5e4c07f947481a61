#!/usr/bin/env python
"""Several Enclaves on one home at once: count the turns sent and the turns stored.

Starts, all at the same moment and on one ``ENCLAVE_HOME`` holding the tiny model:
``--chats`` × ``enclave chat --json`` each fed ``--questions`` lines on stdin, a
``enclave docs add`` of a folder of small files (``--docs`` times), and
``--exports`` × ``enclave audit export -o FILE`` (each also appends an audit entry).
Every process is bounded by ``--timeout`` seconds. Then it reads the database from
outside (plain ``sqlite3``) and prints one JSON report:

* ``sent`` / ``answered`` (JSON lines the chats printed) / ``stored`` (messages in the
  database for the chats' conversations, divided by 2) → ``lost = sent - stored``;
* ``locked``: processes whose stderr said "database is locked";
* ``failed``: processes that exited non-zero, ``internal``: "internal error" lines,
  ``timeouts``; ``audit_ok``: `enclave audit verify` passed.

    python scripts/concurrency_soak.py [--chats 2] [--questions 20] [--docs 1] [--exports 6]

``--root`` runs another checkout's code (to measure a version before a fix).
``tests/reliability/test_concurrency.py`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "assets" / "tiny-llama"


@dataclass
class Report:
    chats: int
    questions: int
    docs: int
    exports: int
    sent: int = 0
    answered: int = 0
    stored: int = 0
    lost: int = 0
    locked: int = 0
    failed: int = 0
    internal: int = 0
    timeouts: int = 0
    docs_indexed: list[int] = field(default_factory=list)
    documents: int = 0
    audit_entries: int = 0
    audit_ok: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _env(home: Path, root: Path) -> dict[str, str]:
    env = dict(os.environ, ENCLAVE_HOME=str(home), ENCLAVE_DOCS_BUILD_EMBEDDER="false", PYTHONPATH=str(root))
    env.pop("ENCLAVE_DEBUG", None)
    return env


def _enclave(*args: str) -> list[str]:
    return [sys.executable, "-m", "assistant", *args]


def run(
    home: Path,
    *,
    chats: int,
    questions: int,
    docs: int,
    exports: int,
    timeout: float,
    root: Path,
    one_collection: bool = False,
) -> Report:
    report = Report(chats, questions, docs, exports)
    env = _env(home, root)
    folder = _prepare_home(home, env, root, timeout)
    started = time.monotonic()
    procs = _start_all(home, folder, env, root, report, one_collection)
    conversations: list[int] = []
    for kind, proc, stdin in procs:
        out = _finish(report, kind, proc, stdin, timeout - (time.monotonic() - started))
        if kind == "chat":
            report.sent += questions
            _read_chat(report, out, conversations)
        elif kind == "docs":
            _read_docs(report, out)
    report.seconds = round(time.monotonic() - started, 1)
    _count_stored(report, home, conversations)
    report.lost = report.sent - report.stored
    verify = subprocess.run(
        _enclave("audit", "verify"), env=env, cwd=root, capture_output=True, text=True, timeout=timeout
    )
    report.audit_ok = verify.returncode == 0
    if not report.audit_ok:
        report.errors.append("audit verify: " + verify.stdout.strip()[-300:])
    return report


def _prepare_home(home: Path, env: dict[str, str], root: Path, timeout: float) -> Path:
    """Add the tiny model to ``home`` and write the folder of manuals; returns the folder."""
    tiny = home.parent / "tiny-llama"
    if not tiny.exists():
        shutil.copytree(TINY, tiny)
    subprocess.run(
        _enclave("models", "add", str(tiny), "--name", "tiny"),
        env=env, cwd=root, check=True, capture_output=True, timeout=timeout,
    )  # fmt: skip
    folder = home.parent / "manuals"
    folder.mkdir(exist_ok=True)
    for i in range(40):
        (folder / f"pump_{i:02d}.txt").write_text(f"Pump {i}\n\nReset the pressure of pump {i} with valve {i}.\n" * 20)
    return folder


def _start_all(
    home: Path, folder: Path, env: dict[str, str], root: Path, report: Report, one_collection: bool
) -> list[tuple[str, subprocess.Popen[str], str | None]]:
    """Start every chat, docs add and export at once: (kind, process, its stdin)."""
    procs: list[tuple[str, subprocess.Popen[str], str | None]] = []
    for c in range(report.chats):
        script = "".join(f"Question {q} from chat {c}: what does valve {q} do?\n" for q in range(report.questions))
        args = _enclave("chat", "-m", "tiny", "--json", "--max-tokens", "4", "--ctx", "2048")
        procs.append(("chat", _start(args, env, root), script))
    for d in range(report.docs):
        collection = "c0" if one_collection else f"c{d}"
        procs.append(
            ("docs", _start(_enclave("docs", "add", str(folder), "-c", collection, "--json"), env, root), None)
        )
    for e in range(report.exports):
        out = home.parent / f"audit-{e}.jsonl"
        procs.append(("export", _start(_enclave("audit", "export", "-o", str(out)), env, root), None))
    return procs


def _finish(report: Report, kind: str, proc: subprocess.Popen[str], stdin: str | None, left: float) -> str:
    """Feed ``stdin``, wait at most ``left`` seconds (at least 1), count the process's
    troubles into ``report``; returns its stdout."""
    try:
        out, err = proc.communicate(stdin, timeout=max(1.0, left))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        report.timeouts += 1
    if "database is locked" in err:
        report.locked += 1
    if "internal error" in err:
        report.internal += 1
    if proc.returncode != 0:
        report.failed += 1
        report.errors.append(f"{kind} exit {proc.returncode}: {err.strip().splitlines()[-1:] if err.strip() else ''}")
    return out


def _read_chat(report: Report, out: str, conversations: list[int]) -> None:
    """Count a chat's JSON answers and note the conversations they went into."""
    for line in out.splitlines():
        if line.startswith("{"):
            answer = json.loads(line)
            report.answered += 1
            if answer.get("conversation_id") and answer["conversation_id"] not in conversations:
                conversations.append(answer["conversation_id"])


def _read_docs(report: Report, out: str) -> None:
    for line in out.splitlines():
        if line.startswith("{"):
            report.docs_indexed.append(int(json.loads(line)["files_indexed"]))


def _count_stored(report: Report, home: Path, conversations: list[int]) -> None:
    """Read the database from outside: the chats' stored turns, audit entries, documents."""
    db = sqlite3.connect(home / "data" / "enclave.db")
    try:
        if conversations:
            marks = ",".join("?" * len(conversations))
            (messages,) = db.execute(
                f"select count(*) from messages where conversation_id in ({marks})", conversations
            ).fetchone()
            report.stored = int(messages) // 2
        (report.audit_entries,) = db.execute("select count(*) from audit").fetchone()
        (report.documents,) = db.execute("select count(*) from documents").fetchone()
    finally:
        db.close()


def _start(args: list[str], env: dict[str, str], root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=2)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--docs", type=int, default=1)
    parser.add_argument("--exports", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--one-collection", action="store_true", help="every docs add into the same collection")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs (default: this one)")
    parser.add_argument("--home", type=Path, help="an empty folder to use (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        report = run(
            home, chats=args.chats, questions=args.questions, docs=args.docs, exports=args.exports,
            timeout=args.timeout, root=args.root.resolve(), one_collection=args.one_collection,
        )  # fmt: skip
    print(json.dumps(asdict(report)))


if __name__ == "__main__":
    main()
