"""With encryption on, no user text reaches the disk in a readable form.

A scripted session through the real CLI (subprocesses, the tiny model) types unique
canary strings; then EVERY file under ENCLAVE_HOME and the process temp dir (TMPDIR
points into the test folder) is scanned for them as UTF-8, lower case, UTF-16 LE and
BE — the raw database and WAL pages included. Encrypted: 0 hits. The same session
with encryption off must find every canary, which proves the scan can see them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from assistant.storage import crypt

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "canary test passphrase"


def _encodings(text: str) -> list[bytes]:
    return [form.encode(codec) for form in {text, text.lower()} for codec in ("utf-8", "utf-16-le", "utf-16-be")]


def scan(folders: list[Path], canaries: list[str]) -> dict[str, list[str]]:
    """Each canary → the files holding it in any encoding (every file, whatever its name)."""
    needles = {c: _encodings(c) for c in canaries}
    found: dict[str, list[str]] = {c: [] for c in canaries}
    scanned = 0
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            scanned += 1
            for canary, forms in needles.items():
                if any(form in data for form in forms):
                    found[canary].append(str(path.relative_to(folder.parent)))
    assert scanned > 0
    return found


class Session:
    """`enclave` as a user runs it, with its home, temp dir and (maybe) key."""

    def __init__(self, home: Path, tmpdir: Path, key: str | None) -> None:
        self.env = dict(os.environ, ENCLAVE_HOME=str(home), TMPDIR=str(tmpdir))
        self.env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
        for name in ("ENCLAVE_DEBUG", crypt.KEY_ENV, "ENCLAVE_ENCRYPT", "ENCLAVE_MODEL"):
            self.env.pop(name, None)
        if key is not None:
            self.env[crypt.KEY_ENV] = key

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "assistant", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            timeout=120,
        )
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plaintext"])
def test_no_canary_reaches_the_disk_readably(tmp_path: Path, tiny_dir: Path, encrypt: bool) -> None:
    home, tmpdir, outside = tmp_path / "home", tmp_path / "tmp", tmp_path / "outside"
    tmpdir.mkdir()
    outside.mkdir()
    canaries = [f"Canary{i}x{uuid.uuid4().hex[:10]}" for i in range(6)]
    enclave = Session(home, tmpdir, PASSPHRASE if encrypt else None)
    if encrypt:
        enclave("init", "--encrypt", "--key-from-env")
    enclave("models", "add", str(tiny_dir), "--name", "tiny")
    enclave("ask", "-m", "tiny", "--max-tokens", "8", f"Is {canaries[0]} privileged?")
    chat = "".join(f"Please summarise {c} for the client.\n" for c in canaries[1:4])
    enclave("chat", "-m", "tiny", "--max-tokens", "8", stdin=chat)
    enclave("chat", "-m", "tiny", "--max-tokens", "8", "--continue", stdin=f"And {canaries[4]}?\n")
    assert canaries[0].lower() in enclave("history", "search", canaries[0]).lower()  # stored and searchable
    assert "Please summarise" in enclave("history", "list")
    enclave("history", "show", "2")
    enclave("audit", "list")
    assert "chain intact" in enclave("audit", "verify")
    enclave("doctor")
    # Documents: a file outside ENCLAVE_HOME is indexed, searched and cited in an answer;
    # its passages (FTS rows, vectors, citations) live only in the database.
    doc = outside / "memo.txt"
    doc.write_text(f"Privileged memo. The matter is {canaries[5]}.\n" * 20, encoding="utf-8")
    enclave("docs", "add", str(doc), "-c", "matter")
    assert canaries[5] in enclave("docs", "search", canaries[5])
    answer = enclave("ask", "-m", "tiny", "--max-tokens", "8", "--ctx", "1024", "--docs", f"What is {canaries[5]}?")
    assert "memo.txt" in answer  # the sources list
    found = scan([home, tmpdir], canaries)
    if encrypt:
        assert found == {c: [] for c in canaries}
    else:
        missing = [c for c, files in found.items() if not files]
        assert not missing, f"the scan did not see {missing} in a plaintext database"
