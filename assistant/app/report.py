"""The incident report: one archive a support person can read, with nothing private in it.

``enclave report -o FILE`` writes a ``.tar.gz`` holding:

* ``versions.json`` — Enclave, Python, the platform, the engines' and store's packages;
* ``settings.json`` — every setting, with the cloud endpoint's user and password, and
  the user's redaction patterns (which name what is confidential), left out;
* ``doctor.txt`` and ``hardware.json`` — ``enclave doctor`` and ``doctor --hardware
  --json``, run as child processes exactly as a user would run them;
* ``errors.json`` — the latest engine errors and crashes (the engine's message only);
* ``stats.json`` — :mod:`assistant.app.stats`;
* ``models.json`` — installed models and releases (names, engines, versions, sha256);
* ``audit.json`` — the audit chain's head, its length, entry counts by kind and the
  verify result; never an entry's details (they can name documents or hold a cloud
  request's body).

What it never reads: messages, conversation titles, system prompts, documents or
their names, search text. ``tests/reliability/test_report_canary.py`` plants a canary
in each of those and finds it nowhere in the archive.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from assistant.app import stats as app_stats
from assistant.catalog.manifests import Catalog
from assistant.core.settings import Settings
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store
from assistant.storage.releases import Releases

PACKAGES = (
    "enclave", "onnxruntime-genai", "onnxruntime", "litert-lm-api", "sqlite-utils", "sqlcipher3", "textual",
    "model-signing", "numpy", "tokenizers",
)  # fmt: skip
#: Settings never copied into a report, whatever their value.
WITHHELD = ("cloud_redact_patterns",)
RECENT_ERRORS = 200


def versions() -> dict[str, Any]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "packages": found}  # fmt: skip


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def safe_settings(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == "locations":
            out[f.name] = {"config": str(value.config), "data": str(value.data), "cache": str(value.cache)}
        elif f.name in WITHHELD:
            out[f.name] = f"({len(value)} withheld)"
        elif f.name == "cloud_base_url" and value:
            out[f.name] = _without_credentials(str(value))
        else:
            out[f.name] = value
    return out


def _run_enclave(*args: str) -> tuple[int, str, str]:
    """``enclave ARGS`` in a child process: exit code, stdout, stderr (never raising)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "assistant", *args],
            capture_output=True, text=True, errors="replace", timeout=120, stdin=subprocess.DEVNULL,
            env={**os.environ, "ENCLAVE_DEBUG": ""},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, "", f"enclave {' '.join(args)} could not run: {exc}"
    return proc.returncode, proc.stdout, proc.stderr


def _as_text(result: tuple[int, str, str]) -> str:
    code, out, err = result
    return out + (f"\n[stderr]\n{err}" if err.strip() else "") + f"\n[exit {code}]\n"


def _as_json(result: tuple[int, str, str]) -> str:
    code, out, err = result
    try:
        return json.dumps(json.loads(out), indent=2)
    except json.JSONDecodeError:
        return json.dumps({"exit": code, "error": err.strip()[-2000:]}, indent=2)


def audit_summary(store: Store) -> dict[str, Any]:
    log = AuditLog(store)
    entries = log.entries()
    problems = [str(p) for p in log.verify()]
    head = entries[-1] if entries else None
    return {
        "entries": len(entries),
        "head": {"seq": head["seq"], "hash": head["hash"], "at": head["at"]} if head else None,
        "verify": "intact" if not problems else "broken",
        "problems": problems,
        "kinds": dict(sorted(Counter(str(e["kind"]) for e in entries).items())),
    }


def models_summary(settings: Settings, store: Store) -> dict[str, Any]:
    installed = [
        {k: v for k, v in m.summary().items() if k in ("name", "engine", "size_bytes", "sha256", "kind", "licence")}
        for m in Catalog(settings).installed()
    ]
    releases = [
        {"name": r.name, "engine": r.engine, "version": r.version, "state": r.state, "sha256": r.sha256,
         "signer": r.signer, "installed_at": r.installed_at, "load_attempts": r.load_attempts}
        for r in Releases(store).all_releases()
    ]  # fmt: skip
    return {"installed": installed, "releases": releases}


def build(settings: Settings, store: Store, output: Path) -> list[str]:
    """Write the report archive to ``output`` (atomically); returns the names it holds."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    root = f"enclave-report-{stamp}"
    events = [
        {"at": e.at, "model": e.model, "engine": e.engine, "sha256": e.sha256, "kind": e.kind, "message": e.message}
        for e in Releases(store).events(RECENT_ERRORS)
    ]
    parts: dict[str, str] = {
        "versions.json": json.dumps(versions(), indent=2),
        "settings.json": json.dumps(safe_settings(settings), indent=2, default=str),
        "doctor.txt": _as_text(_run_enclave("doctor")),
        "hardware.json": _as_json(_run_enclave("doctor", "--hardware", "--json")),
        "errors.json": json.dumps(events, indent=2),
        "stats.json": json.dumps(app_stats.compute(store).as_dict(), indent=2),
        "models.json": json.dumps(models_summary(settings, store), indent=2),
        "audit.json": json.dumps(audit_summary(store), indent=2),
    }
    partial = output.with_name(output.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for name, text in parts.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(partial, output)
    AuditLog(store).record("report", to=str(output), parts=sorted(parts))
    return sorted(parts)
