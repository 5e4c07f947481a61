"""`enclave keys`: the signing keys of model bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from assistant.cli.common import _err, _settings, _store


@click.group()
def keys() -> None:
    """Signing keys: create your own, trust the publishers of the bundles you install."""


@keys.command("create")
@click.option("--name", default="enclave", show_default=True, help="The key's name (its file names).")
@click.option("--keyring", "use_keyring", is_flag=True, help="Keep the private key in the system keyring, not a file.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, use_keyring: bool) -> None:
    """Create a signing key pair (ECDSA P-256) in the config directory."""
    from assistant.app import keys as app_keys

    settings = _settings(ctx)
    key = app_keys.create(settings, _store(ctx), name, keyring=use_keyring)
    where = "the system keyring" if key.private_path is None else f"{key.private_path} (mode 0600)"
    click.echo(f"Created key {key.name}: id {key.id}")
    click.echo(f"  public key   {key.public_path}  (give this file to the machines that install your bundles)")
    click.echo(f"  private key  {where}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """Your signing keys and the keys this machine trusts."""
    from assistant.app import keys as app_keys

    rows = app_keys.listing(_settings(ctx), _store(ctx))
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows]))
        return
    if not rows:
        click.echo("No keys yet. `enclave keys create` makes one; `enclave keys trust FILE` trusts a publisher's.")
    for r in rows:
        labels = [x for x in ("own" if r.own else "", "trusted" if r.trusted else "not trusted") if x]
        private = f", private key in {r.private}" if r.private else ""
        click.echo(f"{r.id[:16]}  {r.name:20} {', '.join(labels)}{private}")


@keys.command("trust")
@click.argument("public_key", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--name", help="A name for the key (default: the file name).")
@click.option("-y", "--yes", is_flag=True, help="Trust without asking (scripts).")
@click.pass_context
def keys_trust(ctx: click.Context, public_key: Path, name: str | None, yes: bool) -> None:
    """Trust a publisher's public key: bundles it signed can then be installed."""
    from assistant.app import keys as app_keys

    candidate = app_keys.read_candidate(public_key, name)
    _err(f"Key {candidate.name}")
    _err(f"  fingerprint  {candidate.fingerprint}")
    _err(f"  id           {candidate.id}")
    if not yes:
        if not sys.stdin.isatty():
            _err("error: trusting a key needs a confirmation; stdin is not a terminal, so give --yes.")
            ctx.exit(2)
        click.confirm("Check the fingerprint with the key's owner. Trust this key?", abort=True, err=True)
    app_keys.trust(_store(ctx), candidate, "--yes" if yes else "confirmed")
    click.echo(f"Trusted {candidate.name} ({candidate.id[:16]}…).")


@keys.command("untrust")
@click.argument("key_id")
@click.pass_context
def keys_untrust(ctx: click.Context, key_id: str) -> None:
    """Stop trusting a key (by id prefix or name); installed models stay as they are."""
    from assistant.app import keys as app_keys

    store = _store(ctx)
    key = app_keys.find_trusted(store, key_id)
    app_keys.untrust(store, key)
    click.echo(f"No longer trusted: {key.name} ({key.id[:16]}…).")
