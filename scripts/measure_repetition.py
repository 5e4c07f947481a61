#!/usr/bin/env python
"""Check the loop detector (assistant/engines/repetition.py) on real answers.

    python scripts/measure_repetition.py docs/answers-eval/before-real.json [...]

Every answer of a measure_answers.py run is streamed into RepetitionGuard in pieces
of a few characters, as an engine would stream it. Prints, per file: answers that
ran to the token limit (finish_reason length) and how many of them the guard stops
(and after how many characters), and answers that ended on their own that it would
have stopped (each is listed: a loop that ended on its own is right to stop; one
that does not repeat itself is a false stop and must not happen). The stored texts of the BEFORE runs are cut
at about 600 characters, so a loop that starts later is not seen.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.engines.repetition import RepetitionGuard


def stopped_at(text: str, piece: int = 4) -> tuple[int | None, str]:
    guard = RepetitionGuard()
    for i in range(0, len(text), piece):
        if guard.push(text[i : i + piece]):
            return i + piece, guard.reason
    return None, ""


def main(paths: list[str]) -> int:
    for path in paths:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))["rows"]
        looping = [r for r in rows if r.get("finish_reason") == "length"]
        ended = [r for r in rows if r.get("finish_reason") == "stop"]
        caught = []
        for r in looping:
            at, why = stopped_at(r.get("text") or "")
            if at is not None:
                caught.append((r["id"], at, why))
        false = [(r["id"], *stopped_at(r.get("text") or "")) for r in ended]
        false = [f for f in false if f[1] is not None]
        print(f"{path}: {len(caught)}/{len(looping)} length-limited answers stopped; "
              f"{len(false)}/{len(ended)} answers that ended on their own would have been stopped")
        for qid, at, why in caught:
            print(f"  stopped {qid} after {at} chars: {why}")
        for r in looping:
            if r["id"] not in {c[0] for c in caught}:
                print(f"  not stopped {r['id']}: {(r.get('text') or '')[:120]!r}")
        for qid, at, why in false:
            print(f"  would stop (ended on its own; check it loops) {qid} after {at} chars: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
