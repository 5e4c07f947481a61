"""Finding the documents a question names, at the document counts of large collections.

Before (every document's names parsed and matched per search) and after (an index of
names by first word, built once per state of the documents table), on synthetic
documents named as ``bench_retrieval.py --scale`` names them (30 passages each: 1M
passages are 33,334 documents) plus a few licences, so some questions name one.

    python scripts/bench_names.py [--documents 3334 33334] [--old OLD_NAMES_PY]

``--old`` is a copy of the former ``assistant/retrieval/names.py`` (``git show
e2c9360:assistant/retrieval/names.py > /tmp/names_old.py``) to time side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.retrieval.names import NameIndex

QUESTIONS = [
    "How long does the warranty of the pump last?",
    "the LGPL 2.1 warranty clause",
    "Under the GPL-3, how many days do I have to cure a violation?",
    "Which TCP port does upsd listen on?",
    "What does the Apache License 2.0 say about patents?",
]
LICENCES = [
    ("/usr/share/common-licenses/GPL-3", "GNU GENERAL PUBLIC LICENSE Version 3"),
    ("/usr/share/common-licenses/LGPL-2.1", "GNU LESSER GENERAL PUBLIC LICENSE Version 2.1"),
    ("/usr/share/common-licenses/Apache-2.0", "Apache License Version 2.0"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, nargs="+", default=[3334, 33334])
    parser.add_argument("--old", type=Path, help="the former names.py, timed as it was called per search")
    args = parser.parse_args()
    old = None
    if args.old is not None:
        spec = importlib.util.spec_from_file_location("names_old", args.old)
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        sys.modules["names_old"] = old  # dataclasses look their module up
        spec.loader.exec_module(old)
    for n in args.documents:
        docs = [(i, i % 10, f"/bench/{i:07d}.txt", "") for i in range(n)]
        docs += [(n + j, 0, path, title) for j, (path, title) in enumerate(LICENCES)]
        started = time.perf_counter()
        index = NameIndex(docs)
        build = (time.perf_counter() - started) * 1000
        new = []
        for q in QUESTIONS * 20:
            started = time.perf_counter()
            index.named(q, set(range(10)))
            new.append((time.perf_counter() - started) * 1000)
        line = f"{n:>7,} documents: index built once in {build:.0f} ms; per search {statistics.median(new):.3f} ms"
        if old is not None:
            before = []
            for q in QUESTIONS:
                started = time.perf_counter()
                old.named(q, [(d, p, t) for d, _, p, t in docs])
                before.append((time.perf_counter() - started) * 1000)
            line += f" (before: {statistics.median(before):.0f} ms per search)"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
