"""The cloud fallback as the front ends show it: whether it is configured, its status
(never the key), the API key kept in the system keyring (audited), and the request a user
consents to (:class:`CloudRequest`, whose preview the consent dialog shows).

The switch per conversation and the consent loop are in :mod:`assistant.app.turns`;
:mod:`assistant.cloud.policy` is the only sender.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistant.cloud import policy
from assistant.cloud.client import Endpoint
from assistant.cloud.policy import CloudRequest
from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.privacy.guard import GUARD
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store

__all__ = [
    "CloudRequest",
    "CloudStatus",
    "Endpoint",
    "cloud_line",
    "configured",
    "delete_key",
    "endpoint",
    "keyring_state",
    "requests_sent",
    "set_key",
    "status",
]


def configured(settings: Settings) -> bool:
    """Whether a cloud endpoint is configured (``cloud_base_url``); off by default."""
    return policy.configured(settings)


def endpoint(settings: Settings) -> Endpoint:
    """The configured endpoint (raises a clear error when none is)."""
    return policy.endpoint(settings)


def keyring_state() -> str:
    """Whether a system keyring is available, in words."""
    return policy.keyring_state()


def cloud_line(settings: Settings) -> str:
    """The cloud fallback in one line (``doctor``, ``/cloud``): off, or off until enabled."""
    if not policy.configured(settings):
        return "off (not configured)"
    return f"off until enabled per conversation (configured: {policy.endpoint(settings).label})"


@dataclass(frozen=True)
class CloudStatus:
    """What ``enclave cloud status`` shows of a configured endpoint."""

    endpoint: Endpoint
    key_source: str
    keyring: str
    #: Hosts the egress guard holds open in this process.
    opened: list[str]


def status(settings: Settings) -> CloudStatus:
    """The configured endpoint, where its key comes from, and what egress is open."""
    ep = policy.endpoint(settings)
    _, source = policy.api_key(ep.host)
    return CloudStatus(ep, source, policy.keyring_state(), sorted(GUARD.opened))


def requests_sent(store: Store) -> list[str]:
    """When each cloud request sent so far left (the audit log's ``cloud_egress`` entries)."""
    return [str(row["at"]) for row in AuditLog(store).entries() if row["kind"] == "cloud_egress"]


def set_key(settings: Settings, store: Store, key: str) -> Endpoint:
    """Keep the API key of the configured endpoint in the system keyring (audited)."""
    ep = policy.endpoint(settings)
    if not key:
        raise EnclaveError("The key is empty; nothing was stored.", "Paste the key at the prompt.")
    policy.store_key(ep.host, key)
    AuditLog(store).record("cloud_key_set", host=ep.host, where="system keyring")
    return ep


def delete_key(settings: Settings, store: Store) -> bool:
    """Delete the configured endpoint's key from the keyring (audited); False when none was stored."""
    ep = policy.endpoint(settings)
    if not policy.delete_key(ep.host):
        return False
    AuditLog(store).record("cloud_key_deleted", host=ep.host)
    return True
