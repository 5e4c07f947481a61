"""A full disk: a question that saves nothing is still answered, one that saves is refused
with its fix, and the history already saved is byte for byte what it was.

The data directory is a tiny tmpfs in a private mount namespace, filled to the last page
after Enclave's files are copied onto it — a user's disk as a tester found it, where
`ask --no-save` failed because loading a model writes to the audit log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import enclave
from tests.reliability.test_damaged_database import _can_mount


def _on_a_full_disk(home: Path, tmp_path: Path, commands: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``commands`` (sh) in a private mount namespace where ``home``'s data folder is a
    tmpfs holding a copy of it (the original at ``tmp_path/data-copy``), filled to the
    last page by ``data/filler``."""
    data = home / "data"
    script = (
        f"set -e; cp -a '{data}' '{tmp_path}/data-copy'; "
        f"mount -t tmpfs -o size=$(( $(du -sk '{tmp_path}/data-copy' | cut -f1) + 400 ))k x '{data}'; "
        f"cp -a '{tmp_path}/data-copy/.' '{data}/'; dd if=/dev/zero of='{data}/filler' bs=4k 2>/dev/null || true; "
        f"set +e; {commands}"
    )
    env = dict(os.environ, ENCLAVE_HOME=str(home), **env)
    env.pop("ENCLAVE_DEBUG", None)
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=180)


@pytest.mark.skipif(not _can_mount(), reason="needs a private mount namespace (root or user namespaces)")
def test_a_full_disk_still_answers_what_is_not_saved_and_loses_nothing(
    enclave_home: Path, tiny_dir: Path, tmp_path: Path
) -> None:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    enclave("ask", "-m", "tiny", "--max-tokens", "4", "saved before the disk filled", home=enclave_home)
    data = enclave_home / "data"
    before = (data / "enclave.db").read_bytes()
    ask = [sys.executable, "-m", "assistant", "ask", "-m", "tiny", "--max-tokens", "4"]
    no_save = " ".join([*ask, "--no-save", "'hello there'"])
    saving = " ".join([*ask, "'hello again'"])
    proc = _on_a_full_disk(
        enclave_home,
        tmp_path,
        f"{no_save}; echo \"rc=$?\" >&2; echo '--' >&2; {saving}; echo \"rc=$?\" >&2; "
        f"rm '{data}/filler'; cmp '{data}/enclave.db' '{tmp_path}/data-copy/enclave.db' && echo same",
    )
    unsaved, saved = proc.stderr.split("\n--\n")
    assert "Traceback" not in proc.stderr, proc.stderr
    # Answered, and told that nothing of it is logged or kept.
    assert "rc=0" in unsaved, unsaved
    assert "the disk holding it is full" in unsaved and "not in the audit log" in unsaved, unsaved
    assert "tiny · onnx · local" in unsaved
    # Saving is refused with the problem and the fix, before the model runs.
    assert "rc=1" in saved, saved
    assert "the disk holding it is full" in saved and "Free some disk space" in saved, saved
    assert proc.stdout.split()[-1] == "same"
    assert (data / "enclave.db").read_bytes() == before  # outside the namespace: untouched
    listed = enclave("history", "list", home=enclave_home).stdout
    assert "saved before the disk filled" in listed


@pytest.mark.skipif(not _can_mount(), reason="needs a private mount namespace (root or user namespaces)")
def test_a_background_embedder_stopped_by_a_full_disk_is_named_by_docs_status(
    enclave_home: Path, tiny_embedder_installed: Path, tmp_path: Path
) -> None:
    """Found by a tester: on a full disk the background embedder died without a word (it
    cannot write its status either), and `docs status` said only "background stopped"."""
    folder = tmp_path / "manuals"
    folder.mkdir()
    for i in range(300):  # more vectors than the room freed below holds
        (folder / f"part{i}.md").write_text(f"# Part {i}\n\nThe pump seal number {i} is checked monthly.\n")
    enclave("docs", "add", str(folder), home=enclave_home)  # keywords and cheap vectors; MiniLM left to the background
    data = enclave_home / "data"
    before = (data / "enclave.db").read_bytes()
    python = sys.executable
    commands = (
        f"echo '' | {python} -m assistant.retrieval.backfill; echo \"background rc=$?\" >&2; "
        f"{python} -m assistant docs status; echo \"full rc=$?\" >&2; "
        # Freed a little, not enough: the database opens, and status says why vectors stopped.
        f"truncate -s -96k '{data}/filler'; echo '' | {python} -m assistant.retrieval.backfill; "
        f"echo \"background again rc=$?\" >&2; {python} -m assistant docs status; echo \"status rc=$?\" >&2"
    )
    proc = _on_a_full_disk(enclave_home, tmp_path, commands, ENCLAVE_DOCS_BACKGROUND="1")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "background rc=1" in proc.stderr, proc.stderr
    # Full to the last page: not even read; the problem and the fix, no traceback.
    assert "full rc=1" in proc.stderr and "the disk holding it is full" in proc.stderr, proc.stderr
    assert "background again rc=1" in proc.stderr and "status rc=0" in proc.stderr, proc.stderr
    assert "background stopped (the disk holding the database is full or nearly" in proc.stdout, proc.stdout
    assert "Free some disk space, then run `enclave docs sync`" in proc.stdout, proc.stdout
    assert (data / "enclave.db").read_bytes() == before
