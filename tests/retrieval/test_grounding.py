"""Grounded answers (issue 13): sentences, strict support labels, headings kept apart,
page labels, suffix-less files, named documents, fresh sources — on real files, the
real SQLite index and the real tiny engine."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.app.documents import parse_switch
from assistant.app.turns import Assistant, Conversation
from assistant.catalog.manifests import InstalledModel
from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.engines.base import Engine
from assistant.engines.repetition import RepetitionGuard
from assistant.retrieval.answer import Passage, supporting
from assistant.retrieval.chunker import chunk_blocks
from assistant.retrieval.grounding import check, claims, quantities, split
from assistant.retrieval.index import Library
from assistant.retrieval.location import describe
from assistant.retrieval.names import named
from assistant.retrieval.parsers import heading_level, parse, text_blocks
from assistant.storage.database import Store

LICENSES = Path("/usr/share/common-licenses")
needs_licenses = pytest.mark.skipif(
    not (LICENSES / "GPL-3").is_file(), reason="/usr/share/common-licenses (Debian's base-files) is not here"
)

# The shape of the "9 days" case: section 8 says 30 days, and the next
# section's heading starts with a 9.
TERMINATION = """                    SAMPLE PUBLIC LICENSE

  8. Termination.

  You may not propagate or modify a covered work except as expressly
provided under this License.

  Moreover, your license from a particular copyright holder is
reinstated permanently if the copyright holder notifies you of the
violation by some reasonable means, and you cure the violation prior
to 30 days after your receipt of the notice.

  9. Acceptance Not Required for Having Copies.

  You are not required to accept this License in order to receive or
run a copy of the Program.
"""


@pytest.fixture
def library(settings: Settings) -> Iterator[Library]:
    store = Store(settings.locations.database)
    yield Library(store, None, max_file_mb=5, parse_timeout=30)
    store.close()


def test_the_9_days_case_is_not_labelled_supported(library: Library, tmp_path: Path) -> None:
    (tmp_path / "SPL-3").write_text(TERMINATION)  # no suffix: indexed because it is text
    report = library.add([tmp_path], "lic")
    assert report.files_indexed == 1, report.skipped
    hits = library.search("How many days to cure a violation after the notice?", k=3)
    passage = next(h for h in hits if "30 days" in h.text)
    # The heading of section 9 is not glued to the end of section 8's passage.
    assert "Acceptance" not in passage.text and passage.heading.endswith("8. Termination.")
    passages = [Passage(1, passage, passage.text)]
    assert supporting("You have 9 days to cure the violation after the notice.", passages) == {}
    assert supporting("You cure the violation prior to 30 days after your receipt of the notice.", passages) == {
        1: 1
    }


@pytest.mark.parametrize(
    ("claim", "source", "stated"),
    [
        ("Batteries should last 3 years.", "Most brand name UPS batteries should last 3-5 years.", False),
        ("Batteries should last 3-5 years.", "Most brand name UPS batteries should last 3-5 years.", True),
        ("You must cure it within 60 days.", "You must cure it within 30 days.", False),
        ("The default setting is 10.", "Low battery warning times of 2, 5, 7, or 10 minutes can be set.", False),
        ("upsd initiates outgoing connections.", "The upsd process does not initiate outgoing connections.", False),
        ("The upsd process does not initiate outgoing connections.", "The upsd process does not initiate outgoing connections.", True),
        ("The copy must be kept for three years.", "The copy must be kept for 3 years.", True),
        ("Set POLLTIME to 60 in the configuration.", "Set DEADTIME to 60 in the configuration.", False),
    ],
)  # fmt: skip
def test_support_needs_figures_negation_and_names_to_match(claim: str, source: str, stated: bool) -> None:
    assert check(claim, source).stated is stated, check(claim, source)


APACHE_NOTICE = (
    'Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in '
    "compliance with the License."
)
APACHE_TRADEMARKS = (
    "This License does not grant permission to use the trade names, trademarks, service marks, or product "
    "names of the Licensor, except as required for reasonable and customary use in describing the origin of "
    "the Work and reproducing the content of the NOTICE file."
)
GPL3_CURE = (
    "Moreover, your license from a particular copyright holder is reinstated permanently if the copyright "
    "holder notifies you of the violation by some reasonable means, this is the first time you have received "
    "notice of violation of this License (for any work) from that copyright holder, and you cure the "
    "violation prior to 30 days after your receipt of the notice."
)


@pytest.mark.parametrize(
    ("claim", "source", "context", "stated"),
    [
        # Found by a user: only the licence's name and "use" are shared; the trademarks are not in it.
        ("You cannot use the trademarks of the licensor under Apache 2.0.", APACHE_NOTICE, "Apache License Apache-2.0", False),
        ("The GPL-3 is a version of the GNU General Public.", GPL3_CURE, "GNU GENERAL PUBLIC LICENSE GPL-3", False),
        # What the passages do say is still supported, with the document's name in the claim.
        ("Apache 2.0 does not grant permission to use the trademarks of the Licensor.", APACHE_TRADEMARKS, "Apache License Apache-2.0", True),
        ("Under the GPL-3 you cure the violation prior to 30 days after receipt of the notice.", GPL3_CURE, "GNU GENERAL PUBLIC LICENSE GPL-3", True),
    ],
)  # fmt: skip
def test_the_documents_own_name_is_no_evidence(claim: str, source: str, context: str, stated: bool) -> None:
    verdict = check(claim, source, "8. Termination. " + context, context)
    assert verdict.stated is stated, verdict


MEMO_EXPOSURE = (
    "Counsel estimates the maximum exposure at EUR 420,000 if the matter proceeds to trial."
)
MEMO_WITNESS = "The key witness is Dr. Ingrid Solberg, who served as head of compliance at Harlow until January 2024."
GFDL_CESSATION = (
    "However, if you cease all violation of this License, then your license from a particular copyright "
    "holder is reinstated (a) provisionally, unless and until the copyright holder explicitly and finally "
    "terminates your license, and (b) permanently, if the copyright holder fails to notify you of the "
    "violation by some reasonable means prior to 60 days after the cessation."
)


@pytest.mark.parametrize(
    ("claim", "source", "stated"),
    [
        # Found by a user (free mode): each shares most words with its source, and says something else.
        ("The maximum exposure if the matter settles before trial is EUR 420,000.", MEMO_EXPOSURE, False),
        ("The current head of compliance at Harlow is Dr. Ingrid Solberg.", MEMO_WITNESS, False),
        ("The answer is: 60 days after notice.", GFDL_CESSATION, False),
        ("The driver is not connected to the UPS because the driver is not configured.",
         "Driver not connected means upsd can't connect to the driver.", False),
        # What the sources say, in the model's framing, still is.
        ("According to the memo, the maximum exposure is EUR 420,000 if the matter proceeds to trial.", MEMO_EXPOSURE, True),
        ("The answer is: Dr. Ingrid Solberg served as head of compliance at Harlow.", MEMO_WITNESS, True),
        ("The license is reinstated permanently if the copyright holder fails to notify you prior to sixty days after the cessation.", GFDL_CESSATION, True),
    ],
)  # fmt: skip
def test_every_word_of_a_claim_must_be_the_sources(claim: str, source: str, stated: bool) -> None:
    verdict = check(claim, source, "memo.md", "memo.md")
    assert verdict.stated is stated, verdict


def test_quantities_keep_their_shape() -> None:
    shapes = {(q.values, q.shape, q.unit) for q in quantities("3-5 years; 2, 5, 7, or 10 minutes; thirty days; -1")}
    assert (("3", "5"), "range", "year") in shapes
    assert (("2", "5", "7", "10"), "list", "minute") in shapes
    assert (("30",), "single", "day") in shapes
    assert (("-1",), "single", None) in shapes
    assert quantities("the GPL-3 gives") == []  # a version in a name is not a figure


def test_sentences_respect_abbreviations_numbers_and_lists() -> None:
    text = (
        "Set the gap to 1.5 mm, e.g. with a feeler gauge. Then tighten it.\n"
        "To restrict access, use:\n$ ufw allow NUT\n"
        "3. You may opt to apply the terms of version 2.1 instead.\n"
        "a. No trademark rights are waived."
    )
    got = [text[a:b] for a, b in split(text)]
    assert got == [
        "Set the gap to 1.5 mm, e.g. with a feeler gauge.",
        "Then tighten it.",
        "To restrict access, use:",
        "$ ufw allow NUT",
        "You may opt to apply the terms of version 2.1 instead.",
        "No trademark rights are waived.",
    ]
    # A looping answer is one claim, not many: repetitions never add support.
    assert claims("The answer is 3 days. The answer is 3 days. The answer is 3 days.") == ["The answer is 3 days."]


def test_headings_are_recognised_by_typography() -> None:
    assert heading_level("  8. Termination.") == 1
    assert heading_level("10.3. Modified Versions") == 2
    assert heading_level("8. TRANSLATION") == 1
    assert heading_level("NO WARRANTY") == 1
    assert heading_level("1. Install the driver first.") == 0  # a list item is a sentence
    assert heading_level("LISTEN 127.0.0.1") == 0  # a config line
    assert heading_level("6.2.4 Data server configuration (upsd)", capitals=False, sentence_case=True) == 3
    assert heading_level("3 Features 9", capitals=False, sentence_case=True) == 0  # a table of contents
    blocks = text_blocks("Body text ends here.\n\n8. TRANSLATION\n\nTranslation is a kind of modification.\n", "text")
    chunks = chunk_blocks(blocks)
    assert [c.text for c in chunks] == ["Body text ends here.", "Translation is a kind of modification."]
    assert chunks[1].heading == "8. TRANSLATION"
    assert chunks[1].line_map == [(5, 5)]


def _pdf_with_labels(path: Path) -> None:
    """Four pages with a running header; printed labels i, ii, then 1, 2."""
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter
    from pypdf.constants import PageLabelStyle

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    bodies = [
        "Contents of the manual.",
        "Foreword to the manual.",
        "1.1 Ports\nThe daemon listens on TCP port 3493 by default.",
        "1.2 Files\nThe configuration lives in the folder for NUT settings.",
    ]
    for number, body in enumerate(bodies, start=1):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"Sample UPS Manual {number} / 4\n{body}")
    raw = path.with_suffix(".raw.pdf")
    raw.write_bytes(bytes(pdf.output()))
    writer = PdfWriter(clone_from=PdfReader(raw))
    writer.set_page_label(0, 1, style=PageLabelStyle.LOWERCASE_ROMAN)
    writer.set_page_label(2, 3, style=PageLabelStyle.DECIMAL, start=1)
    with path.open("wb") as fh:
        writer.write(fh)
    raw.unlink()


def test_pdf_page_labels_are_shown_and_running_headers_dropped(library: Library, tmp_path: Path) -> None:
    docs = tmp_path / "pdf"
    docs.mkdir()
    _pdf_with_labels(docs / "manual.pdf")
    parsed = parse(docs / "manual.pdf", 1 << 20)
    assert [b.page_label for b in parsed.blocks if b.page == 3][0] == "1"
    assert not any("Sample UPS Manual" in b.text for b in parsed.blocks)  # the running header is gone
    assert any(b.level == 2 and b.text == "1.1 Ports" for b in parsed.blocks)
    library.add([docs], "pdf")
    hit = library.search("TCP port 3493", k=1)[0]
    assert (hit.page, hit.page_label) == (3, "1")
    assert hit.location().endswith("manual.pdf, page 1 (PDF page 3), line 3")
    assert describe("x.docx", None, 4, 4, "paragraphs") == "x.docx, paragraph 4"
    assert describe("f.html", None, 3, 9, heading="Manual › Batteries › Life") == "f.html, “Batteries › Life”, lines 3–9"


def test_suffixless_files_empty_collections_and_symlink_reasons(library: Library, tmp_path: Path) -> None:
    docs = tmp_path / "licenses"
    docs.mkdir()
    (docs / "LGPL-2.1").write_text("GNU LESSER GENERAL PUBLIC LICENSE\nVersion 2.1\n\nNO WARRANTY\n\nThere is none.\n")
    (docs / "BSD").write_text("Redistribution and use in source and binary forms are permitted.\n")
    (docs / "blob").write_bytes(b"\x00\x01\x02" * 100)
    (docs / "LGPL").symlink_to(docs / "LGPL-2.1")
    (docs / "BLOB").symlink_to(docs / "blob")
    report = library.add([docs], "lic")
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert report.files_indexed == 2
    assert reasons["blob"] == "no file-type suffix and the content is not text"
    assert reasons["LGPL"] == "symlink to LGPL-2.1 (indexed once, under that name)"
    assert reasons["BLOB"].startswith("symlink to blob, which is not indexed either")
    # Every file skipped: the collection is not created.
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"\x89PNG")
    empty = library.add([only_bad], "nothing")
    assert not empty.collection_exists and "nothing" not in [c["name"] for c in library.collections()]


@needs_licenses
def test_a_named_document_ranks_first(library: Library, tmp_path: Path) -> None:
    docs = tmp_path / "common-licenses"
    docs.mkdir()
    for name in ("GPL-2", "GPL-3", "LGPL-2", "LGPL-2.1", "LGPL-3"):
        shutil.copy(LICENSES / name, docs / name)
    library.add([docs], "lic")
    hit = library.search("the LGPL 2.1 warranty clause", k=1)[0]
    assert Path(hit.path).name == "LGPL-2.1" and "WARRANTY" in hit.text.upper()
    cids = [library.collection_id("lic")]
    assert {library.db.execute("select path from documents where id = ?", [d]).fetchone()[0].rsplit("/", 1)[1]
            for d in library.named("Under the GPL-2, how many days", cids)} == {"GPL-2"}  # fmt: skip


def test_names_match_versions() -> None:
    docs = [(1, "/x/GPL-2", ""), (2, "/x/GPL-3", ""), (3, "/x/Apache-2.0", "Apache License Version 2.0"), (4, "/x/manual", "")]
    assert named("Under the GPL-2, how many days", docs) == {1: "version"}
    assert named("GPLv3 termination", docs) == {2: "version"}
    assert set(named("the GPL says", docs)) == {1, 2}
    assert named("Under the Apache License 2.0, when", docs) == {3: "version"}
    assert named("which command in the manual", docs) == {}  # a common word in lower case names nothing


def test_scope_by_path(library: Library, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "pump.txt").write_text("Prime the pump before starting it.")
    (tmp_path / "b" / "pump.txt").write_text("Never prime the pump when it is hot.")
    library.add([tmp_path], "docs")
    assert {Path(h.path).parent.name for h in library.search("prime pump", k=5)} == {"a", "b"}
    assert {Path(h.path).parent.name for h in library.search("prime pump", k=5, paths=["b/*"])} == {"b"}
    assert {Path(h.path).parent.name for h in library.search("prime pump", k=5, paths=[str(tmp_path / "a")])} == {"a"}
    with pytest.raises(EnclaveError, match="No indexed file matches"):
        library.search("prime pump", paths=["nothing-*"])
    # Found by a tester: a file indexed in another collection was "not indexed".
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "valve.txt").write_text("Close the valve before you open the pump.")
    library.add([tmp_path / "c"], "other")
    with pytest.raises(EnclaveError) as info:
        library.search("valve", collections=["docs"], paths=[str(tmp_path / "c" / "valve.txt")])
    assert "it is indexed in other" in info.value.message and "--docs other" in info.value.hint


def test_docs_command_is_parsed_once() -> None:
    assert parse_switch("").action == "show"
    assert parse_switch("off").action == "off"
    on = parse_switch("licences --path 'GPL-*' --path=BSD")
    assert (on.action, on.collections, on.paths) == ("on", ["licences"], ["GPL-*", "BSD"])
    assert parse_switch("all").collections is None
    assert parse_switch("a, b").collections == ["a", "b"]
    assert parse_switch("", paths=["x/*"]).paths == ["x/*"]
    with pytest.raises(EnclaveError, match="Usage"):
        parse_switch("licences --path")
    with pytest.raises(EnclaveError, match="Usage"):
        parse_switch("off --path x")


def _extracting(
    settings: Settings, folder: Path, *, save: bool = False, **overrides: object
) -> tuple[Assistant, Conversation]:
    chosen: dict[str, object] = {"model": "tiny", "max_tokens": 16, "context_window": 1024, **overrides}
    assistant = Assistant(settings.__class__.load(**chosen))
    conv = assistant.conversation("tiny", save=save)
    library = Library(assistant.store)
    library.add([folder], "docs")
    conv.use_documents(library, ["docs"])
    return assistant, conv


def test_a_changed_file_is_not_quoted_stale(settings: Settings, tiny_installed: InstalledModel, tmp_path: Path) -> None:
    folder = tmp_path / "manuals"
    folder.mkdir()
    manual = folder / "pump.txt"
    manual.write_text("The pump pressure must be reset to 4 bar after service.\n")
    assistant, conv = _extracting(settings, folder)
    first = conv.ask("What must the pump pressure be reset to after service?")
    assert first.mode == "extract" and "4 bar" in first.text
    manual.write_text("The pump pressure must be reset to 6 bar after service.\n")
    os.utime(manual, ns=(manual.stat().st_atime_ns, manual.stat().st_mtime_ns + 10**9))
    second = conv.ask("What must the pump pressure be reset to after service?")
    assert "6 bar" in second.text and "4 bar" not in second.text
    assert any("re-indexed before answering" in n for n in second.notices)
    quote = second.answer_sentences[0]
    assert quote.kind == "quote" and quote.location and quote.location.endswith("pump.txt, line 1")
    manual.unlink()
    third = conv.ask("What must the pump pressure be reset to after service?")
    assert "6 bar" not in third.text
    assistant.close()


def test_extract_answers_json_has_the_fields_a_reader_needs(settings: Settings, tiny_installed: InstalledModel, tmp_path: Path) -> None:
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "ups.txt").write_text(
        "Batteries\n=========\n\nMost brand name UPS batteries should last 3-5 years.\n"
        "Keep the room below 24 degrees C.\n"
    )
    assistant, conv = _extracting(settings, folder)
    # Keyword search only here (no embedder): the question shares the sentence's words.
    result = conv.ask("Do brand name UPS batteries last 3-5 years?")
    data = json.loads(json.dumps(result.as_dict()))
    assert data["mode"] == "extract" and data["finish_reason"] == "stop", data["text"]
    assert data["text"].startswith("> Most brand name UPS batteries should last 3-5 years. [1]")
    sentence = data["answer_sentences"][0]
    assert sentence["source"] == 1 and sentence["kind"] == "quote" and sentence["line_start"] == 4
    citation = data["citations"][0]
    for key in ("path", "page", "page_label", "line_start", "line_end", "cited", "supports", "location", "text"):
        assert key in citation
    assert citation["cited"] is True and citation["supports"] == 1
    assert result.timings["first_text_ms"] > 0
    # Not in the documents: not found, and no passage vouches for anything.
    missing = conv.ask("What torque do the battery terminal screws need?")
    assert missing.finish_reason == "no-evidence" and missing.text.startswith("Not found in the sources")
    assert not any(c["cited"] or c["supports"] for c in missing.citations or [])
    assistant.close()


def test_a_looping_answer_stops(tiny_engine: Engine) -> None:
    from assistant.core.events import Done, GenerationOptions, TextDelta

    guard = RepetitionGuard()
    assert not guard.push("The default value of DEADTIME is 2000. ")
    assert not guard.push("The default value of DEADTIME is 2000. ")
    assert guard.push("The default value of DEADTIME is 2000. ")
    session = tiny_engine.open_session(512)
    tok = tiny_engine.tokenizer
    prompt = tok.encode(tok.render([{"role": "user", "content": "What is a valve?"}]))
    # A penalty below 1 rewards repeating: the tiny model falls into a loop at once.
    events = list(session.generate(prompt, GenerationOptions(max_tokens=400, repetition_penalty=0.05)))
    done = [e for e in events if isinstance(e, Done)][0]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert done.reason == "repetition" and len(session.tokens) - len(prompt) < 400 and text


def test_the_answer_mode_is_a_policy_per_model(settings: Settings, tiny_installed: InstalledModel) -> None:
    from dataclasses import replace

    from assistant.app.answers import choose_mode, recorded_mode
    from assistant.catalog.manifests import InstalledModel
    from assistant.core.settings import Settings
    from assistant.engines.base import Capabilities

    smollm2 = InstalledModel("smollm2-135m-instruct", "onnx", Path(), Path())
    assert recorded_mode(smollm2) == "extract"  # measured, recorded in models/smollm2-135m-instruct.toml
    assistant = Assistant(settings)
    _, engine = assistant.load("tiny")
    assert choose_mode(settings, tiny_installed, engine) == ("extract", "")  # a user's model: extract
    assert choose_mode(replace(settings, docs_answer_mode="quote"), tiny_installed, engine)[0] == "quote"
    engine.capabilities = Capabilities()  # an engine without constrained decoding
    mode, notice = choose_mode(replace(settings, docs_answer_mode="quote"), tiny_installed, engine)
    assert mode == "extract" and "constrained decoding" in notice
    with pytest.raises(EnclaveError, match="docs_answer_mode"):
        Settings.load(docs_answer_mode="guess")
    with pytest.raises(EnclaveError, match="repeat_penalty"):
        Settings.load(repeat_penalty=0.5)
    assistant.close()


def test_an_export_carries_the_quoted_passage(settings: Settings, tiny_installed: InstalledModel, tmp_path: Path) -> None:
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "ups.txt").write_text("Most brand name UPS batteries should last 3-5 years.\n")
    assistant = Assistant(settings.__class__.load(model="tiny", max_tokens=16, context_window=1024))
    conv = assistant.conversation("tiny")
    library = Library(assistant.store)
    library.add([folder], "docs")
    conv.use_documents(library, ["docs"])
    result = conv.ask("How long should brand name UPS batteries last?")
    exported = assistant.store.export(result.conversation_id or 0, "md")
    assert "ups.txt, line 1" in exported and "  > Most brand name UPS batteries should last 3-5 years." in exported
    assistant.close()


def test_a_claim_about_a_named_document_is_checked_against_that_document_only(library: Library, tmp_path: Path) -> None:
    """Found by a user: "Under the GPL-2, how many days after notice …" got the model's
    "60 days" labelled supported by the GFDL's sentence, though the question names the GPL-2."""
    from assistant.app.answers import ground, verify
    from assistant.retrieval.answer import Retrieval

    (tmp_path / "GPL-2").write_text(
        "4. You may not copy, modify, sublicense, or distribute the Program except as expressly provided under "
        "this License. Any attempt otherwise to copy the Program is void, and will automatically terminate your "
        "rights under this License.\n"
    )
    (tmp_path / "GFDL-1.3").write_text(GFDL_CESSATION + "\n")
    assert library.add([tmp_path], "lic").files_indexed == 2
    hits = library.search("license reinstated terminate rights cessation violation", k=4)
    passages = [Passage(i + 1, h, h.text) for i, h in enumerate(hits)]
    assert {Path(h.path).name for h in hits} == {"GPL-2", "GFDL-1.3"}
    claim = "The license is reinstated permanently if the copyright holder fails to notify you prior to 60 days after the cessation."
    for question, backed in [
        ("Under the GPL-2, how many days after the cessation is my license reinstated?", False),
        ("How many days after the cessation is my license reinstated?", True),
    ]:
        retrieval = Retrieval(["lic"], hits, passages, strong=True)
        grounding = ground(question, retrieval, library, "free")
        [sentence] = verify(claim, grounding, passages)
        assert (sentence.source is not None) is backed, (question, sentence)


def test_a_quote_answer_that_finds_nothing_never_says_the_model_chose_quotes(
    settings: Settings, tiny_installed: InstalledModel, tmp_path: Path
) -> None:
    """Found by a tester: "Not found in the sources" sat above a footer reading
    "documents · quotes chosen by the model"."""
    from dataclasses import replace

    from assistant.app.notices import answer_footer

    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "ups.txt").write_text("Most brand name UPS batteries should last 3-5 years.\n")
    assistant, conv = _extracting(settings, folder, docs_answer_mode="quote")
    missing = conv.ask("What torque do the battery terminal screws need?")
    assert missing.finish_reason == "no-evidence"
    assert answer_footer(missing) == "documents · not found in the sources, so the model was not asked"
    # Asked, and it chose none of the sentences offered: said so, with the model that ran.
    assert missing.usage is not None
    asked = replace(missing, mode="quote", usage=replace(missing.usage, prompt_tokens=120, completion_tokens=3))
    footer = answer_footer(asked)
    assert footer.startswith("documents · not found in the sources (the model chose none of the sentences offered)")
    assert "quotes chosen by the model" not in footer and "tiny · onnx" in footer
    assistant.close()


def _licences(folder: Path) -> Path:
    folder.mkdir()
    (folder / "GPL-3").write_text(
        "GNU GENERAL PUBLIC LICENSE\nVersion 3\n\nUnder the GPL-3 you may cure the violation of this licence within 30 days of the notice.\n"
    )
    (folder / "MPL-2.0").write_text(
        "Mozilla Public License Version 2.0\n\nUnder the MPL-2.0 you may cure the violation of this licence within 60 days of the notice.\n"
        "\nThe MPL was first written by the Mozilla project in 1998 for its browser.\n"
    )
    (folder / "BSD").write_text(
        "BSD License\n\nRedistribution and use in source and binary forms are permitted provided that the "
        "copyright notice is kept.\n"
    )
    return folder


def test_a_named_document_is_searched_alone_and_path_wins_over_a_name(
    settings: Settings, tiny_installed: InstalledModel, tmp_path: Path
) -> None:
    """Found by a tester: "Which country's law governs the BSD license?" was refused
    because "no passage of the document the question names was found" while the BSD
    file was never searched; and with --path on one licence, a question quoting that
    licence's own words naming another one was refused."""
    assistant, conv = _extracting(settings, _licences(tmp_path / "licences"))
    result = conv.ask("Which country's law governs the BSD license?")
    assert result.citations is not None
    assert {Path(str(c["path"])).name for c in result.citations} <= {"BSD"}  # only the document named
    assert "no passage of the document the question names" not in result.text
    conv.paths = ["*/MPL-2.0"]
    scoped = conv.ask("May I cure the violation of the GPL-3 licence within days of the notice?")
    assert "no passage of the document the question names" not in scoped.text, scoped.text
    assert scoped.citations and {Path(str(c["path"])).name for c in scoped.citations} == {"MPL-2.0"}
    assistant.close()


def test_an_export_keeps_each_model_sentences_verdict_and_the_answer_mode(
    settings: Settings, tiny_installed: InstalledModel, tmp_path: Path
) -> None:
    """Found by a tester: a free-mode answer exported to Markdown read "The model's
    answer, each sentence checked against the sources:" and then the sentences with no
    verdict, though the screen had said "not found in the sources" for each."""
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "ups.txt").write_text("Most brand name UPS batteries should last 3-5 years.\n")
    assistant, conv = _extracting(settings, folder, save=True, max_tokens=24, docs_answer_mode="free")
    result = conv.ask("Do brand name UPS batteries last 3-5 years?")
    assert result.mode == "free" and conv.id is not None
    written = [s for s in result.answer_sentences if s.kind == "model"]
    exported = assistant.store.export(conv.id, "md")
    assert "answer mode free" in exported
    assert written  # the tiny model always writes something in 24 tokens
    assert "Each sentence the model wrote, checked against the sources:" in exported
    for s in written:
        assert f"- {s.text} — {s.label}" in exported
    assistant.close()


def test_quote_mode_offers_the_model_only_sentences_that_clear_the_bar(
    settings: Settings, tiny_installed: InstalledModel, tmp_path: Path
) -> None:
    """Found by a tester: in quote mode every unanswerable question got an unrelated
    sentence labelled as supporting, because the best 8 were offered whatever their score."""
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "pump.md").write_text("# Pump\n\nThe pump seal is replaced every 2 years by the service team.\n")
    assistant, conv = _extracting(settings, folder, docs_answer_mode="quote")
    # The passage is found (three of the four words), but no sentence of it answers well enough.
    result = conv.ask("Is the pump seal painted by the team?")
    assert result.mode == "quote" and result.finish_reason == "no-evidence", result.text
    assert result.text.startswith("Not found in the sources") and "answers it well enough" in result.text
    assert result.usage is None or result.usage.prompt_tokens == 0  # the model was not asked to choose
    assert not any(c["cited"] or c["supports"] for c in result.citations or [])
    assistant.close()
