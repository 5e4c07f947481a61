"""Model output and document text are data: make them safe to put on a terminal.

Terminal control sequences (ANSI CSI, OSC such as the clipboard or hyperlink
escapes, DCS) and other C0/C1 control characters are removed; tabs and newlines
stay. Nothing here interprets Textual markup: widgets are given the result as
plain text (``Content``/``Text``) or Markdown, never as markup.
"""

from __future__ import annotations

import re

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
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def displayable(text: str) -> str:
    """``text`` without terminal control sequences or control characters."""
    text = _SEQUENCES.sub("", text)
    return _CONTROLS.sub("", text)
