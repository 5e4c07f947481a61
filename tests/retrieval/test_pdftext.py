"""PDF text per page: PDFium (pypdfium2) first, pypdf when PDFium refuses the file."""

from __future__ import annotations

import pytest

from assistant.retrieval import pdftext
from assistant.retrieval.pdftext import PdfNeedsPassword, PdfUnreadable, pdf_pages
from tests.retrieval.test_ingest import make_pdf


def test_pdfium_and_pypdf_read_the_same_pages() -> None:
    data = make_pdf(["Cover page of the report.", "The warranty lasts thirty six months."])
    fast = pdftext._pdfium_pages(data)
    slow = pdftext._pypdf_pages(data)
    assert [p.text.split() for p in fast] == [p.text.split() for p in slow]
    assert "thirty six months" in " ".join(fast[1].text.split())
    assert "\r" not in fast[0].text


def test_a_password_pdf_names_the_fix_and_garbage_is_unreadable() -> None:
    with pytest.raises(PdfNeedsPassword, match="password"):
        pdf_pages(make_pdf(["Locked secret text."], password="pw"))
    with pytest.raises(PdfUnreadable):
        pdf_pages(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage\n%%EOF")


def test_pypdf_reads_what_pdfium_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(data: bytes) -> list[pdftext.PdfPage]:
        raise PdfUnreadable("PDFium: refused")

    monkeypatch.setattr(pdftext, "_pdfium_pages", refuse)
    pages = pdf_pages(make_pdf(["Only pypdf reads this one."]))
    assert "pypdf reads" in pages[0].text


def test_a_word_hyphenated_across_lines_is_read_whole() -> None:
    """Found by a user: PDFium writes "configura-/tion" as "configura\ufffetion", which
    reached quotes verbatim and kept keyword search from finding the word."""
    data = make_pdf(["Set the serial configura-\ntion option before you start the driver."])
    import pypdfium2

    raw = pypdfium2.PdfDocument(data)[0].get_textpage().get_text_range()
    assert "\ufffe" in raw  # what PDFium gives
    [page] = pdftext._pdfium_pages(data)
    assert "serial configuration option" in page.text and "\ufffe" not in page.text
