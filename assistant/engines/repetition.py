"""Loop detection while an answer is decoded: stop a model that repeats itself.

A small model under greedy decoding often falls into a loop ("The answer is: The
answer is: …", "The default value of DEADTIME in upsmon.conf is 2000." ×20): 35 of
80 answers of the issue-13 BEFORE run ran to the 512-token limit, and looping was
the usual reason. The text so far is watched as it streams (so it works the same
for token-level and message-level engines) and the answer is stopped when

* its tail is one unit repeated at least :data:`TAIL_REPEATS` times and over at
  least :data:`MIN_SPAN` characters, the unit at least :data:`MIN_UNIT` characters
  with two letters or digits ("is the one that is the one that is the one that",
  "2022-01-01: 2022-01-01: 2022-01-01: 2022-01-01: "); or
* a sentence of at least :data:`MIN_WORDS` words comes for the
  :data:`SENTENCE_REPEATS`-th time, word for word (punctuation and case aside), or,
  for sentences of :data:`NEAR_WORDS` words or more, nearly (at least
  :data:`NEAR_SHARE` of their words in common: "… wait up to 15 seconds …",
  "… wait up to 180 seconds …").

Checked on the BEFORE answers (``scripts/measure_repetition.py``, texts stored cut at
~600 characters): within those characters it stops 23 of the 35 real and 13 of the
15 seeded answers that ran to the token limit, and 4 that looped before ending on
their own (nut-08, apc-05, seed-017, seed-069); it stops no answer that did not
repeat itself.
"""

from __future__ import annotations

import re

TAIL_REPEATS = 3
MIN_UNIT = 4
MAX_UNIT = 200
MIN_SPAN = 48
SENTENCE_REPEATS = 3
MIN_WORDS = 4
NEAR_WORDS = 8
NEAR_SHARE = 0.8

_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|\n+")


class RepetitionGuard:
    """Feed it the answer as it streams; :meth:`push` says when it loops."""

    def __init__(self) -> None:
        self.text = ""
        self._counts: dict[str, int] = {}
        self._long: list[tuple[str, set[str]]] = []  # long sentences seen, for near repeats
        self._done = 0  # characters already split into finished sentences
        self.reason = ""

    def push(self, delta: str) -> bool:
        """Add ``delta``; True once the answer is looping (``reason`` says how)."""
        if not delta:
            return False
        self.text += delta
        return self._sentences() or self._tail()

    def _tail(self) -> bool:
        text = self.text
        n = len(text)
        for unit in range(MIN_UNIT, min(MAX_UNIT, n // TAIL_REPEATS) + 1):
            repeats = max(TAIL_REPEATS, -(-MIN_SPAN // unit))
            if unit * repeats > n:
                continue
            last = text[n - unit :]
            if sum(c.isalnum() for c in last) < 2 or len(set(last.strip())) < 2:
                continue  # a rule of dashes, a run of spaces: layout, not a loop
            if all(text[n - (k + 1) * unit : n - k * unit] == last for k in range(1, repeats)):
                self.reason = f"the same {unit} characters {repeats} times in a row"
                return True
        return False

    def _sentences(self) -> bool:
        pieces = _SENTENCE_END.split(self.text[self._done :])
        if len(pieces) < 2:
            return False
        finished = pieces[:-1]
        self._done = len(self.text) - len(pieces[-1])
        for sentence in finished:
            words = re.findall(r"\w+", sentence.lower())
            if len(words) < MIN_WORDS:
                continue
            key = " ".join(words)
            if len(words) >= NEAR_WORDS and key not in self._counts:
                mine = set(words)
                for other, theirs in self._long:
                    if len(mine & theirs) >= NEAR_SHARE * len(mine | theirs):
                        key = other  # nearly the same as a sentence already said
                        break
                else:
                    self._long.append((key, mine))
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._counts[key] >= SENTENCE_REPEATS:
                self.reason = f"the sentence “{sentence.strip()[:60]}” {SENTENCE_REPEATS} times"
                return True
        return False
