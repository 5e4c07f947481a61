"""Split a document's blocks into passages that fit the embedding model and a prompt.

Chunks follow the document's structure: a heading starts a new chunk and is kept
as the chunk's section path; paragraphs are packed together up to a token target;
a chunk never spans two pages (a citation names one page); a paragraph longer
than the limit is cut at line, then sentence, then word boundaries. Token counts
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


@dataclass
class Chunk:
    """One passage: its text, the section it sits in, and where it is in the file."""

    text: str
    heading: str
    page: int | None
    line_start: int
    line_end: int
    tokens: int

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
    if len(lines) > 1:
        span = block.line_end - block.line_start
        exact = span == len(lines) - 1  # the block's lines are the file's lines
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            number = block.line_start + i if exact else block.line_start
            yield from _pieces(Block(line, number, number if exact else block.line_end, block.page), count, limit)
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
            yield Block(sentence, block.line_start, block.line_end, block.page)


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

    def flush() -> None:
        nonlocal parts, used
        if parts:
            # Paragraphs keep their blank line; pieces of one cut paragraph are rejoined.
            text = parts[0][1].text
            for (before, _), (index, piece) in zip(parts, parts[1:], strict=False):
                text += ("\n" if index == before else "\n\n") + piece.text
            chunks.append(
                Chunk(
                    text=text,
                    heading=section(),
                    page=parts[0][1].page,
                    line_start=min(p.line_start for _, p in parts),
                    line_end=max(p.line_end for _, p in parts),
                    tokens=used,
                )
            )
        parts, used = [], 0

    for index, block in enumerate(blocks):
        if block.level:
            flush()
            headings = {lvl: text for lvl, text in headings.items() if lvl < block.level}
            headings[block.level] = block.text.replace("\n", " ")[:200]
            continue
        for piece in _pieces(block, count, limit):
            size = count(piece.text)
            if parts and (piece.page != parts[0][1].page or used + size > target):
                flush()
            parts.append((index, piece))
            used += size
    flush()
    return chunks
