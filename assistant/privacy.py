"""Egress policy: nothing leaves the machine unless the user said so.

:func:`install_network_guard` patches the ``socket`` module in this process so
that any connection (or DNS look-up) to an address other than loopback raises
:class:`EgressBlocked`, naming the caller, and is recorded in
:data:`GUARD.attempts`. Library switches that would phone home (Hugging Face hub,
telemetry) are turned off in the environment before those libraries load.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

from assistant.errors import EnclaveError

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "False",
}


class EgressBlocked(EnclaveError):
    """A connection to a non-loopback address was attempted while egress is off."""


@dataclass
class Attempt:
    host: str
    port: Any
    caller: str


@dataclass
class NetworkGuard:
    allowed_hosts: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)
    installed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)


GUARD = NetworkGuard()
_original: dict[str, Any] = {}


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host)
    if host in ("localhost", "localhost.localdomain", "ip6-localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _caller() -> str:
    skip = {__file__, socket.__file__}
    for frame in reversed(traceback.extract_stack()):
        if frame.filename not in skip:
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "unknown"


def _check(host: Any, port: Any) -> None:
    if _is_loopback(host) or str(host) in GUARD.allowed_hosts:
        return
    caller = _caller()
    with GUARD._lock:
        GUARD.attempts.append(Attempt(str(host), port, caller))
    raise EgressBlocked(
        f"Blocked a network connection to {host}:{port} from {caller}; Enclave keeps everything on this device.",
        "Nothing was sent. Cloud fallback is off; only loopback (127.0.0.1) is allowed.",
    )


def _address(family: int, address: Any) -> tuple[Any, Any]:
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        return address[0], address[1]
    return None, None  # AF_UNIX and others never leave the machine


def install_network_guard(allowed_hosts: set[str] | None = None) -> NetworkGuard:
    """Block non-loopback egress in this process (idempotent)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    GUARD.allowed_hosts = set(allowed_hosts or ())
    if GUARD.installed:
        return GUARD
    _original["connect"] = socket.socket.connect
    _original["connect_ex"] = socket.socket.connect_ex
    _original["sendto"] = socket.socket.sendto
    _original["getaddrinfo"] = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        _check(*_address(self.family, address))
        return _original["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        _check(*_address(self.family, address))
        return _original["connect_ex"](self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> Any:
        _check(*_address(self.family, args[-1]))
        return _original["sendto"](self, data, *args)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        _check(host, port)
        return _original["getaddrinfo"](host, port, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.socket.sendto = sendto  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo
    GUARD.installed = True
    return GUARD


def uninstall_network_guard() -> None:
    if not GUARD.installed:
        return
    socket.socket.connect = _original["connect"]  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _original["connect_ex"]  # type: ignore[method-assign,assignment]
    socket.socket.sendto = _original["sendto"]  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = _original["getaddrinfo"]
    GUARD.installed = False
