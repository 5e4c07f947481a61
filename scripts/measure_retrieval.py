#!/usr/bin/env python
"""How well does document search find the passage that answers a question?

Indexes the generated corpus (tests/data/retrieval_corpus.py) into a Library in a
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
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]  # the other scripts; the checkout (the corpus is tests/data)

from retrieval_harness import (  # noqa: E402
    MODES,
    add_files,
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
from tests.data.retrieval_corpus import load_questions, write_corpus  # noqa: E402

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
        # A question of the real answer corpus may be answered in other files too, in other words.
        paths = [question["path"], *question.get("also_in", [])]
        answers = question.get("answers") or [question["answer"]]
        for i, hit in enumerate(hits[:MRR_DEPTH], 1):
            if file_rank is None and any(same_file(hit, root, p) for p in paths):
                file_rank = i
            if rank is None and any(is_answer(hit, root, p, a) for p in paths for a in answers):
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
        if not known or not good or not bad:
            continue  # no such signal (bm25 has no similarity), or no unanswerable questions to separate
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


ANSWER_QUESTIONS = SCRIPTS.parent / "tests" / "data" / "answers" / "real_questions.json"


def answer_corpus_questions() -> list[dict[str, Any]]:
    """The questions of the real answer corpus (scripts/fetch_answer_corpus.sh;
    tests/data/answers/real_questions.json) as this script asks them: a hit answers when
    it comes from the expected file (or one that states the same fact) and holds one of
    the evidence strings. ``set`` says dev or held-out."""
    data = json.loads(ANSWER_QUESTIONS.read_text(encoding="utf-8"))
    out: list[dict[str, Any]] = []
    for q in data["questions"]:
        answerable = bool(q["answerable"])
        out.append(
            {
                "q": q["question"],
                "path": q["file"] if answerable else None,
                "also_in": list(q.get("also_in") or []) if answerable else [],
                "answers": list(q.get("evidence") or q.get("accept") or []) if answerable else [],
                "answer": "",
                "style": "real",
                "set": q["set"],
            }
        )
    return out


def forget_minilm(lib: Any) -> None:
    """Drop every MiniLM vector: the collection is static-only again (for a cold measurement)."""
    sha = lib.embedder.sha256
    with lib.store.transaction() as db:
        db.execute("delete from passage_vectors where space in (select id from vector_spaces where sha256 = ?)", [sha])


def compare(
    root: Path,
    home: Path,
    embedder_home: Path | None,
    k: int,
    rescore: list[int],
    index_files: bool = False,
    questions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One run, side by side, fused mode: static vectors only; static only with query-time
    re-scoring of the top N (cold: each question starts from a static-only collection, the
    vectors it stored are dropped after it, so no question profits from an earlier one); then
    every MiniLM vector filled (the baseline). Per-question latency is paired, so the added
    cost is the difference on the same question."""
    if questions is None:
        questions = load_questions(root)
    choice = find_embedder(embedder_home)
    if choice.embedder is None:
        raise SystemExit(f"error: --vectors compare needs the embedder: {choice.why_not}")
    lib, store = open_library(home, choice.embedder, static=True)
    files = corpus_files(root)
    say(f"indexing {len(files)} files into {home} (static vectors) ...")
    with timed() as elapsed:
        added = add_files(lib, files, COLLECTION, "static", index_files)
    say(f"indexed {added.files_indexed} files, {added.chunks} chunks in {elapsed[0]:.1f} s")
    mode = "fused"
    runs: list[dict[str, Any]] = []

    def run(label: str, top: int, cold: bool) -> list[Outcome]:
        lib.rescore_top = top
        say(f"asking {len(questions)} questions: {label} ...")
        lib.search("warm-up query", k=k, collections=[COLLECTION], mode=mode)
        if cold:
            forget_minilm(lib)
        outcomes, embedded = [], []
        for q in questions:
            outcomes.append(ask(lib, root, q, mode, k))
            embedded.append(lib.last_rescored)
            if cold:
                forget_minilm(lib)
        report = asdict(summarise(mode, outcomes, k))
        report["run"] = label
        sets = sorted({str(o.question["set"]) for o in outcomes if "set" in o.question})
        if sets:  # dev / held-out (the real answer corpus)
            report["by_set"] = {
                name: _share([o for o in outcomes if o.question["path"] is not None and o.question["set"] == name], k)
                for name in sets
            }
        report["rescore_top"] = top
        if top:
            report["embedded_per_query"] = {
                "mean": sum(embedded) / len(embedded),
                "p50": percentile(embedded, 50),
                "max": max(embedded),
            }
        runs.append(report)
        return outcomes

    plain = run("static only", 0, False)
    added_ms: dict[str, dict[str, float]] = {}
    for top in rescore:
        with_it = run(f"static + re-scoring top {top}", top, True)
        extra = [(b.seconds - a.seconds) * 1000 for a, b in zip(plain, with_it, strict=True)]
        added_ms[str(top)] = {"p50": percentile(extra, 50), "p95": percentile(extra, 95), "max": max(extra)}
    lib.rescore_top = 0
    say("filling every MiniLM vector ...")
    lib.fill_vectors()
    if index_files:
        from assistant.retrieval import ann, textindex

        for line in ann.maintain(store, lib.index_dir) + textindex.maintain(store, lib.index_dir):
            say(line)  # the MiniLM space's index file, as the background builds it
    run("full vectors", 0, False)
    store.close()
    full = runs[-1]["recall"]
    return {
        "k": k,
        "corpus": {
            "root": str(root),
            "documents": len(files),
            "passages": added.chunks,
            "answerable": sum(1 for q in questions if q["path"] is not None),
        },
        "search_path": "tantivy + ANN files" if index_files else "FTS5 + exact vectors",
        "embedder": choice.where,
        "runs": [{key: r[key] for key in r if key != "misses"} for r in runs],
        "ratio_to_full": {r["run"]: (r["recall"] / full if full else float("nan")) for r in runs},
        "added_latency_ms": added_ms,
    }


def render_compare(report: dict[str, Any]) -> str:
    c = report["corpus"]
    lines = [
        f"Corpus: {c['documents']} documents, {c['passages']} passages, {c['answerable']} answerable; "
        f"{report['search_path']}; fused recall@{report['k']}",
        f"{'run':<32} {'recall':>7} {'ratio':>6} {'MRR':>6} {'p50 ms':>7} {'p95 ms':>7} {'embedded/query':>15}",
    ]
    for r in report["runs"]:
        e = r.get("embedded_per_query")
        embedded = "" if e is None else f"{e['mean']:.1f} (max {e['max']})"
        lines.append(
            f"{r['run']:<32} {r['recall']:>7.3f} {report['ratio_to_full'][r['run']]:>6.0%} {r['mrr']:>6.3f} "
            f"{r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {embedded:>15}"
        )
        if "by_set" in r:
            lines.append("    " + ", ".join(f"{name} {value:.3f}" for name, value in r["by_set"].items()))
    for top, ms in report["added_latency_ms"].items():
        lines.append(
            f"re-scoring top {top}: added latency p50 {ms['p50']:.0f} ms, p95 {ms['p95']:.0f} ms, max {ms['max']:.0f} ms"
        )
    return "\n".join(lines)


def measure(
    root: Path, home: Path, embedder_home: Path | None, k: int, vectors: str = "full", index_files: bool = False
) -> dict[str, Any]:
    questions = load_questions(root)
    choice = find_embedder(embedder_home)
    if choice.embedder is None:
        say(f"vector and fused modes skipped: {choice.why_not}")
    lib, store = open_library(home, choice.embedder, static=vectors in ("full", "static"))
    files = corpus_files(root)
    say(f"indexing {len(files)} files into {home} ({vectors} vectors) ...")
    with timed() as elapsed:
        added = add_files(lib, files, COLLECTION, vectors, index_files)
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
    parser.add_argument(
        "--vectors",
        choices=["full", "static", "compare"],
        default="full",
        help="full: every passage has its MiniLM vector (after the background embedder); static: only the "
        "cheap vectors `docs add` writes (what search has right after indexing); compare: fused mode, side by "
        "side in one run: static only, static with query-time re-scoring (--rescore), full",
    )
    parser.add_argument(
        "--rescore",
        type=int,
        nargs="+",
        default=[20],
        metavar="N",
        help="with --vectors compare: re-score the static-only passages of the fused top N (default 20, the setting docs_rescore_top)",
    )
    parser.add_argument(
        "--index-files",
        action="store_true",
        help="build the ANN and tantivy files and search through them (set ENCLAVE_DOCS_ANN_MIN=0 and "
        "ENCLAVE_DOCS_TEXT_INDEX_MIN=0 for a corpus below their 20,000 thresholds)",
    )
    parser.add_argument(
        "--answer-corpus",
        action="store_true",
        help="with --vectors compare: --corpus is the real corpus of scripts/fetch_answer_corpus.sh, asked "
        "the questions of tests/data/answers/real_questions.json (recall split into dev and held-out)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON (misses included)")
    args = parser.parse_args(argv)
    install_network_guard()
    with tempfile.TemporaryDirectory(prefix="enclave-retrieval-") as tmp:
        root = args.corpus
        if root is None:
            root = Path(tmp) / "corpus"
            written = write_corpus(root)
            say(f"generated {written.documents} documents in {root}")
        if args.vectors == "compare":
            asked = answer_corpus_questions() if args.answer_corpus else None
            report = compare(
                root.resolve(), Path(tmp) / "home", args.embedder, args.k, args.rescore, args.index_files, asked
            )
            print(json.dumps(report, indent=1) if args.json else render_compare(report))
            return 0
        report = measure(root.resolve(), Path(tmp) / "home", args.embedder, args.k, args.vectors, args.index_files)
    print(json.dumps(report, indent=1) if args.json else render(report, args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
