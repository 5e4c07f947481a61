"""Text that is data: make it safe to put on a terminal, and safe to give a model.

One implementation for every front end (the CLI and the TUI both import it; the
core imports nothing but the standard library).

Three uses, three functions:

* :func:`displayable` — model output, document passages, conversation text: several
  lines. Terminal control sequences (CSI such as clear-screen, OSC such as the
  clipboard write OSC 52, window titles and hyperlinks, DCS/PM/APC/SOS), every other
  C0/C1 control character, and the Unicode bidirectional overrides and isolates
  (U+202A–U+202E, U+2066–U+2069, which make ``exe.txt`` read as ``txt.exe``) are
  removed; tabs and newlines stay.
* :func:`inline` — one name on one line: a file name, a model name, a title. Nothing
  is removed silently, because a name that prints differently from the real one is
  a trap of its own: controls, bidi marks, newlines and bytes that were not UTF-8
  (Python's surrogateescape) are written as visible escapes (``\\x1b``, ``\\u202e``,
  ``\\n``), the way ``ls -b`` does.
* :func:`for_model` — text handed to a native tokenizer or chat template: NUL ends a
  C string there (everything after it, in this turn and every later one, is lost),
  so NUL and other controls are removed and lone surrogates (input that was not
  UTF-8) replaced with U+FFFD. It reports what it did, for the user's notice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# ESC-based sequences: CSI (ESC [ … final), OSC (ESC ] … BEL or ESC \\), DCS/PM/APC/SOS
# (ESC P|^|_|X … ESC \\), and two-character escapes; plus their 8-bit C1 forms.
_SEQUENCES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]            # CSI
  | \x9b[0-?]*[ -/]*[@-~]              # 8-bit CSI
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)? # OSC
  | \x9d[^\x07\x1b\x9c]*(?:\x07|\x9c)? # 8-bit OSC
  | \x1b[P^_X][^\x1b]*(?:\x1b\\)?      # DCS, PM, APC, SOS
  | \x1b[@-Z\\-_]                      # other two-character escapes
    """,
    re.VERBOSE,
)
#: Bidirectional embeddings, overrides and isolates (not the plain LRM/RLM marks).
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f" + BIDI_CONTROLS + "]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_UNSAFE_INLINE = re.compile(r"[\x00-\x1f\x7f-\x9f" + BIDI_CONTROLS + r"\ud800-\udfff\u2028\u2029\\]")


def displayable(text: str) -> str:
    """``text`` without terminal control sequences, control characters or bidi overrides.

    Newlines and tabs stay. Lone surrogates (bytes that were not UTF-8) become U+FFFD,
    so the result can always be encoded for the terminal.
    """
    text = _SEQUENCES.sub("", text)
    text = _CONTROLS.sub("", text)
    return _SURROGATES.sub("\ufffd", text)


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{code:02x}")
    return f"\\u{code:04x}"


def inline(text: str) -> str:
    """``text`` on one line with every control, bidi mark and non-UTF-8 byte escaped.

    Printable text is unchanged (``report (draft).pdf`` prints as itself); a backslash
    is doubled only when something else in the name needed escaping, so the result
    is unambiguous without making ordinary Windows-style names noisy.
    """
    if not _UNSAFE_INLINE.search(text.replace("\\", "")):
        return text
    return _UNSAFE_INLINE.sub(_escape, text)


@dataclass(frozen=True)
class Cleaned:
    """Text made safe for a model, and what had to change."""

    text: str
    nul: int = 0  #: NUL characters removed
    controls: int = 0  #: other control characters removed (tabs and newlines stay)
    undecodable: int = 0  #: bytes that were not UTF-8, replaced with U+FFFD

    @property
    def changed(self) -> bool:
        return bool(self.nul or self.controls or self.undecodable)


_MODEL_CONTROLS = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def for_model(text: str) -> Cleaned:
    """``text`` as a tokenizer can take it: no NUL, no controls, no lone surrogates.

    Carriage returns become newlines (``\\r\\n`` one newline); terminal escape
    sequences lose their ESC byte with the other controls. Bidi marks stay: they
    are meaningful in right-to-left text and harmless to a tokenizer.
    """
    nul = text.count("\x00")
    undecodable = len(_SURROGATES.findall(text))
    out = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    out, controls = _MODEL_CONTROLS.subn("", out)
    out = _SURROGATES.sub("\ufffd", out)
    return Cleaned(out, nul=nul, controls=controls, undecodable=undecodable)


def path_text(path: Path | str) -> str:
    """A path as text that can always be stored (SQLite, JSON) and printed: the path itself
    when its name is UTF-8 (nearly always), else with each byte that is not written
    ``\\xNN`` — so a file whose name is not UTF-8 (an old archive, a Windows share) is
    indexed and shown instead of aborting the run."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
