"""The scoring rules of scripts/measure_answers.py, on hand-made answers whose right
labels are worked out below (the "9 days" case of issue 13 among them), and the
committed real-corpus questions file against its own rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

from measure_answers import (  # noqa: E402
    Question,
    check_questions,
    contains,
    load_questions,
    refusal,
    same_file,
    score,
    split_of,
    summary,
)

CORPUS = Path("/corpus")
GPL3 = "licenses/GPL-3.txt"
CURE = (
    "Moreover, your license from a particular copyright holder is reinstated permanently if the copyright "
    "holder notifies you of the violation by some reasonable means, this is the first time you have received "
    "notice of violation of this License (for any work) from that copyright holder, and you cure the violation "
    "prior to 30 days after your receipt of the notice.\n  9. Acceptance Not Required for Having Copies."
)


def _gpl_question() -> Question:
    return Question(
        id="lic-01",
        question="How many days does the GPL-3 give me to cure a violation?",
        answerable=True,
        set="dev",
        topic="lic",
        file=GPL3,
        accept_regex=r"\b30\b|thirty",
        evidence=["cure the violation prior to 30 days after your receipt of the notice"],
    )


def _citation(n: int, path: str, text: str, cited: bool = False, supports: int = 0) -> dict[str, Any]:
    return {
        "n": n,
        "path": str(CORPUS / path),
        "page": None,
        "line_start": 1,
        "line_end": 9,
        "text": text,
        "cited": cited,
        "supports": supports,
    }


def _answer(text: str, *citations: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"text": text, "finish_reason": "stop", "usage": {"ttft_ms": 900.0}, "citations": list(citations), **extra}


def test_figures_match_only_as_whole_numbers() -> None:
    assert contains("upsd listens on port 3493/tcp", "3493")
    assert not contains("within 15 seconds", "5")
    assert contains("set its sdorder to -1.", "-1")
    assert contains("You\u2019ll need to restart", "you'll need to restart")  # curly quote made plain


def test_the_nine_days_case_is_a_false_vouch_and_not_correct() -> None:
    # Issue 13: the answer said "9 days", the passage says 30, and the glued heading
    # "9. Acceptance" made Enclave label the passage as matching the answer.
    answer = _answer("You have 9 days to cure the violation.", _citation(1, GPL3, CURE, supports=1))
    row = score(_gpl_question(), answer, CORPUS)
    assert not row.correct and not row.grounded
    assert row.false_vouch and row.false_vouch_reasons == ["answer lacks the fact"]
    assert row.fact_retrieved_in == [1]  # search found it; the reader missed it


def test_a_right_answer_backed_by_the_right_file_is_grounded() -> None:
    answer = _answer("You have 30 days after the notice [1].", _citation(1, GPL3, CURE, cited=True))
    row = score(_gpl_question(), answer, CORPUS)
    assert row.correct and row.grounded and not row.false_vouch


def test_a_right_answer_vouched_by_another_licence_is_a_false_vouch() -> None:
    # GFDL-1.3 has the same sentence; it does not back a claim about the GPL-3.
    answer = _answer("30 days.", _citation(1, "licenses/GFDL-1.3.txt", CURE, supports=1))
    row = score(_gpl_question(), answer, CORPUS)
    assert row.correct and not row.grounded and row.false_vouch


def test_a_right_answer_without_labels_is_correct_but_not_grounded_and_vouches_nothing() -> None:
    row = score(_gpl_question(), _answer("30 days.", _citation(1, GPL3, CURE)), CORPUS)
    assert row.correct and not row.grounded and not row.false_vouch


def test_refusals_are_found_by_finish_reason_mode_or_opening_phrase() -> None:
    assert refusal({"finish_reason": "no-evidence"}, "I found nothing relevant …") == "finish_reason no-evidence"
    assert refusal({"finish_reason": "stop", "mode": "not-found"}, "").startswith("mode")
    assert refusal({"finish_reason": "stop"}, "The documents do not say which port it uses.").startswith("phrase")
    # A refusal phrase after a first sentence that answers does not make it a refusal.
    assert refusal({"finish_reason": "stop"}, "It is 3493. The cable length is not specified in the manual.") == ""


def test_a_refusal_is_not_an_answer_and_never_a_false_vouch() -> None:
    answer = _answer("The documents do not say.", _citation(1, GPL3, CURE, cited=True))
    row = score(_gpl_question(), answer, CORPUS)
    assert row.refused and not row.correct and not row.false_vouch


def test_per_sentence_sources_must_quote_their_passage_or_carry_the_fact() -> None:
    quoted = "you cure the violation prior to 30 days after your receipt of the notice"
    ok = _answer(
        quoted,
        _citation(1, GPL3, CURE),
        answer_sentences=[{"text": quoted, "source": 1}],
        mode="extractive",
    )
    row = score(_gpl_question(), ok, CORPUS)
    assert row.grounded and not row.false_vouch and row.mode == "extractive"

    made_up = _answer(
        "30 days. The licence is very strict.",
        _citation(1, GPL3, CURE),
        answer_sentences=[{"text": "30 days.", "source": 1}, {"text": "The licence is very strict.", "source": 1}],
    )
    row = score(_gpl_question(), made_up, CORPUS)
    assert row.grounded  # the first sentence carries the fact and its source states it
    assert row.false_vouch and row.false_vouch_reasons[0].startswith("sentence not in its source [1]")


def test_unanswerable_answered_with_a_label_is_counted_apart() -> None:
    q = Question(id="un-02", question="Apache cure period?", answerable=False, set="heldout", topic="licenses")
    row = score(q, _answer("You have 30 days.", _citation(1, GPL3, CURE, supports=1)), CORPUS)
    assert not row.refused and row.vouched_unanswerable and not row.false_vouch
    totals = summary([row])
    assert totals["vouched_unanswerable"] == 1 and totals["unanswerable_refused"] == 0


def test_expected_files_match_with_or_without_the_txt_suffix() -> None:
    assert same_file("licenses/GPL-3", "licenses/GPL-3.txt")
    assert not same_file("licenses/GPL-2.txt", "licenses/GPL-3.txt")


def test_the_split_rule_is_deterministic_and_about_sixty_percent() -> None:
    items = [(f"q-{i}", (True, "t")) for i in range(10)]
    first, again = split_of(items), split_of(list(reversed(items)))
    assert first == again
    assert sum(v == "dev" for v in first.values()) == 6


@pytest.mark.parametrize("name", ["real_questions.json"])
def test_the_committed_questions_follow_their_rules(name: str) -> None:
    questions, header = load_questions(ROOT / "tests" / "data" / "answers" / name)
    assert check_questions(questions, corpus=None) == []
    assert "MUST NOT BE USED TO TUNE" in header["heldout_policy"]
    answerable = [q for q in questions if q.answerable]
    assert len(answerable) >= 50 and len(questions) - len(answerable) >= 15
    asked = {q.question for q in questions}
    assert "Which TCP port does upsd listen on?" in asked


@pytest.mark.parametrize(
    ("question", "follows"),
    [
        ("Which file sets it?", True),
        ("And for UDP?", True),
        ("What about the LGPL?", True),
        ("Why?", True),
        ("How often are their filters changed?", True),
        ("Which TCP port does upsd listen on?", False),
        ("Is there a way to reset the pump?", False),
        ("What is the file that sets the port?", False),
    ],
)
def test_a_follow_up_is_searched_with_the_previous_question(question: str, follows: bool) -> None:
    from assistant.retrieval.answer import leans_back

    assert leans_back(question) is follows
