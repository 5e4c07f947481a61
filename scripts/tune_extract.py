#!/usr/bin/env python
"""Choose the extractive answer's weights and threshold on the development questions.

    python scripts/tune_extract.py --home ENCLAVE_HOME --collection answers-eval \\
        --questions tests/data/answers/real_questions.json --corpus DIR [--set dev] \\
        [--dump features.json [--load]] [--also DUMP QUESTIONS] [--fv-cost N] [--top N]

For each question the real pipeline runs as `enclave ask --docs` runs it (the same
Conversation.retrieve: search, evidence gate, passages fitted to the window), then
every sentence of the passages is scored (assistant.retrieval.extract) and its raw
features kept. Offline, each combination of weights and thresholds in the grid is
scored with measure_answers.py's own rules: correct (the shown quotes contain the
expected fact), correct and grounded, false vouch (quotes shown that lack the fact,
or that carry it from a passage that is not the expected file's), unanswerable
refused. The table of the best combinations goes to stdout, ranked by grounded
answers − FV_COST × false vouches + unanswerable questions refused (--fv-cost, 2 by
default; the weights of AFTER 2 in docs/answers-eval.md were chosen with 3, since the
target is no false vouch at all). The threshold only decides whether the best sentence
is shown, so each ranking is computed once and scored at every threshold.

HELD-OUT QUESTIONS ARE NEVER READ HERE: --set must be dev (the default).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _measure() -> Any:
    spec = importlib.util.spec_from_file_location("measure_answers", ROOT / "scripts" / "measure_answers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["measure_answers"] = module
    spec.loader.exec_module(module)
    return module


def collect(home: Path, collection: str, questions_path: Path, corpus: Path, chosen: str) -> list[dict[str, Any]]:
    """Features of every candidate sentence of every question of the set."""
    os.environ["ENCLAVE_HOME"] = str(home)
    ma = _measure()
    from assistant.app.answers import ground
    from assistant.app.turns import Assistant
    from assistant.core.settings import Settings
    from assistant.retrieval import open_library
    from assistant.retrieval.extract import Weights

    questions, _ = ma.load_questions(questions_path)
    questions = [q for q in questions if q.set == chosen]
    assistant = Assistant(Settings.load())
    conv = assistant.conversation(save=False)
    library = open_library(assistant.settings, assistant.store)
    conv.use_documents(library, [collection])
    out = []
    for k, q in enumerate(questions, 1):
        conv.messages.clear()
        retrieval = conv.retrieve(q.question)
        row: dict[str, Any] = {"id": q.id, "answerable": q.answerable, "strong": retrieval.strong, "candidates": []}
        if retrieval.strong and retrieval.passages:
            grounding = ground(q.question, retrieval, library, "extract", Weights(threshold=-99.0))
            paths = {p.n: ma.relative(p.hit.path, corpus) for p in retrieval.candidates}
            texts = {p.n: p.text for p in retrieval.candidates}
            row["pool"] = len(grounding.pool)
            row["named_miss"] = bool(grounding.reason)
            for c in grounding.ranked:
                n = c.sentence.n
                row["candidates"].append(
                    {
                        "n": n,
                        "index": c.sentence.index,
                        "start": c.sentence.start,
                        "end": c.sentence.end,
                        "text": c.sentence.text,
                        "features": c.features,
                        "accept": q.answerable and q.answer_matches(c.sentence.text),
                        "backing": q.answerable
                        and any(ma.same_file(paths[n], f) for f in q.files)
                        and q.evidence_matches(texts[n]),
                    }
                )
        out.append(row)
        print(f"[{k}/{len(questions)}] {q.id} {len(row['candidates'])} sentences", file=sys.stderr)
    assistant.close()
    return out


def outcomes(rows: list[dict[str, Any]], w: Any, questions: dict[str, Any]) -> list[tuple[Any, float, bool, bool]]:
    """Per question: (question, best score or -inf when nothing may be answered, correct and
    grounded if answered, correct if answered). The threshold only decides whether the
    best sentence is shown, so one ranking serves every threshold."""
    from assistant.retrieval.extract import Candidate, answer
    from assistant.retrieval.grounding import Sentence

    out = []
    for row in rows:
        q = questions[row["id"]]
        ranked = []
        for c in row["candidates"]:
            f = c["features"]
            s = Sentence(c["n"], c["index"], c["text"], c["start"], c["end"], 0, 0)
            ranked.append((Candidate(s, "", 0, int(f["rank"]), w.value(f), {"pair": f.get("pair", 0.0)}), c))
        ranked.sort(key=lambda x: -x[0].score)
        by_sentence = {(x[0].sentence.n, x[0].sentence.start, x[0].sentence.end): x[1] for x in ranked}
        if not row["strong"] or row.get("named_miss") or not ranked:
            out.append((q, -math.inf, False, False))
            continue
        chosen = answer([x[0] for x in ranked], [x[0] for x in ranked], replace(w, threshold=-math.inf))
        text = "\n".join(f"> {c.sentence.text} [{c.sentence.n}]" for c in chosen)
        correct = q.answerable and q.answer_matches(text)
        grounded = correct and any(
            by_sentence[(c.sentence.n, c.sentence.start, c.sentence.end)]["backing"] for c in chosen
        )
        out.append((q, ranked[0][0].score, grounded, correct))
    return out


def tally(found: list[tuple[Any, float, bool, bool]], threshold: float) -> dict[str, int]:
    t = {"answerable": 0, "correct": 0, "grounded": 0, "fv": 0, "answered": 0, "unanswerable": 0, "refused": 0}
    for q, best, grounded, correct in found:
        shown = best >= threshold
        if q.answerable:
            t["answerable"] += 1
            if shown:
                t["answered"] += 1
                t["correct"] += correct
                t["grounded"] += grounded
                t["fv"] += not grounded
        else:
            t["unanswerable"] += 1
            t["refused"] += not shown
    return t


def evaluate(rows: list[dict[str, Any]], w: Any, questions: dict[str, Any]) -> dict[str, int]:
    return tally(outcomes(rows, w, questions), w.threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--collection", default="answers-eval")
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--set", default="dev", choices=["dev"], dest="chosen")
    parser.add_argument("--dump", type=Path, help="write (or, with --load, read) the features here")
    parser.add_argument("--load", action="store_true", help="read the features from --dump instead of asking")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--fv-cost", type=int, default=2, help="a false vouch counts against this many times")
    parser.add_argument(
        "--also",
        nargs=2,
        action="append",
        default=[],
        metavar=("DUMP", "QUESTIONS"),
        help="tune on another set too: features written by an earlier run's --dump, with its questions file",
    )
    args = parser.parse_args(argv)
    ma = _measure()
    questions = {q.id: q for q in ma.load_questions(args.questions)[0]}
    if args.load and args.dump:
        rows = json.loads(args.dump.read_text())
    else:
        rows = collect(args.home, args.collection, args.questions, args.corpus, args.chosen)
        if args.dump:
            args.dump.write_text(json.dumps(rows))
    for dump, more in args.also:
        questions |= {q.id: q for q in ma.load_questions(Path(more))[0]}
        rows += json.loads(Path(dump).read_text())
    from assistant.retrieval.extract import Weights

    results = []
    thresholds = [x / 100 for x in range(50, 131, 5)]
    grid = itertools.product(
        [1.0], [0.5, 0.75, 1.0], [0.0, 0.15, 0.3], [0.0, 0.15, 0.5, 1.0], [0.0, 0.15, 0.5, 1.0], [0.0, 0.05, 0.1],
        [0.0, 0.03, 0.06], [0.0, 0.05, 0.1],
    )  # fmt: skip
    for meaning, words, figure, unit, default_, rank, second, pair in grid:
        w = replace(
            Weights(), meaning=meaning, words=words, figure=figure, unit=unit, default=default_, rank=rank,
            second=second, pair=pair,
        )  # fmt: skip
        found = outcomes(rows, w, questions)
        results.extend((replace(w, threshold=th), tally(found, th)) for th in thresholds)
    default = evaluate(rows, Weights(), questions)
    print(f"current defaults {Weights()}: {default}")

    def key(item: tuple[Any, dict[str, int]]) -> tuple[int, int, int]:
        t = item[1]
        # Grounded answers count, false vouches count against (--fv-cost times), refusals of
        # unanswerable questions count: the targets in one figure.
        return (t["grounded"] - args.fv_cost * t["fv"] + t["refused"], t["grounded"], -t["fv"])

    results.sort(key=key, reverse=True)
    print(
        "| words | figure | unit | default | rank | threshold | second | pair | grounded | false vouch | answered "
        "| refused |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for w, t in results[: args.top]:
        print(
            f"| {w.words} | {w.figure} | {w.unit} | {w.default} | {w.rank} | {w.threshold:.2f} | {w.second} | "
            f"{w.pair} | "
            f"{t['grounded']}/{t['answerable']} | {t['fv']} | {t['answered']}/{t['answerable']} | "
            f"{t['refused']}/{t['unanswerable']} |"
        )
    zero = [r for r in results if r[1]["fv"] == 0]
    if zero:
        w, t = max(zero, key=lambda r: (r[1]["grounded"], r[1]["refused"]))
        print(f"best with no false vouch: {w} → {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
