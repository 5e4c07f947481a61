"""`enclave config`: see every setting and where it comes from; change one (audited)."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import fields
from typing import Any

import click

from assistant.core.errors import EnclaveError

#: Settings with their own command, because changing them does more than edit a file.
OWN_COMMAND = {"encrypt": "enclave init --encrypt / --decrypt"}


def _file_values(path: Any) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


@click.group()
def config() -> None:
    """Show the settings and where each comes from; change one."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config_show(as_json: bool) -> None:
    """Every setting, its value, and its source (default, config file, environment)."""
    from assistant.core.settings import Settings

    settings = Settings.load()
    path = settings.locations.config_file
    in_file = _file_values(path)
    rows = []
    for f in fields(Settings):
        if f.name == "locations":
            continue
        value = getattr(settings, f.name)
        if f"ENCLAVE_{f.name.upper()}" in os.environ:
            source = f"environment ENCLAVE_{f.name.upper()}"
        elif f.name in in_file:
            source = "config file"
        else:
            source = "default"
        rows.append({"name": f.name, "value": list(value) if isinstance(value, tuple) else value, "source": source})
    if as_json:
        click.echo(json.dumps({"config_file": str(path), "settings": rows}, ensure_ascii=False))
        return
    click.echo(f"config file: {path}{'' if path.is_file() else ' (not created yet)'}")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {json.dumps(r['value'], ensure_ascii=False)}  ({r['source']})")


@config.command("set")
@click.argument("name")
@click.argument("value")
def config_set(name: str, value: str) -> None:
    """Set NAME to VALUE in the config file (checked first; recorded in the audit log).

    A list setting (cloud_redact_patterns) takes a JSON array.
    """
    from assistant.core.settings import Settings, write_setting
    from assistant.storage.audit import AuditLog
    from assistant.storage.database import Store

    if name in OWN_COMMAND:
        raise EnclaveError(f"{name} is changed with its own command.", f"Use `{OWN_COMMAND[name]}`.")
    before = Settings.load()
    known = {f.name: f for f in fields(Settings) if f.name != "locations"}
    if name not in known:
        raise EnclaveError(f"There is no setting named {name!r}.", "`enclave config show` lists them.")
    default = getattr(before, name)
    parsed: Any = value
    if isinstance(default, tuple):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise EnclaveError(f"{name} takes a JSON array of strings.", "e.g. '[\"ACME-\\\\d+\"]'") from exc
        if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
            raise EnclaveError(f"{name} takes a JSON array of strings.", "e.g. '[\"ACME-\\\\d+\"]'")
    after = Settings.load(**{name: parsed})  # raises a clear error for a bad value
    new = getattr(after, name)
    path = before.locations.config_file
    write_setting(path, name, new)
    old = getattr(before, name)
    store = Store.open(before)
    try:
        AuditLog(store).record(
            "setting_changed",
            name=name,
            old=list(old) if isinstance(old, tuple) else old,
            new=list(new) if isinstance(new, tuple) else new,
        )
    finally:
        store.close()
    click.echo(f"{name} = {json.dumps(list(new) if isinstance(new, tuple) else new, ensure_ascii=False)}  ({path})")
    if f"ENCLAVE_{name.upper()}" in os.environ:
        click.echo(f"note: ENCLAVE_{name.upper()} is set in the environment and overrides the file.", err=True)
