"""Egress checked by the operating system, not by Enclave's own guard.

A scripted session (models add, ask, chat, history) runs under `strace -f -e
trace=network`: no inet socket, no connect, no DNS. The same session runs in a
network namespace with no network at all (`unshare -rn`) and works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _session(home: Path, tiny_dir: Path) -> list[list[str]]:
    py = [sys.executable, "-m", "assistant"]
    return [
        [*py, "models", "add", str(tiny_dir), "--name", "tiny"],
        [*py, "ask", "-m", "tiny", "--max-tokens", "8", "What is the capital of France?"],
        [*py, "chat", "-m", "tiny", "--max-tokens", "8", "--json"],
        [*py, "history", "list"],
        [*py, "models", "verify"],
    ]


def _run(prefix: list[str], command: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    return subprocess.run(
        prefix + command, input="hello\nand again\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)")
def test_no_inet_socket_connect_or_dns_under_strace(tmp_path: Path, tiny_dir: Path, enclave_home: Path) -> None:
    trace = tmp_path / "trace"
    for i, command in enumerate(_session(enclave_home, tiny_dir)):
        out = trace.with_suffix(f".{i}")
        proc = _run(["strace", "-f", "-qq", "-e", "trace=network", "-o", str(out)], command, enclave_home)
        if proc.returncode != 0 and "ptrace" in proc.stderr:
            pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
        assert proc.returncode == 0, proc.stderr
        calls = out.read_text()
        inet = [line for line in calls.splitlines() if re.search(r"AF_INET6?\b", line)]
        dns = [line for line in calls.splitlines() if "htons(53)" in line]
        connects = [line for line in calls.splitlines() if "connect(" in line and "AF_UNIX" not in line]
        assert inet == [], f"{command[3:]}: inet sockets: {inet[:3]}"
        assert dns == [] and connects == [], f"{command[3:]}: {dns[:3] + connects[:3]}"


def test_the_whole_session_works_with_no_network_at_all(tmp_path: Path, tiny_dir: Path, enclave_home: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed (util-linux)")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the kernel refuses an unprivileged network namespace: {probe.stderr.strip()}")
    for command in _session(enclave_home, tiny_dir):
        proc = _run(["unshare", "-rn"], command, enclave_home)
        assert proc.returncode == 0, f"{command[3:]} failed without a network: {proc.stderr}"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)")
def test_with_cloud_on_the_only_connect_is_to_the_configured_host(
    tmp_path: Path, tiny_dir: Path, enclave_home: Path
) -> None:
    from tests.fake_openai import FakeOpenAI

    py = [sys.executable, "-m", "assistant"]
    assert _run([], [*py, "models", "add", str(tiny_dir), "--name", "tiny"], enclave_home).returncode == 0
    with FakeOpenAI() as server:
        env = dict(
            os.environ,
            ENCLAVE_HOME=str(enclave_home),
            ENCLAVE_CLOUD_BASE_URL=server.base_url,
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        )
        out = tmp_path / "trace.cloud"
        command = [*py, "ask", "-m", "tiny", "--cloud", "--yes-cloud", "What is the capital of France?"]
        proc = subprocess.run(
            ["strace", "-f", "-qq", "-e", "trace=network", "-o", str(out), *command],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0 and "ptrace" in proc.stderr:
            pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "Hello from the cloud.\n" and len(server.requests) == 1
    calls = out.read_text().splitlines()
    connects = [line for line in calls if "connect(" in line and "AF_UNIX" not in line]
    assert connects, "the cloud request made no connect at all"
    target = f'sin_port=htons({server.port}), sin_addr=inet_addr("127.0.0.1")'
    assert all(target in line for line in connects), connects[:3]
    assert [line for line in calls if "htons(53)" in line] == []
