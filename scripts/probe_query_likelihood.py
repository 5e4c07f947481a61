#!/usr/bin/env python
"""Would the chat model, as a second reader, choose answer sentences better? (issue 13)

    python scripts/probe_query_likelihood.py --home ENCLAVE_HOME --features DUMP.json \
        [--top 5] [--model NAME] [--out SCORES.json]

DUMP.json is what ``scripts/tune_extract.py --dump`` writes for the dev questions: every
candidate sentence of every question with its features and whether it holds the
expected fact (``accept``). For the ``--top`` sentences of each question by today's
extractive score, the model scores the question given the sentence ("query likelihood":
the mean log-probability of the question's tokens after "Passage: SENTENCE\\nQuestion:"),
minus the same without the passage (so the question's own likelihood cancels: a
pointwise mutual information). The script prints, per question, the extractive choice
and the model's, whether each holds the fact, and the totals: how often re-ranking the
top sentences by the model (alone, or added to the extractive score) picks a sentence
with the fact, and how the model's score separates answerable from unanswerable
questions. Dev questions only: held-out questions are not in the dump.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEMPLATE = "Passage: {passage}\nQuestion: "


def _extractive(c: dict[str, Any]) -> float:
    from assistant.retrieval.extract import Weights

    return float(Weights().value(c["features"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--model")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["ENCLAVE_HOME"] = str(args.home)
    from assistant.app.turns import Assistant
    from assistant.core.settings import Settings

    rows = json.loads(args.features.read_text())
    assistant = Assistant(Settings.load())
    _, engine = assistant.load(args.model)
    tok = engine.tokenizer
    session = engine.open_session(1024)
    questions = {
        q["id"]: q["question"]
        for q in json.loads((ROOT / "tests/data/answers/real_questions.json").read_text())["questions"]
    }

    def mean_logprob(prefix: str, question: str) -> float:
        head = tok.encode(prefix)
        ids = tok.encode(prefix + question)
        scores = session.score(ids[:1000])
        tail = scores[len(head) - 1 :]
        return sum(tail) / max(len(tail), 1)

    out = []
    started = time.perf_counter()
    scored_sentences = 0
    for row in rows:
        question = questions[row["id"]]
        top = sorted(row["candidates"], key=lambda c: -_extractive(c))[: args.top]
        if not top:
            out.append({"id": row["id"], "answerable": row["answerable"], "top": []})
            continue
        prior = mean_logprob(TEMPLATE.format(passage=""), question)
        entries = []
        for c in top:
            ql = mean_logprob(TEMPLATE.format(passage=c["text"]), question)
            scored_sentences += 1
            entries.append(
                {"text": c["text"][:120], "accept": c["accept"], "extractive": _extractive(c), "pmi": ql - prior}
            )
        out.append({"id": row["id"], "answerable": row["answerable"], "top": entries})
        print(f"{row['id']}: extractive picks {entries[0]['accept']}, pmi picks "
              f"{max(entries, key=lambda e: e['pmi'])['accept']}, best pmi {max(e['pmi'] for e in entries):.2f}",
              file=sys.stderr)  # fmt: skip
    seconds = time.perf_counter() - started
    session.close()
    assistant.close()

    def pick(entries: list[dict[str, Any]], key: Any) -> bool:
        return bool(entries) and bool(max(entries, key=key)["accept"])

    answerable = [r for r in out if r["answerable"]]
    print(f"{len(answerable)} answerable dev questions, top {args.top} sentences each")
    print(f"  fact among the top {args.top}: {sum(any(e['accept'] for e in r['top']) for r in answerable)}")
    print(f"  extractive first pick holds the fact: {sum(pick(r['top'], lambda e: e['extractive']) for r in answerable)}")
    print(f"  model (PMI) pick holds the fact: {sum(pick(r['top'], lambda e: e['pmi']) for r in answerable)}")
    for weight in (0.05, 0.1, 0.2, 0.4):
        hits = sum(pick(r["top"], lambda e, w=weight: e["extractive"] + w * e["pmi"]) for r in answerable)
        print(f"  extractive + {weight} x PMI pick holds the fact: {hits}")
    for label, group in (("answerable", answerable), ("unanswerable", [r for r in out if not r["answerable"]])):
        best = [max(e["pmi"] for e in r["top"]) for r in group if r["top"]]
        if best:
            print(f"  best PMI, {label}: median {statistics.median(best):.2f}, min {min(best):.2f}, max {max(best):.2f}")
    per = seconds / max(scored_sentences, 1)
    print(f"  {scored_sentences} sentences scored in {seconds:.1f} s ({per * 1000:.0f} ms each, machine as it was)")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if not math.isnan(per) else 1


if __name__ == "__main__":
    sys.exit(main())
