"""Signing keys, as the front ends use them: create, list, trust and untrust (audited)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.signing import SigningKey, create_key, key_id, normalise_public_key, own_keys
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store
from assistant.storage.releases import Releases, TrustedKey


@dataclass(frozen=True)
class KeyCandidate:
    """A public key read from a file, before the user confirms trusting it."""

    id: str
    name: str
    public_pem: str

    @property
    def fingerprint(self) -> str:
        """The id in groups of four, to read aloud to the publisher."""
        return " ".join(self.id[i : i + 4] for i in range(0, 32, 4))


@dataclass(frozen=True)
class KeyRow:
    """One line of `enclave keys list`: own keys and trusted keys."""

    id: str
    name: str
    own: bool
    trusted: bool
    private: str  # "file", "keyring", or "" for keys of others


def create(settings: Settings, store: Store, name: str, keyring: bool = False) -> SigningKey:
    key = create_key(settings.locations.config, name, keyring=keyring)
    AuditLog(store).record("key_create", key=key.id, name=key.name, private=key.store)
    return key


def listing(settings: Settings, store: Store) -> list[KeyRow]:
    trusted = {k.id: k for k in Releases(store).trusted_keys()}
    rows = [KeyRow(k.id, k.name, True, k.id in trusted, k.store) for k in own_keys(settings.locations.config)]
    mine = {r.id for r in rows}
    rows += [KeyRow(k.id, k.name, False, True, "") for k in trusted.values() if k.id not in mine]
    return rows


def read_candidate(path: Path, name: str | None = None) -> KeyCandidate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnclaveError(f"{path} cannot be read ({exc.strerror}).", "Give the path of a .pub file.") from exc
    pem = normalise_public_key(data)
    return KeyCandidate(key_id(pem), name or path.stem, pem.decode("ascii"))


def trust(store: Store, candidate: KeyCandidate, how: str) -> None:
    Releases(store).trust(candidate.id, candidate.name, candidate.public_pem)
    AuditLog(store).record("key_trust", key=candidate.id, name=candidate.name, how=how)


def find_trusted(store: Store, ident: str) -> TrustedKey:
    matches = [k for k in Releases(store).trusted_keys() if k.id.startswith(ident.lower()) or k.name == ident]
    if not matches:
        raise EnclaveError(f"No trusted key matches {ident!r}.", "See `enclave keys list`.")
    if len(matches) > 1:
        raise EnclaveError(f"{ident!r} matches {len(matches)} trusted keys.", "Give more of the id.")
    return matches[0]


def untrust(store: Store, key: TrustedKey) -> None:
    Releases(store).untrust(key.id)
    AuditLog(store).record("key_untrust", key=key.id, name=key.name)
