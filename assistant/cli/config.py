"""`enclave config`: see every setting and where it comes from; change one (audited)."""

from __future__ import annotations

import json
import os
from dataclasses import fields

import click


@click.group()
def config() -> None:
    """Show the settings and where each comes from; change one."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config_show(as_json: bool) -> None:
    """Every setting, its value, and its source (default, config file, environment)."""
    from assistant.app.setup import file_values
    from assistant.core.settings import Settings

    settings = Settings.load()
    path = settings.locations.config_file
    in_file = file_values(path)
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
    from assistant.app.setup import change_setting

    change = change_setting(name, value)
    click.echo(f"{name} = {json.dumps(change.new, ensure_ascii=False)}  ({change.path})")
    if f"ENCLAVE_{name.upper()}" in os.environ:
        click.echo(f"note: ENCLAVE_{name.upper()} is set in the environment and overrides the file.", err=True)
