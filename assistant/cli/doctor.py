"""`enclave doctor`: check the installation, the database and that nothing can leave the machine."""

from __future__ import annotations

import sys
from typing import Any

import click

from assistant.cli.chat import _cloud_line
from assistant.cli.common import (
    _settings,
)
from assistant.core.errors import EnclaveError


def _doctor_database(settings: Any) -> bool:
    """The database section of `enclave doctor`: encrypted or not, and where the key comes from."""
    from assistant.storage import crypt
    from assistant.storage.database import Store

    path = settings.locations.database
    state = crypt.file_state(path)
    click.echo("Database")
    click.echo(f"  path   {path}")
    backend = crypt.keyring_backend()
    click.echo(f"  keyring {backend or f'none on this machine (use {crypt.KEY_ENV})'}")
    if state == "missing":
        click.echo(f"  not created yet (encrypt is {'on' if settings.encrypt else 'off'})")
        return True
    if state == "plain" and not settings.encrypt:
        click.echo("  ok   plaintext (encrypt is off; `enclave init --encrypt` turns it on)")
        return True
    try:
        key = crypt.key_for(path, settings.encrypt, interactive=False)
    except crypt.EncryptionError as exc:
        if state == "encrypted" and settings.encrypt and sys.stdin.isatty():
            click.echo(
                f"  ok   encrypted; the key is asked on the terminal (no {crypt.KEY_ENV}, nothing in the keyring)"
            )
            return True
        click.echo(f"  FAIL {exc.message} {exc.hint}")
        return False
    try:
        Store(path, key).close()
    except EnclaveError as exc:
        click.echo(f"  FAIL {exc.message} {exc.hint}")
        return False
    source = key.source if key else "?"
    click.echo(
        f"  ok   encrypted with SQLCipher {crypt.sqlcipher_version()}; key from {source} (it opens the database)"
    )
    return True


# --------------------------------------------------------------------------- doctor
@click.command()
@click.option("--privacy", is_flag=True, help="Only the privacy checks.")
@click.pass_context
def doctor(ctx: click.Context, privacy: bool) -> None:
    """Check the installation: models, database, and that nothing can leave the machine."""
    from assistant.privacy import guard

    ok = True
    click.echo("Privacy")
    click.echo(f"  allowed: loopback only (127.0.0.0/8, ::1); cloud fallback: {_cloud_line(_settings(ctx))}")
    for name, passed, detail in guard.self_test():
        ok &= passed
        click.echo(f"  {'ok  ' if passed else 'FAIL'} {name} — {detail}")
    attempts = guard.GUARD.attempts
    click.echo(f"  blocked egress attempts in this process: {len(attempts)}")
    for attempt in attempts:
        click.echo(f"    {attempt.host}:{attempt.port} from {attempt.caller}")
    if not privacy:
        from assistant.catalog.manifests import Catalog

        settings = _settings(ctx)
        catalog = Catalog(settings)
        click.echo("Models")
        installed = catalog.installed()
        for model in installed:
            problems = catalog.verify(model, full=False)
            ok &= not problems
            click.echo(f"  {'ok  ' if not problems else 'FAIL'} {model.name} ({model.engine}) {'; '.join(problems)}")
        if not installed:
            click.echo(f"  none installed — run `enclave models build {settings.model}`")
        ok &= _doctor_database(settings)
        click.echo("Locations")
        for label, path in (("config", settings.locations.config), ("data", settings.locations.data),
                            ("cache", settings.locations.cache)):  # fmt: skip
            click.echo(f"  {label:6} {path}")
    if not ok:
        ctx.exit(1)
