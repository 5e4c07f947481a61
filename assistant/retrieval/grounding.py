"""Sentences of the sources, and whether one of them states a claim.

Two jobs, both pure functions of text:

* :func:`sentences` cuts a passage into sentences that keep their exact place (the
  source lines each spans, through the passage's line map), so an answer can quote
  one verbatim with its location. It respects abbreviations ("e.g.", "No."),
  numbers ("1.5", "2.1"), list items (a bullet or "1." at a line start) and
  lines that introduce a list (ending in ":"), and it never splits where the next
  word starts in lower case.
* :func:`states` is the strict check behind every "supported" label: one source
  sentence states a claim only when most of the claim's words are in it (or in its
  section heading), and every quantity of the claim is a quantity of the sentence
  with the same unit and shape ("3 years" is not stated by "3-5 years", "60 days"
  not by "30 days", "10" not by "2, 5, 7, or 10 minutes"), the negation agrees
  ("does not initiate" vs "initiates"), and every name, command or identifier of
  the claim appears in the sentence or its context (the section, the document's
  title or file name).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from assistant.retrieval.chunker import LineMap

# --------------------------------------------------------------------------- words
_WORD = re.compile(r"\w+", re.UNICODE)
STOP = frozenset(
    "a an and are as at be been but by can could do does for from had has have how i if in into is it its "
    "may me might must my of on or our shall should so such than that the their them then there these they "
    "this those to was we were what when where which while who whom whose why will with would you your".split()
)
#: Number words read as their figures ("thirty days" is "30 days").
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "ninety": "90", "hundred": "100"}


def stem(word: str) -> str:
    """A crude stem: the first six letters, lower case ("configuration" ~ "configure")."""
    return word.lower()[:6]


def content_words(text: str) -> set[str]:
    """Stems of the words that carry meaning (stop words left out)."""
    return {stem(w) for w in _WORD.findall(text) if w.lower() not in STOP}


# --------------------------------------------------------------------------- sentences
#: Abbreviations after which a period does not end a sentence.
ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf al approx ca esp resp viz mr mrs ms dr prof st inc ltd co corp no nos fig figs sec "
    "secs ch vol pp p para art ref ed eds jan feb mar apr jun jul aug sep sept oct nov dec min max u.s a.m "
    "p.m".split()
)
_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)")
_ITEM = re.compile(r"^\s*(?:[•◦▪‣∙·*–—-]|\(?\d{1,2}[.)]|\(?[a-z][.)])\s")
#: A list marker or clause number opening a sentence ("3.", "a)", "(b)", "•"): structure,
#: not part of what the sentence says, so a quote starts after it.
_MARKER = re.compile(r"^(?:[•◦▪‣∙·*–—-]|\(?(?:\d{1,3}|[a-zA-Z]|[ivx]{1,4})[.)])\s+")
MIN_SENTENCE_WORDS = 3


@dataclass(frozen=True)
class Sentence:
    """One sentence of a passage, where it is in the passage and in its file."""

    n: int  # the passage's number
    index: int  # its position in the passage
    text: str  # verbatim, with line breaks as spaces
    start: int  # offsets in the passage text
    end: int
    line_start: int
    line_end: int


def _hard_breaks(text: str) -> list[int]:
    """Offsets where a sentence must end whatever the punctuation: paragraph breaks,
    list items, and the line after one that ends in a colon."""
    breaks: list[int] = []
    offset = 0
    lines = text.split("\n")
    longest = max((len(line.rstrip()) for line in lines), default=0)
    for i, line in enumerate(lines):
        if i > 0:
            previous = lines[i - 1].rstrip()
            # A list item that stops short of the line's end is over.
            ended_item = bool(_ITEM.match(previous)) and len(previous) < 0.6 * longest
            if not line.strip() or not previous or _ITEM.match(line) or previous.endswith(":") or ended_item:
                breaks.append(offset)
        offset += len(line) + 1
    return breaks


def _boundary(text: str, match: re.Match[str]) -> bool:
    """Is this run of end punctuation the end of a sentence?"""
    end = match.end()
    rest = text[end:].lstrip()
    if not rest:
        return True
    first = rest[0]
    if first.islower():
        return False  # "e.g. the", "3.5 mm. and" …: a sentence starts with a capital
    line = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
    if _MARKER.match(line.strip() + match.group(0)[:1] + " ") and len(line.strip()) <= 4:
        return False  # "3." or "a." opening a line numbers what follows
    if "." in match.group(0) and not match.group(0).startswith(("!", "?")):
        before = re.search(r"([\w.]+)$", text[: match.start()])
        word = before.group(1).lower() if before else ""
        if word.rstrip(".") in ABBREVIATIONS:
            return False
        if len(word) == 1 and word.isalpha():
            return False  # an initial: "J. Smith", "A. Use in the Title Page"
    return True


def split(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of ``text`` (whitespace trimmed)."""
    cuts = {0, len(text)}
    cuts.update(_hard_breaks(text))
    for match in _END.finditer(text):
        if _boundary(text, match):
            cuts.add(match.end())
    spans: list[tuple[int, int]] = []
    ordered = sorted(cuts)
    for a, b in zip(ordered, ordered[1:], strict=False):
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece.rstrip())
        if piece.strip():
            marker = _MARKER.match(piece[lead:])
            if marker and lead + marker.end() < trail:
                lead += marker.end()
            spans.append((a + lead, a + trail))
    # A fragment of one or two words ("Note:", "1.") joins the sentence after it.
    merged: list[tuple[int, int]] = []
    carry: int | None = None
    for a, b in spans:
        start = a if carry is None else carry
        if len(_WORD.findall(text[a:b])) < MIN_SENTENCE_WORDS and (a, b) != spans[-1]:
            carry = start
            continue
        merged.append((start, b))
        carry = None
    return merged


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset)


def sentences(
    n: int, text: str, line_map: LineMap | None, line_start: int, line_end: int, *, shortened: bool = False
) -> list[Sentence]:
    """The sentences of passage ``n`` with their source lines. Without a line map (a
    passage indexed before Enclave kept one) each sentence gets the passage's lines.
    A ``shortened`` passage's cut-off last sentence is left out."""
    out: list[Sentence] = []
    lines = text.count("\n") + 1
    usable = line_map is not None and len(line_map) == lines
    spans = split(text)
    if shortened and spans:
        spans = spans[:-1]
    for index, (a, b) in enumerate(spans):
        first, last = line_start, line_end
        if usable and line_map is not None:
            covered = [s for s in line_map[_line_of(text, a) : _line_of(text, b) + 1] if s is not None]
            if covered:
                first, last = min(s[0] for s in covered), max(s[1] for s in covered)
        out.append(Sentence(n, index, " ".join(text[a:b].split()), a, b, first, last))
    return out


# --------------------------------------------------------------------------- claims
_NUM = r"(?:\d+(?:[.,]\d+)*|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"
_QUANTITY = re.compile(
    rf"(?<![\w.\-/:])(?P<values>(?:-(?=\d))?{_NUM}(?:\s*(?:-|–|to)\s*{_NUM}"
    rf"|(?:\s*,\s*{_NUM})*(?:\s*,?\s*(?:or|and)\s+{_NUM})?))"
    r"(?:\s*(?P<unit>%|[^\W\d_]+))?",
    re.IGNORECASE,
)
_NEGATION = re.compile(r"\b(?:not|no|never|none|cannot|neither|nor|without)\b|n['’]t\b", re.IGNORECASE)
#: Words that follow a figure but are not its unit ("60 is appropriate").
_NOT_UNITS = STOP | {"or", "and", "to", "also", "only", "more", "less", "than", "times"}


@dataclass(frozen=True)
class Quantity:
    """A figure as a sentence gives it: its values, their shape, and its unit."""

    values: tuple[str, ...]
    shape: Literal["single", "range", "list"]
    unit: str | None


def _number(token: str) -> str:
    token = token.lower()
    return NUMBER_WORDS.get(token, token.replace(",", ""))


def _unit(word: str | None) -> str | None:
    if not word:
        return None
    word = word.lower()
    if word in ("%", "percent", "per"):
        return "%" if word != "per" else None
    if word in _NOT_UNITS:
        return None
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def quantities(text: str) -> list[Quantity]:
    """The figures of ``text``: "3-5 years" is one range, "2, 5, 7, or 10 minutes" one list."""
    out: list[Quantity] = []
    for m in _QUANTITY.finditer(text):
        raw = m.group("values")
        if not re.search(r"\d", raw) and not m.group("unit"):
            continue  # a bare number word ("one of the") is not a figure
        found = [_number(v) for v in re.findall(_NUM, raw, re.IGNORECASE)]
        if raw.startswith("-"):
            found[0] = "-" + found[0]
        values = tuple(found)
        shape: Literal["single", "range", "list"] = "single"
        if len(values) > 1:
            shape = "range" if re.search(rf"{_NUM}\s*(?:-|–|to)\s*{_NUM}", raw, re.IGNORECASE) else "list"
        out.append(Quantity(values, shape, _unit(m.group("unit"))))
    return out


def negated(text: str) -> bool:
    return _NEGATION.search(text) is not None


def names(text: str) -> set[str]:
    """Names, commands and identifiers in ``text``: capitalised words not opening the
    sentence, words in capitals, words with digits or ``/ _ . -`` inside ("GPL-3",
    "/etc/nut", "upsdrvctl", "POLLTIME")."""
    found: set[str] = set()
    for i, m in enumerate(re.finditer(r"[^\s\"'“”‘’(),;:!?]+", text)):
        token = m.group(0).rstrip(".")
        core = token.strip("[]{}<>*`")
        if len(core) < 2 or core.lower() in STOP:
            continue
        if core.isupper() and any(c.isalpha() for c in core):
            found.add(core.lower())
        elif re.search(r"[A-Za-z]", core) and re.search(r"\d|[/_]|\w[.-]\w", core):
            found.add(core.lower())
        elif i > 0 and core[0].isupper() and any(c.islower() for c in core[1:]):
            found.add(core.lower())
    return found


@dataclass(frozen=True)
class Verdict:
    """Why a sentence does or does not state a claim (the first reason that failed)."""

    stated: bool
    reason: str = ""


#: Words with which a model frames an answer, not what it claims ("The answer is: …",
#: "According to the document, …", "The GPL-3 gives you 30 days …"): a source need not
#: contain them. Stems, as :func:`content_words` gives them.
FRAMING = frozenset(
    stem(w)
    for w in "answer according document documents source sources passage passages text states stated says "
    "said mentions mentioned specifies specified gives give given provides provided also yes here "
    # prepositions: the words they relate are checked ("under the GPL-3", "after notice")
    "about above after against along among around before below between beyond during over per prior "
    "since through under until upon via within".split()
)


#: Fewest words a claim must say beyond the name of the document it is about.
MIN_OWN_WORDS = 2


def check(claim: str, sentence: str, context: str = "", document: str = "") -> Verdict:
    """Does ``sentence`` (with ``context``: its section heading, the document's title
    and file name) state ``claim``? See the module docstring for the rules.

    ``document`` is what names the document (its title and file name). Those words are
    in every sentence's context, so they are no evidence that this sentence says what
    the claim says: "You cannot use the trademarks under Apache 2.0" is not stated by
    Apache-2.0's "Licensed under the Apache License, Version 2.0 … you may not use this
    file", which shares only the licence's name and "use". They are left out of the
    share of words (and a claim that says nothing else is not checkable); names must
    still be found."""
    mine = content_words(claim)
    if len(mine) < MIN_SENTENCE_WORDS:
        return Verdict(False, "too short to check")
    own = mine - content_words(document)
    if len(own) < MIN_OWN_WORDS:
        return Verdict(False, "says nothing beyond the document's name")
    theirs = content_words(sentence) | content_words(context)
    # Every word the claim says must be the source's: a share let a condition or a
    # time through ("if the matter settles before trial" backed by "if the matter
    # proceeds to trial"; "the current head" by "served as head … until January 2024").
    # Number words count as their figures ("three years" is "3 years").
    figure = {stem(w): n for w, n in NUMBER_WORDS.items()}
    theirs |= {figure.get(w, w) for w in theirs}
    unsaid = sorted(w for w in own - FRAMING - theirs if figure.get(w, w) not in theirs)
    if unsaid:
        return Verdict(False, f"the source does not say {unsaid[0]!r}")
    given = quantities(sentence)
    named = set(re.findall(r"\d+(?:\.\d+)*", document))  # "Apache 2.0" names the document
    for q in quantities(claim):
        if q.unit is None and named.issuperset(q.values):
            continue
        if not any(_same_quantity(q, g, sentence + " " + context) for g in given):
            return Verdict(False, f"no source figure {' '.join(q.values)}{' ' + q.unit if q.unit else ''}")
    if negated(claim) != negated(sentence):
        return Verdict(False, "negation differs")
    where = (sentence + " " + context + " " + document).lower()
    missing = [n for n in names(claim) if n not in where]
    if missing:
        return Verdict(False, f"{missing[0]} is not in the source")
    return Verdict(True)


def states(claim: str, sentence: str, context: str = "", document: str = "") -> bool:
    """True when ``sentence`` states ``claim`` (:func:`check`)."""
    return check(claim, sentence, context, document).stated


def _same_quantity(claim: Quantity, source: Quantity, source_text: str) -> bool:
    if claim.values != source.values or claim.shape != source.shape:
        return False
    if claim.unit == source.unit:
        return True
    if source.unit is None and claim.unit is not None:
        # "The default of 60 …" under "POLLTIME time in seconds": the unit is in the context.
        return re.search(rf"\b{re.escape(claim.unit)}", source_text, re.IGNORECASE) is not None
    return claim.unit is None and source.shape == "single"


def claims(text: str) -> list[str]:
    """The sentences of an answer, each once (a model that loops repeats one sentence;
    repetitions are one claim, not more support)."""
    seen: set[str] = set()
    out: list[str] = []
    for a, b in split(text):
        sentence = " ".join(text[a:b].split())
        key = " ".join(sentence.lower().split())
        if sentence and key not in seen:
            seen.add(key)
            out.append(sentence)
    return out


def supported_by(claim: str, candidates: Sequence[tuple[Sentence, str]]) -> Sentence | None:
    """The first of ``candidates`` (a sentence and its context) that states ``claim``."""
    for sentence, context in candidates:
        if states(claim, sentence.text, context):
            return sentence
    return None
