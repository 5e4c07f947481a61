"""`enclave cloud`: the cloud fallback's configuration and API key."""

from __future__ import annotations

import click

from assistant.cli.common import (
    _audit,
    _settings,
    _store,
)
from assistant.core.errors import EnclaveError


@click.group()
def cloud() -> None:
    """Cloud fallback (off by default): its configuration and API key."""


@cloud.command("status")
@click.pass_context
def cloud_status(ctx: click.Context) -> None:
    """Show the cloud configuration and key source (never the key), and whether egress is on."""
    from assistant.cloud import policy
    from assistant.privacy.guard import GUARD

    settings = _settings(ctx)
    if not policy.configured(settings):
        click.echo("cloud fallback: not configured — nothing can leave this device")
        click.echo("  set cloud_base_url (and cloud_model) in config.toml to offer it")
        click.echo(f"keyring: {policy.keyring_state()}")
        return
    ep = policy.endpoint(settings)
    _, source = policy.api_key(ep.host)
    patterns = len(settings.cloud_redact_patterns)
    click.echo(f"endpoint:  {ep.url}")
    click.echo(f"host:      {ep.label}")
    click.echo(f"model:     {settings.cloud_model or '(server default)'}")
    click.echo(f"timeout:   {settings.cloud_timeout:g} s · retries {settings.cloud_retries}")
    click.echo(f"redaction: {'on' if settings.cloud_redact else 'off'} (e-mail, phone, {patterns} own pattern(s))")
    click.echo(f"key:       {source}")
    click.echo(f"keyring:   {policy.keyring_state()}")
    opened = sorted(GUARD.opened)
    click.echo(f"egress:    {'open to ' + ', '.join(opened) if opened else 'off'} in this process; cloud is enabled")
    click.echo("           per conversation only (`/cloud on`, `enclave ask --cloud`), each request after consent")
    store = _store(ctx)
    sent = [row for row in _audit(store).entries() if row["kind"] == "cloud_egress"]
    last = f", last {sent[-1]['at']}" if sent else ""
    click.echo(f"history:   {len(sent)} request(s) sent so far{last} (`enclave audit list`)")


@cloud.group("key")
def cloud_key() -> None:
    """Store or delete the API key in the system keyring."""


@cloud_key.command("set")
@click.pass_context
def cloud_key_set(ctx: click.Context) -> None:
    """Prompt for the API key (hidden) and store it in the system keyring."""
    from assistant.cloud import policy

    ep = policy.endpoint(_settings(ctx))
    key = click.prompt(f"API key for {ep.host}", hide_input=True, err=True).strip()
    if not key:
        raise EnclaveError("The key is empty; nothing was stored.", "Paste the key at the prompt.")
    policy.store_key(ep.host, key)
    _audit(_store(ctx)).record("cloud_key_set", host=ep.host, where="system keyring")
    click.echo(f"Stored the key for {ep.host} in the system keyring.")


@cloud_key.command("delete")
@click.pass_context
def cloud_key_delete(ctx: click.Context) -> None:
    """Delete the stored API key from the system keyring."""
    from assistant.cloud import policy

    ep = policy.endpoint(_settings(ctx))
    if policy.delete_key(ep.host):
        _audit(_store(ctx)).record("cloud_key_deleted", host=ep.host)
        click.echo(f"Deleted the key for {ep.host}.")
    else:
        click.echo(f"No key for {ep.host} was stored in the keyring.")
