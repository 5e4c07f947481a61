#!/usr/bin/env python
"""Are Enclave's answers from documents right, and do its labels tell the truth?

A ruler for issue 13, run from the outside: it drives Enclave only through its command
line, so the same script measures the code of today and the grounded-answer work
that replaces it.

    python scripts/measure_answers.py --corpus DIR --questions FILE --home ENCLAVE_HOME
        [--set dev|heldout|all] [--model NAME] [--engine onnx|litert]
        [--collection NAME] [--json OUT.json] [--markdown]

1. ``enclave docs add DIR -c COLLECTION --json`` indexes the corpus (incremental: a
   second run costs seconds); the report, skipped files with their reasons included,
   goes into the --json output.
2. Every question of the chosen set is asked, one process per question, with
   ``enclave ask --docs COLLECTION --json --no-save QUESTION`` (+ --model/--engine).
3. Each answer is scored (see SCORING) and a table per set is printed to stdout;
   progress goes to stderr. ``--json OUT`` writes the per-question rows, each with the
   raw JSON Enclave printed, so ``--rescore OUT`` can score a run again without asking.

Questions files
---------------
Either the committed format (tests/data/answers/real_questions.json): an object whose
``questions`` are ``{id, question, answerable, set, file, also_in, accept,
accept_regex, evidence, kind, where}``; or the seeded corpus's ``questions.json``
(tests/data/retrieval_corpus.py: a list of ``{q, path, answer, style}``), converted on
load: ``answer`` is the evidence and the accepted answer (also without a lead-in such as
"within" or "paid at"), ids are ``seed-NNN`` in file order, and the split is computed by
the same rule as below. Its answers are phrases ("within 30 days of the end of the month
of receipt"), so a bare "30 days" is not counted: correct is strict on this set.

The dev/heldout split is a rule, not a choice: within each stratum (answerable or
not × topic) questions are ordered by sha256 of their id and the first 60 % (rounded)
are ``dev``. ``--check`` verifies that the file's ``set`` fields follow the rule, that
every evidence string occurs in its file's text (extracted here with pypdf and the
stdlib HTML parser, independently of Enclave) and that nothing else is malformed.
Held-out questions are for reporting only: never tune on them.

SCORING
-------
Text is compared after normalisation (NFKC, curly quotes and dashes made plain,
whitespace collapsed, lower case). An ``accept`` string matches when it occurs with
no letter or digit glued to either end ("5" does not match "15"); ``accept_regex``
is searched case-insensitively.

- shown answer: the ``text`` field (when absent, the ``answer_sentences`` joined).
- refused: ``finish_reason == "no-evidence"``; or ``mode`` names a refusal
  ("not-found", "no-evidence", "refused", "none"); or the first sentence (at most
  the first 240 characters) of the shown answer says the documents do not answer
  (REFUSAL_PHRASES: "I found nothing relevant", "not found in the sources/documents",
  "the documents/sources do not say/contain/mention …", "the user's document does not
  provide …", "I could not find", "no information about" …). Only the opening is read so that an answer which
  mentions "not specified" half-way through still counts as an answer.
- correct (answerable only): not refused and the shown answer matches ``accept`` or
  ``accept_regex``; for ``kind`` yes-no and negation only its first sentence is read
  (the verdict must come first). Correct means the expected fact is there, not that
  nothing false is: "waits 5 seconds … should wait 15 seconds" counts for 15.
- vouching citations: those Enclave presents as backing the answer: ``cited`` true, or
  ``supports`` truthy (a count today), or named as the ``source`` of an
  ``answer_sentences`` entry.
- correct-and-grounded: correct, and a vouching citation comes from the expected file
  (``file`` or ``also_in``; a trailing .txt is ignored on both sides) and its text
  matches ``evidence``.
- false vouch (a question counts once; refusals never do):
  * answerable, not correct, and some citation vouches ("answer lacks the fact");
  * correct, vouching citations exist, and none of them both comes from the expected
    file and matches ``evidence`` ("no vouched passage of the expected file states the
    fact": a GFDL-1.3 passage does not back a claim about the GPL-3, even with the same
    words); so a correct answer with labels is either grounded or a false vouch;
  * with per-sentence sources: a sentence whose source passage neither contains the
    sentence verbatim nor (the sentence matches ``accept`` and the passage matches
    ``evidence``) ("sentence not in its source"); applies to unanswerable questions
    too.
- answerable answered: answerable and not refused.
- unanswerable refused: unanswerable and refused.
- vouched unanswerable: unanswerable, not refused, and a citation vouches (reported
  beside false vouches: the sources were shown as backing an answer they do not give).
- fact retrieved (diagnostic): some given passage from the expected file matches
  ``evidence``, vouching or not: separates "search missed" from "reader missed".
- TTFT is ``usage.ttft_ms``; wall is the whole ``enclave ask`` process (model load
  included), as a user of the command line waits for it.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import json
import os
import re
import statistics
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SETS = ("dev", "heldout")
DEV_SHARE = 0.6
DEFAULT_COLLECTION = "answers-eval"
DEFAULT_TIMEOUT_S = 300.0
REFUSAL_MODES = ("not-found", "no-evidence", "refused", "none")
REFUSAL_HEAD_CHARS = 240
POLARITY_KINDS = ("yes-no", "negation")
REFUSAL_PHRASES = [
    r"i found nothing relevant",
    r"nothing relevant (was )?found",
    r"not found in the (sources|documents|passages|provided)",
    r"(the|these|your) (documents|sources|passages|provided sources) (do not|don't|does not|doesn't) "
    r"(say|contain|mention|specify|state|provide|include|answer|cover)",
    r"(document|documents|source|sources|passage|passages|text|manual|file)('s)? (do not|don't|does not|doesn't) "
    r"(say|contain|mention|specify|state|provide|include|give|list)\b",
    r"(do not|don't|does not|doesn't) (contain|mention|specify|say|state|provide|include) "
    r"(the|this|that|any|an|such)?\s*(answer|information|details?)",
    r"no (relevant )?information (about|on|regarding|is given|is provided)",
    r"i (could not|couldn't|cannot|can't|was unable to|am unable to) find",
    r"unable to find",
    r"there is no (mention|information)",
    r"(is|are) not (mentioned|specified|stated|given|provided) in the",
    r"cannot be (answered|determined) from the",
]
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PHRASES))
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u00b4": "'",
        "`": "'",
    }
)


def first_sentence(text: str) -> str:
    """Up to the first sentence end (., ! or ? before a space), at most 240 characters."""
    head = normalise(text)
    return re.split(r"(?<=[.!?])\s", head, maxsplit=1)[0][:REFUSAL_HEAD_CHARS]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- matching
def normalise(text: str) -> str:
    """The form every comparison is made in: NFKC, plain quotes and dashes, one space."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    return re.sub(r"\s+", " ", text).strip().lower()


def contains(text: str, needle: str) -> bool:
    """``needle`` occurs in ``text`` (both normalised) with no letter or digit glued on."""
    hay, pin = normalise(text), normalise(needle)
    if not pin:
        return False
    pattern = re.escape(pin)
    if pin[0].isalnum():
        pattern = r"(?<![0-9a-z])" + pattern
    if pin[-1].isalnum():
        pattern += r"(?![0-9a-z])"
    return re.search(pattern, hay) is not None


def matches(text: str, strings: Sequence[str], regex: str | None = None) -> bool:
    if any(contains(text, s) for s in strings):
        return True
    return bool(regex) and re.search(str(regex), normalise(text), re.IGNORECASE) is not None


def same_file(cited: str, expected: str) -> bool:
    """Paths relative to the corpus, a trailing .txt ignored (the licences are copied
    with one today and may be indexed without one later)."""

    def strip(p: str) -> str:
        p = p.replace(os.sep, "/").lstrip("./")
        return p[:-4] if p.endswith(".txt") else p

    return strip(cited) == strip(expected)


# --------------------------------------------------------------------------- questions
@dataclass
class Question:
    id: str
    question: str
    answerable: bool
    set: str
    topic: str
    file: str | None = None
    also_in: list[str] = field(default_factory=list)
    accept: list[str] = field(default_factory=list)
    accept_regex: str | None = None
    evidence: list[str] = field(default_factory=list)
    kind: str = ""
    where: str = ""

    @property
    def files(self) -> list[str]:
        return ([self.file] if self.file else []) + list(self.also_in)

    def answer_matches(self, text: str) -> bool:
        if self.kind in POLARITY_KINDS:
            # "no"/"not" somewhere in a long answer proves nothing: the verdict must
            # come first ("It depends … not …" is not a no).
            text = first_sentence(text)
        return matches(text, self.accept, self.accept_regex)

    def evidence_matches(self, text: str) -> bool:
        return matches(text, self.evidence or self.accept)


def split_of(items: Sequence[tuple[str, tuple[Any, ...]]]) -> dict[str, str]:
    """The deterministic dev/heldout rule: within each stratum, order ids by sha256 and
    give the first round(60 %) to dev."""
    strata: dict[tuple[Any, ...], list[str]] = {}
    for qid, stratum in items:
        strata.setdefault(stratum, []).append(qid)
    out: dict[str, str] = {}
    for ids in strata.values():
        ids.sort(key=lambda i: hashlib.sha256(i.encode("utf-8")).hexdigest())
        n_dev = round(len(ids) * DEV_SHARE)
        for k, qid in enumerate(ids):
            out[qid] = "dev" if k < n_dev else "heldout"
    return out


def stratum(answerable: bool, topic: str) -> tuple[bool, str]:
    return (answerable, topic)


_LEAD = re.compile(r"^(within|paid at|every|at least|up to|at most|no later than)\s+", re.IGNORECASE)


def seeded_accept(answer: str | None) -> list[str]:
    """The seeded ``answer`` is a phrase chosen to be unique in its file ("paid at 1.5
    times the basic hourly rate"); an answer may drop its lead-in ("1.5 times the basic
    hourly rate"). The evidence stays the whole phrase."""
    if not answer:
        return []
    short = _LEAD.sub("", answer)
    return [answer] if short == answer else [answer, short]


def load_questions(path: Path) -> tuple[list[Question], dict[str, Any]]:
    """Questions from either format, with the header (empty for the seeded format)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):  # the seeded corpus's questions.json
        raw = [
            {
                "id": f"seed-{i:03d}",
                "question": item["q"],
                "answerable": item["path"] is not None,
                "topic": str(item.get("group") or item.get("style") or ""),
                "file": item["path"],
                "accept": seeded_accept(item.get("answer")),
                "evidence": [item["answer"]] if item.get("answer") else [],
                "kind": str(item.get("style") or ""),
            }
            for i, item in enumerate(data)
        ]
        sets = split_of([(r["id"], stratum(r["answerable"], r["topic"])) for r in raw])
        questions = [Question(set=sets[r["id"]], **r) for r in raw]
        return questions, {"format": "seeded", "source": str(path)}
    header = {k: v for k, v in data.items() if k != "questions"}
    questions = [Question(**q) for q in data["questions"]]
    return questions, header


def check_questions(questions: Sequence[Question], corpus: Path | None) -> list[str]:
    """Problems with a questions file: the split rule, duplicate ids, missing fields and
    (with a corpus) evidence that its file does not contain."""
    problems: list[str] = []
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        problems.append("duplicate ids")
    rule = split_of([(q.id, stratum(q.answerable, q.topic)) for q in questions])
    for q in questions:
        if q.set not in SETS:
            problems.append(f"{q.id}: set {q.set!r} is not dev or heldout")
        elif rule[q.id] != q.set:
            problems.append(f"{q.id}: set is {q.set}, the split rule says {rule[q.id]}")
        if q.answerable:
            problems.extend(_answerable_problems(q))
        elif q.file or q.accept or q.evidence:
            problems.append(f"{q.id}: unanswerable with a file, accept or evidence")
    if corpus is not None:
        problems.extend(_evidence_missing(questions, corpus))
    return problems


def _answerable_problems(q: Question) -> list[str]:
    """What an answerable question lacks: a file, a way to accept, evidence that counts."""
    problems: list[str] = []
    if not q.file:
        problems.append(f"{q.id}: answerable without a file")
    if not (q.accept or q.accept_regex):
        problems.append(f"{q.id}: answerable without accept or accept_regex")
    if not q.evidence:
        problems.append(f"{q.id}: answerable without evidence")
    if q.accept_regex:
        try:
            re.compile(q.accept_regex)
        except re.error as exc:
            problems.append(f"{q.id}: bad accept_regex: {exc}")
    # A pattern the question itself matches would credit an answer that only
    # repeats the question ("LGPL version 3" for "version 3").
    if q.answer_matches(q.question):
        problems.append(f"{q.id}: accept or accept_regex matches the question itself")
    # An answer that quotes the evidence verbatim must score as correct.
    for e in q.evidence:
        if not q.answer_matches(e):
            problems.append(f"{q.id}: evidence {e!r} would not count as a correct answer")
    return problems


def _evidence_missing(questions: Sequence[Question], corpus: Path) -> list[str]:
    """Questions none of whose evidence strings occurs in their file under ``corpus``."""
    problems: list[str] = []
    texts: dict[str, str] = {}
    for q in questions:
        for rel in q.files:
            if rel not in texts:
                texts[rel] = file_text(corpus / rel)
            if q.evidence and not any(contains(texts[rel], e) for e in q.evidence) and rel == q.file:
                problems.append(f"{q.id}: no evidence string occurs in {rel}")
    return problems


class _HTMLText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def file_text(path: Path) -> str:
    """A document's text for --check, read independently of Enclave's parsers."""
    if not path.exists() and path.suffix == ".txt":
        path = path.with_suffix("")  # a --suffixless corpus
    if path.suffix.lower() == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        parser = _HTMLText()
        parser.feed(text)
        return "".join(parser.parts)
    return text


# --------------------------------------------------------------------------- one answer
@dataclass
class Row:
    """One question, asked and scored."""

    id: str
    set: str
    topic: str
    question: str
    answerable: bool
    expected_file: str | None
    text: str = ""
    finish_reason: str | None = None
    mode: str | None = None
    refused: bool = False
    refusal_reason: str = ""
    correct: bool = False
    grounded: bool = False
    false_vouch: bool = False
    false_vouch_reasons: list[str] = field(default_factory=list)
    vouched: list[int] = field(default_factory=list)
    fact_retrieved_in: list[int] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    ttft_ms: float | None = None
    wall_s: float | None = None
    error: str | None = None
    raw: dict[str, Any] | None = None

    @property
    def vouched_unanswerable(self) -> bool:
        return not self.answerable and not self.refused and bool(self.vouched) and self.error is None


def refusal(answer: dict[str, Any], shown: str) -> str:
    """Why this answer counts as "found nothing" ('' when it does not)."""
    if answer.get("finish_reason") == "no-evidence":
        return "finish_reason no-evidence"
    mode = str(answer.get("mode") or "").lower()
    if any(m in mode for m in REFUSAL_MODES):
        return f"mode {mode}"
    found = _REFUSAL.search(first_sentence(shown))
    return f"phrase {found.group(0)!r}" if found else ""


def shown_text(answer: dict[str, Any]) -> str:
    text = answer.get("text")
    if isinstance(text, str) and text:
        return text
    return " ".join(str(s.get("text", "")) for s in answer.get("answer_sentences") or [])


def relative(path: str, corpus: Path) -> str:
    try:
        return Path(path).resolve().relative_to(corpus.resolve()).as_posix()
    except (ValueError, OSError):
        return path


def score(q: Question, answer: dict[str, Any], corpus: Path) -> Row:
    """Score one parsed ``enclave ask --json`` object."""
    row = Row(q.id, q.set, q.topic, q.question, q.answerable, q.file, raw=answer)
    shown = shown_text(answer)
    row.text = shown
    row.finish_reason = answer.get("finish_reason")
    row.mode = answer.get("mode")
    usage = answer.get("usage") or {}
    row.ttft_ms = usage.get("ttft_ms")
    if answer.get("error"):
        row.error = json.dumps(answer["error"])
    row.refusal_reason = refusal(answer, shown)
    row.refused = bool(row.refusal_reason)
    citations = list(answer.get("citations") or [])
    by_n = {int(c.get("n", i + 1)): c for i, c in enumerate(citations)}
    sentence_sources = _sentence_sources(answer)
    vouching = {n for n, c in by_n.items() if c.get("cited") or c.get("supports")} | set(sentence_sources)
    row.vouched = sorted(vouching)
    for n, c in sorted(by_n.items()):
        _add_citation(row, q, n, c, n in vouching, corpus)
    if q.answerable:
        _judge_answer(row, q, shown, bool(vouching))
    if not row.refused:
        _check_sentences(row, q, by_n, sentence_sources)
    row.false_vouch = bool(row.false_vouch_reasons)
    return row


def _sentence_sources(answer: dict[str, Any]) -> dict[int, list[str]]:
    """The answer's sentences by the number of the passage each names as its source."""
    sentence_sources: dict[int, list[str]] = {}
    for s in answer.get("answer_sentences") or []:
        src = s.get("source")
        for n in src if isinstance(src, list) else [src]:
            if isinstance(n, int):
                sentence_sources.setdefault(n, []).append(str(s.get("text", "")))
    return sentence_sources


def _add_citation(row: Row, q: Question, n: int, c: dict[str, Any], vouching: bool, corpus: Path) -> None:
    """Record citation ``n``: where it points, whether it is of the expected file and states the fact."""
    rel = relative(str(c.get("path", "")), corpus)
    text = str(c.get("text") or "")
    from_file = any(same_file(rel, f) for f in q.files)
    has_fact = q.answerable and q.evidence_matches(text)
    row.citations.append(
        {
            "n": n,
            "path": rel,
            "page": c.get("page"),
            "line_start": c.get("line_start"),
            "line_end": c.get("line_end"),
            "heading": c.get("heading"),
            "cited": c.get("cited"),
            "supports": c.get("supports"),
            "vouching": vouching,
            "expected_file": from_file,
            "has_fact": has_fact,
        }
    )
    if from_file and has_fact:
        row.fact_retrieved_in.append(n)


def _judge_answer(row: Row, q: Question, shown: str, vouched: bool) -> None:
    """Correct and grounded, for an answerable question; a vouch for a wrong or unbacked answer is false."""
    row.correct = not row.refused and q.answer_matches(shown)
    backing = [c for c in row.citations if c["vouching"] and c["has_fact"] and c["expected_file"]]
    row.grounded = row.correct and bool(backing)
    if not row.refused and vouched:
        if not row.correct:
            row.false_vouch_reasons.append("answer lacks the fact")
        elif not backing:
            row.false_vouch_reasons.append("no vouched passage of the expected file states the fact")


def _check_sentences(
    row: Row, q: Question, by_n: dict[int, dict[str, Any]], sentence_sources: dict[int, list[str]]
) -> None:
    """A sentence must be in the passage it names, or carry the fact that passage states."""
    for n, sentences in sorted(sentence_sources.items()):
        passage = str(by_n.get(n, {}).get("text") or "")
        for sentence in sentences:
            verbatim = bool(normalise(sentence)) and normalise(sentence).strip(" .") in normalise(passage)
            carried = q.answerable and q.answer_matches(sentence) and q.evidence_matches(passage)
            if not (verbatim or carried):
                row.false_vouch_reasons.append(f"sentence not in its source [{n}]: {sentence[:80]!r}")


# --------------------------------------------------------------------------- running
def enclave_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ENCLAVE_HOME"] = str(home)
    env.setdefault("ORT_DISABLE_TELEMETRY", "1")
    return env


def index(enclave: str, corpus: Path, collection: str, env: dict[str, str]) -> dict[str, Any]:
    say(f"indexing {corpus} into collection {collection!r} …")
    start = time.monotonic()
    proc = subprocess.run(
        # --wait: score the index a user has once indexing is done, not the keyword and
        # cheap-vector stage (and not beside the background embedder on the same cores).
        [enclave, "docs", "add", str(corpus), "-c", collection, "--json", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"enclave docs add failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    report["wall_s"] = round(time.monotonic() - start, 1)
    skipped = report.get("skipped") or []
    say(
        f"indexed: {report.get('files_indexed')} new/changed, {report.get('files_unchanged')} unchanged, "
        f"{report.get('chunks')} passages, {len(skipped)} skipped ({report['wall_s']} s)"
    )
    for s in skipped:
        say(f"  skipped {s.get('path')}: {s.get('reason')}")
    return report


def ask(
    enclave: str,
    q: Question,
    collection: str,
    env: dict[str, str],
    extra: Sequence[str],
    timeout: float,
    corpus: Path,
) -> Row:
    cmd = [enclave, "ask", "--docs", collection, "--json", "--no-save", *extra, q.question]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        row = Row(q.id, q.set, q.topic, q.question, q.answerable, q.file, error=f"timed out after {timeout:.0f} s")
        row.wall_s = round(time.monotonic() - start, 2)
        return row
    wall = round(time.monotonic() - start, 2)
    answer = parse_answer(proc.stdout)
    if answer is None:
        row = Row(q.id, q.set, q.topic, q.question, q.answerable, q.file)
        row.error = f"exit {proc.returncode}, no JSON on stdout; stderr: {proc.stderr.strip()[-600:]}"
    else:
        row = score(q, answer, corpus)
        if proc.returncode != 0 and row.error is None:
            row.error = f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"
    row.wall_s = wall
    return row


def parse_answer(stdout: str) -> dict[str, Any] | None:
    """The JSON object ``enclave ask --json`` printed (the last one when several)."""
    text = stdout.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else None
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            return data
    return None


# --------------------------------------------------------------------------- report
def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f} %)" if d else "–"


def quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(rows: Sequence[Row]) -> dict[str, Any]:
    ans = [r for r in rows if r.answerable]
    una = [r for r in rows if not r.answerable]
    ttft = [r.ttft_ms for r in rows if r.ttft_ms is not None]
    wall = [r.wall_s for r in rows if r.wall_s is not None]
    return {
        "questions": len(rows),
        "answerable": len(ans),
        "unanswerable": len(una),
        "correct": sum(r.correct for r in ans),
        "correct_and_grounded": sum(r.grounded for r in ans),
        "false_vouch": sum(r.false_vouch for r in ans),
        "false_vouch_unanswerable": sum(r.false_vouch for r in una),
        "answerable_answered": sum(not r.refused and r.error is None for r in ans),
        "unanswerable_refused": sum(r.refused for r in una),
        "vouched_unanswerable": sum(r.vouched_unanswerable for r in una),
        "fact_retrieved": sum(bool(r.fact_retrieved_in) for r in ans),
        "finish_length": sum(r.finish_reason == "length" for r in rows),
        "errors": sum(r.error is not None for r in rows),
        "ttft_ms_median": statistics.median(ttft) if ttft else None,
        "ttft_ms_p90": quantile(ttft, 0.9),
        "wall_s_median": statistics.median(wall) if wall else None,
        "wall_s_p90": quantile(wall, 0.9),
        "wall_s_total": round(sum(wall), 1),
    }


def table(name: str, s: dict[str, Any]) -> str:
    a, u = s["answerable"], s["unanswerable"]

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.0f} ms"

    def sec(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f} s"

    lines = [
        f"### {name}: {s['questions']} questions ({a} answerable, {u} unanswerable)",
        "",
        "| measure | count |",
        "|---|---|",
        f"| correct (answerable) | {pct(s['correct'], a)} |",
        f"| correct and grounded (answerable) | {pct(s['correct_and_grounded'], a)} |",
        f"| false vouch (answerable) | {pct(s['false_vouch'], a)} |",
        f"| answerable still answered | {pct(s['answerable_answered'], a)} |",
        f"| unanswerable refused | {pct(s['unanswerable_refused'], u)} |",
        f"| unanswerable answered with a supporting label | {pct(s['vouched_unanswerable'], u)} |",
        f"| false vouch, per-sentence check (unanswerable) | {pct(s['false_vouch_unanswerable'], u)} |",
        f"| fact in a given passage of the right file (diagnostic) | {pct(s['fact_retrieved'], a)} |",
        f"| stopped at the token limit (finish_reason length) | {pct(s['finish_length'], s['questions'])} |",
        f"| errors | {s['errors']} |",
        f"| TTFT median / p90 | {ms(s['ttft_ms_median'])} / {ms(s['ttft_ms_p90'])} |",
        f"| wall per question median / p90 (process incl. model load) | {sec(s['wall_s_median'])} / {sec(s['wall_s_p90'])} |",
        f"| wall total | {sec(s['wall_s_total'])} |",
    ]
    return "\n".join(lines)


def report(rows: Sequence[Row], chosen: str) -> tuple[str, dict[str, Any]]:
    names = list(SETS) + ["all"] if chosen == "all" else [chosen]
    parts, sums = [], {}
    for name in names:
        subset = [r for r in rows if name == "all" or r.set == name]
        if not subset:
            continue
        sums[name] = summary(subset)
        parts.append(table(name, sums[name]))
    return "\n\n".join(parts), sums


def select(questions: Iterable[Question], chosen: str, only: Sequence[str]) -> list[Question]:
    out = [q for q in questions if chosen == "all" or q.set == chosen]
    return [q for q in out if not only or q.id in only]


def line(row: Row) -> str:
    if row.error:
        verdict = "ERROR"
    elif row.answerable:
        verdict = "refused" if row.refused else ("grounded" if row.grounded else "correct" if row.correct else "wrong")
    else:
        verdict = "refused" if row.refused else "answered"
    flag = " FALSE-VOUCH" if row.false_vouch else ""
    ttft = "–" if row.ttft_ms is None else f"{row.ttft_ms / 1000:.1f}"
    return f"{row.id:<10} {verdict:<8}{flag} ttft {ttft} s, wall {row.wall_s} s, {row.finish_reason}"


# --------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    questions, header = load_questions(args.questions)
    if args.check:
        return _check(questions, args.corpus)
    chosen = select(questions, args.chosen, args.only)

    run: dict[str, Any] = {
        "questions_file": str(args.questions),
        "corpus": str(args.corpus),
        "set": args.chosen,
        "model": args.model,
        "engine": args.engine,
        "ask_args": args.ask_arg,
    }
    if args.rescore:
        rows = _rescore(args.rescore, questions, chosen, args.corpus, run)
    else:
        rows = _ask_all(args, parser, chosen, run)

    text, sums = report(rows, args.chosen)
    print(text)
    if args.json_out:
        run["summary"] = sums
        run["rows"] = [asdict(r) for r in rows]
        args.json_out.write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        say(f"rows written to {args.json_out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder (indexed as one collection)")
    parser.add_argument("--questions", type=Path, required=True, help="questions file (either format)")
    parser.add_argument("--home", type=Path, help="ENCLAVE_HOME with the models built (default: $ENCLAVE_HOME)")
    parser.add_argument("--set", choices=("dev", "heldout", "all"), default="all", dest="chosen")
    parser.add_argument("--model", help="passed to enclave ask --model")
    parser.add_argument("--engine", choices=("onnx", "litert"), help="passed to enclave ask --engine")
    parser.add_argument("--collection", default=DEFAULT_COLLECTION, help=f"default {DEFAULT_COLLECTION}")
    parser.add_argument("--enclave", default=None, help="the enclave executable (default: next to this Python)")
    parser.add_argument(
        "--ask-arg",
        action="append",
        default=[],
        help="extra argument for enclave ask, verbatim (repeatable), e.g. a future answer-mode flag",
    )
    parser.add_argument("--only", action="append", default=[], help="ask only this question id (repeatable)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per question")
    parser.add_argument("--skip-index", action="store_true", help="the collection is already indexed")
    parser.add_argument("--json", type=Path, dest="json_out", help="write per-question rows and summaries here")
    parser.add_argument("--rescore", type=Path, help="score the raw answers of an earlier --json run again")
    parser.add_argument(
        "--check", action="store_true", help="validate the questions file against the corpus, ask nothing"
    )
    return parser


def _check(questions: Sequence[Question], corpus: Path) -> int:
    """``--check``: print the problems of the questions file and a count; 1 when there are any."""
    problems = check_questions(questions, corpus)
    for p in problems:
        print(p)
    counts = {s: sum(q.set == s for q in questions) for s in SETS}
    print(
        f"{len(questions)} questions ({sum(q.answerable for q in questions)} answerable), "
        f"dev {counts['dev']}, heldout {counts['heldout']}: {'OK' if not problems else f'{len(problems)} problems'}"
    )
    return 1 if problems else 0


def _rescore(
    path: Path, questions: Sequence[Question], chosen: Sequence[Question], corpus: Path, run: dict[str, Any]
) -> list[Row]:
    """``--rescore``: score the raw answers of an earlier run again (rows without one are kept
    as they were); the earlier run's index, start, model, engine and version go into ``run``."""
    previous = json.loads(path.read_text(encoding="utf-8"))
    by_id = {q.id: q for q in questions}
    rows = []
    for old in previous["rows"]:
        q = by_id[old["id"]]
        if q not in chosen:
            continue
        if old.get("raw") is None:
            rows.append(Row(**{k: v for k, v in old.items() if k in Row.__dataclass_fields__}))
            continue
        row = score(q, old["raw"], corpus)
        row.wall_s = old.get("wall_s")
        row.error = row.error or old.get("error")
        rows.append(row)
    run.update({k: previous.get(k) for k in ("index", "started", "model", "engine", "enclave_version")})
    return rows


def _ask_all(
    args: argparse.Namespace, parser: argparse.ArgumentParser, chosen: Sequence[Question], run: dict[str, Any]
) -> list[Row]:
    """Index the corpus (unless ``--skip-index``) and ask every chosen question; the version,
    start and index report go into ``run``."""
    home = args.home or (Path(os.environ["ENCLAVE_HOME"]) if os.environ.get("ENCLAVE_HOME") else None)
    if home is None:
        parser.error("give --home or set ENCLAVE_HOME (a measuring run must not touch your own Enclave data)")
    if args.questions.resolve().is_relative_to(args.corpus.resolve()) and not args.skip_index:
        # Enclave skips .json today; an Enclave that indexed it would answer from the key.
        parser.error(
            f"{args.questions} is inside the corpus folder: move it out (it holds the answers) before indexing"
        )
    enclave = args.enclave or str(Path(sys.executable).parent / "enclave")
    env = enclave_env(home)
    version = subprocess.run([enclave, "--version"], env=env, capture_output=True, text=True, check=False)
    run["enclave_version"] = version.stdout.strip()
    run["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run["index"] = None if args.skip_index else index(enclave, args.corpus, args.collection, env)
    extra = list(args.ask_arg)
    if args.model:
        extra += ["--model", args.model]
    if args.engine:
        extra += ["--engine", args.engine]
    rows = []
    say(f"asking {len(chosen)} questions ({args.chosen}) …")
    for k, q in enumerate(chosen, 1):
        row = ask(enclave, q, args.collection, env, extra, args.timeout, args.corpus)
        rows.append(row)
        say(f"[{k}/{len(chosen)}] {line(row)}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
