"""Redaction of what cloud fallback sends: realistic text, and the look-alikes it must leave alone."""

from __future__ import annotations

import pytest

from assistant.core.errors import EnclaveError
from assistant.privacy.redact import Redactor


@pytest.mark.parametrize(
    "text",
    [
        "Call +44 20 7946 0958 today",
        "US office +1 (555) 123-4567.",
        "Mobile 07700 900123",
        "Berlin 0049 30 12345678",
        "Munich +49-89-1234567",
        "Paris 06 12 34 56 78",
        "Lyon 06.12.34.56.78",
        "NYC 555.123.4567",
        "desk 555-123-4567",
        "Tel.: +33 (0)1 23 45 67 89.",
        "Zürich +41 44 668 18 00",
        "direct (030) 1234567",
        "ring 555-1234 after lunch",
        "Tokyo +81-3-1234-5678",
    ],
)
def test_phone_numbers_are_masked(text: str) -> None:
    masked, count = Redactor().redact(text)
    assert count == 1 and "[phone]" in masked, masked
    assert not any(c.isdigit() for c in masked.split("[phone]")[0][-3:]), masked


@pytest.mark.parametrize(
    "text",
    [
        "Released 2024-05-01 and patched on 01.02.2024, due 1/2/2025",
        "Upgrade from 1.2.3 to 10.15.7 (build 2.0.0.1234)",
        "Server at 192.168.1.10 and 10.0.0.254",
        "It costs $1,250.00, or 1 234 567,89 € in total",
        "€ 1 234 567 budget, 12.345.678 units shipped",
        "Order 123456789 shipped in 2023 and 2024",
        "Open 10:00-12:00 and 14:00-18:00",
        "pi is 3.14159265 and e is 2.71828",
        "Chapter 3, pages 120-145",
    ],
)
def test_dates_versions_addresses_and_amounts_are_left_alone(text: str) -> None:
    assert Redactor().redact(text) == (text, 0)


def test_emails_in_angle_brackets_and_with_plus_tags() -> None:
    text = 'From: "Jane Doe" <jane.doe@example.co.uk>, cc bob+pumps@mail.example.com; not user@localhost'
    masked, count = Redactor().redact(text)
    assert masked == 'From: "Jane Doe" <[email]>, cc [email]; not user@localhost'
    assert count == 2


def test_user_patterns_and_switches() -> None:
    r = Redactor(patterns=(r"ACME-\d{4}", r"(?i)project\s+falcon"))
    masked, count = r.redact("Ticket ACME-1234 for Project  Falcon, call 555-123-4567")
    assert masked == "Ticket [redacted] for [redacted], call [phone]" and count == 3
    only_emails = Redactor(phones=False)
    assert only_emails.redact("a@b.org 555-123-4567") == ("[email] 555-123-4567", 1)


def test_messages_are_copied_not_changed() -> None:
    original = [{"role": "user", "content": "mail me at a@example.org"}]
    copied, count = Redactor().redact_messages(original)
    assert copied == [{"role": "user", "content": "mail me at [email]"}] and count == 1
    assert original[0]["content"] == "mail me at a@example.org"


def test_a_broken_user_pattern_is_one_clear_error() -> None:
    with pytest.raises(EnclaveError, match="not a valid regular expression") as info:
        Redactor(patterns=("ACME-(",))
    assert "cloud_redact_patterns" in info.value.hint
