"""Grounded answers on the real models (issue 13): SmolLM2-135M and all-MiniLM-L6-v2 built
by Enclave's recipes, over a few licences of /usr/share/common-licenses (Debian)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
LICENSES = Path("/usr/share/common-licenses")
CHOSEN = ("GPL-2", "GPL-3", "LGPL-2.1", "Apache-2.0", "MPL-2.0")


@pytest.fixture(scope="module")
def licence_home(smollm2_home: Path, embedder_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh home that borrows the built models and indexes five licences."""
    if not all((LICENSES / name).is_file() for name in CHOSEN):
        pytest.skip("/usr/share/common-licenses (Debian's base-files) is not here")
    home = tmp_path_factory.mktemp("licence-home")
    (home / "data").mkdir()
    (home / "data" / "models").symlink_to(smollm2_home / "data" / "models")
    docs = home / "licences"
    docs.mkdir()
    for name in CHOSEN:
        shutil.copy(LICENSES / name, docs / name)
    proc = enclave(home, "docs", "add", str(docs), "-c", "lic", "--json")
    assert json.loads(proc.stdout)["files_indexed"] == len(CHOSEN), proc.stderr
    return home


def enclave(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENCLAVE_HOME=str(home), ENCLAVE_DOCS_BUILD_EMBEDDER="false")
    proc = subprocess.run(
        [sys.executable, "-m", "assistant", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def ask(home: Path, question: str, *extra: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(enclave(home, "ask", "--docs", "lic", "--json", "--no-save", *extra, question).stdout)
    return data


def test_the_cure_period_is_quoted_not_guessed(licence_home: Path) -> None:
    data = ask(licence_home, "How many days does the GPL-3 give me to cure a violation after the copyright holder notifies me?")
    assert data["mode"] == "extract"  # recorded for SmolLM2 in its manifest
    assert "30 days" in str(data["text"])
    quote = data["answer_sentences"][0]
    cited = {c["n"]: c for c in data["citations"]}
    assert Path(cited[quote["source"]]["path"]).name == "GPL-3"
    assert quote["text"] in " ".join(cited[quote["source"]]["text"].split())
    # No passage is labelled as backing anything that is not quoted from it.
    for c in data["citations"]:
        assert not c["supports"] or c["n"] == quote["source"]


def test_a_question_about_the_gpl_2_is_not_answered_from_the_gpl_3(licence_home: Path) -> None:
    data = ask(licence_home, "Under the GPL-2, how many days do I have to cure a violation after notice?")
    for sentence in data["answer_sentences"]:
        assert "30 days" not in sentence["text"]


def test_free_mode_labels_are_true_of_their_source_sentences(licence_home: Path) -> None:
    from assistant.retrieval.grounding import check

    # A question whose passage retrieval finds (see the cure-period test), so that the
    # model writes and its sentences get labels to check.
    question = "How many days does the GPL-3 give me to cure a violation after the copyright holder notifies me?"
    data = ask(licence_home, question, "--answer-mode", "free", "--max-tokens", "96")
    assert data["mode"] == "free" and data["finish_reason"] in ("stop", "length", "repetition")
    assert any(s["kind"] == "model" for s in data["answer_sentences"])
    cited = {c["n"]: c for c in data["citations"]}
    for sentence in data["answer_sentences"]:
        if sentence["kind"] == "model" and sentence["source"] is not None:
            context = " ".join([cited[sentence["source"]]["heading"], Path(cited[sentence["source"]]["path"]).name])
            assert check(sentence["text"], sentence["evidence"], context).stated, sentence


def test_the_lgpl_2_1_warranty_clause_is_among_the_first_hits(licence_home: Path) -> None:
    # Measured: the named document's passages come first (the title passage, then the
    # warranty section third, tied in score with the second); the first hit being the
    # clause itself is not reached yet with BM25 + MiniLM fusion.
    hits = json.loads(enclave(licence_home, "docs", "search", "the LGPL 2.1 warranty clause", "--json").stdout)
    assert all(Path(h["path"]).name == "LGPL-2.1" for h in hits[:3])
    assert any("NO WARRANTY" in h["heading"].upper() or "NO WARRANTY" in h["text"].upper() for h in hits[:3])


def _chat(home: Path, *lines: str) -> list[dict[str, Any]]:
    env = dict(os.environ, ENCLAVE_HOME=str(home), ENCLAVE_DOCS_BUILD_EMBEDDER="false")
    proc = subprocess.run(
        [sys.executable, "-m", "assistant", "chat", "--docs", "lic", "--json", "--no-save"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _quoted_from(turn: dict[str, Any]) -> set[str]:
    cited = {c["n"]: c for c in turn["citations"] or []}
    return {Path(cited[s["source"]]["path"]).name for s in turn["answer_sentences"] if s.get("source") in cited}


def test_a_follow_up_naming_another_licence_never_quotes_the_first_or_an_unrelated_sentence(licence_home: Path) -> None:
    """Found by a tester: after the GPL-3's cure period, "and the MPL-2.0?" quoted "If a
    copy of the MPL was not distributed with this file, You can obtain one at …",
    labelled as quoted (its sentences were chosen for "and the MPL-2.0" alone)."""
    first, follow_up = _chat(
        licence_home,
        "How many days does the GPL-3 give me to cure a violation after the copyright holder notifies me?",
        "and the MPL-2.0?",
    )
    assert "30 days" in first["text"] and _quoted_from(first) == {"GPL-3"}
    assert any("Searched together with your previous question" in n for n in follow_up.get("notices", []))
    assert _quoted_from(follow_up) <= {"MPL-2.0"}
    assert "You can obtain one at" not in follow_up["text"]


def test_a_named_licence_is_searched_alone_and_path_wins_over_a_name_in_the_question(licence_home: Path) -> None:
    """Found by a tester: a question naming a licence whose passages the search had not
    ranked was refused with "no passage of the document the question names was found";
    and --path on the LGPL-2.1 refused a question quoting its own clause, because the
    clause names "the ordinary GNU General Public License"."""
    data = ask(licence_home, "Which country's law governs the Apache License?")
    assert {Path(c["path"]).name for c in data["citations"] or []} <= {"Apache-2.0"}
    assert "no passage of the document the question names" not in data["text"]
    clause = "May I apply the terms of the ordinary GNU General Public License instead of this License to a given copy of the Library?"
    scoped = ask(licence_home, clause, "--path", "*/LGPL-2.1")
    assert "ordinary GNU General Public License instead of this License" in scoped["text"], scoped["text"]
    assert _quoted_from(scoped) == {"LGPL-2.1"}
