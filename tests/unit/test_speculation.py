"""When a turn asks for n-gram speculation, and what the answer reports about it
(the real tiny model, whose build keeps logits for every position)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from assistant.app.notices import answer_footer
from assistant.app.turns import Assistant, result_of
from assistant.core.errors import EnclaveError
from assistant.core.events import GenerationOptions
from assistant.core.settings import Settings
from assistant.retrieval.index import Library

REPEATING = "one two three four five six seven eight one two three four five six seven eight one two three"


def test_speculation_on_asks_the_engine_and_the_footer_says_how_many_drafts_were_accepted(
    settings: Settings, tiny_installed: object
) -> None:
    conv = Assistant(replace(settings, speculation="on", max_tokens=24)).conversation("tiny", save=False)
    assert conv.options(24).speculative
    result = conv.ask(REPEATING)
    assert result.usage is not None
    assert conv.session.native_token_count() == conv.session.token_count  # type: ignore[attr-defined]
    # (whether this answer drafted depends on what the tiny model writes; tests/engines
    # checks a prompt that does.) The footer and --json carry the counts:
    drafted = replace(result, usage=replace(result.usage, drafted_tokens=12, accepted_tokens=9))
    assert "speculation 9/12 drafts accepted" in answer_footer(drafted)
    assert drafted.usage is not None and drafted.usage.as_dict()["accepted_tokens"] == 9


def test_auto_speculates_for_document_answers_only(settings, tiny_installed) -> None:  # type: ignore[no-untyped-def]
    fast = Assistant(replace(settings, speculation="auto", power="performance")).conversation("tiny", save=False)
    assert not fast.options(16).speculative
    result = fast.ask(REPEATING)
    assert result.usage is not None and result.usage.drafted_tokens == 0
    assert "drafts accepted" not in answer_footer(result)
    # Free text loses with speculation (more CPU per token), so saver does not turn it on.
    assistant = Assistant(replace(settings, speculation="auto", power="saver"))
    saver = assistant.conversation("tiny", save=False)
    assert not saver.options(16).speculative
    saver.use_documents(Library(assistant.store))
    assert saver.options(16).speculative
    # A caller's own options (the server's, per request) get the same decision.
    assert saver.options(16, GenerationOptions(max_tokens=99)).speculative
    saver.use_documents(None)
    assert not saver.options(16, GenerationOptions(max_tokens=99)).speculative
    off = Assistant(replace(settings, speculation="off", power="saver")).conversation("tiny", save=False)
    assert not off.options(16).speculative


def test_an_unknown_speculation_mode_is_refused_by_name(enclave_home, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ENCLAVE_SPECULATION", "always")
    with pytest.raises(EnclaveError, match="speculation"):
        Settings.load()


def test_retry_after_a_cancelled_answer_answers_that_message_not_the_one_before(
    settings: Settings, tiny_installed: object, slow_decoding: object
) -> None:
    """Found by a tester: Ctrl-C on an answer, then /retry, answered the message before
    it again (replacing that good answer) instead of the one whose answer was stopped."""
    assert callable(slow_decoding)
    slow_decoding(0.05)
    conv = Assistant(replace(settings, max_tokens=24)).conversation("tiny", save=False)
    conv.ask("first question")
    assert conv.retry_target() == ("first question", True)
    # Stopped half-way (the tiny model's bytes may not make a character until the end,
    # so no text event is waited for): as Ctrl-C would, from another thread.
    timer = threading.Timer(0.4, conv.cancel)
    timer.start()
    result = result_of(conv.turn("second question"))
    timer.join()
    conv.session.reset_cancel()
    cancelled = result.finish_reason == "cancelled"
    assert cancelled and conv.retry_target() == ("second question", False)
    asked = [m["content"] for m in conv.messages if m["role"] == "user"]
    assert asked == ["first question"]  # the stopped exchange was not kept
    text, replacing = conv.retry_target() or ("", True)
    result = result_of(conv.turn(text, replace_last=replacing))
    assert result.finish_reason != "cancelled"
    assert [m["content"] for m in conv.messages if m["role"] == "user"] == ["first question", "second question"]
    assert conv.retry_target() == ("second question", True)  # now an ordinary retry of the last answer
