"""`enclave init --encrypt` and friends, run as a user runs them: real subprocesses, real files."""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.storage import crypt

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "river 'otter' lamp 42"


def run(
    *args: str,
    home: Path,
    key: str | None = None,
    stdin: str | None = None,
    check: bool = True,
    extra: dict[str, str] | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """`enclave ARGS` with its own home, no keyring but the test's, and ENCLAVE_DB_KEY only if given."""
    full = dict(os.environ, ENCLAVE_HOME=str(home), PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    for name in ("ENCLAVE_DEBUG", crypt.KEY_ENV, "ENCLAVE_ENCRYPT"):
        full.pop(name, None)
    full.update(env)
    full.update(extra or {})
    if key is not None:
        full[crypt.KEY_ENV] = key
    proc = subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _chat(home: Path, text: str, key: str | None = None) -> None:
    run("chat", "-m", "tiny", "--max-tokens", "4", home=home, key=key, stdin=text + "\n")


@pytest.fixture
def home(enclave_home: Path, tiny_dir: Path) -> Path:
    run("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    return enclave_home


def test_init_encrypt_converts_history_in_place(home: Path) -> None:
    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('# mine\ntheme = "nord"\n')
    _chat(home, "the wombat invoice")
    proc = run("init", "--encrypt", "--key-from-env", home=home, key=PASSPHRASE)
    assert "Encrypted" in proc.stderr and PASSPHRASE not in proc.stderr + proc.stdout
    assert config.read_text() == '# mine\ntheme = "nord"\nencrypt = true\n'
    db = home / "data" / "enclave.db"
    assert crypt.file_state(db) == "encrypted"
    hits = run("history", "search", "wombat", "--json", home=home, key=PASSPHRASE).stdout
    assert "wombat" in hits
    audit = run("audit", "list", home=home, key=PASSPHRASE).stdout
    assert "encrypt" in audit and '"key_source": "ENCLAVE_DB_KEY"' in audit and PASSPHRASE not in audit
    assert "chain intact" in run("audit", "verify", home=home, key=PASSPHRASE).stdout
    _chat(home, "a second turn, encrypted", key=PASSPHRASE)
    # Running it again only confirms (and keeps the setting); the reverse stores plaintext again.
    assert "Already encrypted" in run("init", "--encrypt", home=home, key=PASSPHRASE).stderr
    proc = run("init", "--decrypt", "--yes", home=home, key=PASSPHRASE)
    assert "plaintext" in proc.stderr and "Decrypted" in proc.stderr
    assert config.read_text().endswith("encrypt = false\n")
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from messages").fetchone()[0] == 4
        kinds = [k for (k,) in conn.execute("select kind from audit order by seq")]
    assert kinds[-2:] == ["encrypt", "decrypt"] and "encrypt" in kinds[:-2]


def test_init_creates_a_new_encrypted_database(enclave_home: Path) -> None:
    run("init", "--encrypt", home=enclave_home, key=PASSPHRASE)  # not a terminal: ENCLAVE_DB_KEY is used
    db = enclave_home / "data" / "enclave.db"
    assert crypt.file_state(db) == "encrypted"
    out = run("audit", "list", home=enclave_home, key=PASSPHRASE).stdout
    assert " encrypt " in out and '"before": "missing"' in out


def test_init_without_a_passphrase_says_how(enclave_home: Path) -> None:
    proc = run("init", "--encrypt", home=enclave_home, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: No passphrase: ENCLAVE_DB_KEY is not set and this is not a terminal.")
    assert "--key-from-env" in proc.stderr and "Traceback" not in proc.stderr
    assert not (enclave_home / "data" / "enclave.db").exists()


def test_wrong_key_is_one_message_and_nothing_else_on_fd2(home: Path) -> None:
    """SQLCipher logs "hmac check failed" lines to the process's stderr unless silenced."""
    run("init", "--encrypt", home=home, key=PASSPHRASE)
    for command in (["history", "list"], ["ask", "-m", "tiny", "hello"], ["tui"]):
        proc = run(*command, home=home, key="not the passphrase", check=False)
        db = home / "data" / "enclave.db"
        assert proc.returncode == 1, command
        assert proc.stderr.splitlines() == [
            f"error: The database {db} is encrypted and the key from ENCLAVE_DB_KEY is wrong.",
            "  Set ENCLAVE_DB_KEY to the passphrase chosen at `enclave init --encrypt` "
            "(it takes precedence over the keyring), or type it on a terminal.",
        ], command
    proc = run("history", "list", home=home, check=False)
    assert proc.stderr.splitlines()[0] == f"error: The database {db} is encrypted and no key was found."


def test_setting_and_file_disagree(home: Path) -> None:
    _chat(home, "plain text")
    proc = run("history", "list", home=home, check=False, ENCLAVE_ENCRYPT="1")
    assert proc.returncode == 1
    assert "is not encrypted, but the setting encrypt is on" in proc.stderr
    assert "enclave init --encrypt" in proc.stderr
    run("init", "--encrypt", home=home, key=PASSPHRASE)
    (home / "config" / "config.toml").write_text("encrypt = false\n")
    proc = run("history", "list", home=home, key=PASSPHRASE, check=False)
    assert "is encrypted, but the setting encrypt is off" in proc.stderr and "Traceback" not in proc.stderr


def test_doctor_reports_encryption_and_key_source_never_the_key(home: Path) -> None:
    out = run("doctor", home=home).stdout
    assert "Database" in out and "not created yet" in out
    run("init", "--encrypt", home=home, key=PASSPHRASE)
    out = run("doctor", home=home, key=PASSPHRASE).stdout
    assert "ok   encrypted with SQLCipher 4." in out and "key from ENCLAVE_DB_KEY" in out
    assert "keyring none on this machine" in out and PASSPHRASE not in out
    proc = run("doctor", home=home, key="wrong", check=False)
    assert proc.returncode == 1 and "FAIL The database" in proc.stdout and "is wrong" in proc.stdout
    assert "wrong" not in proc.stdout.split("is wrong")[0].split("key from")[-1]


def test_keyring_holds_the_key_when_asked(home: Path, tmp_path: Path) -> None:
    ring = {"PYTHON_KEYRING_BACKEND": "tests.keyring_backend.FileKeyring", "ENCLAVE_TEST_KEYRING": str(tmp_path / "k")}
    proc = run("init", "--encrypt", "--store-key", home=home, key=PASSPHRASE, extra=ring)
    assert "stored in the system keyring (tests.keyring_backend.FileKeyring)" in proc.stderr
    # No ENCLAVE_DB_KEY now: the keyring opens it.
    assert "No conversations yet." in run("history", "list", home=home, extra=ring).stdout
    assert "key from the system keyring" in run("doctor", home=home, extra=ring).stdout
    run("init", "--decrypt", "--yes", home=home, extra=ring)
    assert PASSPHRASE not in (tmp_path / "k").read_text()  # forgotten with the encryption


def test_store_key_on_a_headless_machine_points_to_the_env_var(enclave_home: Path) -> None:
    proc = run("init", "--encrypt", "--store-key", home=enclave_home, key=PASSPHRASE)
    assert "no system keyring on this machine; set ENCLAVE_DB_KEY" in proc.stderr


# --------------------------------------------------------------------------- a real terminal
def _terminal(args: list[str], home: Path, answers: list[tuple[str, str]], env: dict[str, str]) -> str:
    """Run `enclave ARGS` on a pseudo-terminal, answering each prompt; returns what the terminal showed."""
    full = dict(os.environ, ENCLAVE_HOME=str(home), PYTHONPATH=str(ROOT), **env)
    full.pop(crypt.KEY_ENV, None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty, as in a real shell
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "assistant", *args], full)
    shown = b""
    deadline = time.monotonic() + 60
    pending = list(answers)

    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        if pending and pending[0][0].encode() in shown:
            os.write(fd, pending.pop(0)[1].encode() + b"\r")
            shown += b"\n<answered>\n"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, shown.decode(errors="replace")
    assert not pending, shown.decode(errors="replace")
    return shown.decode(errors="replace")


def test_passphrase_typed_twice_on_a_terminal_and_kept_in_the_keyring(home: Path, tmp_path: Path) -> None:
    ring = {"PYTHON_KEYRING_BACKEND": "tests.keyring_backend.FileKeyring", "ENCLAVE_TEST_KEYRING": str(tmp_path / "k")}
    shown = _terminal(
        ["init", "--encrypt"],
        home,
        [("New passphrase", PASSPHRASE), ("Type it again", PASSPHRASE), ("system keyring", "y")],
        ring,
    )
    assert PASSPHRASE not in shown  # hidden input: never echoed
    assert "Passphrase stored in the system keyring" in shown
    assert crypt.file_state(home / "data" / "enclave.db") == "encrypted"
    assert "No conversations yet." in run("history", "list", home=home, extra=ring).stdout
    # Without the keyring, a terminal asks for it (hidden) instead.
    no_ring = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    shown = _terminal(["history", "list"], home, [("Passphrase for the encrypted database", PASSPHRASE)], no_ring)
    assert "No conversations yet." in shown and PASSPHRASE not in shown
