"""Read one document into text blocks that keep their exact source location.

Every format becomes a list of :class:`Block` (a paragraph or a heading) with the
lines it came from (1-based, inclusive) and, for PDFs, its page. These functions
parse untrusted files, so the indexer runs them in a child process with memory
and time limits (:mod:`assistant.retrieval.worker`); here they only need to fail
with :class:`Unreadable` and a one-line reason a user can act on.

Text is cleaned of characters that can hide instructions from a reader but not
from a model: Unicode tag characters, zero-width characters, bidirectional
overrides, lone surrogates and control characters; Unicode spaces (no-break,
thin, ideographic) become plain spaces, so a heading typed with a no-break space
reads and matches like any other.

Headings are kept apart from body text, because a heading glued to the end of a
passage reads as part of it (issue 13: the GPL-3's "9. Acceptance Not Required…"
after a passage about 30 days made "9 days" look supported). Plain text has no
markup, so numbered section titles ("8. Termination.", "10.3. Modified
Versions", "8. TRANSLATION") and short all-capitals lines ("NO WARRANTY") are
recognised by their typography; PDF pages lose their blank lines, so paragraphs,
numbered headings and running headers/footers are recovered from the lines.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
import zlib
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

#: Bump when parsing changes what is indexed: documents parsed by an older version are
#: re-read by the next `docs add`/`docs sync` even when the file is unchanged.
#: 2: headings in plain text and PDF, PDF running headers dropped, page labels,
#: sentence-exact line maps, document titles, suffix-less text files.
#: 3: HTML tables of contents and navigation dropped; PDF words hyphenated across
#: lines read whole (PDFium's U+FFFE).
#: 4: PDF chapters titled in sentence case ("4 Download information") and appendix
#: sections ("B.2 …") are headings, so heading paths past chapter 3 are right.
#: 5: appendices without numbered sections ("A Glossary"), a chapter title run into
#: the paragraph before it, and subsections three levels deep in lower case
#: ("C.2.7 battery: …").
#: 6: plain-text sections whose title runs into their text ("3. Grant of Patent
#: License. Subject to …", Apache-2.0) get the title as their heading.
PARSER_VERSION = 6

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

#: A gzip-compressed document (Debian's /usr/share/doc/*/changelog.gz, README.Debian.gz,
#: *.rst.gz) is read as the file it decompresses to: ``NAME.EXT.gz`` as ``NAME.EXT``.
GZIP_SUFFIX = ".gz"

#: A .docx is a zip; anything that inflates past this (or by more than 200×) is refused.
DOCX_MAX_XML = 64 * 1024 * 1024
DOCX_MAX_RATIO = 200


class Unreadable(Exception):
    """This file cannot be indexed; the message is the reason shown to the user."""


@dataclass
class Block:
    """A paragraph or heading and where it is: lines (or paragraphs, for .docx) and page.

    ``page_label`` is the page number printed on a PDF page ("46", "xii") when the
    PDF declares page labels; ``spans`` gives, for each line of ``text``, the first
    and last source line it came from, when that is not simply one line each
    (HTML text is reflowed; a PDF word broken by a hyphen joins two lines);
    ``keep`` asks the chunker to keep this block with the next one (a term before
    its definition, a label line before what it labels).
    """

    text: str
    line_start: int
    line_end: int
    page: int | None = None
    level: int = 0  # heading level; 0 for body text
    page_label: str | None = None
    spans: list[list[int]] | None = None
    keep: bool = False

    def as_list(self) -> list[object]:
        return [
            self.text, self.line_start, self.line_end, self.page, self.level, self.page_label, self.spans, self.keep,
        ]  # fmt: skip

    def line_spans(self) -> list[tuple[int, int]]:
        """For each line of ``text``, the source lines (first, last) it stands for."""
        lines = self.text.split("\n")
        if self.spans is not None and len(self.spans) == len(lines):
            return [(int(a), int(b)) for a, b in self.spans]
        if self.line_end - self.line_start == len(lines) - 1:
            return [(self.line_start + i, self.line_start + i) for i in range(len(lines))]
        return [(self.line_start, self.line_end)] * len(lines)


@dataclass
class Parsed:
    """One document read: its kind, its blocks, a note for the user and its title."""

    kind: str
    blocks: list[Block]
    note: str = ""
    title: str = ""


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


_SPACES = re.compile("[\u00a0\u2000-\u200a\u202f\u205f\u3000]")


def clean(text: str) -> str:
    """Remove characters a reader cannot see and make Unicode spaces plain (see the
    module docstring)."""
    return _SPACES.sub(" ", _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))


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


# --------------------------------------------------------------------------- headings by typography
#: "8.", "10.3.", "6.2.4", "B.2.1" (an appendix's sections), "A.", "IV." then the title.
_SECTION = re.compile(r"^(?:(\d{1,3}(?:\.\d{1,3})*|[A-Z](?:\.\d{1,3})+)(\.?)|([A-Z]|[IVX]{1,5})\.)\s+(\S.*)$")
#: Words a title leaves in lower case ("Conveying Copies of the Program").
_SMALL = frozenset(
    "a an and as at but by for from in into nor not of on or per than the to under upon via vs with".split()
)
_TITLE_WORD = re.compile(r"[^\W\d_][\w'’&/-]*|\d[\w.]*")
#: A heading is short: the longest section title in the licences of
#: /usr/share/common-licenses is 58 characters, in the NUT manual 71.
HEADING_MAX_CHARS = 80


def _title_case(title: str) -> bool:
    """Every word capitalised except small words ("Conveying Verbatim Copies")."""
    words = _TITLE_WORD.findall(title)
    if not words or len(words) > 12 or not words[0][0].isupper():
        return False
    return all(w[0].isupper() or w[0].isdigit() or w.lower() in _SMALL for w in words)


def _capitals(line: str) -> bool:
    """An all-capitals line of words ("NO WARRANTY", "8. TRANSLATION"), not a config
    line ("LISTEN 127.0.0.1", "NOTIFYFLAG ONBATT SYSLOG+WALL")."""
    body = _SECTION.sub(r"\4", line)
    letters = [c for c in body if c.isalpha()]
    if len(letters) < 4 or any(c.islower() for c in letters):
        return False
    if re.search(r"[^\w\s,.'’()&:/-]|\d", body):
        return False
    return len(body.split()) >= 2 or bool(_SECTION.match(line))


def heading_level(line: str, *, capitals: bool = True, sentence_case: bool = False) -> int:
    """The heading level of a one-line paragraph by its typography, 0 for body text.

    Numbered titles: "8. Termination." (level 1), "10.3. Modified Versions" (2),
    "6.2.4 Data server configuration (upsd)" (3, with ``sentence_case``: manuals
    title their subsections in sentence case, but a numbered list item is a sentence
    — "1. Install the driver." — so sentence case needs a dotted number and no final
    period). With ``capitals``, an all-capitals line ("NO WARRANTY") is level 1.
    """
    text = line.strip()
    if not text or len(text) > HEADING_MAX_CHARS or text.endswith((",", ";")):
        return 0
    m = _SECTION.match(text)
    if m:
        number, dot, letter, title = m.groups()
        depth = number.count(".") + 1 if number else 1
        bare = title.rstrip(".:").strip()
        if ". " in bare or not bare:  # a run-in heading followed by its text: body
            return 0
        if sentence_case and re.search(r"\s\d+$", bare):  # a table-of-contents line: "3 Features 9"
            return 0
        if _title_case(bare) or (capitals and _capitals(text)):
            return depth
        if sentence_case and number and "." in number and not title.endswith(".") and bare[0].isupper():
            return depth
        # "C.2.7 battery: Any battery details": three levels deep (or an appendix's
        # lettered number) a line is a subsection title even when it starts in lower case.
        if sentence_case and number and (number.count(".") >= 2 or number[0].isalpha()) and not title.endswith("."):
            return depth
        return 0
    if capitals and _capitals(text):
        return 1
    return 0


def _label_like(text: str) -> bool:
    """A short line that introduces what follows rather than saying something:
    "Uncomplicated Firewall (UFW) support", "POLLTIME time in seconds"."""
    return "\n" not in text and len(text) <= 60 and not text.rstrip().endswith((".", "!", "?", ";", ","))


# --------------------------------------------------------------------------- plain text
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_:.])\1{2,}\s*$")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


#: A numbered section whose title runs into its text: "3. Grant of Patent License. Subject to …".
_RUN_IN = re.compile(r"^\s*(\d{1,2})\.\s+([A-Z][A-Za-z'’ ,-]{2,60}?)\.\s+(\S.*)$")


def _paragraph_level(para: list[str]) -> int:
    """The heading level of a plain-text paragraph of one or two lines typeset as a
    section title, else 0. Two lines make a heading only in capitals ("GNU GENERAL
    PUBLIC LICENSE / TERMS AND CONDITIONS …"), never a numbered title and its first line."""
    if len(para) > 2:
        return 0
    levels = [heading_level(line) for line in para]
    if all(levels) and (len(para) == 1 or all(_capitals(line) for line in para)):
        return levels[0]
    return 0


def text_blocks(text: str, kind: str) -> list[Block]:
    """Paragraphs separated by blank lines; Markdown ``#`` and reStructuredText
    underlined titles become heading blocks, and in plain text (``kind`` "text") so
    do one-line paragraphs typeset as section titles (:func:`heading_level`). Line
    numbers are the file's own."""
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
            level = _paragraph_level(para) if kind == "text" else 0
            run_in = _RUN_IN.match(para[0]) if kind == "text" and not level else None
            if level:
                blocks.append(Block(" ".join(line.strip() for line in para), start, end, level=level))
            elif run_in and _title_case(run_in.group(2)):
                # "3. Grant of Patent License. Subject to …" (Apache-2.0): the title is a
                # heading of its own, so the section's sentences are filed under it.
                blocks.append(Block(f"{run_in.group(1)}. {run_in.group(2)}.", start, start, level=1))
                rest = "\n".join([run_in.group(3), *para[1:]]).strip()
                blocks.append(Block(rest, start, end))
            else:
                blocks.append(Block(body, start, end, keep=kind == "text" and _label_like(body)))
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


def text_title(blocks: list[Block]) -> str:
    """A plain document's title: its first heading, or a short first paragraph
    ("GNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007"), within its first lines."""
    for block in blocks[:3]:
        if block.line_start > 12:
            break
        flat = " ".join(block.text.split())
        if block.level or (len(flat) <= 100 and block.text.count("\n") <= 2):
            return flat
    return ""


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
        self.keep = False
        self.in_title = False
        self.title: list[str] = []
        #: Inside ``<a href="#…">``, and the characters of the current block read there.
        self.in_link = 0
        self.link_chars = 0
        #: Inside ``<nav>`` or an element with the navigation role: its tag and depth.
        self.nav: tuple[str, int] | None = None

    def _flush(self) -> None:
        text = re.sub(r"[ \t\f\v]+", " ", clean("".join(self.parts)))
        text = "\n".join(line.strip() for line in text.split("\n") if line.strip())
        # A table of contents (asciidoc's "toc", docutils' "contents"): a block whose
        # text is all links within the page states nothing, and it holds every
        # section's words, so it outranks the sections themselves. Headings stay
        # (docutils links each back to its entry).
        if text and not self.level and self.link_chars >= 0.98 * len("".join(text.split())):
            text = ""
        self.link_chars = 0
        if text:
            block = Block(text, self.start, max(self.end, self.start), level=self.level, keep=self.keep)
            self.blocks.append(block)
        self.parts, self.level, self.keep = [], 0, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        values = dict(attrs)
        if tag == "a" and (values.get("href") or "").startswith("#"):
            self.in_link += 1
        if self.nav is not None:
            if tag == self.nav[0]:
                self.nav = (tag, self.nav[1] + 1)
        elif tag == "nav" or values.get("role") == "navigation":
            self.nav = (tag, 1)
            self.skip += 1
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self._flush()
            if len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
                self.level = int(tag[1])
            # A definition term ("POLLTIME time in seconds") belongs with its definition.
            self.keep = tag == "dt"

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag == "a" and self.in_link:
            self.in_link -= 1
        if self.nav is not None and tag == self.nav[0]:
            self.nav = (tag, self.nav[1] - 1) if self.nav[1] > 1 else None
            if self.nav is None:
                self.skip = max(0, self.skip - 1)
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if self.skip or not data.strip():
            if self.parts and not self.skip:
                self.parts.append(" ")
            return
        line = self.getpos()[0]
        if not self.parts or not "".join(self.parts).strip():
            self.start = line
        self.parts.append(data.replace("\n", " "))
        if self.in_link:
            self.link_chars += len("".join(data.split()))
        self.end = line + data.count("\n")


def html_blocks(text: str) -> list[Block]:
    """Visible text of an HTML page, one block per block-level element; line numbers
    are those of the HTML source."""
    return html_document(text)[0]


def html_document(text: str) -> tuple[list[Block], str]:
    """(blocks, the page's <title> or first heading)."""
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    parser._flush()
    title = " ".join(clean("".join(parser.title)).split())
    if not title:
        title = next((b.text for b in parser.blocks if b.level == 1), "")
    return parser.blocks, title[:200]


# --------------------------------------------------------------------------- PDF
_BULLET = re.compile(r"^(?:[•◦▪‣∙·*–—-]|\(?\d{1,2}[.)]|\(?[a-z][.)])\s")
_ROMAN = re.compile(r"^[ivxlcdm]+$")
#: A line at least this share of the document's usual full line length is wrapped
#: text that goes on; a shorter one ends its paragraph. In the NUT manual full lines
#: are 115-130 characters and a paragraph's last line is mostly under 80.
FULL_LINE = 0.75


def _furniture_key(line: str) -> str:
    words = [("#" if _ROMAN.match(w) else w) for w in line.lower().split()]
    return re.sub(r"\d+", "#", " ".join(words))


def _running_lines(pages: list[list[str]]) -> set[str]:
    """Running headers and footers: lines at the top or bottom of a page (first or last
    two) that recur, numbers aside, on at least a quarter of the pages (and 3)."""
    seen: dict[str, set[int]] = {}
    for number, lines in enumerate(pages):
        filled = [line for line in lines if line.strip()]
        for line in filled[:2] + filled[-2:]:
            seen.setdefault(_furniture_key(line), set()).add(number)
    needed = max(3, len(pages) // 4)
    return {key for key, where in seen.items() if len(where) >= needed}


def _pdf_paragraph(
    para: list[tuple[int, str]], page: int, label: str | None, words: set[str], compounds: set[str]
) -> Block:
    """One paragraph of wrapped PDF lines; a word broken across lines by a hyphen is
    mended (without the hyphen when the document spells the word whole elsewhere)."""
    out: list[str] = []
    spans: list[list[int]] = []
    for number, line in para:
        head = re.search(r"([^\W\d_]+)-$", out[-1]) if out else None
        if head and line[:1].islower():
            tail, _, rest = line.partition(" ")
            stem = re.match(r"[^\W\d_]+", tail)
            whole = head.group(1) + (stem.group(0) if stem else "")
            hyphenated = f"{head.group(1)}-{stem.group(0) if stem else ''}".lower()
            if whole.lower() in words and hyphenated not in compounds:
                out[-1] = out[-1][:-1] + tail
            else:
                out[-1] += tail
            spans[-1][1] = number
            if rest.strip():
                out.append(rest.strip())
                spans.append([number, number])
            continue
        out.append(line)
        spans.append([number, number])
    text = "\n".join(out)
    return Block(text, para[0][0], para[-1][0], page, 0, label, spans, keep=_label_like(text))


def _pdf_page(
    lines: list[str],
    page: int,
    label: str | None,
    furniture: set[str],
    width: float,
    words: set[str],
    compounds: set[str],
) -> list[Block]:
    blocks: list[Block] = []
    para: list[tuple[int, str]] = []
    filled = [i for i, line in enumerate(lines) if line.strip()]
    edges = set(filled[:2] + filled[-2:])

    def flush() -> None:
        nonlocal para
        if para:
            blocks.append(_pdf_paragraph(para, page, label, words, compounds))
        para = []

    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            flush()
            continue
        if i in edges and _furniture_key(line) in furniture:
            flush()  # "Network UPS Tools User Manual 46 / 123"
            continue
        level = heading_level(line, capitals=False, sentence_case=True)
        if level:
            flush()
            blocks.append(Block(line, i + 1, i + 1, page, level, label))
            continue
        if para and (_BULLET.match(line) or len(para[-1][1]) < FULL_LINE * width or para[-1][1].endswith(":")):
            flush()
        para.append((i + 1, line))
    flush()
    return blocks


def pdf_blocks(data: bytes) -> list[Block]:
    """Text of each page (PDFium, pypdf as the fallback: :mod:`assistant.retrieval.pdftext`),
    in paragraphs; lines are counted within the page."""
    return pdf_document(data)[0]


def pdf_document(data: bytes) -> tuple[list[Block], str]:
    """(blocks, title) of a PDF: paragraphs and numbered headings recovered from each
    page's lines, running headers and footers dropped, printed page labels kept."""
    from assistant.retrieval.pdftext import PdfUnreadable, pdf_text

    try:
        read, title = pdf_text(data)
    except PdfUnreadable as exc:
        raise Unreadable(str(exc)) from exc
    pages = [clean(page.text).split("\n") for page in read]
    labels = [page.label for page in read]
    furniture = _running_lines(pages)
    text = "\n".join("\n".join(lines) for lines in pages)
    words = {w.lower() for w in re.findall(r"[^\W\d_]+", text)}
    compounds = {w.lower() for w in re.findall(r"[^\W\d_]+-[^\W\d_]+", text)}
    lengths = sorted(len(line.strip()) for lines in pages for line in lines if line.strip())
    width = float(lengths[int(0.9 * (len(lengths) - 1))]) if lengths else 80.0
    blocks: list[Block] = []
    for number, lines in enumerate(pages, start=1):
        blocks.extend(_pdf_page(lines, number, labels[number - 1], furniture, width, words, compounds))
    if not blocks:
        raise Unreadable("PDF has no extractable text (scanned images need OCR first)")
    blocks = _split_trailing_chapters(blocks)
    _chapters(blocks)
    title = " ".join(clean(title).split()) or next((b.text for b in blocks if b.level), "")
    return blocks, title[:200]


_CHAPTER = re.compile(r"^(\d{1,3}|[A-Z])\s+([^\W\d_][^.:;,]*)$")


def _split_trailing_chapters(blocks: list[Block]) -> list[Block]:
    """A chapter title that PDFium ran into the paragraph before it ("… (upstype=5).\nH
    Configure options") is split off, when its sections follow ("H.1 …"), so that
    :func:`_chapters` can see it."""
    out: list[Block] = []
    for i, block in enumerate(blocks):
        lines = block.text.split("\n")
        found = _CHAPTER.match(lines[-1]) if len(lines) > 1 and not block.level else None
        spans = block.spans or []
        if found is None or len(spans) != len(lines) or len(lines[-1]) > HEADING_MAX_CHARS:
            out.append(block)
            continue
        following = next((b for b in blocks[i + 1 : i + 40] if b.level), None)
        if following is None or not following.text.startswith(f"{found.group(1)}."):
            out.append(block)
            continue
        first, last = spans[-1]
        out.append(replace(block, text="\n".join(lines[:-1]), line_end=spans[-2][1], spans=spans[:-1]))
        out.append(Block(lines[-1], first, last, block.page, 0, block.page_label))
    return out


def _chapters(blocks: list[Block]) -> None:
    """Chapter titles in sentence case ("4 Download information"): a bare number and a
    title could as well be a wrapped line of body text ("4 minutes before the battery"),
    so one is a heading only when the number is the next chapter's and the next numbered
    heading is one of its sections ("4.1 Source code"). Without this every section after
    "3 Features" was filed under it."""
    chapter, appendix = 0, ""
    for i, block in enumerate(blocks):
        m = _SECTION.match(block.text) if block.level == 1 else None
        if m and m.group(1) and m.group(1).isdigit():
            chapter = int(m.group(1))
            continue
        found = _CHAPTER.match(block.text) if not block.level and "\n" not in block.text else None
        if not found or len(block.text) > HEADING_MAX_CHARS:
            continue
        number = found.group(1)
        # Chapters count up one by one; appendices ("A Glossary", "B …") come after the
        # chapters, in letter order (one may be missing from the text layer).
        if not (number == str(chapter + 1) if number.isdigit() else chapter and number > appendix):
            continue
        following = next((b for b in blocks[i + 1 : i + 40] if b.level), None)
        sections_follow = following is not None and following.text.startswith(f"{number}.")
        # An appendix without numbered sections ("A Glossary", "D Hardware Compatibility
        # List"): a short title-case line, at most two letters after the last appendix.
        short_appendix = (
            number.isalpha()
            and ord(number) <= ord(appendix or "@") + 2
            and len(found.group(2).split()) <= 6
            and _title_case(found.group(2))
        )
        if sections_follow or short_appendix:
            block.level = 1
            block.keep = False
            if number.isdigit():
                chapter += 1
            else:
                appendix = number


# --------------------------------------------------------------------------- DOCX
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def docx_blocks(data: bytes) -> list[Block]:
    """Paragraphs of a Word document; "lines" are paragraph numbers (1-based).

    The zip is checked before anything is inflated: a document part that would
    inflate past 64 MiB, or by more than 200×, is refused as a likely zip bomb, and
    XML with a DTD (entity expansion) is refused outright.
    """
    root = _docx_root(data)
    blocks: list[Block] = []
    for number, para in enumerate(root.iter(f"{_W}p"), start=1):
        text = clean(_docx_text(para)).strip()
        if text:
            blocks.append(Block(text, number, number, level=_docx_level(para)))
    return blocks


def _docx_xml(data: bytes) -> bytes:
    """The document part of a .docx, checked against zip bombs before it is inflated."""
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
    return xml


def _docx_root(data: bytes) -> ElementTree.Element:
    """The parsed document XML (one that declares entities is refused)."""
    xml = _docx_xml(data)
    if b"<!DOCTYPE" in xml[:4096] or b"<!ENTITY" in xml:
        raise Unreadable("refused: the document XML declares entities (an XML bomb?)")
    try:
        return ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise Unreadable(f"damaged .docx: {exc}") from exc


def _docx_text(para: ElementTree.Element) -> str:
    """One paragraph's text: runs, tabs and line breaks."""
    pieces: list[str] = []
    for node in para.iter():
        if node.tag == f"{_W}t" and node.text:
            pieces.append(node.text)
        elif node.tag == f"{_W}tab":
            pieces.append("\t")
        elif node.tag in (f"{_W}br", f"{_W}cr"):
            pieces.append("\n")
    return "".join(pieces)


def _docx_level(para: ElementTree.Element) -> int:
    """The heading level of a paragraph from its style: Title 1, Heading N N+1, else 0."""
    style = para.find(f"{_W}pPr/{_W}pStyle")
    if style is None:
        return 0
    name = (style.get(f"{_W}val") or "").lower()
    if name == "title":
        return 1
    if name.startswith("heading"):
        digits = "".join(ch for ch in name if ch.isdigit())
        return (int(digits) if digits else 1) + 1  # the Title sits above Heading 1
    return 0


# --------------------------------------------------------------------------- gzip
def gunzip(data: bytes, max_bytes: int) -> bytes:
    """The decompressed bytes of a gzip file, at most ``max_bytes`` of them. Raises
    :class:`Unreadable` for a damaged file, or for one that would decompress past the
    per-file limit (a gzip bomb inflates ~1000×: 1 MB on disk, 1 GB in memory), which is
    never decompressed further than the limit."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            out = fh.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise Unreadable(f"damaged gzip file ({_gzip_problem(exc)})") from exc
    if len(out) > max_bytes:
        raise Unreadable(
            f"refused: it decompresses to more than {max_bytes / 2**20:.0f} MiB, the limit for one file "
            "(setting docs_max_file_mb; a gzip bomb?)"
        )
    return out


def _gzip_problem(exc: BaseException) -> str:
    """What is wrong with a gzip file, in a few words ("not a gzip file", "cut short")."""
    text = str(exc)
    if isinstance(exc, EOFError):
        return "cut short: the compressed data ends early"
    if "Not a gzipped file" in text:
        return "not a gzip file: no gzip header"
    if isinstance(exc, zlib.error):  # "Error -3 while decompressing data: invalid code lengths set"
        return "corrupt compressed data: " + text.rpartition(": ")[2][:80]
    return text.strip().rstrip(".")[:100] or type(exc).__name__


# --------------------------------------------------------------------------- entry point
#: A "suffix" that is a version number ("LGPL-2.1", "Apache-2.0", "CC0-1.0") is part of
#: the name, not a file type.
_VERSION_SUFFIX = re.compile(r"^\.\d+[a-z]?$", re.IGNORECASE)
#: Debian's own notes are named README.Debian, NEWS.Debian, changelog.Debian.amd64: a
#: name, not a file type (724 of the 1,600 .gz files in a desktop's /usr/share/doc).
_DEBIAN_NAME = re.compile(r"\.debian(?:\.[\w-]+)?$", re.IGNORECASE)
SNIFF_BYTES = 8192


def sniff(head: bytes) -> str | None:
    """The kind of a file without a known suffix, from its first bytes: a PDF, an HTML
    page, plain text, or None (binary, or a format Enclave does not read)."""
    if head.startswith(b"%PDF"):
        return "pdf"
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith(b"<?xml"):
        start = start[start.find(b"?>") + 2 :].lstrip()
    if start[:64].lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    try:
        decode(head)
    except Unreadable:
        return None
    return "text"


def compressed(path: Path) -> bool:
    """Whether Enclave reads ``path`` as gzip-compressed (its name ends in .gz)."""
    return path.suffix.lower() == GZIP_SUFFIX


def file_kind(path: Path) -> tuple[str | None, str]:
    """(kind, why not) for ``path``: by its suffix, or by its content when it has none
    (``/usr/share/common-licenses/GPL-3``) or only a version number for one. A
    ``NAME.EXT.gz`` is the kind of ``NAME.EXT``; a suffix-less one (``changelog.gz``)
    is sniffed from its first decompressed bytes."""
    gz = compressed(path)
    name = path.stem if gz else path.name
    suffix = Path(name).suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix], ""
    if suffix and not _VERSION_SUFFIX.match(suffix) and not _DEBIAN_NAME.search(name):
        return None, f"unsupported file type {Path(name).suffix}{path.suffix if gz else ''}"
    try:
        with gzip.open(path, "rb") if gz else path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except PermissionError:
        return None, "permission denied"
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return None, f"damaged gzip file ({_gzip_problem(exc)})"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "text", ""  # empty: parse() says so
    kind = sniff(head)
    return kind, "" if kind else "no file-type suffix and the content is not text"


def read_document(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` as its parser reads them: within the per-file limit, a .gz
    file decompressed (to at most ``max_bytes`` as well). Raises :class:`Unreadable`."""
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
    if compressed(path):
        data = gunzip(data, max_bytes)
        if not data:
            raise Unreadable("empty once decompressed (0 bytes)")
    return data


def parse(path: Path, max_bytes: int) -> Parsed:
    """Read ``path`` into its blocks (a .gz file as the file inside: line numbers are
    those of the decompressed text). Raises :class:`Unreadable`."""
    kind, why = file_kind(path)
    if kind is None:
        raise Unreadable(why)
    data = read_document(path, max_bytes)
    note = ""
    if kind == "pdf":
        if not data.startswith(b"%PDF"):
            raise Unreadable("not a PDF (no %PDF header)")
        blocks, title = pdf_document(data)
    elif kind == "docx":
        blocks = docx_blocks(data)
        title = next((b.text for b in blocks if b.level), "")
    else:
        text, note = decode(data)
        if kind == "html":
            blocks, title = html_document(text)
        else:
            blocks = text_blocks(text, kind)
            title = text_title(blocks)
    if not any(b.text.strip() for b in blocks):
        raise Unreadable("no text in it")
    return Parsed(kind, blocks, note, title[:200])
