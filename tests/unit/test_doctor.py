"""`enclave doctor --privacy` runs its self-test and reports what it checked."""

from __future__ import annotations

from pathlib import Path

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
