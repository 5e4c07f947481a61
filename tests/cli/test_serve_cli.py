"""`enclave serve` and `enclave serve token` as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from tests.cli.test_cli import ROOT, enclave


def _audit(home: Path, kind: str) -> list[dict[str, object]]:
    db = sqlite3.connect(home / "data" / "enclave.db")
    try:
        return [json.loads(r[0]) for r in db.execute("select detail from audit where kind = ? order by seq", [kind])]
    finally:
        db.close()


def _line_with(stream: IO[str], text: str, lines: int = 6) -> str:
    """The first of the next few lines of ``stream`` that contains ``text``."""
    seen = []
    for _ in range(lines):
        line = stream.readline()
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"{text!r} not in {seen}")


def test_serve_token_is_created_once_private_and_rotates(enclave_home: Path) -> None:
    first = enclave("serve", "token", home=enclave_home)
    token = first.stdout.strip()
    assert token.startswith("enclave-") and "Created a token" in first.stderr
    path = enclave_home / "config" / "serve-token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert enclave("serve", "token", home=enclave_home).stdout.strip() == token
    rotated = enclave("serve", "token", "--rotate", home=enclave_home)
    assert rotated.stdout.strip() != token and "the old one no longer works" in rotated.stderr
    assert len(_audit(enclave_home, "serve_token_created")) == 1
    assert len(_audit(enclave_home, "serve_token_rotated")) == 1


def test_serve_listens_on_loopback_prints_the_url_and_stops_on_ctrl_c(enclave_home: Path, tiny_dir: Path) -> None:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    env = dict(os.environ, ENCLAVE_HOME=str(enclave_home), ENCLAVE_MODEL="tiny")
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        line = _line_with(proc.stderr, "Enclave API on")
        match = re.search(r"Enclave API on (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        _line_with(proc.stderr, "enclave serve token")
        base = match.group(1)
        token = enclave("serve", "token", home=enclave_home).stdout.strip()
        models = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        assert [m["id"] for m in models["data"]] == ["tiny"]
        assert httpx.get(f"{base}/models", timeout=30).status_code == 401
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, rest
        assert "Stopped." in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [e["host"] for e in _audit(enclave_home, "serve_start")] == ["127.0.0.1"]
    assert len(_audit(enclave_home, "serve_stop")) == 1


def test_serve_elsewhere_than_loopback_needs_the_flag_and_is_audited(enclave_home: Path) -> None:
    refused = enclave("serve", "--host", "0.0.0.0", "--port", "0", home=enclave_home, check=False)
    assert refused.returncode == 1 and "--i-understand-the-risk" in refused.stderr
    assert "Traceback" not in refused.stderr
    env = dict(os.environ, ENCLAVE_HOME=str(enclave_home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "serve", "--host", "0.0.0.0", "--port", "0", "--i-understand-the-risk"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        _line_with(proc.stderr, "other machines can reach this API")
        deadline = time.monotonic() + 30
        while not _audit(enclave_home, "serve_exposed") and time.monotonic() < deadline:
            time.sleep(0.1)
        (exposed,) = _audit(enclave_home, "serve_exposed")
        assert exposed["host"] == "0.0.0.0"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
