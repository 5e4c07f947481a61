"""Which of Enclave's own files other local accounts could read: what `enclave doctor` checks.

Everything Enclave creates is private (0700 folders, 0600 files; see
:mod:`assistant.core.files`). Homes created by older versions, a copy made with a
permissive umask, or a restored backup may not be: this lists those, each with the
``chmod`` that fixes it, for every front end to show.
"""

from __future__ import annotations

from pathlib import Path

from assistant.core.files import Exposed, exposed
from assistant.core.settings import Settings
from assistant.storage.audit import HEAD_NAME, KEY_NAME, STATE_NAME


def private_paths(settings: Settings) -> list[Path]:
    """Enclave's folders and the files that hold conversations, keys or the audit trail."""
    loc = settings.locations
    db = loc.database
    folders = [loc.config, loc.data, loc.cache]
    files = [
        db,
        db.with_name(db.name + "-wal"),
        db.with_name(db.name + "-shm"),
        db.with_name(db.name + ".lock"),
        db.with_name(HEAD_NAME),
        loc.config_file,
        loc.config / KEY_NAME,
        loc.config / STATE_NAME,
    ]
    return folders + files


def exposed_files(settings: Settings) -> list[Exposed]:
    """The private paths that give group or others any access, with the fix for each."""
    return exposed(private_paths(settings))
