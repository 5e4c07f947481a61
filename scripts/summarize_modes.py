#!/usr/bin/env python
"""One table row per answer mode from measure_answers.py --json runs, with the timings
Enclave reports (``timings`` in ``ask --json``: first text shown and whole turn,
from the question), which ``usage.ttft_ms`` does not give for every mode.

    python scripts/summarize_modes.py extract=dev.json quote=quote.json free=free.json [--set dev|heldout]

Columns: correct, correct and grounded, false vouches (answerable), answerable
answered, unanswerable refused, median time to the first text, median whole turn,
median wall per `enclave ask` process (model load included).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def median(values: list[float]) -> str:
    return f"{statistics.median(values) / 1000:.1f} s" if values else "–"


def row(name: str, path: Path, chosen: str | None) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = [r for r in data["rows"] if chosen is None or r["set"] == chosen]
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    first = [float((r.get("raw") or {}).get("timings", {}).get("first_text_ms", 0)) for r in rows if r.get("raw")]
    total = [float((r.get("raw") or {}).get("timings", {}).get("total_ms", 0)) for r in rows if r.get("raw")]
    wall = [1000 * float(r["wall_s"]) for r in rows if r.get("wall_s")]

    def pct(n: int, d: int) -> str:
        return f"{n}/{d} ({100 * n / d:.0f} %)" if d else "–"

    return (
        f"| {name} | {pct(sum(r['correct'] for r in ans), len(ans))} | {pct(sum(r['grounded'] for r in ans), len(ans))} "
        f"| {pct(sum(r['false_vouch'] for r in ans), len(ans))} "
        f"| {pct(sum(not r['refused'] and not r['error'] for r in ans), len(ans))} "
        f"| {pct(sum(r['refused'] for r in una), len(una))} | {median([f for f in first if f])} "
        f"| {median([t for t in total if t])} | {median(wall)} |"
    )


def main(argv: list[str]) -> int:
    chosen = None
    if "--set" in argv:
        i = argv.index("--set")
        chosen = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    print("| mode | correct | correct and grounded | false vouch | answerable answered | unanswerable refused "
          "| first text (median) | whole turn (median) | wall per question |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in argv:
        name, _, path = spec.partition("=")
        print(row(name, Path(path), chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
