"""The suite runs with outbound sockets blocked; these tests prove it."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from assistant.privacy import GUARD, EgressBlocked


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
        def do_GET(self) -> None:  # noqa: N802 - http.server API
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
