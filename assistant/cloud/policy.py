"""Cloud fallback policy: off by default, on only on purpose, every request consented.

The pieces, in the order a turn meets them:

- :func:`endpoint` — the configured OpenAI-compatible endpoint (``cloud_base_url``),
  or a clear error when none is configured.
- :func:`api_key` — the key, from ``ENCLAVE_CLOUD_API_KEY`` or the system keyring
  (service ``enclave-cloud``, user = host); never from the settings file, never
  logged, never in the audit. No key is fine: local vLLM/llama.cpp servers need none.
- :class:`CloudLink` — one conversation's switch. Enabling opens exactly the
  configured host in the network guard; disabling closes it again. A one-off
  fallback turn opens it for that request only.
- :class:`CloudRequest` — exactly what one request would send (after optional
  redaction), its size and sha256; front ends show :meth:`CloudRequest.preview` and
  ask. Only :meth:`CloudLink.send` sends, and it records the consent first.

Audit entries: ``cloud_enabled``, ``cloud_disabled``, ``cloud_egress`` (host, bytes,
sha256 and text of the body, who consented and how, redaction) and ``cloud_refused``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assistant.cloud.client import CloudClient, CloudError, Endpoint, request_body
from assistant.core.errors import EnclaveError
from assistant.core.events import Error, Event, GenerationOptions
from assistant.privacy import guard as privacy
from assistant.privacy.redact import Redactor

if TYPE_CHECKING:
    from assistant.core.settings import Settings
    from assistant.storage.audit import AuditLog

KEY_ENV = "ENCLAVE_CLOUD_API_KEY"
KEYRING_SERVICE = "enclave-cloud"


class CloudNotConfigured(EnclaveError):
    """Cloud was asked for but no endpoint is configured."""


def configured(settings: Settings) -> bool:
    """Whether an endpoint is configured (nothing is ever sent without also being enabled)."""
    return bool(settings.cloud_base_url.strip())


def endpoint(settings: Settings) -> Endpoint:
    if not configured(settings):
        raise CloudNotConfigured(
            "Cloud fallback is not configured, so nothing can be sent off this device.",
            "Set cloud_base_url (e.g. http://127.0.0.1:8000/v1) and cloud_model in config.toml; see `enclave cloud status`.",
        )
    return Endpoint.parse(settings.cloud_base_url)


# --------------------------------------------------------------------------- the key
def _keyring() -> Any:
    import keyring

    return keyring


def _no_backend(exc: Exception) -> bool:
    from keyring.errors import NoKeyringError

    return isinstance(exc, NoKeyringError) or "fail" in type(_keyring().get_keyring()).__module__


def keyring_state() -> str:
    """``available`` or why not (headless machines usually have no backend)."""
    try:
        backend = _keyring().get_keyring()
    except Exception as exc:  # noqa: BLE001 - any backend failure means "not usable"
        return f"unusable ({exc})"
    if "fail" in type(backend).__module__:
        return "no keyring backend on this machine"
    return f"available ({type(backend).__module__.rsplit('.', 1)[-1]})"


def api_key(host: str) -> tuple[str | None, str]:
    """The API key for ``host`` and where it came from (never the key in the second)."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env, f"environment variable {KEY_ENV}"
    try:
        key = _keyring().get_password(KEYRING_SERVICE, host)
    except Exception as exc:  # noqa: BLE001 - no backend or a locked one: fall through
        reason = "no keyring backend" if _no_backend(exc) else f"keyring error: {type(exc).__name__}"
        return None, f"none ({reason}; {KEY_ENV} is not set)"
    if key:
        return key, f"system keyring (service {KEYRING_SERVICE}, user {host})"
    return None, f"none (not in the keyring, {KEY_ENV} not set); sent without Authorization"


def _keyring_error(exc: Exception, action: str) -> EnclaveError:
    if _no_backend(exc):
        return EnclaveError(
            f"Cannot {action}: this machine has no system keyring (common on headless servers).",
            f"Put the key in the environment variable {KEY_ENV} instead; Enclave never writes it to a file.",
        )
    return EnclaveError(f"Cannot {action}: the keyring failed ({type(exc).__name__}: {exc}).", f"Use {KEY_ENV}.")


def store_key(host: str, key: str) -> None:
    """Save the key in the system keyring."""
    try:
        _keyring().set_password(KEYRING_SERVICE, host, key)
    except Exception as exc:
        raise _keyring_error(exc, f"store the key for {host}") from exc


def delete_key(host: str) -> bool:
    """Remove the key from the keyring; False when there was none."""
    from keyring.errors import PasswordDeleteError

    try:
        _keyring().delete_password(KEYRING_SERVICE, host)
    except PasswordDeleteError:
        return False
    except Exception as exc:
        raise _keyring_error(exc, f"delete the key for {host}") from exc
    return True


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class CloudRequest:
    """Exactly what one cloud request sends: the body bytes are final."""

    endpoint: Endpoint
    model: str
    messages: list[dict[str, str]]  # as sent (after redaction)
    body: bytes
    redacted: bool
    redactions: int

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def preview(self) -> str:
        """What the user reads before consenting: where, how much, and the whole body."""
        redaction = f"on ({self.redactions} masked)" if self.redacted else "off"
        pretty = json.dumps(json.loads(self.body), ensure_ascii=False, indent=2)
        return (
            f"To: {self.endpoint.url} (host {self.endpoint.label})\n"
            f"{self.where_it_goes()}\n"
            f"Size: {self.size} bytes · sha256 {self.sha256[:16]}… · redaction {redaction}\n"
            f"Body:\n{pretty}"
        )

    def where_it_goes(self) -> str:
        """One line saying whether the request leaves this machine, and how it travels."""
        ep = self.endpoint
        if ep.loopback:
            return f"Stays on this machine: {ep.host} is a loopback address."
        transport = (
            "encrypted (https)" if ep.scheme == "https" else "NOT encrypted (http): anyone on the path can read it"
        )
        return f"LEAVES THIS MACHINE: {ep.host} is not a loopback address; it crosses the network, {transport}."


class CloudLink:
    """One conversation's cloud fallback: the per-conversation switch, and the only
    way a request leaves (after consent, with an audit entry)."""

    def __init__(self, settings: Settings, audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.audit = audit
        self.enabled = False
        self._client: CloudClient | None = None

    @property
    def endpoint(self) -> Endpoint:
        return endpoint(self.settings)

    def _record(self, kind: str, **detail: Any) -> None:
        if self.audit is not None:
            self.audit.record(kind, **detail)

    def enable(self, how: str, conversation: int | None = None) -> Endpoint:
        """Turn cloud on for this conversation: the guard now allows the configured host."""
        ep = self.endpoint  # raises when not configured
        if not self.enabled:
            privacy.open_host(ep.host)
            self.enabled = True
            self._record("cloud_enabled", host=ep.label, how=how, conversation=conversation)
        return ep

    def disable(self, how: str, conversation: int | None = None, reason: str = "") -> None:
        """Turn cloud off: the host is blocked again (unless another conversation holds it open)."""
        if not self.enabled:
            return
        ep = self.endpoint
        privacy.close_host(ep.host)
        self.enabled = False
        self._record("cloud_disabled", host=ep.label, how=how, conversation=conversation, reason=reason)

    def prepare(
        self, messages: Sequence[dict[str, str]], options: GenerationOptions, redact: bool | None = None
    ) -> CloudRequest:
        """The request for ``messages``; ``redact`` overrides the ``cloud_redact`` setting."""
        s = self.settings
        redact = s.cloud_redact if redact is None else redact
        sent = [dict(m) for m in messages]
        count = 0
        if redact:
            sent, count = Redactor(patterns=s.cloud_redact_patterns).redact_messages(sent)
        return CloudRequest(
            self.endpoint, s.cloud_model, sent, request_body(s.cloud_model, sent, options), redact, count
        )

    def refuse(self, request: CloudRequest, how: str, conversation: int | None = None) -> None:
        """Record that a request was shown and not sent."""
        self._record(
            "cloud_refused",
            host=request.endpoint.label,
            bytes=request.size,
            sha256=request.sha256,
            how=how,
            conversation=conversation,
        )

    def send(self, request: CloudRequest, consent: str, conversation: int | None = None) -> Iterator[Event]:
        """Send ``request`` (the user consented: ``consent`` says how) and stream the answer."""
        ep = request.endpoint
        self._record(
            "cloud_egress",
            host=ep.label,
            url=ep.url,
            bytes=request.size,
            sha256=request.sha256,
            body=request.body.decode("utf-8"),
            consent={"by": "user", "how": consent},
            redaction="on" if request.redacted else "off",
            redactions=request.redactions,
            conversation=conversation,
        )
        key, _ = api_key(ep.host)
        s = self.settings
        self._client = CloudClient(ep, key, timeout=s.cloud_timeout, retries=s.cloud_retries, deadline=s.cloud_deadline)
        # A one-off fallback turn opens the host for this request only.
        privacy.open_host(ep.host)
        try:
            for event in self._client.stream(request.body):
                if isinstance(event, Error) and isinstance(event.error, CloudError) and event.error.connection:
                    if self.enabled:
                        self.disable("automatic", conversation, reason=event.error.message)
                yield event
        finally:
            privacy.close_host(ep.host)
            self._client = None

    def cancel(self) -> None:
        client = self._client
        if client is not None:
            client.cancel()

    def close(self, conversation: int | None = None) -> None:
        """The conversation is closing: withdraw its consent."""
        self.disable("conversation closed", conversation)
