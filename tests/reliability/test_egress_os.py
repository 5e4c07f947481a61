"""Egress checked by the operating system, not by Enclave's own guard.

Every session here runs as a user runs Enclave: the CI variables that silence
onnxruntime's telemetry (``CI``, ``GITHUB_ACTIONS``, … and ``ORT_RUNNING_UNIT_TESTS``) are
removed from the child's environment, and so are Enclave's own switches
(``ORT_DISABLE_TELEMETRY``, …): Enclave must set them itself. Sessions stay open for
more than 30 s, because onnxruntime's uploader first resolves its host ~9.5 s after
start, so a one-shot command would see nothing.

The long sessions run through ``scripts/egress_check.py`` (``strace -f``: every process
and thread, native code included; inside ``unshare -rn`` when the kernel allows it, so
that a regression could not actually send anything). A positive control proves that the
trace sees native traffic from inside the engine worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from assistant.privacy.offline import CI_SUPPRESSION, OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "egress_check.py"
needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)"
)


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


def _user_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without CI variables and without Enclave's switches."""
    drop = set(CI_SUPPRESSION) | set(OFFLINE_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(ENCLAVE_HOME=str(home), **extra)
    return env


def _session(tiny_dir: Path, doctor: bool = True) -> list[list[str]]:
    py = [sys.executable, "-m", "assistant"]
    # (doctor's own loopback check needs a working lo, which `unshare -rn` does not have)
    return [
        [*py, "models", "add", str(tiny_dir), "--name", "tiny"],
        [*py, "ask", "-m", "tiny", "--max-tokens", "8", "What is the capital of France?"],
        [*py, "chat", "-m", "tiny", "--max-tokens", "8", "--json"],
        [*py, "history", "list"],
        [*py, "models", "verify"],
    ] + [[*py, "doctor", "--privacy"]] * doctor


def _run(prefix: list[str], command: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        prefix + command,
        input="hello\nand again\n",
        capture_output=True,
        text=True,
        env=_user_env(home),
        cwd=ROOT,
        timeout=300,
    )


def _check(*args: str) -> dict[str, Any]:
    """scripts/egress_check.py's report for one session."""
    command = [sys.executable, str(SCRIPT), "--json", *args]
    if not _can_unshare():
        command.append("--no-unshare")
    proc = subprocess.run(command, capture_output=True, text=True, env=_user_env(Path("/nonexistent")), timeout=900)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(json.loads(proc.stdout))


def _assert_silent(report: dict[str, Any]) -> None:
    figures = {k: report[k] for k in ("dns", "remote_connects", "inet_sockets_ok", "inet_socket_attempts")}
    assert figures == dict.fromkeys(figures, 0), report.get("examples")
    assert report["files_outside_home"] == []
    assert report["library_files"] == []  # no library wrote its own files, even inside Enclave's folder


@needs_strace
def test_a_30_second_chat_makes_no_dns_no_remote_connect_and_no_inet_socket() -> None:
    report = _check("--mode", "chat", "--seconds", "32", "--every", "2")
    assert report["seconds"] >= 30 and report["turns"] >= 10
    assert report["sealed_workers_traced"] >= 1  # the trace followed the engine worker
    _assert_silent(report)


@needs_strace
def test_a_30_second_tui_session_makes_no_dns_no_remote_connect_and_no_inet_socket() -> None:
    report = _check("--mode", "tui", "--seconds", "32", "--every", "2")
    assert report["seconds"] >= 30 and report["turns"] >= 10 and report["sealed_workers_traced"] >= 1
    _assert_silent(report)


@needs_strace
def test_the_trace_sees_a_native_connect_from_inside_the_engine_worker() -> None:
    """Positive control: without it, the zeros above could mean a blind trace."""
    sealed = _check("--mode", "control")
    assert sealed["inet_socket_attempts"] == 1 and sealed["inet_sockets_ok"] == 0  # refused by the seal
    assert sealed["remote_connects"] == 1 and sealed["dns"] == 1  # and the connect attempt is seen
    assert "EACCES" in sealed["examples"]["inet_socket_attempts"][0]
    assert "192.0.2.1" in sealed["examples"]["remote_connects"][0]
    # The same call from an unsealed worker: a successful native socket is counted too.
    unsealed = _check("--mode", "control-unsealed")
    assert unsealed["inet_sockets_ok"] == 1 and unsealed["remote_connects"] == 1


@pytest.mark.slow
@needs_strace
def test_a_30_second_chat_on_smollm2_is_silent(smollm2_home: Path) -> None:
    model = smollm2_home / "data" / "models" / "smollm2-135m-instruct" / "onnx"
    report = _check("--mode", "chat", "--seconds", "32", "--every", "3", "--max-tokens", "24", "--model", str(model))
    assert report["turns"] >= 8
    _assert_silent(report)


@needs_strace
def test_every_command_of_a_session_is_silent_under_strace(tmp_path: Path, tiny_dir: Path, enclave_home: Path) -> None:
    trace = tmp_path / "trace"
    for i, command in enumerate(_session(tiny_dir)):
        out = trace.with_suffix(f".{i}")
        proc = _run(["strace", "-f", "-qq", "-e", "trace=network", "-o", str(out)], command, enclave_home)
        if proc.returncode != 0 and "ptrace" in proc.stderr:
            pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
        assert proc.returncode == 0, proc.stderr
        calls = out.read_text()
        inet = [line for line in calls.splitlines() if re.search(r"socket\(AF_INET6?\b", line)]
        dns = [line for line in calls.splitlines() if "htons(53)" in line]
        connects = [line for line in calls.splitlines() if "connect(" in line and "AF_UNIX" not in line]
        # doctor's self-test holds a loopback listener and its guard check connects to it.
        connects = [line for line in connects if '127.0.0.1"' not in line]
        if command[3] != "doctor":
            assert inet == [], f"{command[3:]}: inet sockets: {inet[:3]}"
        assert dns == [] and connects == [], f"{command[3:]}: {dns[:3] + connects[:3]}"


def test_the_whole_session_works_with_no_network_at_all(tmp_path: Path, tiny_dir: Path, enclave_home: Path) -> None:
    if not _can_unshare():
        pytest.skip("the kernel refuses an unprivileged network namespace (unshare -rn)")
    for command in _session(tiny_dir, doctor=False):
        proc = _run(["unshare", "-rn"], command, enclave_home)
        assert proc.returncode == 0, f"{command[3:]} failed without a network: {proc.stderr}"


@needs_strace
def test_with_cloud_on_the_only_connect_is_to_the_configured_host(
    tmp_path: Path, tiny_dir: Path, enclave_home: Path
) -> None:
    from tests.fake_openai import FakeOpenAI

    py = [sys.executable, "-m", "assistant"]
    assert _run([], [*py, "models", "add", str(tiny_dir), "--name", "tiny"], enclave_home).returncode == 0
    with FakeOpenAI() as server:
        env = _user_env(
            enclave_home,
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
