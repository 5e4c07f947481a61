"""Nothing is written outside ENCLAVE_HOME (and the user's chosen export paths).

A whole session (add a model, ask, chat, documents, history, export, doctor) runs as a
user runs it: ``HOME`` and ``TMPDIR`` are empty folders, no ``XDG_*`` variable, no CI
variable and none of Enclave's switches in the environment (Enclave sets them itself).
Afterwards every file in ``HOME`` and ``TMPDIR`` is listed: there must be none. Before
the switches, onnxruntime left ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,
onnxruntime.db, onnxruntime-genai.db}`` within a second of the first model load.

The sealed workers run with their own ``HOME`` and ``TMPDIR`` inside Enclave's cache, so
that a library that writes there anyway stays inside ENCLAVE_HOME; that folder must stay
empty too, or a switch stopped working. Needs no strace: runs everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from assistant.privacy.offline import CI_SUPPRESSION, OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[2]


def test_a_session_writes_nothing_outside_enclave_home(tmp_path: Path, tiny_dir: Path) -> None:
    home, tmp, enclave_home, docs = (tmp_path / n for n in ("home", "tmp", "enclave", "docs"))
    for folder in (home, tmp, docs):
        folder.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nHold the red button for five seconds to reset the pump.\n")
    export = tmp_path / "export.md"  # the user's chosen export path
    drop = set(CI_SUPPRESSION) | set(OFFLINE_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("XDG_", "ENCLAVE_"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), ENCLAVE_HOME=str(enclave_home), ENCLAVE_DOCS_BUILD_EMBEDDER="false")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # Python's own caches in the checkout are not the question here
    py = [sys.executable, "-m", "assistant"]
    session = [
        ([*py, "models", "add", str(tiny_dir), "--name", "tiny"], None),
        ([*py, "ask", "-m", "tiny", "--max-tokens", "8", "What is the pressure?"], None),
        ([*py, "chat", "-m", "tiny", "--max-tokens", "8"], "hello\nand again\n"),
        ([*py, "docs", "add", str(docs), "--collection", "manuals"], None),
        ([*py, "ask", "-m", "tiny", "--max-tokens", "8", "--docs", "manuals", "How do I reset the pump?"], None),
        ([*py, "history", "list"], None),
        ([*py, "history", "export", "1", "-o", str(export)], None),
        ([*py, "doctor"], None),
    ]
    for command, stdin in session:
        proc = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, f"{command[3:]}: {proc.stderr[-1500:]}"
    assert export.is_file()
    outside = sorted(str(p) for root in (home, tmp) for p in root.rglob("*"))
    assert outside == [], outside
    workers = enclave_home / "cache" / "worker"
    written = sorted(str(p) for p in workers.rglob("*") if p.is_file())
    assert written == [], written
