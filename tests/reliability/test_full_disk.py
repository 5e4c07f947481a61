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
    script = (
        f"set -e; cp -a '{data}' '{tmp_path}/data-copy'; "
        f"mount -t tmpfs -o size=$(( $(du -sk '{tmp_path}/data-copy' | cut -f1) + 400 ))k x '{data}'; "
        f"cp -a '{tmp_path}/data-copy/.' '{data}/'; dd if=/dev/zero of='{data}/filler' bs=4k 2>/dev/null || true; "
        f"set +e; {no_save}; echo \"rc=$?\" >&2; echo '--' >&2; {saving}; echo \"rc=$?\" >&2; "
        f"rm '{data}/filler'; cmp '{data}/enclave.db' '{tmp_path}/data-copy/enclave.db' && echo same"
    )
    env = dict(os.environ, ENCLAVE_HOME=str(enclave_home))
    env.pop("ENCLAVE_DEBUG", None)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=180)
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
