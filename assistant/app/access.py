"""Who may use ``enclave serve``: the bearer token, the Host header, the listening address.

* The token is 256 random bits in a 0600 file in the config directory, created on first
  use; a running server re-reads it when it changes, so ``--rotate`` needs no restart.
  Requests name it in the audit log by its id (a hash prefix), never by the secret.
* A request's ``Host`` must name this server by a loopback name or address: DNS rebinding
  (a web page whose domain starts resolving to 127.0.0.1) sends a foreign name and is refused.
* The server listens on loopback; another address needs the user's explicit acknowledgement.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assistant.app.turns import Assistant
from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings

log = logging.getLogger(__name__)

#: Where the bearer token lives, in the config directory.
TOKEN_FILE = "serve-token"


@dataclass(frozen=True)
class ServerToken:
    """The API's bearer token. ``id`` names it in the audit log; the secret never is."""

    secret: str = field(repr=False)
    path: Path

    @property
    def id(self) -> str:
        return "tok_" + hashlib.sha256(self.secret.encode()).hexdigest()[:12]

    def matches(self, presented: str | None) -> bool:
        """Constant-time comparison, so the token cannot be guessed byte by byte from timings."""
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.secret.encode())

    @staticmethod
    def location(settings: Settings) -> Path:
        return settings.locations.config / TOKEN_FILE

    @classmethod
    def load(cls, settings: Settings, *, create: bool = True) -> tuple[ServerToken, bool]:
        """The token, created on first use; ``(token, created)``.

        Raises :class:`EnclaveError` when the file is readable by other users (a token
        anyone on the machine can read protects nothing) or is empty.
        """
        path = cls.location(settings)
        if not path.exists():
            if not create:
                raise EnclaveError("There is no API token yet.", "Create one with `enclave serve token`.")
            return cls._write(path, exclusive=True), True
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise EnclaveError(
                f"The API token file {path} can be read by other users (mode {mode:o}).",
                f"Run `chmod 600 {path}`, or make a new token with `enclave serve token --rotate`.",
            )
        secret = path.read_text(encoding="utf-8").strip()
        if not secret:
            raise EnclaveError(f"The API token file {path} is empty.", "Run `enclave serve token --rotate`.")
        return cls(secret, path), False

    @classmethod
    def rotate(cls, settings: Settings) -> ServerToken:
        """A new token replaces the old one at once (a running server re-reads it)."""
        return cls._write(cls.location(settings), exclusive=False)

    @classmethod
    def _write(cls, path: Path, *, exclusive: bool) -> ServerToken:
        # 32 random bytes: 256 bits, as an OpenAI-style "sk-…" key is.
        secret = "enclave-" + secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        # Created 0600 from the start (never chmod-ed after being written world-readable).
        fd = os.open(tmp, flags, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret + "\n")
        os.chmod(tmp, 0o600)
        if exclusive and path.exists():  # another process created it meanwhile: keep theirs
            tmp.unlink()
            return cls.load_existing(path)
        os.replace(tmp, path)
        return cls(secret, path)

    @classmethod
    def load_existing(cls, path: Path) -> ServerToken:
        return cls(path.read_text(encoding="utf-8").strip(), path)


class TokenKeeper:
    """The token a running server checks against, re-read when the file changes, so
    ``enclave serve token --rotate`` takes effect without a restart (one ``stat`` per request)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token, self.created = ServerToken.load(settings)
        self._stamp = self._mtime()

    def _mtime(self) -> int:
        try:
            return self.token.path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def current(self) -> ServerToken:
        stamp = self._mtime()
        if stamp != self._stamp:
            try:
                self.token, _ = ServerToken.load(self.settings, create=False)
            except EnclaveError as exc:  # keep the last good token, and say why
                log.warning("keeping the previous API token: %s", exc)
            self._stamp = stamp
        return self.token

    def check(self, presented: str | None) -> ServerToken | None:
        """The token that ``presented`` matches, or None."""
        token = self.current()
        return token if token.matches(presented) else None


@dataclass(frozen=True)
class Binding:
    """Where the server listens. ``exposed``: beyond this machine (needs the user's explicit
    acknowledgement and is audited)."""

    host: str
    port: int
    exposed: bool

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.exposed and self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/v1"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: never resolves elsewhere
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def binding(host: str, port: int, *, understood: bool = False) -> Binding:
    """Check where the server may listen: loopback freely, anything else only with
    ``understood`` (the ``--i-understand-the-risk`` flag)."""
    if _is_loopback(host):
        return Binding(host, port, exposed=False)
    if not understood:
        raise EnclaveError(
            f"Listening on {host} would let other machines reach your models and documents.",
            "Enclave listens on 127.0.0.1 only. If you really mean it, add --i-understand-the-risk "
            "(every request still needs the token; the choice is recorded in the audit log).",
        )
    return Binding(host, port, exposed=True)


def host_allowed(header: str | None, where: Binding, extra: Sequence[str] = ()) -> bool:
    """Whether a request's Host header names this server, not some other name that merely
    resolves to it: a web page on ``evil.example`` whose DNS answer flips to 127.0.0.1 (DNS
    rebinding) sends ``Host: evil.example`` and is refused. Loopback names and addresses are
    allowed; when exposed, the listening address, and any IP literal on a wildcard address
    (an address is not a rebinding vector: a page cannot claim an IP as its own origin)."""
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if not host:
        return False
    if _is_loopback(host) or host in {h.lower() for h in extra}:
        return True
    if where.exposed:
        if host == where.host.lower():
            return True
        if where.host in ("0.0.0.0", "::"):
            try:
                ipaddress.ip_address(host)
                return True
            except ValueError:
                return False
    return False


def cors_origins(settings: Settings) -> list[str]:
    """The web origins that may call the API from a browser: listed one by one, never ``*``
    (a wildcard would let any page a user visits drive their models with a leaked token)."""
    origins = [o.strip().rstrip("/") for o in settings.serve_cors_origins if o.strip()]
    for origin in origins:
        if "*" in origin or not origin.startswith(("http://", "https://")):
            raise EnclaveError(
                f"serve_cors_origins has {origin!r}; origins are listed one by one, like http://localhost:3000.",
                "Name each web app's origin (scheme, host and port); a wildcard is not accepted.",
            )
    return origins


def rotate_token(settings: Settings) -> ServerToken:
    """``enclave serve token --rotate``: a new token, recorded in the audit log (by id)."""
    token = ServerToken.rotate(settings)
    assistant = Assistant(settings)
    try:
        assistant.audit.record("serve_token_rotated", token=token.id)
    finally:
        assistant.close()
    return token


def token_for_display(settings: Settings) -> tuple[ServerToken, bool]:
    """``enclave serve token``: the token, created (and audited) on first use."""
    token, created = ServerToken.load(settings)
    if created:
        assistant = Assistant(settings)
        try:
            assistant.audit.record("serve_token_created", token=token.id)
        finally:
            assistant.close()
    return token, created
