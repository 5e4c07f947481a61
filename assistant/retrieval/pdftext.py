"""Text of each PDF page: PDFium first (pypdfium2), pypdf when PDFium refuses the file.

Measured on the NUT manuals (6 files, 2.3 MB, 296 pages; docs/scale-research.md §4):
pypdf 0.33 MB per CPU-second, pypdfium2 5.3 (16× faster, 1–2.5 % more characters, the
same ``/PageLabels`` on every page). pypdf alone could not reach 0.5 MB/s of PDF before
chunking and writing. Both parse untrusted bytes in native code or pure Python: they run
only inside the parser child process, under its memory and time limits
(:mod:`assistant.retrieval.worker`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass


class PdfUnreadable(Exception):
    """Neither extractor can read the file; ``str(exc)`` is the reason."""


class PdfNeedsPassword(PdfUnreadable):
    """The PDF is encrypted with a user password."""


@dataclass(frozen=True)
class PdfPage:
    """One page's text and its printed label (``iv``, ``12``), when the PDF has labels."""

    text: str
    label: str | None = None


class PdfPages(list[PdfPage]):
    """The pages of a PDF, and its metadata title ("" when it has none)."""

    title: str = ""


def pdf_text(data: bytes) -> tuple[list[PdfPage], str]:
    """(every page, the document's metadata title or "") of the PDF ``data``."""
    pages = pdf_pages(data)
    return pages, str(getattr(pages, "title", "") or "")


def pdf_pages(data: bytes) -> list[PdfPage]:
    """Every page of the PDF ``data``. Raises :class:`PdfNeedsPassword` or :class:`PdfUnreadable`."""
    try:
        return _pdfium_pages(data)
    except PdfNeedsPassword:
        raise
    except PdfUnreadable:
        return _pypdf_pages(data)  # PDFium refused it: pypdf is more lenient with some damage


def _pdfium_pages(data: bytes) -> list[PdfPage]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise PdfNeedsPassword("encrypted PDF (needs a password); save an unencrypted copy to index it") from exc
        raise PdfUnreadable(f"PDFium: {exc}") from exc
    try:
        pages = PdfPages()
        try:
            pages.title = str(pdf.get_metadata_dict().get("Title") or "")
        except Exception:  # noqa: BLE001 - broken metadata only costs the title
            pages.title = ""
        for number in range(len(pdf)):
            page = pdf[number]
            try:
                textpage = page.get_textpage()
                try:
                    # PDFium ends lines with CRLF; the parsers work on \n. It writes a
                    # word hyphenated across lines as one word with U+FFFE where the
                    # hyphen was ("configura\ufffetion"): the word is read whole.
                    text = textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n")
                    text = text.replace("\ufffe", "").replace("\u00ad", "")
                finally:
                    textpage.close()
            finally:
                page.close()
            pages.append(PdfPage(text, _label(pdf, number)))
        return pages
    except pdfium.PdfiumError as exc:
        raise PdfUnreadable(f"PDFium: {exc}") from exc
    finally:
        pdf.close()


def _label(pdf: object, number: int) -> str | None:
    try:
        label = pdf.get_page_label(number)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a broken label tree only loses the labels
        return None
    return str(label) if label else None


def _pypdf_pages(data: bytes) -> list[PdfPage]:
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception as exc:
                raise PdfUnreadable(f"encrypted PDF that cannot be opened ({exc})") from exc
            if not opened:
                raise PdfNeedsPassword("encrypted PDF (needs a password); save an unencrypted copy to index it")
        try:
            labels: list[str] | None = list(reader.page_labels)
        except Exception:  # noqa: BLE001 - a broken label tree only loses the labels
            labels = None
        pages = PdfPages()
        try:
            meta = reader.metadata
            pages.title = str(meta.title or "") if meta is not None else ""
        except Exception:  # noqa: BLE001 - broken metadata only costs the title
            pages.title = ""
        for number, page in enumerate(reader.pages):
            label = labels[number] if labels and number < len(labels) else None
            pages.append(PdfPage(page.extract_text() or "", label))
        return pages
    except PdfUnreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise PdfUnreadable(f"malformed PDF ({type(exc).__name__}: {str(exc)[:120]})") from exc
