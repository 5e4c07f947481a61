"""Scripts and pipes: the `enclave` command behaves like a Unix tool (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import ROOT, enclave


@pytest.fixture
def home(enclave_home: Path, tiny_dir: Path) -> Path:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    return enclave_home


def _conversation(home: Path, text: str = "the pump hums") -> int:
    data = json.loads(enclave("ask", "-m", "tiny", "--json", "--max-tokens", "4", text, home=home).stdout)
    return int(data["conversation_id"])


@pytest.mark.parametrize(
    "args",
    [
        ["history", "delete", "{cid}"],
        ["docs", "remove", "manuals"],
        ["init", "--decrypt"],
        ["models", "remove", "built"],
        ["cloud", "key", "delete"],
    ],
    ids=["history-delete", "docs-remove", "init-decrypt", "models-remove", "cloud-key-delete"],
)
def test_destructive_commands_refuse_without_yes_when_stdin_is_not_a_terminal(
    home: Path, tmp_path: Path, args: list[str]
) -> None:
    cid = _conversation(home)
    docs = tmp_path / "manuals"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nHold RESET for five seconds.\n")
    enclave("docs", "add", str(docs), "-c", "manuals", home=home)
    # A "built" model: installed by Enclave itself (no external path), so removing it deletes files.
    built = home / "data" / "models" / "built" / "onnx"
    built.mkdir(parents=True)
    manifest = json.loads((home / "data" / "models" / "tiny" / "onnx" / "enclave-manifest.json").read_text())
    manifest.pop("path", None)
    manifest["name"] = "built"
    (built / "enclave-manifest.json").write_text(json.dumps(manifest))
    env_home = dict(home=home)
    if args[0] == "cloud":
        (home / "config").mkdir(parents=True, exist_ok=True)
        (home / "config" / "config.toml").write_text('cloud_base_url = "http://127.0.0.1:9/v1"\n')
    command = [a.replace("{cid}", str(cid)) for a in args]

    proc = enclave(*command, **env_home, stdin="y\n", check=False)  # type: ignore[arg-type]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to ") and "--yes" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    # Nothing was touched.
    assert json.loads(enclave("history", "list", "--json", home=home).stdout)[0]["id"] == cid
    assert "manuals" in enclave("docs", "list", home=home).stdout
    assert (built / "enclave-manifest.json").is_file()


def test_yes_still_deletes_without_a_terminal(home: Path) -> None:
    cid = _conversation(home)
    assert enclave("history", "delete", str(cid), "--yes", home=home).stdout == f"Deleted {cid}.\n"
    assert json.loads(enclave("history", "list", "--json", home=home).stdout) == []


def _closed_pipe(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `enclave ARGS | head -0`: the reader is gone before anything is written."""
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    env.pop("ENCLAVE_DEBUG", None)
    read, write = os.pipe()
    os.close(read)  # no reader at all: the first write that does not fit fails with EPIPE
    try:
        return subprocess.run(
            [sys.executable, "-m", "assistant", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "args",
    [
        ["history", "list"],
        ["history", "show", "{cid}"],
        ["history", "list", "--json"],
        ["models", "list"],
        ["ask", "-m", "tiny", "--max-tokens", "16", "hello"],
        ["ask", "-m", "tiny", "--json", "--max-tokens", "4", "hello"],
    ],
    ids=["history-list", "history-show", "history-json", "models-list", "ask", "ask-json"],
)
def test_a_closed_pipe_ends_quietly_with_status_0(home: Path, args: list[str]) -> None:
    cid = _conversation(home)
    proc = _closed_pipe(home, *[a.replace("{cid}", str(cid)) for a in args])
    assert proc.returncode == 0, proc.stderr
    assert b"Broken pipe" not in proc.stderr and b"Traceback" not in proc.stderr
    assert b"Exception ignored" not in proc.stderr


def test_head_1_of_a_long_listing(home: Path) -> None:
    """`enclave history list -n 1000 | head -1`, with more than a pipe buffer to write."""
    from assistant.core.settings import Settings
    from assistant.storage.database import Store

    os.environ["ENCLAVE_HOME"] = str(home)
    store = Store(Settings.load().locations.database)
    with store.transaction() as db:
        for i in range(900):
            db.table("conversations").insert(
                {"title": f"conversation {i} " + "x" * 100, "created_at": "t", "updated_at": "t", "model": "tiny",
                 "engine": "onnx", "persona": "general", "system_prompt": "", "context_policy": "stop"}
            )  # fmt: skip
    store.close()
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    cmd = f'{sys.executable} -m assistant history list -n 1000 | head -1; echo "status=${{PIPESTATUS[0]}}"'
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and "conversation 899" in lines[0], proc.stdout
    assert lines[1] == "status=0", proc.stderr
    assert proc.stderr == ""


def test_json_output_is_one_document_with_nothing_else_on_stdout(home: Path, tmp_path: Path) -> None:
    docs = tmp_path / "manuals"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nHold the red RESET button for five seconds.\n")
    (docs / "other.md").write_text("# Valve\n\nTurn the valve clockwise to close it.\n")
    calls = [
        ["ask", "-m", "tiny", "--json", "--max-tokens", "4", "hello"],
        ["docs", "add", str(docs), "-c", "manuals", "--json"],
        ["docs", "sync", "--json"],
        ["docs", "list", "--json"],
        ["docs", "status", "--json"],
        ["docs", "search", "reset", "--json"],
        ["ask", "-m", "tiny", "--docs", "manuals", "--json", "--max-tokens", "4", "How do I reset the pump?"],
        ["history", "list", "--json"],
        ["history", "search", "hello", "--json"],
        ["models", "list", "--json"],
        ["config", "show", "--json"],
    ]
    for args in calls:
        proc = enclave(*args, home=home)
        json.loads(proc.stdout)  # exactly one JSON document: extra text would fail here
        assert len(proc.stdout.strip().splitlines()) == 1, (args, proc.stdout)
    # chat --json: one document per turn, and commands print nothing on stdout.
    proc = enclave(
        "chat", "-m", "tiny", "--json", "--max-tokens", "4", home=home, stdin="hi\n/show\n/set temperature 0\nagain\n"
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 2 and "temperature = 0" in proc.stderr


def test_ctrl_c_that_no_command_turns_into_a_message_is_one_line_and_status_130() -> None:
    """Found by a tester: Ctrl-C while `docs add` was still starting printed click's
    "Aborted!" and exited 1, as if the command had failed."""
    import click
    from click.testing import CliRunner

    from assistant.cli.common import EnclaveGroup

    @click.group(cls=EnclaveGroup)
    def root() -> None:
        pass

    @root.command()
    def starting() -> None:
        raise KeyboardInterrupt

    result = CliRunner().invoke(root, ["starting"])
    assert result.exit_code == 130
    assert result.output.strip() == "Interrupted." and "Aborted" not in result.output
