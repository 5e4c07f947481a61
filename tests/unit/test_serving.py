"""The serving use cases' pure decisions: stop sequences, the Host check, the listening address."""

from __future__ import annotations

import pytest

from assistant.app.access import Binding, binding, host_allowed
from assistant.app.serving import StopScanner
from assistant.core.errors import EnclaveError


def _scan(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    scanner = StopScanner(stops)
    out = "".join(scanner.push(p) for p in pieces)
    if not scanner.hit:
        out += scanner.flush()
    return out, scanner.hit


def test_a_stop_sequence_split_over_pieces_cuts_the_text_before_it() -> None:
    assert _scan(["\n\nUser:"], ["Paris.", "\n", "\nUs", "er: more"]) == ("Paris.", True)
    assert _scan(["END"], ["the E", "ND"]) == ("the ", True)
    assert _scan(["END"], ["the E", "nd"]) == ("the End", False)  # held back, then released
    assert _scan([], ["a", "b"]) == ("ab", False)
    assert _scan(["b", "zz"], ["ab", "c"]) == ("a", True)  # the earliest stop wins


def test_only_a_possible_stop_start_is_held_back() -> None:
    scanner = StopScanner(["STOP"])
    assert scanner.push("hello ST") == "hello "
    assert scanner.push("x") == "STx"


@pytest.mark.parametrize(
    "header",
    ["localhost", "localhost:8642", "127.0.0.1:8642", "127.9.9.9", "[::1]:8642", "LOCALHOST:1", "app.localhost:5"],
)
def test_loopback_hosts_are_allowed(header: str) -> None:
    assert host_allowed(header, Binding("127.0.0.1", 8642, exposed=False))


@pytest.mark.parametrize(
    "header", [None, "", "evil.example", "evil.example:8642", "localhost.evil.example", "192.168.1.5:8642", "[::2]"]
)
def test_other_hosts_are_refused(header: str | None) -> None:
    assert not host_allowed(header, Binding("127.0.0.1", 8642, exposed=False))


def test_an_exposed_server_allows_its_address_and_listed_names() -> None:
    wildcard = Binding("0.0.0.0", 8642, exposed=True)
    assert host_allowed("192.168.1.5:8642", wildcard) and not host_allowed("evil.example", wildcard)
    one = Binding("192.168.1.5", 8642, exposed=True)
    assert host_allowed("192.168.1.5", one) and not host_allowed("192.168.1.6", one)
    assert host_allowed("enclave.internal:8642", one, extra=("enclave.internal",))


def test_listening_beyond_loopback_needs_understanding() -> None:
    with pytest.raises(EnclaveError, match="--i-understand-the-risk"):
        binding("192.168.1.5", 8642)
    assert binding("localhost", 1).base_url == "http://localhost:1/v1"
    assert binding("::1", 1).base_url == "http://[::1]:1/v1"
    assert binding("0.0.0.0", 1, understood=True).base_url == "http://127.0.0.1:1/v1"
