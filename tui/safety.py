"""Model output and document text are data: the TUI shows them through the one sanitiser.

The implementation lives in :mod:`assistant.core.text`, shared with the CLI, so both
front ends strip the same terminal control sequences, control characters and bidi
overrides. Nothing here interprets Textual markup: widgets are given the result as
plain text (``Content``/``Text``) or Markdown, never as markup.
"""

from __future__ import annotations

from assistant.core.text import displayable, inline

__all__ = ["displayable", "inline"]
