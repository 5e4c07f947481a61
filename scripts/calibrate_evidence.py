"""Calibrate the weak-evidence threshold on Enclave's own decision.

For each question of the retrieval corpus (tests/data/retrieval_corpus.py), runs the
fused search Enclave runs for an answer (k = docs_passages) and the decision
``assistant.retrieval.answer.evidence`` makes at each threshold: how many answerable
questions would still be answered, how many unanswerable ones refused.

    python scripts/calibrate_evidence.py [--corpus DIR] [--embedder HOME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from measure_retrieval import COLLECTION, load_questions
    from retrieval_harness import corpus_files, find_embedder, generated_corpus, open_library

    from assistant.retrieval.answer import evidence

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--embedder", type=Path)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    root = args.corpus or generated_corpus()
    questions = load_questions(root)
    choice = find_embedder(args.embedder)
    if choice.embedder is None:
        print(f"needs the embedding model: {choice.why_not}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as home:
        lib, store = open_library(Path(home), choice.embedder)
        lib.add(corpus_files(root), collection=COLLECTION)
        results = [(q, lib.search(q["q"], k=args.k, collections=[COLLECTION])) for q in questions]
        store.close()
    answerable = [(q, h) for q, h in results if q["path"] is not None]
    unanswerable = [(q, h) for q, h in results if q["path"] is None]
    print(f"{len(answerable)} answerable, {len(unanswerable)} unanswerable questions; fused search, k={args.k}")
    print(f"{'threshold':>9}  {'answered (answerable)':>22}  {'refused (unanswerable)':>23}  balanced")
    for step in range(30, 61, 2):
        t = step / 100
        kept = sum(evidence(q["q"], h, t)[0] for q, h in answerable) / len(answerable)
        refused = sum(not evidence(q["q"], h, t)[0] for q, h in unanswerable) / len(unanswerable)
        print(f"{t:>9.2f}  {kept:>22.2f}  {refused:>23.2f}  {(kept + refused) / 2:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
