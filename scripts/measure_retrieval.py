#!/usr/bin/env python
"""How well does document search find the passage that answers a question?

Indexes the generated corpus (scripts/retrieval_corpus.py) into a Library in a
throwaway Enclave home and asks every question of questions.json in each mode
(bm25, vector, fused). A hit counts when it comes from the question's file and its
text contains the answer; "right file" counts the file alone. Prints recall@k,
MRR@10, right-file recall@k, recall split by phrasing (keyword / paraphrase) and by
whether the answering passage names its document's entity (a model, a counterparty)
or only the title does, and query latency median/p95.

Then the weak-evidence threshold: the top hit's similarity and score for answerable
vs unanswerable questions, and the threshold that best separates them (maximum
balanced accuracy) with the precision and recall of the "found nothing relevant"
decision it gives.

    PYTHONPATH=$PWD python scripts/measure_retrieval.py [--corpus DIR] [--k 5] [--embedder HOME] [--json]

The embedder is the real all-MiniLM-L6-v2 as built by `enclave models build
all-minilm-l6-v2` under your normal Enclave home (or the Enclave home given with
--embedder); without it, vector and fused modes are skipped and the report says why.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from retrieval_corpus import load_questions, write_corpus  # noqa: E402
from retrieval_harness import (  # noqa: E402
    MODES,
    corpus_files,
    find_embedder,
    is_answer,
    open_library,
    percentile,
    same_file,
    say,
    timed,
)

from assistant.privacy.guard import install_network_guard  # noqa: E402

MRR_DEPTH = 10
COLLECTION = "eval"


@dataclass
class Outcome:
    """One question in one mode."""

    question: dict[str, Any]
    rank: int | None  # 1-based rank of the first answering hit within MRR_DEPTH
    file_rank: int | None  # 1-based rank of the first hit from the right file
    top_similarity: float | None
    top_score: float | None
    seconds: float


@dataclass
class ModeReport:
    mode: str
    recall: float
    right_file: float
    mrr: float
    by_style: dict[str, float]
    by_passage: dict[str, float]
    p50_ms: float
    p95_ms: float
    misses: list[dict[str, Any]] = field(default_factory=list)


def ask(lib: Any, root: Path, question: dict[str, Any], mode: str, k: int) -> Outcome:
    with timed() as elapsed:
        hits = list(lib.search(question["q"], k=max(k, MRR_DEPTH), collections=[COLLECTION], mode=mode))
    rank = file_rank = None
    if question["path"] is not None:
        for i, hit in enumerate(hits[:MRR_DEPTH], 1):
            if file_rank is None and same_file(hit, root, question["path"]):
                file_rank = i
            if rank is None and is_answer(hit, root, question["path"], question["answer"]):
                rank = i
    top = hits[0] if hits else None
    return Outcome(
        question,
        rank,
        file_rank,
        None if top is None or top.similarity is None else float(top.similarity),
        None if top is None else float(top.score),
        elapsed[0],
    )


def _share(outcomes: list[Outcome], k: int) -> float:
    return sum(1 for o in outcomes if o.rank is not None and o.rank <= k) / len(outcomes) if outcomes else float("nan")


def summarise(mode: str, outcomes: list[Outcome], k: int) -> ModeReport:
    answerable = [o for o in outcomes if o.question["path"] is not None]
    by_style = {s: _share([o for o in answerable if o.question["style"] == s], k) for s in ("keyword", "paraphrase")}
    by_passage = {
        "names entity": _share([o for o in answerable if o.question.get("entity_in_passage") is True], k),
        "title only": _share([o for o in answerable if o.question.get("entity_in_passage") is False], k),
    }
    millis = [o.seconds * 1000 for o in outcomes]
    misses = [
        {"q": o.question["q"], "path": o.question["path"], "rank": o.rank, "file_rank": o.file_rank}
        for o in answerable
        if o.rank is None or o.rank > k
    ]
    return ModeReport(
        mode,
        recall=_share(answerable, k),
        right_file=sum(1 for o in answerable if o.file_rank is not None and o.file_rank <= k) / len(answerable),
        mrr=sum(1 / o.rank for o in answerable if o.rank is not None) / len(answerable),
        by_style=by_style,
        by_passage=by_passage,
        p50_ms=percentile(millis, 50),
        p95_ms=percentile(millis, 95),
        misses=misses,
    )


@dataclass
class Threshold:
    """Where 'found nothing relevant' (top value below the threshold) best matches unanswerable."""

    mode: str
    signal: str
    answerable: dict[str, float]  # quantiles, and ``none``: questions without the value
    unanswerable: dict[str, float]
    threshold: float
    balanced_accuracy: float
    precision: float
    recall: float


def _quantiles(values: list[float | None]) -> dict[str, float]:
    """Spread of the values a signal has; ``none`` counts questions whose top hit lacks it."""
    known = [v for v in values if v is not None]
    spread = {
        name: percentile(known, q) for name, q in (("min", 0), ("p10", 10), ("p50", 50), ("p90", 90), ("max", 100))
    }
    return {**spread, "none": float(len(values) - len(known))}


def best_threshold(answerable: list[float], unanswerable: list[float]) -> tuple[float, float, float, float]:
    """(threshold, balanced accuracy, precision, recall) of the decision value < threshold
    meaning 'nothing relevant', maximising balanced accuracy over every cut between values."""
    values = sorted(set(answerable) | set(unanswerable))
    cuts = [values[0] - 1e-9] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)] + [values[-1] + 1e-9]
    best = (cuts[0], -1.0, 0.0, 0.0)
    for cut in cuts:
        flagged_bad = sum(1 for v in unanswerable if v < cut)
        flagged_good = sum(1 for v in answerable if v < cut)
        recall = flagged_bad / len(unanswerable)
        specificity = 1 - flagged_good / len(answerable)
        balanced = (recall + specificity) / 2
        precision = flagged_bad / (flagged_bad + flagged_good) if flagged_bad + flagged_good else 0.0
        if balanced > best[1]:
            best = (cut, balanced, precision, recall)
    return best


def thresholds(mode: str, outcomes: list[Outcome]) -> list[Threshold]:
    found = []
    for signal in ("similarity", "score"):
        good = [getattr(o, f"top_{signal}") for o in outcomes if o.question["path"] is not None]
        bad = [getattr(o, f"top_{signal}") for o in outcomes if o.question["path"] is None]
        known = [v for v in good + bad if v is not None]
        if not known:
            continue  # this mode does not report the signal (bm25 has no similarity)
        # No hit, or a top hit without this signal: found nothing, below every real value.
        floor = min(known) - 1.0
        cut, balanced, precision, recall = best_threshold(
            [floor if v is None else v for v in good], [floor if v is None else v for v in bad]
        )
        found.append(Threshold(mode, signal, _quantiles(good), _quantiles(bad), cut, balanced, precision, recall))
    return found


def _spread(q: dict[str, float]) -> str:
    text = " / ".join(f"{q[name]:.3f}" for name in ("min", "p10", "p50", "p90", "max"))
    return text + (f" ({q['none']:.0f} without a value)" if q["none"] else "")


def render(report: dict[str, Any], k: int) -> str:
    c, ix = report["corpus"], report["index"]
    lines = [
        f"Corpus: {c['documents']} documents, {c['bytes'] / 1024:.0f} KiB; "
        f"{c['answerable']} answerable + {c['unanswerable']} unanswerable questions ({c['root']})",
        f"Index: {ix['files_indexed']} files, {ix['chunks']} chunks, {ix['seconds']:.1f} s "
        f"({ix['bytes'] / 1e6 / ix['seconds']:.3g} MB/s), {len(ix['skipped'])} skipped",
        f"Embedder: {report['embedder']}",
        "",
        f"{'mode':<7} {'recall@' + str(k):>9} {'file@' + str(k):>7} {'MRR@10':>7} {'keyword':>8} {'paraphr':>8} "
        f"{'entity':>7} {'title':>6} {'p50 ms':>7} {'p95 ms':>7}",
    ]
    for m in report["modes"]:
        lines.append(
            f"{m['mode']:<7} {m['recall']:>9.2f} {m['right_file']:>7.2f} {m['mrr']:>7.2f} "
            f"{m['by_style']['keyword']:>8.2f} {m['by_style']['paraphrase']:>8.2f} "
            f"{m['by_passage']['names entity']:>7.2f} {m['by_passage']['title only']:>6.2f} "
            f"{m['p50_ms']:>7.1f} {m['p95_ms']:>7.1f}"
        )
    lines.append(
        "(keyword/paraphr: recall@k by phrasing; entity/title: recall@k when the answering passage names its "
        "model or counterparty vs when only the document title does)"
    )
    if report["skipped_modes"]:
        names = ", ".join(m["mode"] for m in report["skipped_modes"])
        lines.append(f"{names}: skipped, {report['skipped_modes'][0]['why']}")
    lines += ["", "Weak evidence: the top hit of answerable vs unanswerable questions (min / p10 / p50 / p90 / max)"]
    for t in report["thresholds"]:
        a, u = _spread(t["answerable"]), _spread(t["unanswerable"])
        lines += [
            f"  {t['mode']} {t['signal']}: answerable {a}",
            f"  {' ' * len(t['mode'] + t['signal'])}  unanswerable {u}",
            f"  {' ' * len(t['mode'] + t['signal'])}  best threshold {t['threshold']:.4f}: balanced accuracy "
            f"{t['balanced_accuracy']:.2f}; 'nothing relevant' precision {t['precision']:.2f}, recall {t['recall']:.2f}",
        ]
    return "\n".join(lines)


def measure(root: Path, home: Path, embedder_home: Path | None, k: int) -> dict[str, Any]:
    questions = load_questions(root)
    choice = find_embedder(embedder_home)
    if choice.embedder is None:
        say(f"vector and fused modes skipped: {choice.why_not}")
    lib, store = open_library(home, choice.embedder)
    files = corpus_files(root)
    say(f"indexing {len(files)} files into {home} ...")
    with timed() as elapsed:
        added = lib.add(files, collection=COLLECTION, progress=None)
    say(f"indexed {added.files_indexed} files, {added.chunks} chunks in {elapsed[0]:.1f} s")
    modes = MODES if choice.embedder is not None else ("bm25",)
    reports, found = [], []
    for mode in modes:
        say(f"asking {len(questions)} questions in {mode} mode ...")
        lib.search("warm-up query", k=k, collections=[COLLECTION], mode=mode)
        outcomes = [ask(lib, root, q, mode, k) for q in questions]
        reports.append(summarise(mode, outcomes, k))
        found += thresholds(mode, outcomes)
    store.close()
    return {
        "k": k,
        "corpus": {
            "root": str(root),
            "documents": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "answerable": sum(1 for q in questions if q["path"] is not None),
            "unanswerable": sum(1 for q in questions if q["path"] is None),
        },
        "index": {
            "files_indexed": added.files_indexed,
            "chunks": added.chunks,
            "bytes": added.bytes,
            "skipped": [[str(p), str(why)] for p, why in added.skipped],
            "seconds": elapsed[0],
        },
        "embedder": choice.where if choice.embedder is not None else f"none: {choice.why_not}",
        "modes": [asdict(r) for r in reports],
        "skipped_modes": [{"mode": m, "why": choice.why_not} for m in MODES if m not in modes],
        "thresholds": [asdict(t) for t in found],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, help="a corpus written by retrieval_corpus.py (default: generate one)")
    parser.add_argument("--k", type=int, default=5, help="hits that count for recall (default 5)")
    parser.add_argument("--embedder", type=Path, help="Enclave home holding the built embedder (default: yours)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (misses included)")
    args = parser.parse_args(argv)
    install_network_guard()
    with tempfile.TemporaryDirectory(prefix="enclave-retrieval-") as tmp:
        root = args.corpus
        if root is None:
            root = Path(tmp) / "corpus"
            written = write_corpus(root)
            say(f"generated {written.documents} documents in {root}")
        report = measure(root.resolve(), Path(tmp) / "home", args.embedder, args.k)
    print(json.dumps(report, indent=1) if args.json else render(report, args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
