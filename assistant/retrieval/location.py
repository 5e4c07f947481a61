"""How a passage's place in its file is written, wherever it is shown or exported.

The one place that words a location, so the CLI, the TUI, ``--json`` and exports say
the same thing: the file; for a PDF the page as printed on it next to the PDF's own
page number when they differ ("page 16 (PDF page 21)": a reader turns to the printed
number, a viewer's page box wants the other); for an HTML page the section path,
because the lines of its source are no help in a browser; then lines, or
paragraphs for a Word document ("paragraph 12", never "p.", which reads as page).
"""

from __future__ import annotations

#: Sections of a heading path shown in a location (the last ones: the nearest matter).
HEADING_LEVELS = 2


def page_words(page: int | None, page_label: str | None) -> str | None:
    """``page 46 (PDF page 58)``, ``page 3``, or None without a page."""
    if page is None:
        return None
    if page_label and page_label != str(page):
        return f"page {page_label} (PDF page {page})"
    return f"page {page}"


def describe(
    path: str,
    page: int | None,
    line_start: int,
    line_end: int,
    unit: str = "lines",
    *,
    page_label: str | None = None,
    heading: str | None = None,
) -> str:
    """``manual.pdf, page 46 (PDF page 58), lines 10–18``; one line reads ``line 12``;
    ``unit`` is ``paragraphs`` for .docx; ``heading`` (a "›" path) is named for pages
    whose lines a reader cannot follow: ``FAQ.html, “Battery › Life”, lines 3–9``."""
    where = [path]
    pages = page_words(page, page_label)
    if pages:
        where.append(pages)
    if heading:
        where.append("“" + " › ".join(heading.split(" › ")[-HEADING_LEVELS:]) + "”")
    if line_start == line_end:
        where.append(f"{unit.removesuffix('s')} {line_start}")
    else:
        where.append(f"{unit} {line_start}–{line_end}")
    return ", ".join(where)
