"""Files Enclave writes are private by default, whatever the umask.

Conversations are personal (and, for legal staff, privileged): with the usual umask
022 a plain ``mkdir``/``open`` makes them readable by every local account. So every
directory Enclave creates is 0700 and every file it creates 0600 — the database,
its WAL and shared-memory files (SQLite gives those the database file's mode), the
lock file, ``audit.head``, the audit key and counter, ``config.toml``, exports —
set with ``fchmod`` after creation, because the umask can only remove bits, never
guarantee them. Existing files keep the mode their owner gave them; ``enclave
doctor`` reports the ones that are readable by others and prints the ``chmod``.

Writes that replace a file go through a temporary file in the same directory with
a name unique to this process and call (several Enclave processes may write the
same file at once), fsync, and ``rename``: a crash leaves the old file or the new
one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents as 0700 directories (existing ones are left as they are)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # another process made it meanwhile
        with contextlib.suppress(OSError):
            os.chmod(folder, PRIVATE_DIR)  # mkdir's mode passes through the umask
    return path


def create_private(path: Path) -> None:
    """Create ``path`` empty and 0600 if it does not exist (used before SQLite opens a new database,
    so that its WAL and shared-memory files, which copy its mode, are private too)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def open_private(path: Path, flags: int) -> int:
    """``os.open(path, flags | O_CREAT)``: a file this creates is 0600; an existing one keeps its mode."""
    flags &= ~(os.O_CREAT | os.O_EXCL)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return os.open(path, flags)
    with contextlib.suppress(OSError):
        os.fchmod(fd, PRIVATE_FILE)
    return fd


def temp_name(path: Path) -> Path:
    """A temporary name next to ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_atomically(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Write ``data`` to a private temporary file, fsync it, give it ``mode`` and rename it over ``path``."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically; a new file is 0600, an existing one keeps its mode."""
    private_dir(path.parent)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = PRIVATE_FILE
    replace_atomically(path, data, mode)


@dataclass(frozen=True)
class Exposed:
    """A file or directory of Enclave's that other local accounts can read (or write)."""

    path: Path
    mode: int
    wanted: int

    @property
    def fix(self) -> str:
        return f"chmod {self.wanted:o} {self.path}"

    def __str__(self) -> str:
        return f"{self.path} is {self.mode:04o} (readable by others); fix: {self.fix}"


def exposed(paths: list[Path]) -> list[Exposed]:
    """The paths among ``paths`` that exist and give any permission to group or others."""
    found: list[Exposed] = []
    for path in paths:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            wanted = PRIVATE_DIR if stat.S_ISDIR(info.st_mode) else PRIVATE_FILE
            found.append(Exposed(path, mode, wanted))
    return found


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 (hex) of a file's bytes, read in blocks."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
