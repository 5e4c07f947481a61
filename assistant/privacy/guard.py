"""Egress policy: nothing leaves the machine unless the user said so.

:func:`install_network_guard` patches the ``socket`` module in this process so
that any connection (or DNS look-up) to an address other than loopback raises
:class:`EgressBlocked`, naming the caller, and is recorded in
:data:`GUARD.attempts`. Library switches that would phone home (Hugging Face hub,
telemetry) are turned off in the environment before those libraries load: the one
list is :mod:`assistant.privacy.offline`.

The guard sees only Python's ``socket`` module. Native code (the runtimes' own HTTP
clients) goes around it, which is why native libraries run only in sealed workers
(:mod:`assistant.privacy.seal`), where the kernel refuses what the guard cannot see.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

from assistant.core.errors import EnclaveError
from assistant.privacy import offline
from assistant.privacy.offline import OFFLINE_ENV


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
    #: Hosts opened by cloud fallback, with how many conversations hold each open,
    #: and the addresses each one resolved to (a connect goes to the address).
    opened: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allows(self, host: Any) -> bool:
        """Whether a connection to ``host`` may leave this process now."""
        if _is_loopback(host):
            return True
        name = str(host)
        with self._lock:
            if name in self.allowed_hosts or name in self.opened:
                return True
            return any(name in addresses for addresses in self.resolved.values())


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
    if GUARD.allows(host):
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
    offline.apply()
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
        infos = _original["getaddrinfo"](host, port, *args, **kwargs)
        _remember_addresses(host, infos)
        return infos

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.socket.sendto = sendto  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo
    GUARD.installed = True
    return GUARD


def _remember_addresses(host: Any, infos: Any) -> None:
    """An opened host name resolves to addresses; the connect that follows names the
    address, so it is allowed for as long as the host stays open."""
    name = host.decode() if isinstance(host, bytes) else str(host)
    with GUARD._lock:
        if name in GUARD.opened:
            GUARD.resolved.setdefault(name, set()).update(str(info[4][0]) for info in infos)


def open_host(host: str) -> None:
    """Allow egress to ``host`` (cloud fallback was enabled for a conversation).

    Counted: each conversation that enables cloud opens the host once and closes
    it once, so turning cloud off in one leaves another's consent intact."""
    with GUARD._lock:
        GUARD.opened[host] = GUARD.opened.get(host, 0) + 1


def close_host(host: str) -> None:
    """Withdraw one :func:`open_host`; at zero the host is blocked again."""
    with GUARD._lock:
        left = GUARD.opened.get(host, 0) - 1
        if left > 0:
            GUARD.opened[host] = left
        else:
            GUARD.opened.pop(host, None)
            GUARD.resolved.pop(host, None)


def uninstall_network_guard() -> None:
    if not GUARD.installed:
        return
    socket.socket.connect = _original["connect"]  # type: ignore[method-assign]
    socket.socket.connect_ex = _original["connect_ex"]  # type: ignore[method-assign]
    socket.socket.sendto = _original["sendto"]  # type: ignore[method-assign]
    socket.getaddrinfo = _original["getaddrinfo"]
    GUARD.installed = False


def self_test() -> list[tuple[str, bool, str]]:
    """Checks that the guard really blocks egress and really allows loopback."""
    results: list[tuple[str, bool, str]] = []
    results.append(("network guard installed", GUARD.installed, "socket.connect, connect_ex, sendto, getaddrinfo"))
    before = len(GUARD.attempts)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routable
        results.append(("outbound TCP connect blocked", False, "a connection to 192.0.2.1 was allowed"))
    except EgressBlocked:
        results.append(("outbound TCP connect blocked", True, "192.0.2.1:9 refused before any packet"))
    except OSError as exc:
        results.append(("outbound TCP connect blocked", False, f"reached the network stack: {exc}"))
    try:
        socket.getaddrinfo("example.com", 443)
        results.append(("DNS lookups blocked", False, "example.com was looked up"))
    except EgressBlocked:
        results.append(("DNS lookups blocked", True, "example.com refused"))
    except OSError as exc:
        results.append(("DNS lookups blocked", False, f"reached the resolver: {exc}"))
    # The self-test's own attempts are not real egress attempts: drop them from the record.
    del GUARD.attempts[before:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=2):
            pass
        results.append(("loopback allowed", True, "127.0.0.1 connects (for local servers)"))
    except OSError as exc:
        results.append(("loopback allowed", False, str(exc)))
    finally:
        listener.close()
    switches = [k for k, v in OFFLINE_ENV.items() if os.environ.get(k) == v]
    results.append(
        (
            "library hub/telemetry switches off",
            len(switches) == len(OFFLINE_ENV),
            ", ".join(f"{k}={os.environ[k]}" for k in switches),
        )
    )
    return results
