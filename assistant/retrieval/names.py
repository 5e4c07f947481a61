"""Which documents a question names: "the LGPL 2.1", "Apache License 2.0", "the FAQ".

A document is named by its file name ("LGPL-2.1" → the phrase *lgpl* and the version
*2.1*) or by its title ("MOZILLA PUBLIC LICENSE Version 1.1" → *mozilla public
license*, *1.1*). A question names it when it contains the phrase, and, if it gives a
version right after it (within three words: "Apache License 2.0") or before it
("version 1 of the GNU General Public License"), that version is the document's ("GPL-2" does not name the GPL-3; "the GPL" names every GPL).

Two uses, both in the user's favour: search ranks the named documents' passages
higher (the issue's "the LGPL 2.1 warranty clause" found LGPL-2.1's NO WARRANTY
section 7th), and an answer to a question that names documents is taken from those
documents only — a sentence from the GPL-3 does not answer a question about the
GPL-2, however close its words (a named entity must match).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

_TOKEN = re.compile(r"[^\W_]+(?:\.\d+)*", re.UNICODE)
_VERSIONISH = re.compile(r"^v?\d+(?:\.\d+)*$")
#: Words after a name that stand between it and its version ("Apache License 2.0",
#: "GPL version 3").
VERSION_GAP = 3
#: A title is a usable name only while short; longer ones are never typed in a question.
MAX_NAME_WORDS = 6

Strength = Literal["version", "plain"]


def tokens(text: str) -> list[str]:
    """Lower-case words and version numbers; "GPLv3" and "GPL-3" both give gpl, 3."""
    out: list[str] = []
    for raw in _TOKEN.findall(text.lower()):
        # Split a name glued to its version ("gplv3", "lgpl2"), but not "cc0" or "x86".
        m = re.fullmatch(r"([^\W\d_]{2,}?)v?(\d+(?:\.\d+)*)", raw)
        if m and len(m.group(1)) >= 3:
            out.extend([m.group(1), m.group(2)])
        else:
            out.append(raw.removeprefix("v") if _VERSIONISH.match(raw) else raw)
    return out


def _same_version(a: str, b: str) -> bool:
    def norm(v: str) -> tuple[int, ...]:
        parts = [int(p) for p in v.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    return norm(a) == norm(b)


@dataclass(frozen=True)
class DocumentName:
    """One way to name a document: a phrase and an optional version."""

    phrase: tuple[str, ...]
    version: str | None
    acronym: bool  # written in capitals in the file name ("BSD", "FAQ", "GPL")

    @classmethod
    def parse(cls, text: str) -> DocumentName | None:
        words = tokens(text)
        phrase: list[str] = []
        version = None
        for word in words:
            if _VERSIONISH.match(word):
                version = word if phrase else None
                break
            if word == "version" and phrase:
                continue
            phrase.append(word)
        if not phrase or len(phrase) > MAX_NAME_WORDS or phrase == ["version"]:
            return None
        letters = re.sub(r"[^A-Za-z]", "", text.split("-")[0].split("_")[0])
        return cls(tuple(phrase), version, len(letters) >= 2 and letters.isupper())

    def match(self, query: list[str], raw: str) -> Strength | None:
        """How ``query`` (its :func:`tokens`; ``raw`` as typed) names this document."""
        n = len(self.phrase)
        for i in range(len(query) - n + 1):
            if tuple(query[i : i + n]) != self.phrase:
                continue
            after = [w for w in query[i + n : i + n + VERSION_GAP] if _VERSIONISH.match(w)]
            before = query[max(0, i - VERSION_GAP - 1) : i]
            if not after and "version" in before:
                # "version 1 of the GNU General Public License"
                k = before.index("version")
                after = [w for w in before[k + 1 : k + 2] if _VERSIONISH.match(w)]
            if after and self.version is not None:
                if _same_version(after[0], self.version):
                    return "version"
                continue  # another version of the same name
            if self.version is not None or n > 1 or self.acronym or _capitalised(raw, self.phrase[0]):
                return "plain"
            # A single common word ("manual", "notes") typed in lower case names nothing.
        return None


def _capitalised(raw: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", raw, re.IGNORECASE) is not None and not re.search(
        rf"\b{re.escape(word)}\b", raw
    )


def document_names(path: str, title: str) -> list[DocumentName]:
    """The names of a document: its file name (without a known suffix) and its title."""
    stem = PurePath(path).name
    if re.search(r"\.[A-Za-z]{2,5}$", stem):
        stem = stem.rsplit(".", 1)[0]
    names = [DocumentName.parse(stem)]
    if title:
        names.append(DocumentName.parse(title))
    return [n for n in names if n is not None]


def named(query: str, documents: Iterable[tuple[int, str, str]]) -> dict[int, Strength]:
    """The documents (id, path, title) that ``query`` names, with how strongly."""
    return NameIndex((doc_id, 0, path, title) for doc_id, path, title in documents).named(query)


class NameIndex:
    """The names of many documents, filed by the first word of each name.

    A name can only match a question that contains its first word, so a question is
    compared with the few names that share a word with it instead of every document's
    (a million-passage collection holds tens of thousands of documents; parsing and
    matching each one took ~18 µs, ~360 ms per search at 1M passages)."""

    def __init__(self, documents: Iterable[tuple[int, int, str, str]]) -> None:
        """``documents``: (document id, collection id, path, title)."""
        self.by_word: dict[str, list[tuple[int, int, DocumentName]]] = {}
        for doc_id, collection, path, title in documents:
            for name in document_names(path, title):
                self.by_word.setdefault(name.phrase[0], []).append((doc_id, collection, name))

    def named(self, query: str, collections: Collection[int] | None = None) -> dict[int, Strength]:
        """The documents (of ``collections``, or all) that ``query`` names, with how strongly:
        a name that gives the document's version wins over a plain one."""
        words = tokens(query)
        found: dict[int, Strength] = {}
        for word in dict.fromkeys(words):
            for doc_id, collection, name in self.by_word.get(word, ()):
                if collections is not None and collection not in collections:
                    continue
                strength = name.match(words, query)
                if strength == "version" or (strength == "plain" and doc_id not in found):
                    found[doc_id] = strength
        return found
