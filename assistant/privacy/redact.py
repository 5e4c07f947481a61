"""Masking personal data in what is sent off the device (cloud fallback only).

E-mail addresses become ``[email]``, telephone numbers ``[phone]``, and matches
of the user's own patterns (setting ``cloud_redact_patterns``) ``[redacted]``.
Only the copy that is sent is changed; the local history keeps the original.

Telephone numbers have no grammar, so the detector is a candidate regex plus
checks that keep the common look-alikes out: dates (2024-05-01, 01.02.2024),
version numbers and IP addresses (1.2.3, 192.168.1.10), and amounts written with
thousands separators (1 234 567,89 or $1,250.00).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from assistant.core.errors import EnclaveError

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)

# A run of digits and the separators people write inside phone numbers, optionally
# led by + or (; it must start and end on a digit (or a closing parenthesis before one).
_PHONE_CANDIDATE = re.compile(r"(?<![\w+/.,-])(?:\+|\()?\d[\d \t\u00a0().\-/]{5,}\d(?![\w])")
_DATE = re.compile(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$")
_SEPARATORS = re.compile(r"[\s().\-/]+")
_CURRENCY = "$€£¥₹"

EMAIL_MARK = "[email]"
PHONE_MARK = "[phone]"
USER_MARK = "[redacted]"


def _looks_like_phone(candidate: str, before: str, after: str) -> bool:
    """Whether a digit run found by the candidate regex is a telephone number."""
    text = candidate.strip()
    digits = sum(c.isdigit() for c in text)
    if not 7 <= digits <= 15:  # E.164 numbers have at most 15 digits
        return False
    near = before.rstrip()[-1:] + after.lstrip()[:1]
    if any(c in _CURRENCY for c in near) or re.match(r"^ ?[,.]\d", after):
        return False  # an amount: $1 234 567 or 1 234 567,89
    if text.startswith("+") or text.startswith("00"):
        return digits >= 8
    if _DATE.match(text) or "/" in text:
        return False  # dates and fractions; phone numbers are rarely written with slashes
    groups = [g for g in _SEPARATORS.split(text.strip("()")) if g]
    seps = set(re.findall(r"[\s.\-]", text))
    if "(" in text:
        return digits >= 9  # (555) 123-4567, (030) 1234567
    if len(groups) == 1:
        # A bare run: only national numbers with a trunk prefix (07700900123).
        return text.startswith("0") and 10 <= digits <= 11
    if seps <= {" ", "."} and all(len(g) == 3 for g in groups[1:]) and len(groups[0]) <= 3:
        return False  # thousands separators: 1 234 567 or 12.345.678
    if seps == {"."}:
        # Versions and IP addresses use dots too; phones written with dots use
        # groups of two to four digits (06.12.34.56.78, 555.123.4567).
        if any(len(g) == 1 for g in groups) or (len(groups) == 4 and all(len(g) <= 3 for g in groups)):
            return False
    return digits >= 9 or (digits >= 7 and len(groups) == 2 and len(groups[1]) == 4)


@dataclass(frozen=True)
class Redactor:
    """Masks e-mail addresses, telephone numbers and the user's own patterns."""

    patterns: tuple[str, ...] = ()
    emails: bool = True
    phones: bool = True
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(compile_patterns(self.patterns)))

    def redact(self, text: str) -> tuple[str, int]:
        """``text`` with personal data masked, and how many things were masked."""
        count = 0
        for pattern in self._compiled:
            text, n = pattern.subn(USER_MARK, text)
            count += n
        if self.emails:
            text, n = EMAIL.subn(EMAIL_MARK, text)
            count += n
        if self.phones:
            text, n = self._phones(text)
            count += n
        return text, count

    @staticmethod
    def _phones(text: str) -> tuple[str, int]:
        out: list[str] = []
        last = 0
        count = 0
        for match in _PHONE_CANDIDATE.finditer(text):
            start, end = match.span()
            candidate = match.group()
            # The candidate class allows trailing spaces before a final digit only, but a
            # trailing ")" without "(" belongs to the sentence, not the number.
            if candidate.count(")") > candidate.count("("):
                continue
            if _looks_like_phone(candidate, text[max(0, start - 2) : start], text[end : end + 3]):
                out.append(text[last:start])
                out.append(PHONE_MARK)
                last = end
                count += 1
        out.append(text[last:])
        return "".join(out), count

    def redact_messages(self, messages: Iterable[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
        """A redacted copy of chat messages (the originals are not touched)."""
        copied: list[dict[str, str]] = []
        total = 0
        for message in messages:
            content, n = self.redact(message.get("content", ""))
            copied.append({**message, "content": content})
            total += n
        return copied, total


def compile_patterns(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    """The user's patterns compiled, or one clear error naming the broken one."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise EnclaveError(
                f"The redaction pattern {pattern!r} is not a valid regular expression: {exc}.",
                "Fix it in cloud_redact_patterns (config.toml) or ENCLAVE_CLOUD_REDACT_PATTERNS.",
            ) from exc
    return compiled
