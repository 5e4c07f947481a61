"""`enclave init`: create the database; encrypt or decrypt it at rest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import (
    _err,
    _settings,
    confirm_destructive,
)
from assistant.core.errors import EnclaveError


@click.command()
@click.option(
    "--encrypt",
    "mode",
    flag_value="encrypt",
    help="Encrypt the database (SQLCipher): create it encrypted, or convert it in place.",
)
@click.option("--decrypt", "mode", flag_value="decrypt", help="Store an encrypted database in plaintext again.")
@click.option("--key-from-env", is_flag=True, help="Take the passphrase from ENCLAVE_DB_KEY instead of asking.")
@click.option(
    "--store-key/--no-store-key", default=None, help="Keep the passphrase in the system keyring (asked on a terminal)."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.pass_context
def init(ctx: click.Context, mode: str | None, key_from_env: bool, store_key: bool | None, yes: bool) -> None:
    """Create the database; with --encrypt, encrypt it at rest (or --decrypt, the reverse).

    Converting keeps every conversation: the database is copied into a new
    encrypted file, checked (it opens, every row is there), and renamed over the
    old one, whose plaintext is then overwritten. `encrypt = true` is written to
    config.toml. Close other Enclave windows first.
    """
    from assistant.app import setup

    settings = _settings(ctx)
    path = settings.locations.database
    if mode == "encrypt":
        key = _new_key(path, key_from_env)
        outcome = setup.encrypt(settings, key)
        verb = {"missing": "Created", "plain": "Encrypted"}.get(outcome.before, "Already encrypted:")
        _err(f"{verb} {path} (SQLCipher, AES-256); encrypt = true in {settings.locations.config_file}")
        _offer_keyring(path, key, store_key)
    elif mode == "decrypt":
        warning = click.style("warning: ", fg="yellow", bold=True) + "this writes every stored conversation back "
        warning += "to disk in plaintext."
        if yes:
            _err(warning)
        confirm_destructive(f"{warning} Decrypt the database?", yes, "refusing to decrypt the database")
        key = None
        if setup.database_state(path) == "encrypted":
            key = setup.existing_key(path, from_env=key_from_env, interactive=sys.stdin.isatty())
        outcome = setup.decrypt(settings, key)
        done = "Decrypted" if outcome.changed else "Not encrypted:"
        _err(f"{done} {path}; encrypt = false in {settings.locations.config_file}")
    else:
        outcome = setup.initialise(settings)
        state = "encrypted" if settings.encrypt else "plaintext"
        _err(f"{'Created' if outcome.changed else 'Ready:'} {path} ({state})")
    _warn_if_env_overrides(ctx, mode)


def _new_key(path: Path, key_from_env: bool) -> Any:
    """The passphrase for `init --encrypt`: the existing one, ENCLAVE_DB_KEY, or typed twice."""
    import getpass

    from assistant.app import setup

    if setup.database_state(path) == "encrypted":
        key = setup.existing_key(path, from_env=key_from_env, interactive=sys.stdin.isatty())
        if key is None:
            raise setup.missing_key(path)
        return key
    if key_from_env or not sys.stdin.isatty():
        key = setup.env_key()
        if key is None:
            raise EnclaveError(
                f"No passphrase: {setup.KEY_ENV} is not set"
                + ("." if key_from_env else " and this is not a terminal."),
                f"Set {setup.KEY_ENV} to the passphrase and run `enclave init --encrypt --key-from-env`.",
            )
        return key
    first = getpass.getpass("New passphrase for the database: ")
    if not first:
        raise EnclaveError("The passphrase is empty.", "Run `enclave init --encrypt` again and type one.")
    if getpass.getpass("Type it again: ") != first:
        raise EnclaveError("The two passphrases differ; nothing was changed.", "Run `enclave init --encrypt` again.")
    if len(first) < 12:
        _err(click.style("note: ", fg="yellow") + "a passphrase under 12 characters can be guessed by brute force.")
    return setup.DatabaseKey(first, "the terminal")


def _offer_keyring(path: Path, key: Any, store_key: bool | None) -> None:
    """Keep the passphrase in the system keyring when asked to (or when the user agrees on a terminal)."""
    from assistant.app import setup

    if store_key is False or key.source == "the system keyring":
        return
    if store_key is None and not (sys.stdin.isatty() and key.source == "the terminal"):
        return
    if setup.keyring_backend() is None:
        _err(
            click.style("note: ", fg="yellow")
            + f"there is no system keyring on this machine; set {setup.KEY_ENV} in the environment of each "
            "Enclave command, or type the passphrase when Enclave asks."
        )
        return
    if store_key is None and not click.confirm(
        "Store the passphrase in the system keyring, so Enclave opens without asking?", default=True, err=True
    ):
        return
    backend = setup.store_key_in_keyring(path, key)
    _err(f"Passphrase stored in the system keyring ({backend}).")


def _warn_if_env_overrides(ctx: click.Context, mode: str | None) -> None:
    if mode is None:
        return
    if _settings(ctx).encrypt != (mode == "encrypt"):
        _err(
            click.style("note: ", fg="yellow")
            + "ENCLAVE_ENCRYPT in the environment overrides config.toml; unset it or change it to match."
        )
