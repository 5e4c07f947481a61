"""The arithmetic of scripts/measure_retrieval.py: recall, MRR, answer matching and the
weak-evidence threshold, on hand-made outcomes whose right values are worked out below."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from measure_retrieval import Outcome, best_threshold, summarise, thresholds
from retrieval_harness import is_answer


def _q(path: str | None, style: str = "keyword", entity: bool | None = True) -> dict[str, object]:
    return {"q": "?", "path": path, "answer": "x" if path else None, "style": style, "entity_in_passage": entity}


def test_separable_values_give_a_perfect_threshold_between_them() -> None:
    cut, balanced, precision, recall = best_threshold([0.6, 0.7, 0.8], [0.1, 0.2, 0.3])
    assert 0.3 < cut < 0.6
    assert (balanced, precision, recall) == (1.0, 1.0, 1.0)


def test_overlapping_values_pick_the_cut_with_the_best_balanced_accuracy() -> None:
    # Cut 0.575 flags both unanswerable (0.4, 0.55) and one answerable (0.5):
    # recall 1, specificity 2/3, balanced 5/6, precision 2/3. Every other cut is worse.
    cut, balanced, precision, recall = best_threshold([0.5, 0.6, 0.7], [0.4, 0.55])
    assert cut == pytest.approx(0.575)
    assert balanced == pytest.approx(5 / 6)
    assert precision == pytest.approx(2 / 3)
    assert recall == 1.0


def _outcome(q: dict[str, object], rank: int | None, file_rank: int | None, sim: float | None, score: float) -> Outcome:
    return Outcome(q, rank, file_rank, sim, score, 0.001)


def test_recall_mrr_and_splits() -> None:
    outcomes = [
        _outcome(_q("a", "keyword", True), 1, 1, None, 9.0),
        _outcome(_q("b", "paraphrase", False), 3, 2, None, 5.0),
        _outcome(_q("c", "paraphrase", True), 7, 1, None, 4.0),  # found, but below k=5
        _outcome(_q("d", "keyword", False), None, None, None, 3.0),
        _outcome(_q(None, "off-topic", None), None, None, None, 1.0),
    ]
    report = summarise("bm25", outcomes, k=5)
    assert report.recall == pytest.approx(2 / 4)
    assert report.right_file == pytest.approx(3 / 4)
    assert report.mrr == pytest.approx((1 + 1 / 3 + 1 / 7) / 4)
    assert report.by_style == {"keyword": 0.5, "paraphrase": 0.5}
    assert report.by_passage == {"names entity": 0.5, "title only": 0.5}
    assert [m["path"] for m in report.misses] == ["c", "d"]


def test_a_mode_without_similarity_only_thresholds_its_score() -> None:
    outcomes = [_outcome(_q("a"), 1, 1, None, 9.0), _outcome(_q(None, "off-topic", None), None, None, None, 1.0)]
    (found,) = thresholds("bm25", outcomes)
    assert found.signal == "score" and 1.0 < found.threshold < 9.0 and found.balanced_accuracy == 1.0


def test_a_question_without_a_top_similarity_counts_as_finding_nothing() -> None:
    outcomes = [
        _outcome(_q("a"), 1, 1, 0.7, 0.03),
        _outcome(_q("b"), 1, 1, 0.6, 0.03),
        _outcome(_q(None, "in-domain", None), None, None, None, 0.02),  # top hit came from bm25 only
        _outcome(_q(None, "off-topic", None), None, None, 0.2, 0.01),
    ]
    similarity = next(t for t in thresholds("fused", outcomes) if t.signal == "similarity")
    assert similarity.recall == 1.0 and similarity.precision == 1.0
    assert similarity.unanswerable["none"] == 1.0 and similarity.unanswerable["max"] == pytest.approx(0.2)


def test_a_hit_answers_only_from_the_right_file_and_with_the_answer_in_its_text(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    target = tmp_path / "m" / "pump.md"

    def hit(path: Path, text: str) -> SimpleNamespace:
        return SimpleNamespace(path=str(path), text=text)

    assert is_answer(hit(target, "tighten the nut to 85\n  N·m now"), tmp_path, "m/pump.md", "85 N·m")
    assert is_answer(hit(target, "TIGHTEN TO 85 N·M"), tmp_path, "m/pump.md", "85 N·m")
    assert not is_answer(hit(target, "tighten to 58 N·m"), tmp_path, "m/pump.md", "85 N·m")
    assert not is_answer(hit(tmp_path / "m" / "other.md", "85 N·m"), tmp_path, "m/pump.md", "85 N·m")
