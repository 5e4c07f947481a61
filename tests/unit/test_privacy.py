"""The suite runs with outbound sockets blocked; these tests prove it."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from assistant.privacy.guard import GUARD, EgressBlocked


def test_guard_is_installed_for_the_whole_suite() -> None:
    assert GUARD.installed


@pytest.mark.parametrize("address", [("192.0.2.1", 80), ("10.0.0.1", 443), ("8.8.8.8", 53)])
def test_outbound_connections_are_refused_before_any_packet(address: tuple[str, int]) -> None:
    before = len(GUARD.attempts)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(EgressBlocked) as info:
        sock.connect(address)
    assert address[0] in info.value.message
    assert "test_privacy.py" in info.value.message  # names the caller
    assert len(GUARD.attempts) == before + 1


def test_dns_lookups_are_refused() -> None:
    with pytest.raises(EgressBlocked):
        socket.getaddrinfo("example.com", 443)


def test_udp_sendto_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(EgressBlocked):
        sock.sendto(b"x", ("192.0.2.1", 53))


def test_loopback_stays_open() -> None:
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"local")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := sock.recv(1024):
                reply += chunk
            assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"local")
    finally:
        server.shutdown()


def test_cloud_opens_exactly_its_host_and_closing_blocks_it_again() -> None:
    from assistant.privacy.guard import close_host, open_host

    open_host("192.0.2.10")
    try:
        assert GUARD.allows("192.0.2.10")
        # Another host stays blocked while cloud is on.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(EgressBlocked):
            sock.connect(("192.0.2.11", 443))
        with pytest.raises(EgressBlocked):
            socket.getaddrinfo("example.com", 443)
        open_host("192.0.2.10")  # a second conversation enables the same host
        close_host("192.0.2.10")
        assert GUARD.allows("192.0.2.10")  # the first one's consent still holds
    finally:
        close_host("192.0.2.10")
    assert not GUARD.allows("192.0.2.10")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(EgressBlocked):
        sock.connect(("192.0.2.10", 443))


def test_an_opened_host_name_allows_the_addresses_it_resolves_to() -> None:
    from assistant.privacy.guard import close_host, open_host

    # "localhost" resolves without any network; its addresses are loopback anyway,
    # so this checks the bookkeeping: the resolved set exists while open, not after.
    open_host("localhost")
    try:
        socket.getaddrinfo("localhost", 80)
        assert GUARD.resolved["localhost"] & {"127.0.0.1", "::1"}
    finally:
        close_host("localhost")
    assert "localhost" not in GUARD.resolved
