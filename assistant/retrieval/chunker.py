"""Split a document's blocks into passages that fit the embedding model and a prompt.

Chunks follow the document's structure: a heading starts a new chunk and is kept
as the chunk's section path (never glued to the end of the passage before it); a
block marked ``keep`` (a definition's term, a line ending in a colon) moves to the
next chunk rather than end one; paragraphs are packed together up to a token
target; a chunk never spans two pages (a citation names one page); a paragraph
longer than the limit is cut at line, then sentence, then word boundaries. Each
chunk keeps a line map: for every line of its text, the source lines it came
from, so that a sentence quoted from a passage can be located exactly. Token counts
come from the embedding model's tokenizer when it is installed (so the vector
sees the whole chunk: all-MiniLM-L6-v2 reads 256 word pieces), otherwise from a
words × 1.3 estimate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from assistant.retrieval.parsers import Block

#: Chunk sizes in tokens, chosen with scripts/measure_retrieval.py (see issue #6's note).
TARGET_TOKENS = 160
LIMIT_TOKENS = 240


#: For each line of a passage's text, its first and last source line (None for the
#: blank line between two paragraphs).
LineMap = list[tuple[int, int] | None]


@dataclass
class Chunk:
    """One passage: its text, the section it sits in, and where it is in the file."""

    text: str
    heading: str
    page: int | None
    line_start: int
    line_end: int
    tokens: int
    page_label: str | None = None
    line_map: LineMap | None = None

    @property
    def indexed_text(self) -> str:
        """What the search indexes: the section path, then the passage."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def estimate_tokens(text: str) -> int:
    return int(len(text.split()) * 1.3) + 1


_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


def _pieces(block: Block, count: Callable[[str], int], limit: int) -> Iterator[Block]:
    """Cut an over-long block at lines, then sentences, then words."""
    if count(block.text) <= limit:
        yield block
        return
    lines = block.text.split("\n")
    spans = block.line_spans()
    if len(lines) > 1:
        for line, (first, last) in zip(lines, spans, strict=True):
            if line.strip():
                piece = Block(line, first, last, block.page, page_label=block.page_label, keep=block.keep)
                yield from _pieces(piece, count, limit)
        return
    sentences = _SENTENCE.split(block.text)
    if len(sentences) == 1:
        words = block.text.split()
        step = max(1, int(limit / 1.6))  # word pieces per word is about 1.3-1.6
        sentences = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
        if len(sentences) == 1:  # one enormous "word": cut by characters
            text = block.text
            sentences = [text[i : i + limit * 3] for i in range(0, len(text), limit * 3)]
    for sentence in sentences:
        if sentence.strip():
            yield Block(sentence, block.line_start, block.line_end, block.page, page_label=block.page_label)


def _joined(parts: list[tuple[int, Block]]) -> tuple[str, LineMap]:
    """The text of one chunk and its line map: paragraphs keep their blank line, pieces of
    one cut paragraph are rejoined."""
    text = parts[0][1].text
    line_map: LineMap = list(parts[0][1].line_spans())
    for (before, _), (index, piece) in zip(parts, parts[1:], strict=False):
        text += ("\n" if index == before else "\n\n") + piece.text
        if index != before:
            line_map.append(None)
        line_map.extend(piece.line_spans())
    return text, line_map


def chunk_blocks(
    blocks: list[Block],
    count: Callable[[str], int] = estimate_tokens,
    target: int = TARGET_TOKENS,
    limit: int = LIMIT_TOKENS,
) -> list[Chunk]:
    """Pack ``blocks`` into chunks of about ``target`` tokens (never above ``limit``
    unless a single sentence is longer)."""
    chunks: list[Chunk] = []
    headings: dict[int, str] = {}
    parts: list[tuple[int, Block]] = []  # (index of the block it came from, piece)
    used = 0

    def section() -> str:
        return " › ".join(headings[level] for level in sorted(headings))

    def flush(carry: bool = False) -> None:
        nonlocal parts, used
        kept: list[tuple[int, Block]] = []
        if carry:
            # A term or a label line introduces what follows: it starts the next chunk.
            while len(parts) > 1 and parts[-1][1].keep:
                kept.insert(0, parts.pop())
        if parts:
            text, line_map = _joined(parts)
            first = parts[0][1]
            chunks.append(
                Chunk(
                    text=text,
                    heading=section(),
                    page=first.page,
                    line_start=min(p.line_start for _, p in parts),
                    line_end=max(p.line_end for _, p in parts),
                    tokens=sum(count(p.text) for _, p in parts) if kept else used,
                    page_label=first.page_label,
                    line_map=line_map,
                )
            )
        parts = kept
        used = sum(count(p.text) for _, p in parts)

    for index, block in enumerate(blocks):
        if block.level:
            flush()
            headings = {lvl: text for lvl, text in headings.items() if lvl < block.level}
            headings[block.level] = block.text.replace("\n", " ")[:200]
            continue
        for piece in _pieces(block, count, limit):
            size = count(piece.text)
            if parts and piece.page != parts[0][1].page:
                flush()
            elif parts and used + size > target:
                flush(carry=True)
            parts.append((index, piece))
            used += size
    flush()
    return chunks
