"""Answering from documents on the real (tiny) engine: sources in the prompt, citations
that point at real text, weak evidence refused, passages fitted to the window."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.app.turns import Assistant, Conversation
from assistant.catalog.manifests import InstalledModel
from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.retrieval.answer import Passage, cited_numbers, evidence, render, supporting
from assistant.retrieval.index import Hit, Library, fts_query
from assistant.storage.audit import AuditLog


@pytest.fixture
def manuals(tmp_path: Path) -> Path:
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "pump.md").write_text(
        "# P-200 pump\n\n## Resetting pressure\n\nHold the red RESET button for five seconds.\n"
        "The gauge returns to zero bar.\n\n## Fault codes\n\nFault E14 means the impeller is blocked.\n"
    )
    (folder / "lease.txt").write_text("Either party may terminate the lease with ninety days written notice.\n")
    return folder


def open_conversation(
    settings: Settings, manuals: Path, window: int = 1024, max_tokens: int = 32, mode: str = "free"
) -> tuple[Assistant, Conversation]:
    # The tiny model's 320-token vocabulary spends ~3 tokens a word: 1024 is a small window for it.
    # These tests are about the model's part of an answer: mode free (quotes, then the model).
    assistant = Assistant(
        settings.__class__.load(model="tiny", max_tokens=max_tokens, context_window=window, docs_answer_mode=mode)
    )
    conv = assistant.conversation("tiny")
    library = Library(assistant.store)
    library.add([manuals], "manuals")
    conv.use_documents(library, ["manuals"])
    return assistant, conv


def test_answer_cites_passages_that_contain_the_answer(settings: Settings, tiny_installed: InstalledModel, manuals: Path) -> None:
    assistant, conv = open_conversation(settings, manuals)
    result = conv.ask("How do I reset the pressure on the pump?")
    assert result.finish_reason in ("stop", "length")
    assert result.usage is not None and result.usage.prompt_tokens > 0
    assert result.citations is not None
    first = result.citations[0]
    assert Path(first["path"]).name == "pump.md"
    lines = Path(first["path"]).read_text().splitlines()[first["line_start"] - 1 : first["line_end"]]
    assert "Hold the red RESET button" in "\n".join(lines)
    assert first["text"] in "\n".join(lines)
    # The model saw the passage quoted with its number and location.
    sent = conv.messages[-2]["content"]
    assert "[1] pump.md, lines 5–6" in sent and "Hold the red RESET button" in sent
    assert sent.endswith("Question: How do I reset the pressure on the pump?")
    # Stored: the user's own words, the answer with its citations, and an audit entry.
    assert result.conversation_id is not None
    stored = assistant.store.messages(result.conversation_id)
    assert stored[0].content == "How do I reset the pressure on the pump?"
    assert stored[1].citations and stored[1].citations[0]["path"] == first["path"]
    used = [e for e in AuditLog(assistant.store).entries() if e["kind"] == "documents_used"]
    assert used and '"manuals"' in used[-1]["detail"]
    assert AuditLog(assistant.store).verify() == []
    assistant.close()


def test_weak_evidence_is_refused_without_running_the_model(settings: Settings, tiny_installed: InstalledModel, manuals: Path) -> None:
    assistant, conv = open_conversation(settings, manuals)
    result = conv.ask("Which wine goes with salmon?")
    assert result.finish_reason == "no-evidence"
    assert "found nothing relevant" in result.text and "manuals" in result.text
    # The model saw nothing: zero tokens in the usage, an empty plan, an empty KV cache.
    assert result.usage is not None and result.usage.prompt_tokens == result.usage.completion_tokens == 0
    assert result.context is not None and result.context.used == 0 and not result.context.drops
    assert conv.session.tokens == []
    assert result.citations == []
    assistant.close()


def test_passages_shrink_to_fit_a_tight_window(settings: Settings, tiny_installed: InstalledModel, tmp_path: Path) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    for i in range(6):
        body = " ".join(f"Valve procedure step {j} for unit {i}: inspect the seal and torque it." for j in range(12))
        (folder / f"unit{i}.txt").write_text(body + "\n")
    assistant, conv = open_conversation(settings, folder, window=768)
    result = conv.ask("valve seal torque procedure")
    given = result.citations
    assert given is not None and 1 <= len(given) < 5
    assert any("did not fit" in n or "shortened" in n for n in result.notices)
    plan = result.context
    assert plan is not None and plan.used + plan.reserve <= plan.window
    assistant.close()
    # A window too small for even a shortened passage is an error, not an answer without sources.
    assistant, conv = open_conversation(settings, folder, window=400)
    with pytest.raises(EnclaveError, match="none fits"):
        conv.ask("valve seal torque procedure")
    assistant.close()


def test_chat_keeps_sources_in_the_cache_prefix(settings: Settings, tiny_installed: InstalledModel, manuals: Path) -> None:
    assistant, conv = open_conversation(settings, manuals, window=2048, max_tokens=8)
    conv.ask("How do I reset the pressure on the pump?")
    second = conv.ask("What does fault E14 mean?")
    assert second.usage is not None
    assert second.usage.prefilled_tokens < second.usage.prompt_tokens  # turn 1 (with its sources) stayed cached
    conv.use_documents(None)
    third = conv.ask("Thanks")
    assert third.citations is None
    assistant.close()


def test_citation_numbers_and_support() -> None:
    assert cited_numbers("Hold it [1]. Also [2, 3] and [4][5]; not [x] or [0.5].") == {1, 2, 3, 4, 5}
    hit = Hit(1, "/m.md", None, 1, 2, "", "Hold the red RESET button for five seconds.", 0.1)
    passages = [Passage(1, hit, hit.text)]
    assert supporting("You hold the red RESET button for five seconds.", passages) == {1: 1}
    assert supporting("The sky is blue and wide today.", passages) == {}
    # Numbers must match: the right words with the wrong figure support nothing.
    assert supporting("You hold the red RESET button for 15 seconds.", passages) == {}
    assert supporting("You hold the red RESET button for 5 seconds.", passages) == {1: 1}  # five is 5
    figures = Hit(2, "/n.md", None, 1, 1, "", "Deflection of the AR-110 belt should be 10 mm.", 0.1)
    other = Hit(3, "/o.md", None, 1, 1, "", "Deflection of the AR-220 belt should be 4 mm.", 0.1)
    both = [Passage(1, figures, figures.text), Passage(2, other, other.text)]
    assert supporting("The deflection of the belt should be 4 mm.", both) == {2: 1}
    assert "[1] m.md, lines 1–2" in render("q?", passages)


def test_evidence_thresholds() -> None:
    hit = Hit(1, "/m.md", None, 1, 1, "Pump", "Hold the red RESET button.", 0.1)
    assert evidence("reset button", [hit], 0.35) == (True, "")
    assert evidence("wine salmon pairing", [hit], 0.35)[0] is False
    hit.similarity = 0.2
    strong, reason = evidence("reset button", [hit], 0.35)
    assert not strong and "0.20" in reason
    assert evidence("anything", [], 0.35)[0] is False


@pytest.mark.parametrize(
    "text", ['pump "pressure', "NEAR(a b)", "a AND OR NOT", "*", "col:umn", "ünïcode wörds", "'; drop table"]
)
def test_fts_query_never_breaks_on_user_text(settings: Settings, text: str, manuals: Path) -> None:
    from assistant.storage.database import Store

    library = Library(Store(settings.locations.database))
    library.add([manuals], "m")
    library.search(text, k=3)  # must not raise
    assert fts_query("") is None
    assert fts_query("the pump") == '"pump"'


def test_an_answer_no_source_supports_gets_a_notice(settings: Settings, tiny_installed: InstalledModel, manuals: Path) -> None:
    assistant, conv = open_conversation(settings, manuals)
    result = conv.ask("How do I reset the pressure on the pump?")  # the tiny model answers noise
    model = [s for s in result.answer_sentences if s.kind == "model"]
    assert model and all(s.source is None for s in model)
    assert any("not found in the sources" in n for n in result.notices)
    assistant.close()
