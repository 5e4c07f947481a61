"""Which passage size finds answers best? Runs scripts/measure_retrieval.py once per
chunk size (target / limit, in the embedding model's word pieces) and prints one
table. The sizes are the chunker's defaults, set for this run only.

    python scripts/measure_chunking.py [--corpus DIR] [--embedder HOME] [--sizes 100/160 160/240 220/256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import measure_retrieval
    from retrieval_harness import generated_corpus

    from assistant.retrieval import chunker

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--embedder", type=Path)
    parser.add_argument("--sizes", nargs="+", default=["100/160", "160/240", "220/256"])
    args = parser.parse_args()
    original = chunker.chunk_blocks.__defaults__
    rows = []
    for size in args.sizes:
        target, limit = (int(x) for x in size.split("/"))
        assert original is not None
        chunker.chunk_blocks.__defaults__ = (original[0], target, limit)
        with tempfile.TemporaryDirectory() as home:
            report = measure_retrieval.measure(args.corpus or generated_corpus(), Path(home), args.embedder, k=5)
        for mode in report["modes"]:
            rows.append((size, mode["mode"], mode["recall"], mode["mrr"], report["index"]["chunks"]))
    chunker.chunk_blocks.__defaults__ = original
    print(f"{'size':<9}{'mode':<8}{'recall@5':>9}{'MRR@10':>8}{'chunks':>8}")
    for size, mode, recall, mrr, chunks in rows:
        print(f"{size:<9}{mode:<8}{recall:>9.2f}{mrr:>8.2f}{chunks:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
