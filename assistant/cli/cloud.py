"""`enclave cloud`: the cloud fallback's configuration and API key."""

from __future__ import annotations

import click

from assistant.cli.common import (
    _settings,
    _store,
    confirm_destructive,
)


@click.group()
def cloud() -> None:
    """Cloud fallback (off by default): its configuration and API key."""


@cloud.command("status")
@click.pass_context
def cloud_status(ctx: click.Context) -> None:
    """Show the cloud configuration and key source (never the key), and whether egress is on."""
    from assistant.app import cloud as app_cloud

    settings = _settings(ctx)
    if not app_cloud.configured(settings):
        click.echo("cloud fallback: not configured — nothing can leave this device")
        click.echo("  set cloud_base_url (and cloud_model) in config.toml to offer it")
        click.echo(f"keyring: {app_cloud.keyring_state()}")
        return
    state = app_cloud.status(settings)
    patterns = len(settings.cloud_redact_patterns)
    click.echo(f"endpoint:  {state.endpoint.url}")
    click.echo(f"host:      {state.endpoint.label}")
    click.echo(f"model:     {settings.cloud_model or '(server default)'}")
    click.echo(f"timeout:   {settings.cloud_timeout:g} s · retries {settings.cloud_retries}")
    click.echo(f"redaction: {'on' if settings.cloud_redact else 'off'} (e-mail, phone, {patterns} own pattern(s))")
    click.echo(f"key:       {state.key_source}")
    click.echo(f"keyring:   {state.keyring}")
    opened = state.opened
    click.echo(f"egress:    {'open to ' + ', '.join(opened) if opened else 'off'} in this process; cloud is enabled")
    click.echo("           per conversation only (`/cloud on`, `enclave ask --cloud`), each request after consent")
    sent = app_cloud.requests_sent(_store(ctx))
    last = f", last {sent[-1]}" if sent else ""
    click.echo(f"history:   {len(sent)} request(s) sent so far{last} (`enclave audit list`)")


@cloud.group("key")
def cloud_key() -> None:
    """Store or delete the API key in the system keyring."""


@cloud_key.command("set")
@click.pass_context
def cloud_key_set(ctx: click.Context) -> None:
    """Prompt for the API key (hidden) and store it in the system keyring."""
    from assistant.app import cloud as app_cloud

    settings = _settings(ctx)
    ep = app_cloud.endpoint(settings)
    key = click.prompt(f"API key for {ep.host}", hide_input=True, err=True).strip()
    app_cloud.set_key(settings, _store(ctx), key)
    click.echo(f"Stored the key for {ep.host} in the system keyring.")


@cloud_key.command("delete")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.pass_context
def cloud_key_delete(ctx: click.Context, yes: bool) -> None:
    """Delete the stored API key from the system keyring."""
    from assistant.app import cloud as app_cloud

    settings = _settings(ctx)
    ep = app_cloud.endpoint(settings)
    confirm_destructive(
        f"Delete the API key for {ep.host} from the keyring?", yes, f"refusing to delete the API key for {ep.host}"
    )
    if app_cloud.delete_key(settings, _store(ctx)):
        click.echo(f"Deleted the key for {ep.host}.")
    else:
        click.echo(f"No key for {ep.host} was stored in the keyring.")
