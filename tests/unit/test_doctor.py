"""`enclave doctor --privacy` runs its self-test and reports what it checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import enclave


def test_doctor_privacy_self_test_passes(enclave_home: Path) -> None:
    out = enclave("doctor", "--privacy", home=enclave_home).stdout
    assert "loopback only" in out
    for check in ("outbound TCP connect blocked", "DNS lookups blocked", "loopback allowed", "network guard installed"):
        assert f"ok   {check}" in out
    assert "blocked egress attempts in this process: 0" in out


def test_doctor_flags_a_damaged_model(enclave_home: Path, tiny_dir: Path) -> None:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    (tiny_dir / "tokenizer.json").write_text("{}")
    proc = enclave("doctor", home=enclave_home, check=False)
    assert proc.returncode == 1
    assert "FAIL tiny (onnx)" in proc.stdout and "tokenizer.json" in proc.stdout


def test_doctor_privacy_names_every_layer_and_each_holds(enclave_home: Path) -> None:
    out = enclave("doctor", "--privacy", home=enclave_home).stdout
    for line in (
        "ok   switch: onnxruntime, onnxruntime-genai telemetry — ORT_DISABLE_TELEMETRY=1",
        "ok   switch: litert-lm network probe — GOOGLE_SANDBOX_NO_NETWORK=1",
        "ok   no native runtime in the front end",
        "ok   Python egress guard",
        "ok   sealed worker process",
        "ok   seccomp — filter mode 2, no_new_privs",
        "ok   switches in the worker",
        "ok   socket(AF_INET) refused — EACCES",
        "ok   connect to a loopback listener outside the worker fails",
    ):
        assert line in out, out
    if "warn network namespace" not in out:  # where the system allows unprivileged namespaces
        for line in ("ok   user namespace", "ok   network namespace", "ok   only lo in the worker — /proc/net/dev: lo"):
            assert line in out
        assert "ok   no IPv4 route — /proc/net/route: 0 entries" in out


def test_doctor_privacy_json_is_one_object_for_scripts(enclave_home: Path) -> None:
    data = json.loads(enclave("doctor", "--privacy", "--json", home=enclave_home).stdout)
    assert data["ok"] is True and data["seal_required"] is False
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["seccomp"]["where"] == "worker" and layers["seccomp"]["status"] == "ok"
    assert layers["Python egress guard"]["where"] == "front end"
    checks = {check["name"]: check["status"] for check in data["self_test"]}
    assert checks["socket(AF_INET) refused"] == "ok" and checks["outbound TCP connect blocked"] == "ok"
    assert data["blocked_attempts"] == [] and data["worker_start_ms"] > 0


def test_a_refused_namespace_is_said_plainly_and_the_other_layers_hold(
    enclave_home: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's unshare() is refused with EPERM by a seccomp filter first, as in Docker.
    monkeypatch.setenv("ENCLAVE_TEST_REFUSE_USERNS", "1")
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    out = enclave("doctor", "--privacy", home=enclave_home).stdout  # a warning, not a failure
    assert "warn user namespace — unshare(CLONE_NEWUSER): EPERM" in out
    assert "warn network namespace" in out and "ok   seccomp" in out
    assert (
        "ok   socket(AF_INET) refused" in out and "ok   connect to a loopback listener outside the worker fails" in out
    )
    assert "privacy: this system refused Enclave's model process its own network namespace" in out
    asked = enclave("ask", "-m", "tiny", "--max-tokens", "4", "hello", home=enclave_home)
    notices = [line for line in asked.stderr.splitlines() if line.startswith("privacy:")]
    assert len(notices) == 1 and "seccomp (no inet sockets)" in notices[0]
    assert asked.stdout.strip()  # and it answered

    monkeypatch.setenv("ENCLAVE_PRIVACY_SEAL", "require")
    refused = enclave("ask", "-m", "tiny", "--max-tokens", "4", "hello", home=enclave_home, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "could not be sealed, and the privacy_seal setting requires it" in refused.stderr
    assert enclave("doctor", "--privacy", home=enclave_home, check=False).returncode == 1
