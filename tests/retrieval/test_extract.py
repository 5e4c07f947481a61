"""Extractive answers (issue 13): the answer-type checks of :mod:`assistant.retrieval.extract`.

Keyword scoring only (no embedder), on passages shaped like the real manuals'; each
test also shows that the answer changes when its rule's weight is set to zero, so it
fails if the rule is removed.
"""

from __future__ import annotations

from dataclasses import replace

from assistant.retrieval.extract import (
    Candidate,
    Source,
    Weights,
    answer,
    asks,
    candidates,
    lacks_default,
    lacks_unit,
    score,
)

# apcupsd's directive reference, two directives: the value sentence of each follows the
# sentence that names it.
ANNOY = (
    "ANNOY time in seconds\n"
    "Specify the time in seconds between messages requesting logged in users to get off the system "
    "during a power failure. The default is 300 seconds (5 minutes)."
)
MINUTES = (
    "MINUTES battery runtime in minutes\n"
    "If MINUTES is specified, during a power failure, apcupsd will shutdown the system when the "
    "remaining runtime on batteries falls below the time specified. The default is 3."
)
HEADING = "APCUPSD User Manual › Configuration Directives used during Power Failures"
#: Keyword scores (no embedder) run lower than the embedder's, for which the threshold
#: was tuned: these tests check the order and the rules, with the tuned rule weights.
KEYWORDS = replace(Weights(), threshold=0.3)


def _sources(*texts: str) -> list[Source]:
    return [Source(n, text, HEADING, n, None, 1, text.count("\n") + 1) for n, text in enumerate(texts, 1)]


def _answer(question: str, weights: Weights, *texts: str) -> list[Candidate]:
    pool = candidates(_sources(*texts))
    return answer(score(question, pool, None, weights), pool, weights)


def test_a_default_is_answered_by_the_default_of_what_the_question_names() -> None:
    question = "What is the default value of the MINUTES directive in apcupsd?"
    shown = _answer(question, KEYWORDS, ANNOY, MINUTES)
    assert shown, "the MINUTES definition states its default"
    assert "The default is 3." in shown[0].sentence.text and shown[0].sentence.n == 2
    # Only another directive's default ("5 minutes") in the passages: not an answer.
    assert _answer(question, KEYWORDS, ANNOY) == []
    without_rule = _answer(question, replace(KEYWORDS, default=0.0), ANNOY)
    assert without_rule and "300 seconds" in " ".join(c.sentence.text for c in without_rule)


def test_a_sentence_without_the_unit_asked_for_does_not_answer() -> None:
    question = "How many days do I have to cure a violation after the copyright holder notifies me?"
    # The sentence sharing most words gives a figure in weeks; the one in days shares fewer.
    weeks = "You must cure a violation within 2 weeks after the copyright holder notifies you of it."
    days = "You have 30 days to cure it after the copyright holder notice."
    shown = _answer(question, KEYWORDS, weeks, days)
    assert shown and shown[0].sentence.text == days
    assert _answer(question, replace(KEYWORDS, unit=0.0), weeks, days)[0].sentence.text == weeks


def test_a_question_in_the_sources_is_never_the_answer_but_its_answer_is() -> None:
    """An FAQ lists its questions before the answers: the listed question shares every
    word with the one asked, and states nothing."""
    toc = "Frequently asked questions\n\n" "How do you make upsd reload the config file?\n\n" "Where are the logs kept?"
    faq = (
        "How do you make upsd reload the config file? Send it a SIGHUP, or run upsd -c reload "
        "as root to make it read the files again."
    )
    question = "How do I make upsd reload its configuration file?"
    assert _answer(question, KEYWORDS, toc) == []
    shown = _answer(question, KEYWORDS, toc, faq)
    assert shown and shown[0].sentence.n == 2 and "SIGHUP" in shown[0].sentence.text


def test_answer_types_are_read_from_the_question_words() -> None:
    assert asks("How many days does the GPL-3 give me?").unit == "day"
    assert asks("Within how many days must I become compliant?").unit == "day"
    assert asks("How long must a written offer be valid?").unit == "any"
    assert asks("What percentage of the rated capacity should the load not exceed?").unit == "%"
    assert asks("Which command starts the drivers?").unit == ""
    default = asks("What is the default POLLTIME in apcupsd?")
    assert default.default and default.names == ("POLLTIME",)
    # A figure asked for in other words: the count of something, a phone number.
    assert asks("What is the maximum number of clients a single upsd can serve?").figure
    assert asks("What is the phone number of APC technical support?").figure
    assert not asks("What does the status OL mean?").figure


def test_units_are_found_with_or_beside_their_figures() -> None:
    days = asks("How many days do I have?")
    assert lacks_unit(days, "9. Acceptance Not Required for Having Copies.")
    assert not lacks_unit(days, "within thirty days after your receipt of the notice")
    long = asks("How long does the primary wait?")
    assert not lacks_unit(long, "It waits up to HOSTSYNC seconds (typically 15) for the secondaries.")
    assert lacks_unit(long, "It waits until 2 of them are gone.")
    percent = asks("What percentage of the capacity may the load use?")
    assert not lacks_unit(percent, "Do not exceed 80 percent of a UPS unit's rated capacity.")
    assert lacks_unit(percent, "The UPS has 3 outlets.")
    default = asks("What is the default value of the MINUTES directive?")
    assert lacks_default(default, "The default is 300 seconds (5 minutes).", "")
    assert lacks_default(default, "If MINUTES is specified, apcupsd shuts down.", "")
    assert not lacks_default(default, "If MINUTES is specified, apcupsd shuts down. The default is 3.", "")
    assert not lacks_default(default, "The default is 3.", "MINUTES")
