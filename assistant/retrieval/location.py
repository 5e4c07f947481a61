"""How a passage's place in its file is written, wherever it is shown or exported."""

from __future__ import annotations


def describe(path: str, page: int | None, line_start: int, line_end: int, unit: str = "lines") -> str:
    """``manual.pdf, page 3, lines 10–18``; one line reads ``line 12``; ``unit`` is
    ``paragraphs`` for .docx."""
    where = [path]
    if page is not None:
        where.append(f"page {page}")
    if line_start == line_end:
        where.append(f"{unit.removesuffix('s')} {line_start}")
    else:
        where.append(f"{unit} {line_start}–{line_end}")
    return ", ".join(where)
