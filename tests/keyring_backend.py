"""A real keyring backend that keeps its entries in a JSON file (ENCLAVE_TEST_KEYRING).

Tests select it with ``PYTHON_KEYRING_BACKEND=tests.keyring_backend.FileKeyring`` (a
subprocess) or ``keyring.set_keyring`` (in process), so that no test ever reads or
writes the keyring of the person running the suite, and a headless CI machine can
still exercise the keyring path end to end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1

    @property
    def _file(self) -> Path:
        return Path(os.environ["ENCLAVE_TEST_KEYRING"])

    def _load(self) -> dict[str, str]:
        return json.loads(self._file.read_text()) if self._file.exists() else {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}\x1f{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}\x1f{username}"] = password
        self._file.write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}\x1f{username}", None) is None:
            raise PasswordDeleteError("not stored")
        self._file.write_text(json.dumps(data))
