"""Bad input, hostile targets and odd homes, through `enclave` as a user runs it (real processes).

Prompts with NUL, bytes that are not UTF-8 and control characters; exports aimed at
symlinks, FIFOs, device nodes and directories; files created under umask 022; a
read-only home; names and titles carrying terminal escapes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import ROOT, enclave

ESCAPES = ("\x1b", "\x07", "\x9b", "\u202e")


def run(
    *args: str | bytes, home: Path, stdin: bytes = b"", umask: int | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    env.pop("ENCLAVE_DEBUG", None)
    return subprocess.run(
        [sys.executable.encode(), b"-m", b"assistant", *(a if isinstance(a, bytes) else a.encode() for a in args)],
        input=stdin, capture_output=True, env=env, cwd=ROOT, timeout=timeout,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )  # fmt: skip


@pytest.fixture
def home(enclave_home: Path, tiny_dir: Path) -> Path:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    return enclave_home


def _answers(stdout: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]


def _messages(home: Path) -> list[str]:
    with sqlite3.connect(home / "data" / "enclave.db") as db:
        return [row[0] for row in db.execute("select content from messages where role = 'user' order by id")]


# ----------------------------------------------------------------------- prompts
def test_a_nul_byte_does_not_make_the_conversation_deaf(home: Path) -> None:
    script = b"Hello \x00 world\nWhat is the capital of France? Please answer in one short sentence.\n"
    proc = run("chat", "-m", "tiny", "--json", "--max-tokens", "2", home=home, stdin=script)
    assert proc.returncode == 0, proc.stderr
    first, second = _answers(proc.stdout)
    assert b"1 NUL character removed" in proc.stderr
    usage1, usage2 = first["usage"], second["usage"]
    assert isinstance(usage1, dict) and isinstance(usage2, dict)
    # The second turn's new tokens are really there (behind a NUL, they were cut off).
    assert usage2["prompt_tokens"] > usage1["prompt_tokens"] + 10
    assert _messages(home) == ["Hello  world", "What is the capital of France? Please answer in one short sentence."]
    again = run("chat", "-m", "tiny", "--json", "--max-tokens", "2", "--continue", home=home, stdin=b"And Spain?\n")
    (third,) = _answers(again.stdout)
    usage3 = third["usage"]
    assert isinstance(usage3, dict) and usage3["prompt_tokens"] > usage2["prompt_tokens"]


def test_a_nul_stored_by_an_older_enclave_is_cleaned_when_the_conversation_continues(home: Path) -> None:
    from assistant.storage.database import Store

    store = Store(home / "data" / "enclave.db", config_dir=home / "config")
    cid = store.create_conversation(model="tiny", engine="onnx", persona="general", system_prompt="",
                                    context_policy="drop-oldest")  # fmt: skip
    long_tail = "valve pressure reset procedure " * 20
    store.add_turn(cid, "A\x00" + long_tail, "ok", model="tiny", model_sha256="0" * 64, engine="onnx",
                   where_ran="local", finish_reason="stop", usage=None, context=None)  # fmt: skip
    store.close()
    proc = run("chat", "-m", "tiny", "--json", "--max-tokens", "2", "--continue", str(cid), home=home, stdin=b"next\n")
    (answer,) = _answers(proc.stdout)
    usage = answer["usage"]
    assert isinstance(usage, dict) and usage["prompt_tokens"] > 80  # the history after the NUL is in the prompt


@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        (["chat", "-m", "tiny", "--json", "--max-tokens", "2"], b"caf\xe9 \xff\xfe question\n"),
        (["ask", "-m", "tiny", "--max-tokens", "2", "-"], b"caf\xe9 question \xc3\n"),
        (["ask", "-m", "tiny", "--max-tokens", "2", b"argv caf\xe9 \xff"], b""),
        (["chat", "-m", "tiny", "--json", "--max-tokens", "2"], b"colours \x1b[31mred\x1b[0m and \x07bell\n"),
    ],
    ids=["stdin-chat", "stdin-ask", "argv", "control-characters"],
)
def test_input_that_is_not_clean_text_is_cleaned_with_a_notice(
    home: Path, command: list[str | bytes], stdin: bytes
) -> None:
    proc = run(*command, home=home, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert b"internal error" not in proc.stderr and b"was cleaned before it was sent" in proc.stderr
    (stored,) = _messages(home)
    assert not any(ch in stored for ch in ("\x00", "\x1b", "\x07")) and "\udcff" not in stored


def test_a_prompt_of_nothing_but_unreadable_characters_is_a_clear_error(home: Path) -> None:
    proc = run("ask", "-m", "tiny", "--max-tokens", "2", b"\x01\x02\x03", home=home)
    assert proc.returncode == 1 and b"The message is empty" in proc.stderr and b"internal error" not in proc.stderr


@pytest.mark.parametrize("query", ['"', "'", 'a"b', "NEAR(", "*", "AND", "-x", "^", ":", "(", '""""', "\\"])
def test_history_search_takes_any_text(home: Path, query: str) -> None:
    enclave("ask", "-m", "tiny", "--max-tokens", "2", 'a "quoted" question', home=home)
    proc = enclave("history", "search", "--", query, home=home, check=False)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------- exports
@pytest.fixture
def conversation(home: Path) -> str:
    answer = json.loads(enclave("ask", "-m", "tiny", "--json", "--max-tokens", "2", "hello", home=home).stdout)
    return str(answer["conversation_id"])


@pytest.mark.parametrize("which", ["history", "audit"])
def test_exports_never_replace_a_symlink_a_fifo_a_device_or_a_folder(
    home: Path, conversation: str, tmp_path: Path, which: str
) -> None:
    args = ["history", "export", conversation] if which == "history" else ["audit", "export"]
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    special = [link, fifo, folder]
    if os.geteuid() == 0:
        device = tmp_path / "null-clone"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
        special.append(device)
    for path in special:
        proc = enclave(*args, "-o", str(path), home=home, check=False, timeout=60)
        assert proc.returncode == 1 and "error:" in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert target.read_text() == "keep me\n" and link.is_symlink() and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if os.geteuid() == 0:
        assert stat.S_ISCHR(os.lstat(tmp_path / "null-clone").st_mode)
    forced = enclave(*args, "-o", str(link), "--force", home=home)
    assert forced.returncode == 0 and not link.is_symlink() and target.read_text() == "keep me\n"
    if os.geteuid() == 0:
        # Forced onto a device, the export is written into it (as `> /dev/null` is),
        # never renamed over it: that would replace the device for every program.
        device = tmp_path / "null-clone"
        into = enclave(*args, "-o", str(device), "--force", home=home)
        assert into.returncode == 0 and stat.S_ISCHR(os.lstat(device).st_mode), into.stderr
    verify = enclave("audit", "verify", home=home).stdout
    assert verify.startswith("ok")


@pytest.mark.parametrize("which", ["history", "audit"])
def test_exports_are_private_and_keep_an_existing_files_mode(
    home: Path, conversation: str, tmp_path: Path, which: str
) -> None:
    args = ["history", "export", conversation] if which == "history" else ["audit", "export"]
    new = tmp_path / "new.out"
    run(*args, "-o", str(new), home=home, umask=0o022)
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    shared = tmp_path / "shared.out"
    shared.write_text("old")
    os.chmod(shared, 0o640)
    run(*args, "-o", str(shared), home=home, umask=0o022)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640 and shared.read_text() != "old"


# ----------------------------------------------------------------------- private files
def test_everything_enclave_creates_is_private_under_umask_022(
    enclave_home: Path, tiny_dir: Path, tmp_path: Path
) -> None:
    home = enclave_home
    assert run("models", "add", str(tiny_dir), "--name", "tiny", home=home, umask=0o022).returncode == 0
    assert run("ask", "-m", "tiny", "--max-tokens", "2", "hi", home=home, umask=0o022).returncode == 0
    assert run("config", "set", "top_k", "30", home=home, umask=0o022).returncode == 0
    # While a second process holds the database open, its WAL and shared-memory files exist too.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from assistant.storage.database import Store; "
         "from pathlib import Path; s = Store(Path(sys.argv[1])); print('open', flush=True); time.sleep(30)",
         str(home / "data" / "enclave.db")],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=lambda: os.umask(0o022),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        data, config = home / "data", home / "config"
        for folder in (home, data, config):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        for name in ("enclave.db", "enclave.db-wal", "enclave.db-shm", "enclave.db.lock", "audit.head"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        for name in ("config.toml", "audit.key", "audit-state.json"):
            assert stat.S_IMODE((config / name).stat().st_mode) == 0o600, name
    finally:
        holder.kill()
        holder.wait()
    doctor = enclave("doctor", home=home, check=False)
    assert "ok   private" in doctor.stdout
    os.chmod(home / "data" / "enclave.db", 0o644)
    os.chmod(home / "data", 0o755)
    doctor = enclave("doctor", home=home, check=False)
    assert doctor.returncode == 1
    assert f"fix: chmod 600 {home / 'data' / 'enclave.db'}" in doctor.stdout
    assert f"fix: chmod 700 {home / 'data'}" in doctor.stdout


# ----------------------------------------------------------------------- read-only home
def _read_only(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `enclave ARGS` with HOME mounted read-only (a private mount namespace)."""
    command = " ".join(["exec", sys.executable, "-m", "assistant", *(f"'{a}'" for a in args)])
    script = f"mount --bind '{home}' '{home}' && mount -o remount,bind,ro '{home}' && {command}"
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def _can_mount() -> bool:
    try:
        return (
            subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs x /mnt"], capture_output=True).returncode == 0
        )
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _can_mount(), reason="needs a private mount namespace (root or user namespaces)")
def test_a_read_only_home_allows_every_command_that_only_reads(home: Path, conversation: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.txt").write_text("Reset the pump valve.\n")
    enclave("docs", "add", str(docs), home=home)
    for args in (
        ["history", "list"], ["history", "show", conversation], ["history", "search", "hello"],
        ["audit", "verify"], ["audit", "list"], ["docs", "list"], ["docs", "status"], ["docs", "search", "valve"],
        ["models", "list"], ["models", "verify"], ["config", "show"],
    ):  # fmt: skip
        proc = _read_only(home, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    for args in (["ask", "-m", "tiny", "hello"], ["history", "rename", conversation, "new"]):
        proc = _read_only(home, *args)
        assert proc.returncode == 1 and "cannot be written" in proc.stderr and "internal error" not in proc.stderr


# ----------------------------------------------------------------------- names on the terminal
def test_model_names_paths_and_titles_with_escapes_print_safely(home: Path, tiny_dir: Path, tmp_path: Path) -> None:
    hostile = tmp_path / "model\x1b]0;pwned\x07\u202e"
    tiny_dir.rename(hostile)
    bad_name = enclave("models", "add", str(hostile), "--name", "x\x1b[2J", home=home, check=False)
    assert bad_name.returncode == 1 and "cannot be a model name" in bad_name.stderr
    added = enclave("models", "add", str(hostile), "--name", "hostile", home=home)
    answer = json.loads(enclave("ask", "-m", "hostile", "--json", "--max-tokens", "2", "hi", home=home).stdout)
    enclave("history", "rename", str(answer["conversation_id"]), "title \x1b]52;c;ZXZpbA==\x07 \u202eevil", home=home)
    for proc in (added, enclave("models", "list", home=home), enclave("history", "list", home=home),
                 enclave("history", "show", str(answer["conversation_id"]), home=home)):  # fmt: skip
        for stream in (proc.stdout, proc.stderr):
            assert not any(ch in stream for ch in ESCAPES), repr(stream)
    assert "\\x1b]0;pwned\\x07\\u202e" in added.stdout
