"""Read one document into text blocks that keep their exact source location.

Every format becomes a list of :class:`Block` (a paragraph or a heading) with the
lines it came from (1-based, inclusive) and, for PDFs, its page. These functions
parse untrusted files, so the indexer runs them in a child process with memory
and time limits (:mod:`assistant.retrieval.worker`); here they only need to fail
with :class:`Unreadable` and a one-line reason a user can act on.

Text is cleaned of characters that can hide instructions from a reader but not
from a model: Unicode tag characters, zero-width characters, bidirectional
overrides, lone surrogates and control characters.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

#: File types Enclave reads, by suffix.
FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}

#: A .docx is a zip; anything that inflates past this (or by more than 200×) is refused.
DOCX_MAX_XML = 64 * 1024 * 1024
DOCX_MAX_RATIO = 200


class Unreadable(Exception):
    """This file cannot be indexed; the message is the reason shown to the user."""


@dataclass
class Block:
    """A paragraph or heading and where it is: lines (or paragraphs, for .docx) and page."""

    text: str
    line_start: int
    line_end: int
    page: int | None = None
    level: int = 0  # heading level; 0 for body text

    def as_list(self) -> list[object]:
        return [self.text, self.line_start, self.line_end, self.page, self.level]


# --------------------------------------------------------------------------- cleaning
_INVISIBLE = re.compile(
    "["
    "\u00ad"  # soft hyphen
    "\u200b-\u200f"  # zero-width space/joiners, LRM/RLM
    "\u202a-\u202e"  # bidi embeddings and overrides
    "\u2060-\u2064"  # word joiner, invisible operators
    "\u2066-\u2069"  # bidi isolates
    "\ufeff"  # zero-width no-break space / BOM
    "\ud800-\udfff"  # lone surrogates
    "\U000e0000-\U000e007f"  # tag characters (invisible ASCII)
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f"  # control characters except tab and newlines
    "]"
)


def clean(text: str) -> str:
    """Remove characters a reader cannot see (see the module docstring)."""
    return _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def decode(data: bytes) -> tuple[str, str]:
    """Bytes of a text file → (text, note). Raises :class:`Unreadable` for binary data.

    UTF-8 (with or without BOM) and UTF-16 with a BOM are read as such; a file that is
    mostly valid UTF-8 keeps its text with the bad bytes replaced; anything else that
    still looks like text is read as Windows-1252, and the note says so.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), ""
        except UnicodeDecodeError as exc:
            raise Unreadable(f"invalid UTF-16 text ({exc.reason})") from exc
    sample = data[:65536]
    if b"\x00" in sample:
        raise Unreadable("binary content (NUL bytes), not text")
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    if sample and controls / len(sample) > 0.05:
        raise Unreadable("binary content (control bytes), not text")
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        pass
    try:  # UTF-8 apart from encoded lone surrogates (clean() removes them)
        text = data.decode("utf-8", errors="surrogatepass")
        return text, "lone surrogate characters removed"
    except UnicodeDecodeError:
        pass
    if not _UTF8_MULTIBYTE.search(data):
        # No valid multi-byte UTF-8 at all: a legacy 8-bit file (Windows-1252 is a
        # superset of Latin-1 for printable text).
        return data.decode("cp1252", errors="replace"), "not UTF-8; read as Windows-1252"
    text = data.decode("utf-8", errors="replace")
    return text, f"{text.count(chr(0xFFFD))} invalid UTF-8 byte(s) replaced"


# --------------------------------------------------------------------------- plain text
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_:.])\1{2,}\s*$")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def text_blocks(text: str, kind: str) -> list[Block]:
    """Paragraphs separated by blank lines; Markdown ``#`` and reStructuredText
    underlined titles become heading blocks. Line numbers are the file's own."""
    lines = clean(text).split("\n")
    blocks: list[Block] = []
    para: list[str] = []
    start = 0
    in_fence = False
    underlines: dict[str, int] = {}

    def flush(end: int) -> None:
        nonlocal para
        body = "\n".join(para).strip()
        if body:
            blocks.append(Block(body, start, end))
        para = []

    i = 0
    while i < len(lines):
        line = lines[i]
        number = i + 1
        stripped = line.strip()
        if kind == "markdown" and stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence and kind == "markdown" and (m := _MD_HEADING.match(stripped)):
            flush(number - 1)
            blocks.append(Block(m.group(2), number, number, level=len(m.group(1))))
            i += 1
            continue
        if (
            not in_fence
            and stripped
            and not para
            and i + 1 < len(lines)
            and _RST_UNDERLINE.match(lines[i + 1])
            and len(lines[i + 1].rstrip()) >= min(len(stripped), 3 if kind != "rst" else len(stripped))
        ):
            # An underlined title (reStructuredText, Markdown "setext", plain-text
            # manuals): levels follow the order in which underline characters appear.
            char = lines[i + 1].strip()[0]
            level = underlines.setdefault(char, len(underlines) + 1)
            flush(number - 1)
            blocks.append(Block(stripped, number, number + 1, level=level))
            i += 2
            continue
        if kind == "rst" and _RST_UNDERLINE.match(line) and not para:
            i += 1  # an overline
            continue
        if not stripped and not in_fence:
            flush(number - 1)
        else:
            if not para:
                start = number
            para.append(line.rstrip())
        i += 1
    flush(len(lines))
    return blocks


# --------------------------------------------------------------------------- HTML
_BLOCK_TAGS = {
    "p", "div", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer",
    "blockquote", "pre", "br", "hr", "dd", "dt", "dl", "main", "aside", "figure", "figcaption",
    "h1", "h2", "h3", "h4", "h5", "h6", "title", "td", "th", "nav", "form",
}  # fmt: skip
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head"}


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.parts: list[str] = []
        self.start = 0
        self.end = 0
        self.level = 0
        self.skip = 0

    def _flush(self) -> None:
        text = re.sub(r"[ \t\f\v]+", " ", clean("".join(self.parts)))
        text = "\n".join(line.strip() for line in text.split("\n") if line.strip())
        if text:
            self.blocks.append(Block(text, self.start, max(self.end, self.start), level=self.level))
        self.parts, self.level = [], 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self._flush()
            if len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
                self.level = int(tag[1])

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.skip or not data.strip():
            if self.parts and not self.skip:
                self.parts.append(" ")
            return
        line = self.getpos()[0]
        if not self.parts or not "".join(self.parts).strip():
            self.start = line
        self.parts.append(data.replace("\n", " "))
        self.end = line + data.count("\n")


def html_blocks(text: str) -> list[Block]:
    """Visible text of an HTML page, one block per block-level element; line numbers
    are those of the HTML source."""
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    parser._flush()
    return parser.blocks


# --------------------------------------------------------------------------- PDF
def pdf_blocks(data: bytes) -> list[Block]:
    """Text of each page (pypdf), in paragraphs; lines are counted within the page."""
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception as exc:  # noqa: BLE001 - unsupported encryption is just "unreadable"
                raise Unreadable(f"encrypted PDF that cannot be opened ({exc})") from exc
            if not opened:
                raise Unreadable("encrypted PDF (needs a password); save an unencrypted copy to index it")
        blocks: list[Block] = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            for block in text_blocks(text, "text"):
                block.page = number
                blocks.append(block)
    except Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise Unreadable(f"malformed PDF ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not blocks:
        raise Unreadable("PDF has no extractable text (scanned images need OCR first)")
    return blocks


# --------------------------------------------------------------------------- DOCX
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def docx_blocks(data: bytes) -> list[Block]:
    """Paragraphs of a Word document; "lines" are paragraph numbers (1-based).

    The zip is checked before anything is inflated: a document part that would
    inflate past 64 MiB, or by more than 200×, is refused as a likely zip bomb, and
    XML with a DTD (entity expansion) is refused outright.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        info = archive.getinfo("word/document.xml")
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Unreadable(f"not a valid .docx ({exc})") from exc
    if info.file_size > DOCX_MAX_XML or (
        info.compress_size and info.file_size / info.compress_size > DOCX_MAX_RATIO and info.file_size > 1 << 20
    ):
        raise Unreadable(
            f"refused: its text part would inflate to {info.file_size / 2**20:.0f} MiB "
            f"from {info.compress_size / 2**10:.0f} KiB (a zip bomb?)"
        )
    try:
        with archive.open(info) as fh:
            xml = fh.read(DOCX_MAX_XML + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
        raise Unreadable(f"damaged .docx ({exc})") from exc
    if len(xml) > DOCX_MAX_XML:
        raise Unreadable("refused: its text part inflates past 64 MiB (a zip bomb?)")
    if b"<!DOCTYPE" in xml[:4096] or b"<!ENTITY" in xml:
        raise Unreadable("refused: the document XML declares entities (an XML bomb?)")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise Unreadable(f"damaged .docx: {exc}") from exc
    blocks: list[Block] = []
    for number, para in enumerate(root.iter(f"{_W}p"), start=1):
        pieces: list[str] = []
        for node in para.iter():
            if node.tag == f"{_W}t" and node.text:
                pieces.append(node.text)
            elif node.tag == f"{_W}tab":
                pieces.append("\t")
            elif node.tag in (f"{_W}br", f"{_W}cr"):
                pieces.append("\n")
        text = clean("".join(pieces)).strip()
        if not text:
            continue
        level = 0
        style = para.find(f"{_W}pPr/{_W}pStyle")
        if style is not None:
            name = (style.get(f"{_W}val") or "").lower()
            if name == "title":
                level = 1
            elif name.startswith("heading"):
                digits = "".join(ch for ch in name if ch.isdigit())
                level = (int(digits) if digits else 1) + 1  # the Title sits above Heading 1
        blocks.append(Block(text, number, number, level=level))
    return blocks


# --------------------------------------------------------------------------- entry point
def parse(path: Path, max_bytes: int) -> tuple[str, list[Block], str]:
    """Read ``path`` → (kind, blocks, note). Raises :class:`Unreadable`."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise Unreadable(f"unsupported file type {path.suffix or '(no suffix)'}")
    try:
        size = path.stat().st_size
        if size == 0:
            raise Unreadable("empty file (0 bytes)")
        if size > max_bytes:
            raise Unreadable(
                f"too large ({size / 2**20:.0f} MiB; the limit is {max_bytes / 2**20:.0f} MiB, "
                "setting docs_max_file_mb)"
            )
        data = path.read_bytes()
    except PermissionError as exc:
        raise Unreadable("permission denied") from exc
    except OSError as exc:
        raise Unreadable(f"cannot be read ({exc.strerror or exc})") from exc
    note = ""
    if kind == "pdf":
        if not data.startswith(b"%PDF"):
            raise Unreadable("not a PDF (no %PDF header)")
        blocks = pdf_blocks(data)
    elif kind == "docx":
        blocks = docx_blocks(data)
    else:
        text, note = decode(data)
        blocks = html_blocks(text) if kind == "html" else text_blocks(text, kind)
    if not any(b.text.strip() for b in blocks):
        raise Unreadable("no text in it")
    return kind, blocks, note
