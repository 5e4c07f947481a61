"""The retrieval-quality corpus keeps its promises: same bytes every run, answers that are
really in their files, unanswerable questions without a path, files that parse, and
paraphrased questions that do not simply repeat the document's words."""

from __future__ import annotations

import html.parser
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS_SCRIPT = ROOT / "tests" / "data" / "retrieval_corpus.py"

from tests.data.retrieval_corpus import (  # noqa: E402
    QUESTIONS_FILE,
    CorpusError,
    load_questions,
    normalise,
    visible_text,
    write_bulk,
    write_corpus,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _generate(out: Path, hash_seed: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(CORPUS_SCRIPT), str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_two_runs_write_byte_identical_corpora(tmp_path: Path, corpus: Path) -> None:
    # Separate processes with different hash seeds: set or dict ordering must not leak in.
    first, second = _generate(tmp_path / "a", "1"), _generate(tmp_path / "b", "2")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "documents" in first.stdout
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a == files_b
    assert files_a == _files(corpus)  # and the same as the in-process generator


def test_another_seed_writes_another_corpus(tmp_path: Path, corpus: Path) -> None:
    write_corpus(tmp_path / "other", seed=8)
    other, ours = _files(tmp_path / "other"), _files(corpus)
    assert other[QUESTIONS_FILE] != ours[QUESTIONS_FILE]


def test_size_and_mix_match_the_brief(corpus: Path) -> None:
    files = _files(corpus)
    docs = {k: v for k, v in files.items() if k != QUESTIONS_FILE}
    assert 130 <= len(docs) <= 170
    assert 300_000 <= sum(len(v) for v in docs.values()) <= 1_000_000
    kinds = {Path(k).suffix for k in docs}
    assert kinds == {".md", ".txt", ".html"}
    for suffix in kinds:
        assert sum(1 for k in docs if k.endswith(suffix)) >= 20, suffix


def test_every_answer_occurs_exactly_once_in_its_file(corpus: Path) -> None:
    answerable = [q for q in load_questions(corpus) if q["path"] is not None]
    assert 70 <= len(answerable) <= 90
    for q in answerable:
        path, answer = corpus / str(q["path"]), str(q["answer"])
        text = path.read_text(encoding="utf-8")
        assert text.count(answer) == 1, (q["path"], answer)
        visible = normalise(visible_text(text, path.suffix.lstrip(".")))
        assert visible.count(normalise(answer)) == 1, (q["path"], answer)
        assert 2 <= len(answer) <= 80
        assert isinstance(q["entity_in_passage"], bool)


def test_unanswerable_questions_have_no_path_and_no_answer(corpus: Path) -> None:
    questions = load_questions(corpus)
    unanswerable = [q for q in questions if q["style"] in ("in-domain", "off-topic")]
    assert 25 <= len(unanswerable) <= 35
    assert {q["style"] for q in unanswerable} == {"in-domain", "off-topic"}
    assert all(q["path"] is None and q["answer"] is None for q in unanswerable)
    assert all(q["path"] is not None for q in questions if q not in unanswerable)
    assert len({q["q"] for q in questions}) == len(questions)  # no question asked twice


_STOP = set(
    "what which when where does that this with from have under must should many much long often after "
    "before into about there their your they them the and for are can will".split()
)


def _overlap(question: str, document: str) -> float:
    """Share of the question's content words that occur in the document."""
    words = set(re.findall(r"[a-z]{4,}", normalise(question))) - _STOP
    return len(words & set(re.findall(r"[a-z]{4,}", normalise(document)))) / max(1, len(words))


def test_half_the_questions_are_paraphrased_away_from_the_document_words(corpus: Path) -> None:
    questions = [q for q in load_questions(corpus) if q["path"] is not None]
    by_style: dict[str, list[float]] = {"keyword": [], "paraphrase": []}
    for q in questions:
        document = (corpus / str(q["path"])).read_text(encoding="utf-8")
        by_style[str(q["style"])].append(_overlap(str(q["q"]), document))
    assert abs(len(by_style["keyword"]) - len(by_style["paraphrase"])) <= 2
    # Measured on seed 7: keyword 0.87, paraphrase 0.39.
    assert statistics.mean(by_style["keyword"]) >= 0.75
    assert statistics.mean(by_style["paraphrase"]) <= 0.55


class _Balanced(html.parser.HTMLParser):
    """Fails on an end tag that does not close the innermost open element."""

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def test_files_parse_in_their_formats(corpus: Path) -> None:
    for path in sorted(corpus.rglob("*.html")):
        parser = _Balanced()
        parser.feed(path.read_text(encoding="utf-8"))
        parser.close()
        assert parser.stack == [], path
        assert "<title>" in path.read_text(encoding="utf-8")
    for path in sorted(corpus.rglob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and any(line.startswith("## ") for line in lines), path
    for path in sorted(corpus.rglob("*.txt")):
        text = path.read_text(encoding="utf-8")
        assert text.strip() and "\x00" not in text and max(len(x) for x in text.splitlines()) < 200, path
    json.loads((corpus / QUESTIONS_FILE).read_text(encoding="utf-8"))


def test_it_refuses_to_write_into_a_directory_with_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty"):
        write_corpus(tmp_path)
    result = _generate(tmp_path, "0")
    assert result.returncode == 1 and "not empty" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_bulk_corpus_is_deterministic_and_sized(tmp_path: Path) -> None:
    files_a, size_a = write_bulk(tmp_path / "a", 150_000)
    files_b, size_b = write_bulk(tmp_path / "b", 150_000)
    assert (files_a, size_a) == (files_b, size_b)
    assert 150_000 <= size_a < 150_000 + 30_000
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert {p.suffix for p in (tmp_path / "a").rglob("*.*")} == {".md", ".txt", ".html"}
