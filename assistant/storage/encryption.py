"""Turning encryption at rest on and off for a user's settings (what `enclave init` does).

:mod:`assistant.storage.crypt` knows files and keys; this module ties them to the
settings file and the audit log, so that the database and ``encrypt`` in
``config.toml`` always end up agreeing. The database is converted first and the
setting written second: a kill between the two leaves an encrypted database
with ``encrypt = false``, which Enclave reports and `enclave init --encrypt`
finishes.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistant.core.settings import Settings, write_setting
from assistant.storage import crypt
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store


@dataclass(frozen=True)
class Outcome:
    """What a change did, for the command to report."""

    #: What the database was before: missing, plain or encrypted (see crypt.file_state).
    before: crypt.FileState
    changed: bool


def initialise(settings: Settings, *, interactive: bool | None = None) -> Outcome:
    """Create (and migrate) the database the settings describe; audit it."""
    before = crypt.file_state(settings.locations.database)
    store = Store.open(settings, interactive=interactive)
    try:
        AuditLog(store).record("init", database=str(store.path), encrypted=store.encrypted, created=before == "missing")
    finally:
        store.close()
    return Outcome(before, before == "missing")


def enable(settings: Settings, key: crypt.DatabaseKey) -> Outcome:
    """Encrypt the database with ``key``: create it, convert it in place, or check it already opens.

    Then record ``encrypt = true`` in the settings file and an ``encrypt`` audit entry.
    """
    path = settings.locations.database
    before = crypt.file_state(path)
    if before == "plain":
        crypt.encrypt_in_place(path, key)
    store = Store(path, key)  # creates a missing one encrypted; checks the key of an existing one
    try:
        write_setting(settings.locations.config_file, "encrypt", True)
        AuditLog(store).record("encrypt", database=str(path), before=before, key_source=key.source)
    finally:
        store.close()
    return Outcome(before, before != "encrypted")


def disable(settings: Settings, key: crypt.DatabaseKey | None) -> Outcome:
    """Store the database in plaintext again, record ``encrypt = false`` and a ``decrypt`` audit entry.

    ``key`` may be None only when the database is not encrypted.
    """
    path = settings.locations.database
    before = crypt.file_state(path)
    if before == "encrypted":
        if key is None:
            raise crypt.missing_key(path)
        crypt.decrypt_in_place(path, key)
        crypt.forget_keyring_key(path)
    write_setting(settings.locations.config_file, "encrypt", False)
    if before != "missing":
        store = Store(path)
        try:
            AuditLog(store).record("decrypt", database=str(path), before=before)
        finally:
            store.close()
    return Outcome(before, before == "encrypted")
