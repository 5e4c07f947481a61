"""Encryption at rest: the database encrypted with SQLCipher, its key, and safe conversion.

When the setting ``encrypt`` is on, Enclave's one database is a SQLCipher 4
file: every page — the conversations, the full-text index, the audit log, and
the WAL frames — is AES-256 encrypted with an HMAC per page, under a key
derived from the user's passphrase (PBKDF2-HMAC-SHA512, 256 000 iterations,
SQLCipher's defaults; 0.2–0.4 s per open on 2 busy cores, scripts/bench_crypt.py). The key comes from
``ENCLAVE_DB_KEY``, then the system keyring (service ``enclave-db``, user = the
database path), then a hidden prompt on a terminal. It is never logged or
printed.

Choices, and why:

* ``PRAGMA temp_store = MEMORY`` on an encrypted database, so sort and temporary
  tables never reach a plaintext temp file.
* ``PRAGMA cipher_log_level = NONE`` before anything else: SQLCipher otherwise
  writes its own lines to the process's stderr on a wrong key, over the TUI.
* ``cipher_memory_security`` stays off (SQLCipher's default): it protects memory
  of a running process, which also holds the decrypted conversation anyway; the
  threat here is a copied or stolen disk. ``cipher_plaintext_header_size`` stays
  0: a plaintext header only helps iOS shared containers, and hides less.

Converting a database in place (:func:`encrypt_in_place`, :func:`decrypt_in_place`)
exports it with ``sqlcipher_export`` into a new file, checks that file opens,
passes ``integrity_check`` and has every row, fsyncs it and renames it over the
old one: a kill at any instant leaves either the old database or the new one,
complete. The plaintext it replaces is overwritten before it is unlinked (best
effort: SSDs and copy-on-write file systems may keep old blocks; full-disk
encryption covers those).
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import logging
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from assistant.core.errors import EnclaveError

log = logging.getLogger(__name__)

KEY_ENV = "ENCLAVE_DB_KEY"
KEYRING_SERVICE = "enclave-db"
#: The first 16 bytes of every plaintext SQLite database; a SQLCipher file starts with random salt.
PLAIN_HEADER = b"SQLite format 3\x00"
#: A raw 256-bit key (or key + salt) in SQLCipher's blob-literal form skips the key derivation.
_RAW_KEY = re.compile(r"x'([0-9a-fA-F]{64}|[0-9a-fA-F]{96})'")

FileState = Literal["missing", "plain", "encrypted", "damaged"]


class EncryptionError(EnclaveError):
    """The database's encryption does not match the settings, or its key is missing or wrong."""


@dataclass(frozen=True)
class DatabaseKey:
    """A passphrase (or raw key) and where it came from; ``repr`` never shows the secret."""

    secret: str = field(repr=False)
    #: Where it came from, in the user's words: ENCLAVE_DB_KEY, the system keyring, the terminal.
    source: str


# --------------------------------------------------------------------------- DB-API modules
def _sqlcipher() -> Any:
    """The SQLCipher DB-API module (imported only when a database is encrypted)."""
    try:
        from sqlcipher3 import dbapi2
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise EncryptionError(
            "Encryption needs the sqlcipher3 package, which is not installed.",
            "Reinstall Enclave (`make install`) or set encrypt = false.",
        ) from exc
    return dbapi2


def _error_classes(name: str) -> tuple[type[BaseException], ...]:
    classes: list[type[BaseException]] = [getattr(sqlite3, name)]
    with contextlib.suppress(ImportError):
        from sqlcipher3 import dbapi2

        classes.append(getattr(dbapi2, name))
    return tuple(classes)


#: The same errors from either module: sqlcipher3 has its own exception classes.
DATABASE_ERRORS = _error_classes("DatabaseError")
OPERATIONAL_ERRORS = _error_classes("OperationalError")
INTEGRITY_ERRORS = _error_classes("IntegrityError")


def sqlcipher_version() -> str:
    """SQLCipher's version, e.g. ``4.19.0 community``."""
    conn = _sqlcipher().connect(":memory:")
    try:
        return str(conn.execute("PRAGMA cipher_version").fetchone()[0])
    finally:
        conn.close()


# --------------------------------------------------------------------------- what is on disk
def file_state(path: Path) -> FileState:
    """Whether ``path`` holds no database yet, a plaintext one, an encrypted one, or something else.

    A SQLCipher file is whole pages (512 bytes at the least) of bytes that look
    random; anything else without SQLite's header is a damaged file, not a wrong key.
    """
    try:
        head, size = read_head(path, 1024)
    except FileNotFoundError:
        return "missing"
    if not head:
        return "missing"  # SQLite creates the file empty and writes page 1 with the first change
    if head.startswith(PLAIN_HEADER):
        return "plain"
    # 1024 random bytes hold about 630 distinct values; text or a zeroed page, far fewer.
    if size % 512 == 0 and len(head) == 1024 and len(set(head)) > 128:
        return "encrypted"
    return "damaged"


#: Held while this process reads a database file's first bytes and while it opens an SQLite
#: connection, so that no connection opens the file between the two steps of read_head.
_OPENING = threading.Lock()
#: Where the process's open descriptors are listed (Linux: a link to /proc/self/fd; macOS too).
_FD_DIR = "/dev/fd"


def read_head(path: Path, count: int) -> tuple[bytes, int]:
    """The first ``count`` bytes of ``path`` and its size, read without dropping this process's locks.

    POSIX record locks belong to a process and a file, and closing *any* descriptor of
    that file releases all of them -- including the SHARED lock an SQLite connection in
    this process holds on its database. Another process then sees no reader, takes the
    database for itself when its own connection closes, checkpoints and deletes the WAL
    under the live connection, and the file ends up damaged ("database disk image is
    malformed"; SQLite's *How To Corrupt An SQLite Database File*, section 2.2). So
    where this process already has the file open (an SQLite connection), the bytes are
    read through that descriptor and nothing is opened or closed; otherwise the file is
    opened and closed here while :data:`_OPENING` keeps a connection from opening it in
    between. Raises FileNotFoundError for a missing file.
    """
    with _OPENING:
        wanted = os.stat(path)
        for _ in range(3):
            fd = _descriptor_of(wanted)
            if fd is None:
                break
            try:
                head = os.pread(fd, count, 0)
                now = os.fstat(fd)
            except OSError:  # closed by its connection meanwhile: look again
                continue
            if (now.st_dev, now.st_ino) == (wanted.st_dev, wanted.st_ino):
                return head, now.st_size
        with path.open("rb") as handle:
            return handle.read(count), os.fstat(handle.fileno()).st_size


def _descriptor_of(wanted: os.stat_result) -> int | None:
    """A descriptor this process already holds on the file ``wanted`` describes, if any."""
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return None
    for name in names:
        try:
            found = os.fstat(int(name))
        except (OSError, ValueError):
            continue
        if (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino):
            return int(name)
    return None


def is_damage(exc: BaseException) -> bool:
    """Whether an SQLite error says the file itself is damaged (not locked, full or read-only)."""
    if not isinstance(exc, DATABASE_ERRORS):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == 11:  # SQLITE_CORRUPT and its extended codes
        return True
    text = str(exc).lower()
    return "malformed" in text or "corrupt" in text


# --------------------------------------------------------------------------- keys
def key_statement(secret: str) -> str:
    """``PRAGMA key`` for a passphrase, quoted as an SQL string (PRAGMA takes no parameters)."""
    if not secret:
        raise EncryptionError("The database key is empty.", "Choose a passphrase of at least one character.")
    if "\x00" in secret:
        raise EncryptionError("The database key contains a NUL character.", "Choose a passphrase without it.")
    if _RAW_KEY.fullmatch(secret):
        return f'PRAGMA key = "{secret}"'
    return "PRAGMA key = '" + secret.replace("'", "''") + "'"


def keyring_user(path: Path) -> str:
    """The keyring's user name for a database: its absolute path."""
    return str(path.expanduser().resolve())


def keyring_backend() -> str | None:
    """The system keyring's name, or None on a machine without one (a headless server)."""
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
    except Exception as exc:  # noqa: BLE001 - any keyring failure means "no keyring"
        log.debug("keyring unavailable: %s", exc)
        return None
    if isinstance(backend, fail.Keyring):
        return None
    return f"{type(backend).__module__}.{type(backend).__name__}"


def key_from_keyring(path: Path) -> DatabaseKey | None:
    """The passphrase stored for ``path``, or None (no keyring, nothing stored, keyring error)."""
    if keyring_backend() is None:
        return None
    try:
        import keyring

        secret = keyring.get_password(KEYRING_SERVICE, keyring_user(path))
    except Exception as exc:  # noqa: BLE001 - a locked or broken keyring is "no key here"
        log.debug("keyring lookup failed: %s", exc)
        return None
    return DatabaseKey(secret, "the system keyring") if secret else None


def store_in_keyring(path: Path, key: DatabaseKey) -> str:
    """Keep the passphrase in the system keyring; returns the backend's name."""
    backend = keyring_backend()
    if backend is None:
        raise EncryptionError(
            "There is no system keyring on this machine.",
            f"Set {KEY_ENV} in the environment of each Enclave command instead, or type the passphrase when asked.",
        )
    import keyring

    try:
        keyring.set_password(KEYRING_SERVICE, keyring_user(path), key.secret)
    except Exception as exc:
        raise EncryptionError(
            f"The system keyring refused to store the key: {exc}.",
            f"Unlock the keyring and retry, or set {KEY_ENV} instead.",
        ) from exc
    return backend


def forget_keyring_key(path: Path) -> None:
    """Remove a stored passphrase, if any (after decrypting)."""
    if keyring_backend() is None:
        return
    with contextlib.suppress(Exception):
        import keyring

        keyring.delete_password(KEYRING_SERVICE, keyring_user(path))


def key_from_env() -> DatabaseKey | None:
    secret = os.environ.get(KEY_ENV)
    return DatabaseKey(secret, KEY_ENV) if secret else None


def find_key(path: Path, *, interactive: bool) -> DatabaseKey | None:
    """The key for ``path``: ``ENCLAVE_DB_KEY``, then the keyring, then a hidden prompt on a terminal."""
    key = key_from_env() or key_from_keyring(path)
    if key is None and interactive:
        secret = getpass.getpass(f"Passphrase for the encrypted database {path}: ")
        key = DatabaseKey(secret, "the terminal") if secret else None
    return key


def key_for(path: Path, encrypt: bool, *, interactive: bool | None = None) -> DatabaseKey | None:
    """The key to open ``path`` with (None: plaintext), after checking the file agrees with ``encrypt``.

    Raises :class:`EncryptionError` when an encrypted file meets ``encrypt = false``
    or the reverse, and when an encrypted database has no key anywhere.
    """
    state = file_state(path)
    if state == "encrypted" and not encrypt:
        raise EncryptionError(
            f"The database {path} is encrypted, but the setting encrypt is off.",
            "Run `enclave init --encrypt` to turn it back on (the database is kept), "
            "or `enclave init --decrypt` to store it in plaintext.",
        )
    if state == "plain" and encrypt:
        raise EncryptionError(
            f"The database {path} is not encrypted, but the setting encrypt is on.",
            "Run `enclave init --encrypt` to encrypt it in place, or set encrypt = false in config.toml.",
        )
    if not encrypt or state == "damaged":
        return None  # plaintext, a new plaintext database, or a damaged file the Store reports
    if interactive is None:
        interactive = sys.stdin.isatty()
    key = find_key(path, interactive=interactive)
    if key is None:
        raise missing_key(path)
    return key


def missing_key(path: Path) -> EncryptionError:
    return EncryptionError(
        f"The database {path} is encrypted and no key was found.",
        f"Set {KEY_ENV} to its passphrase, run Enclave on a terminal to type it, "
        "or run `enclave init --encrypt` to store it in the system keyring.",
    )


def wrong_key(path: Path, key: DatabaseKey | None) -> EncryptionError:
    where = f" from {key.source}" if key else ""
    return EncryptionError(
        f"The database {path} is encrypted and the key{where} is wrong.",
        f"Set {KEY_ENV} to the passphrase chosen at `enclave init --encrypt` "
        "(it takes precedence over the keyring), or type it on a terminal.",
    )


# --------------------------------------------------------------------------- connections
#: Seconds a writer waits for another process's write transaction before giving up
#: (SQLite's busy timeout). A turn's write takes ~5 ms and a document's a few hundred;
#: 30 s covers a burst of either from a second window with a wide margin.
BUSY_TIMEOUT_S = 30.0


def connect(path: Path, key: DatabaseKey | None, *, timeout: float = BUSY_TIMEOUT_S, readonly: bool = False) -> Any:
    """A DB-API connection to ``path``: the standard ``sqlite3`` for plaintext, SQLCipher with ``key``.

    The key is checked here (the first read decrypts page 1), so a wrong key is one
    clear :class:`EncryptionError` and never a later, puzzling failure. ``readonly``
    opens the file with ``mode=ro`` (nothing is created or written, the way a
    read-only home needs it); a WAL database whose ``-shm`` cannot be created there is
    then opened ``immutable`` when no ``-wal`` is left beside it (a cleanly closed
    database, which nothing on a read-only disk can change).
    """
    module = sqlite3 if key is None else _sqlcipher()
    if not readonly:
        return _opened(module, str(path), path, key, timeout, uri=False)
    from urllib.parse import quote

    uri = "file:" + quote(str(path.absolute())) + "?mode=ro"
    try:
        conn = _opened(module, uri, path, key, timeout, uri=True)
        conn.execute("select count(*) from sqlite_master").fetchone()
        return conn
    except module.OperationalError:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise  # changes not yet folded in: an immutable open would not see them
    return _opened(module, uri + "&immutable=1", path, key, timeout, uri=True)


def _opened(module: Any, target: str, path: Path, key: DatabaseKey | None, timeout: float, *, uri: bool) -> Any:
    with _OPENING:  # SQLite opens the file here; its locks come later, through that descriptor
        conn = module.connect(target, uri=uri, check_same_thread=False, timeout=timeout)
    if key is None:
        return conn
    try:
        _unlock(conn, key)
    except module.DatabaseError as exc:
        conn.close()
        if "not a database" in str(exc) and file_state(path) != "damaged":
            raise wrong_key(path, key) from None
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _unlock(conn: Any, key: DatabaseKey) -> None:
    # Silence SQLCipher's own stderr logging first (it is process-wide): a wrong
    # key would otherwise print "hmac check failed" lines over the terminal UI.
    conn.execute("PRAGMA cipher_log_level = NONE")
    conn.execute(key_statement(key.secret))
    conn.execute("select count(*) from sqlite_master").fetchone()
    # Sorts and temporary tables stay in memory: SQLite's temp files are plaintext.
    conn.execute("PRAGMA temp_store = MEMORY")


# --------------------------------------------------------------------------- locking
@contextlib.contextmanager
def _flock(path: Path, exclusive: bool, blocking: bool) -> Iterator[IO[bytes] | None]:
    handle = open_lock(path, exclusive=exclusive, blocking=blocking)
    try:
        yield handle
    finally:
        release(handle)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def open_lock(path: Path, *, exclusive: bool, blocking: bool = True, readonly: bool = False) -> IO[bytes] | None:
    """Take the database's lock file: shared while a Store is open, exclusive while converting.

    The file is created 0600 (private, like the database). ``readonly`` opens it for
    reading only — a shared ``flock`` needs no write access, so commands that only read
    work on a read-only home; there a missing lock file is fine (nothing can convert a
    database on a read-only disk). Returns None where ``fcntl.flock`` does not exist
    (Windows): conversion then relies on SQLite's own locks. Raises
    :class:`EncryptionError` when a non-blocking exclusive lock is refused.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    from assistant.core.files import open_private, private_dir

    if readonly:
        try:
            fd = os.open(lock_path(path), os.O_RDONLY)
        except FileNotFoundError:
            return None
    else:
        private_dir(path.parent)
        fd = open_private(lock_path(path), os.O_RDWR | os.O_APPEND)
    handle = os.fdopen(fd, "rb" if readonly else "ab")
    flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
    try:
        fcntl.flock(handle.fileno(), flags)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise EncryptionError(
                f"The database {path} is in use by another Enclave process.",
                "Close the other Enclave windows and commands, then run this again.",
            ) from exc
        raise
    return handle


def release(handle: IO[bytes] | None) -> None:
    if handle is not None:
        handle.close()  # closing the descriptor drops the flock


# --------------------------------------------------------------------------- conversion
def _converting(path: Path) -> Path:
    return path.with_name(path.name + ".converting")


def _old_plaintext(path: Path) -> Path:
    return path.with_name(path.name + ".plaintext-old")


def shred(path: Path) -> None:
    """Overwrite a file with zeros, fsync it, and unlink it (missing files are fine)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        _zero(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    _fsync_dir(path.parent)


def _zero(fd: int, size: int) -> None:
    block = b"\0" * (1 << 20)
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left > 0:
        left -= os.write(fd, block[: min(left, len(block))])
    os.fsync(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_leftovers(path: Path) -> list[Path]:
    """Finish what an interrupted conversion left: shred its half-written copy and the old plaintext.

    Call only while no conversion runs (holding the lock file). The old plaintext
    name is a hard link to the replaced file; if the rename never happened it is
    the live database itself, and is only unlinked.
    """
    removed = []
    partial = _converting(path)
    for journal in (partial, partial.with_name(partial.name + "-journal")):
        if journal.exists():
            shred(journal)
            removed.append(journal)
    old = _old_plaintext(path)
    if old.exists():
        if path.exists() and os.path.samefile(old, path):
            old.unlink()
        else:
            shred(old)
        removed.append(old)
    return removed


def encrypt_in_place(path: Path, key: DatabaseKey) -> None:
    """Encrypt the plaintext database at ``path`` with ``key`` (see the module docstring)."""
    _convert(path, source_key=None, target_key=key)


def decrypt_in_place(path: Path, key: DatabaseKey) -> None:
    """Store the encrypted database at ``path`` in plaintext again."""
    _convert(path, source_key=key, target_key=None)


def _convert(path: Path, *, source_key: DatabaseKey | None, target_key: DatabaseKey | None) -> None:
    with _flock(path, exclusive=True, blocking=False):
        remove_leftovers(path)
        dbapi2 = _sqlcipher()
        source = dbapi2.connect(str(path), isolation_level=None, timeout=30)
        try:
            if source_key is not None:
                try:
                    _unlock(source, source_key)
                except dbapi2.DatabaseError:
                    raise wrong_key(path, source_key) from None
            else:
                source.execute("PRAGMA cipher_log_level = NONE")
            _leave_wal(source, path, plaintext=source_key is None)
            partial = _converting(path)
            counts, version = _export(source, partial, target_key)
            _verify(partial, target_key, counts, version)
            _fsync_file(partial)
            old = _old_plaintext(path)
            old_fd = None
            if source_key is None:
                # A second name for the plaintext, so that it can still be shredded
                # after the rename (and after a kill, by remove_leftovers).
                try:
                    os.link(path, old)
                except OSError:  # no hard links here: keep a descriptor instead
                    old_fd = os.open(path, os.O_WRONLY)
            os.replace(partial, path)
            _fsync_dir(path.parent)
        finally:
            source.close()
        if old_fd is not None:
            _zero(old_fd, os.fstat(old_fd).st_size)
            os.close(old_fd)
        shred(old)


def _leave_wal(conn: Any, path: Path, *, plaintext: bool) -> None:
    """Fold the WAL into the main file, overwrite the WAL's plaintext frames, and drop -wal/-shm.

    The old database's -wal must not survive next to the new one (WAL frames carry no
    database identity, SQLite would apply them to the new file).
    """
    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
    if busy or frames != done:
        raise EncryptionError(
            f"The database {path} is in use by another program, so it cannot be converted now.",
            "Close every Enclave window and command, then run this again.",
        )
    wal = path.with_name(path.name + "-wal")
    if plaintext and frames > 0 and wal.exists():
        # Every frame is in the main file now (checkpoint FULL, synchronous=FULL),
        # so the WAL is redundant: zero it, which SQLite reads as an empty WAL.
        fd = os.open(wal, os.O_WRONLY)
        try:
            _zero(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
    if str(mode).lower() != "delete":
        raise EncryptionError(
            f"The database {path} is in use by another program, so it cannot be converted now.",
            "Close every Enclave window and command, then run this again.",
        )


def _table_counts(conn: Any, schema: str = "main") -> dict[str, int]:
    names = [
        row[0]
        for row in conn.execute(
            f"select name from {schema}.sqlite_master where type = 'table' and name not like 'sqlite_%' order by name"
        )
    ]
    return {name: int(conn.execute(f'select count(*) from {schema}."{name}"').fetchone()[0]) for name in names}


def _export(source: Any, partial: Path, target_key: DatabaseKey | None) -> tuple[dict[str, int], int]:
    """Copy every table, index, trigger and the schema version into ``partial``."""
    if partial.exists():
        shred(partial)
    from assistant.core.files import create_private

    # Created private first: SQLite would make it 0644 under the usual umask, and the
    # converted file becomes the database.
    create_private(partial)
    secret = target_key.secret if target_key else ""
    if target_key is not None:
        key_statement(secret)  # the same checks as PRAGMA key (empty, NUL)
    source.execute("ATTACH DATABASE ? AS target KEY ?", [str(partial), secret])
    try:
        # A write lock on the source for the whole copy: nothing changes under it.
        source.execute("BEGIN IMMEDIATE")
        try:
            counts = _table_counts(source)
            version = int(source.execute("PRAGMA main.user_version").fetchone()[0])
            source.execute("SELECT sqlcipher_export('target')")
            source.execute(f"PRAGMA target.user_version = {version}")
            source.execute("COMMIT")
        except BaseException:
            source.execute("ROLLBACK")
            raise
    finally:
        source.execute("DETACH DATABASE target")
    return counts, version


def _verify(partial: Path, key: DatabaseKey | None, counts: dict[str, int], version: int) -> None:
    """The new file opens with its key, passes integrity_check, and has every row."""
    conn = connect(partial, key)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        got = _table_counts(conn)
        got_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
    if check != "ok" or got != counts or got_version != version:
        shred(partial)
        raise EncryptionError(
            "The converted copy of the database did not match the original, so nothing was changed.",
            "Check the free disk space and run the command again; report it if it repeats.",
        )


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
