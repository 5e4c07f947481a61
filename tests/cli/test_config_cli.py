"""`enclave config show|set`: values, sources, validation, and the audit entry."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.cli.test_cli import enclave


def test_config_show_and_set(enclave_home: Path) -> None:
    shown = json.loads(enclave("config", "show", "--json", home=enclave_home).stdout)
    rows = {r["name"]: r for r in shown["settings"]}
    assert rows["context_window"] == {"name": "context_window", "value": 2048, "source": "default"}

    out = enclave("config", "set", "context_window", "4096", home=enclave_home)
    assert "context_window = 4096" in out.stdout
    config = enclave_home / "config" / "config.toml"
    assert "context_window = 4096" in config.read_text()
    enclave("config", "set", "cloud_redact_patterns", '["ACME-\\\\d+", "a, b"]', home=enclave_home)
    rows = {r["name"]: r for r in json.loads(enclave("config", "show", "--json", home=enclave_home).stdout)["settings"]}
    assert rows["context_window"]["source"] == "config file" and rows["context_window"]["value"] == 4096
    assert rows["cloud_redact_patterns"]["value"] == ["ACME-\\d+", "a, b"]

    bad = enclave("config", "set", "context_window", "lots", home=enclave_home, check=False)
    assert bad.returncode == 1 and "is not valid" in bad.stderr and "Traceback" not in bad.stderr
    assert "context_window = 4096" in config.read_text()  # unchanged
    unknown = enclave("config", "set", "colour", "red", home=enclave_home, check=False)
    assert unknown.returncode == 1 and "no setting named 'colour'" in unknown.stderr
    own = enclave("config", "set", "encrypt", "true", home=enclave_home, check=False)
    assert own.returncode == 1 and "enclave init --encrypt" in own.stderr

    db = sqlite3.connect(enclave_home / "data" / "enclave.db")
    changes = [json.loads(d) for (d,) in db.execute("select detail from audit where kind = 'setting_changed'")]
    assert changes[0] == {"name": "context_window", "old": 2048, "new": 4096}
    assert "chain intact" in enclave("audit", "verify", home=enclave_home).stdout
