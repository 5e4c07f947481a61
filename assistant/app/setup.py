"""Setting Enclave up: the database (opened, created, encrypted or decrypted at rest) and
its key, the settings file (one setting changed at a time, checked and audited), and the
database section of ``enclave doctor``.

The front ends ask the questions (a passphrase typed twice, "store it in the keyring?")
and show the answers; what is checked, changed and recorded is decided here, once.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.core.errors import EnclaveError
from assistant.core.files import write_private
from assistant.core.settings import RULES, InvalidSetting, Locations, Settings, parse_setting, write_setting
from assistant.storage import crypt, encryption, repair
from assistant.storage.audit import AuditLog
from assistant.storage.database import REPAIR_COMMAND, Store, damaged, writable

__all__ = [
    "KEY_ENV",
    "OWN_COMMAND",
    "DatabaseCheck",
    "DatabaseKey",
    "Outcome",
    "SettingChange",
    "audit_log",
    "change_setting",
    "check_database",
    "database_state",
    "decrypt",
    "encrypt",
    "env_key",
    "existing_key",
    "file_values",
    "initialise",
    "keyring_backend",
    "missing_key",
    "open_existing_store",
    "open_store",
    "store_key_in_keyring",
]

#: The environment variable that holds the database passphrase.
KEY_ENV = crypt.KEY_ENV
DatabaseKey = crypt.DatabaseKey
Outcome = encryption.Outcome

#: Settings with their own command, because changing them does more than edit a file.
OWN_COMMAND = {"encrypt": "enclave init --encrypt / --decrypt"}


# --------------------------------------------------------------------------- the database
def open_store(settings: Settings, *, write: bool = True) -> Store:
    """The database; ``write=False`` for commands that only read (they then work on a read-only home)."""
    return Store.open(settings, write=write)


def open_existing_store(settings: Settings) -> Store | None:
    """The database for read-only reports, or None when it does not exist yet (a report
    never creates it) or cannot be opened without asking for its key."""
    if crypt.file_state(settings.locations.database) == "missing":
        return None
    try:
        return Store.open(settings, interactive=False)
    except EnclaveError:
        return None


def audit_log(store: Store) -> AuditLog:
    """The hash-chained audit log kept in ``store``."""
    return AuditLog(store)


# --------------------------------------------------------------------------- encryption at rest
def database_state(path: Path) -> crypt.FileState:
    """``missing``, ``plain`` or ``encrypted``: what the database file at ``path`` is."""
    return crypt.file_state(path)


def env_key() -> DatabaseKey | None:
    """The passphrase in ``ENCLAVE_DB_KEY``, if it is set."""
    return crypt.key_from_env()


def existing_key(path: Path, *, from_env: bool, interactive: bool) -> DatabaseKey | None:
    """The key of the encrypted database at ``path``: from the environment when asked to,
    else from the environment, the keyring or (``interactive``) the terminal."""
    return crypt.key_from_env() if from_env else crypt.find_key(path, interactive=interactive)


def missing_key(path: Path) -> EnclaveError:
    """The error for an encrypted database whose key was not found."""
    return crypt.missing_key(path)


def keyring_backend() -> str | None:
    """The name of the system keyring, or None when the machine has none."""
    return crypt.keyring_backend()


def store_key_in_keyring(path: Path, key: DatabaseKey) -> str:
    """Keep the passphrase of the database at ``path`` in the system keyring; returns its backend."""
    return crypt.store_in_keyring(path, key)


def initialise(settings: Settings) -> Outcome:
    """Create the database as the settings say (plaintext, or encrypted with the found key)."""
    return encryption.initialise(settings)


def encrypt(settings: Settings, key: DatabaseKey) -> Outcome:
    """Create the database encrypted, or encrypt it in place; writes ``encrypt = true``."""
    return encryption.enable(settings, key)


def decrypt(settings: Settings, key: DatabaseKey | None) -> Outcome:
    """Store an encrypted database in plaintext again; writes ``encrypt = false``."""
    return encryption.disable(settings, key)


@dataclass
class DatabaseCheck:
    """The database section of ``enclave doctor``: one line per finding, and whether it passed."""

    ok: bool = True
    lines: list[str] = field(default_factory=list)


def check_database(settings: Settings, *, terminal: bool) -> DatabaseCheck:
    """Encrypted or not, where the key comes from, and that the key opens the database.
    ``terminal``: a key that would be asked on the terminal counts as found."""
    path = settings.locations.database
    state = crypt.file_state(path)
    backend = crypt.keyring_backend()
    report = DatabaseCheck(lines=[f"  path   {path}", f"  keyring {backend or f'none on this machine (use {KEY_ENV})'}"])
    if state == "missing":
        report.lines.append(f"  not created yet (encrypt is {'on' if settings.encrypt else 'off'})")
        return report
    if state == "plain" and not settings.encrypt:
        report.lines.append("  ok   plaintext (encrypt is off; `enclave init --encrypt` turns it on)")
        return _check_pages(report, path, None)
    try:
        key = crypt.key_for(path, settings.encrypt, interactive=False)
    except crypt.EncryptionError as exc:
        if state == "encrypted" and settings.encrypt and terminal:
            report.lines.append(
                f"  ok   encrypted; the key is asked on the terminal (no {KEY_ENV}, nothing in the keyring)"
            )
            return report
        return DatabaseCheck(False, [*report.lines, f"  FAIL {exc.message} {exc.hint}"])
    try:
        Store(path, key, readonly=not writable(path)).close()
    except EnclaveError as exc:
        return DatabaseCheck(False, [*report.lines, f"  FAIL {exc.message} {exc.hint}"])
    source = key.source if key else "?"
    report.lines.append(
        f"  ok   encrypted with SQLCipher {crypt.sqlcipher_version()}; key from {source} (it opens the database)"
    )
    return _check_pages(report, path, key)


def _check_pages(report: DatabaseCheck, path: Path, key: DatabaseKey | None) -> DatabaseCheck:
    """SQLite's quick_check over every page: a damaged file is named here, with the fix."""
    problems = repair.check(path, key)
    if problems:
        report.ok = False
        named = [line for line in problems if not line.startswith("***")] or problems
        report.lines.append(f"  FAIL damaged: {named[0]}")
        report.lines.append(f"       fix: {REPAIR_COMMAND} (keeps the damaged file, copies every readable row)")
    else:
        report.lines.append("  ok   intact (SQLite quick_check of every page)")
    return report


def damaged_database(exc: BaseException, settings: Settings) -> EnclaveError | None:
    """A user's message for an SQLite error that says the database file is damaged; None for others."""
    if not crypt.is_damage(exc):
        return None
    return damaged(settings.locations.database, exc)


def repair_database(settings: Settings, *, interactive: bool | None = None, force: bool = False) -> repair.Repair:
    """Rebuild a damaged database (see :mod:`assistant.storage.repair`); records what it did in the audit log."""
    path = settings.locations.database
    if crypt.file_state(path) == "missing":
        return repair.Repair(path)
    key = crypt.key_for(path, settings.encrypt, interactive=interactive)
    result = repair.repair(path, key, force=force)
    if result.kept:
        store = Store(path, key, config_dir=settings.locations.config)
        try:
            audit_log(store).record(
                "database_repaired", kept=result.kept, copied=sum(result.copied.values()),
                unreadable=result.unreadable, lost_tables=result.lost_tables,
                unreadable_file=result.unreadable_file, lost_rows=result.lost_rows,
            )  # fmt: skip
        finally:
            store.close()
    return result


# --------------------------------------------------------------------------- the settings file
def file_values(path: Path) -> dict[str, Any]:
    """What the settings file at ``path`` sets (empty when it is missing or unreadable)."""
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


@dataclass(frozen=True)
class SettingChange:
    """One setting written to the settings file (and recorded in the audit log)."""

    name: str
    old: Any
    new: Any
    path: Path


def _parsed(name: str, value: str) -> Any:
    """``value`` as the setting ``name`` takes it (checked against the one schema)."""
    if name in OWN_COMMAND:
        raise EnclaveError(f"{name} is changed with its own command.", f"Use `{OWN_COMMAND[name]}`.")
    if name not in RULES:
        raise EnclaveError(f"There is no setting named {name!r}.", "`enclave config show` lists them.")
    parsed: Any = value
    if RULES[name].kind == "list":
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise EnclaveError(f"{name} takes a JSON array of strings.", "e.g. '[\"ACME-\\\\d+\"]'") from exc
    return parse_setting(name, parsed, "the command line")  # the one schema: type, range, choices


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def change_setting(name: str, value: str) -> SettingChange:
    """Set ``name`` to ``value`` (as typed) in the settings file: checked first, alone and
    against the other settings; the file is left as it was when any line of it is then
    wrong; the change is recorded in the audit log."""
    new = _parsed(name, value)
    path = Locations.from_env().config_file
    try:
        before: Settings | None = Settings.load()
    except InvalidSetting:
        before = None  # the file is broken: this command may be what fixes it
    if before is not None:
        Settings.load(**{name: new})  # the rules between settings (answer_reserve < context_window)
        old: Any = getattr(before, name)
    else:
        old = file_values(path).get(name)
    previous = path.read_bytes() if path.is_file() else None
    write_setting(path, name, new)
    try:
        after = Settings.load()
    except InvalidSetting:
        # Another line of the file is still wrong: leave the file as it was and say which.
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            write_private(path, previous)
        raise
    store = Store.open(after)
    try:
        AuditLog(store).record("setting_changed", name=name, old=_plain(old), new=_plain(new))
    finally:
        store.close()
    return SettingChange(name, _plain(old), _plain(new), path)
