"""`enclave docs …` and `ask --docs` through the real CLI, checking output and SQLite rows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.core.settings import Settings
from tests.cli.test_cli import ROOT, enclave


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "manuals"
    docs.mkdir()
    (docs / "pump.md").write_text(
        "# P-200 pump\n\n## Resetting pressure\n\nHold the red RESET button for five seconds.\n"
        "The gauge returns to zero bar.\n\n## Fault codes\n\nFault E14 means the impeller is blocked.\n"
    )
    (docs / "notes.txt").write_text("Torque the flange bolts to 40 newton metres.\n")
    (docs / "junk.txt").write_bytes(b"\x00\x01binary")
    return docs


def test_docs_add_list_status_search_remove(enclave_home: Path, folder: Path) -> None:
    out = enclave("docs", "add", str(folder), "-c", "manuals", "--json", home=enclave_home)
    report = json.loads(out.stdout)
    assert (report["files_indexed"], report["collection"]) == (2, "manuals")
    assert report["skipped"] == [{"path": str(folder / "junk.txt"), "reason": "binary content (NUL bytes), not text"}]
    # Progress on stderr only: JSON lines with --json (stdout is the report alone).
    progress = [json.loads(line)["progress"] for line in out.stderr.splitlines() if line.startswith("{")]
    last = progress[-1]
    assert (last["phase"], last["files_done"], last["files_total"], last["passages"]) == ("searchable", 3, 3, 3)
    assert last["bytes_done"] == last["bytes_total"] > 0
    plain = enclave("docs", "add", str(folder), "-c", "again", home=enclave_home)
    assert "searchable: 3/3 files" in plain.stderr and "3 passages" in plain.stderr
    enclave("docs", "remove", "again", "--yes", home=enclave_home)

    listed = json.loads(enclave("docs", "list", "--json", home=enclave_home).stdout)
    assert [(c["name"], c["files"], c["skipped"]) for c in listed] == [("manuals", 2, 1)]

    status = enclave("docs", "status", "manuals", home=enclave_home).stdout
    assert "junk.txt: binary content" in status and "pump.md" in status

    hits = json.loads(enclave("docs", "search", "reset", "pressure", "--json", home=enclave_home).stdout)
    assert hits[0]["n"] == 1 and hits[0]["path"] == str(folder / "pump.md")
    assert (hits[0]["line_start"], hits[0]["line_end"]) == (5, 6)
    text = enclave("docs", "search", "flange torque", home=enclave_home).stdout
    assert f"[1] {folder / 'notes.txt'}, line 1" in text

    # Rows in the database match; an audit entry was written.
    db = sqlite3.connect(enclave_home / "data" / "enclave.db")
    assert db.execute("select count(*) from documents").fetchone()[0] == 2
    assert db.execute("select count(*) from audit where kind = 'documents_indexed'").fetchone()[0] == 2

    removed = enclave("docs", "remove", "manuals", "--yes", home=enclave_home)
    assert "Removed 2 documents" in removed.stdout
    assert (folder / "pump.md").exists()
    assert db.execute("select count(*) from chunks").fetchone()[0] == 0
    missing = enclave("docs", "search", "x", "-c", "manuals", home=enclave_home, check=False)
    assert missing.returncode == 1 and "no document collection named 'manuals'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_ask_with_docs_prints_sources_and_json_citations(enclave_home: Path, tiny_dir: Path, folder: Path) -> None:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    enclave("docs", "add", str(folder), "-c", "manuals", home=enclave_home)
    args = ("--model", "tiny", "--max-tokens", "8", "--ctx", "1024")
    text = enclave("ask", *args, "--docs", "How do I reset the pump pressure?", home=enclave_home)
    assert "Sources:" in text.stdout
    assert f"[1] {folder / 'pump.md'}, lines 5–6" in text.stdout

    out = enclave("ask", *args, "--json", "--docs", "manuals", "reset pump pressure", home=enclave_home)
    data = json.loads(out.stdout)
    first = data["citations"][0]
    assert {"n", "path", "page", "line_start", "line_end", "score", "text", "cited"} <= set(first)
    lines = Path(first["path"]).read_text().splitlines()[first["line_start"] - 1 : first["line_end"]]
    assert first["text"] == "\n".join(lines)

    shown = enclave("history", "show", str(data["conversation_id"]), home=enclave_home).stdout
    assert f"- [1] {folder / 'pump.md'}, lines 5–6" in shown

    weak = json.loads(enclave("ask", *args, "--json", "--docs", "Best wine with salmon?", home=enclave_home).stdout)
    assert weak["finish_reason"] == "no-evidence" and "found nothing relevant" in weak["text"]
    # The model was not asked, yet the README's usage and context objects are there, with
    # what is true (no tokens, nothing sent or dropped), so a script needs no null check.
    assert set(weak["usage"]) == set(data["usage"]) >= {"prompt_tokens", "completion_tokens", "decode_tokens_per_s"}
    assert weak["usage"]["prompt_tokens"] == weak["usage"]["prefilled_tokens"] == 0
    assert weak["usage"]["completion_tokens"] == 0 and weak["usage"]["ttft_ms"] > 0
    assert weak["context"] == {"window": 1024, "used": 0, "reserved_for_answer": 8, "dropped_turns": 0, "drops": []}

    db = sqlite3.connect(enclave_home / "data" / "enclave.db")
    stored = db.execute("select citations from messages where citations is not null").fetchall()
    assert len(stored) == 2 and json.loads(stored[0][0])[0]["path"] == str(folder / "pump.md")

    none = enclave("ask", *args, "--docs", "nosuch", "question", home=enclave_home, check=False)
    assert none.returncode == 1 and "no document collection named 'nosuch'" in none.stderr


def test_chat_docs_command_turns_documents_on_and_off(enclave_home: Path, tiny_dir: Path, folder: Path) -> None:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    enclave("docs", "add", str(folder), home=enclave_home)
    script = "/docs\nreset pump pressure\n/docs off\nreset pump pressure\n"
    out = enclave(
        "chat", "--model", "tiny", "--max-tokens", "4", "--ctx", "1024", "--json", stdin=script, home=enclave_home
    )
    turns = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(turns) == 2
    assert turns[0]["citations"][0]["path"] == str(folder / "pump.md")
    assert "citations" not in turns[1]
    assert "Documents on" in out.stderr and "Documents off" in out.stderr


def test_indexing_killed_at_any_moment_resumes_without_duplicates(enclave_home: Path, tmp_path: Path) -> None:
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(300):
        (docs / f"doc{i:03}.md").write_text(
            f"# Unit {i}\n\n" + f"Unit {i} uses filter F{i} and oil grade {i % 7}.\n" * 3
        )
    env = dict(os.environ, ENCLAVE_HOME=str(enclave_home))
    database = enclave_home / "data" / "enclave.db"
    for delay in (0.8, 1.5, 2.5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "docs", "add", str(docs), "-c", "many"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = sqlite3.connect(database).execute("select count(*) from documents").fetchone()[0]
    final = json.loads(enclave("docs", "add", str(docs), "-c", "many", "--json", home=enclave_home).stdout)
    assert final["files_unchanged"] == partial  # work done before the kills was kept
    assert final["files_indexed"] == 300 - partial
    db = sqlite3.connect(database)
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select count(*), count(distinct path) from documents").fetchone() == (300, 300)
    assert db.execute("select count(*) from chunks").fetchone()[0] == 300
    db.execute("insert into chunks_fts(chunks_fts) values('integrity-check')")
    hits = json.loads(enclave("docs", "search", "filter F123", "--json", home=enclave_home).stdout)
    assert Path(hits[0]["path"]).name == "doc123.md"


def test_a_long_skip_list_is_summarised(enclave_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "readme.txt").write_text("The photos of the site visit.")
    for i in range(25):
        (folder / f"img{i:02}.png").write_bytes(b"\x89PNG")
    out = enclave("docs", "add", str(folder), home=enclave_home).stdout
    assert out.count("  skipped ") == 10
    assert "… and 15 more skipped (15 × unsupported file type .png); `enclave docs status` lists all" in out
    assert enclave("docs", "status", home=enclave_home).stdout.count("unsupported file type .png") == 25


@pytest.mark.slow
def test_first_docs_add_builds_the_embedding_model(enclave_home: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_DOCS_BUILD_EMBEDDER", "true")
    out = enclave("docs", "add", str(folder), "--wait", "--json", home=enclave_home, timeout=600)
    assert "Building the embedding model for document search" in out.stderr
    report = json.loads(out.stdout)
    # Cheap vectors while indexing; --wait filled the MiniLM ones before returning.
    assert report["vector_search"] is True and report["vectors"] == report["chunks"] > 0
    assert report["vectors_status"]["minilm"] == report["chunks"]
    status = json.loads(enclave("docs", "status", "--json", home=enclave_home).stdout)
    assert status["vector_search"] is True
    hits = json.loads(
        enclave(
            "docs", "search", "how to zero the gauge", "--mode", "vector", "--best", "--json", home=enclave_home
        ).stdout
    )
    assert Path(hits[0]["path"]).name == "pump.md" and hits[0]["similarity"] > 0.3
    again = enclave("docs", "add", str(folder), home=enclave_home)
    assert "Building" not in again.stderr  # once


def test_an_embedder_built_before_cheap_vectors_is_named_with_the_fix(
    enclave_home: Path, settings: Settings, tiny_embedder: Path, folder: Path
) -> None:
    """A MiniLM build from an older Enclave has no static table: `docs add` says search is
    by keywords until the background is done, and how to get the cheap vectors."""
    from assistant.catalog.manifests import MANIFEST_NAME, Catalog
    from assistant.retrieval.embed import EMBEDDER_NAME, embedder_folder

    installed = embedder_folder(settings)
    shutil.copytree(tiny_embedder, installed)
    for name in ("static-vectors.npy", "static.json"):
        (installed / name).unlink()
    info = json.loads((installed / MANIFEST_NAME).read_text())
    for key in ("name", "engine", "files", "sha256"):
        info.pop(key)
    Catalog(settings).write_manifest(EMBEDDER_NAME, "onnx", installed, info)

    out = enclave("docs", "add", str(folder), "-c", "old", home=enclave_home)
    assert "searchable now (keywords); MiniLM vectors 0 of 3 passages" in out.stdout
    assert "no cheap vectors" in out.stderr and "enclave models build all-minilm-l6-v2 --force" in out.stderr
    status = enclave("docs", "status", "old", home=enclave_home).stdout
    assert "cheap vectors for 0" in status


def test_a_current_embedder_gives_cheap_vectors_at_once(
    enclave_home: Path, tiny_embedder_installed: Path, folder: Path
) -> None:
    out = enclave("docs", "add", str(folder), "-c", "new", home=enclave_home)
    assert "searchable now (keywords + cheap vectors)" in out.stdout and "no cheap vectors" not in out.stderr
    assert "cheap vectors for 3" in enclave("docs", "status", "new", home=enclave_home).stdout


def test_docs_add_that_indexes_nothing_fails_with_the_reason_and_the_fix(enclave_home: Path, tmp_path: Path) -> None:
    database = enclave_home / "data" / "enclave.db"
    missing = enclave("docs", "add", "/nonexistent/path", home=enclave_home, check=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "skipped /nonexistent/path: does not exist" in missing.stdout
    assert "error: nothing was indexed: /nonexistent/path does not exist." in missing.stderr
    assert "Check the path" in missing.stderr and "The collection default was not created." in missing.stderr
    # --json: still one JSON object on stdout (the report, with the error), the reason on stderr.
    as_json = enclave("docs", "add", "/nonexistent/path", "--json", home=enclave_home, check=False)
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["files_indexed"] == 0 and report["collection_exists"] is False
    assert report["error"]["message"] == "nothing was indexed: /nonexistent/path does not exist."
    assert "nothing was indexed" in as_json.stderr

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"img{i}.png").write_bytes(b"\x89PNG")
    (photos / "blob.txt").write_bytes(b"\x00\x01binary")
    skipped = enclave("docs", "add", str(photos), "-c", "photos", "--json", home=enclave_home, check=False)
    assert skipped.returncode == 1
    report = json.loads(skipped.stdout)
    assert len(report["skipped"]) == 4 and report["collection_exists"] is False
    assert report["error"]["message"] == (
        "nothing was indexed: all 4 files were skipped (3 × unsupported file type .png, 1 × binary content)."
    )
    assert "Enclave reads .txt, .md" in report["error"]["hint"] and ".gz" in report["error"]["hint"]
    assert "The collection photos was not created." in report["error"]["hint"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden.txt").write_text("passed over")
    none = enclave("docs", "add", str(empty), home=enclave_home, check=False)
    assert none.returncode == 1 and f"there are no files in {empty}" in none.stderr

    # An existing collection is left exactly as it was: no root, no skip rows for the bad path.
    (tmp_path / "ok.txt").write_text("The blue valve is closed at night.")
    enclave("docs", "add", str(tmp_path / "ok.txt"), "-c", "photos", home=enclave_home)
    db = sqlite3.connect(database)
    rows = "select (select count(*) from collection_roots), (select count(*) from document_skips)"
    before = db.execute(rows).fetchone()
    again = enclave("docs", "add", str(photos), "-c", "photos", home=enclave_home, check=False)
    assert again.returncode == 1 and "The collection photos is unchanged." in again.stderr
    assert db.execute(rows).fetchone() == before
    listed = json.loads(enclave("docs", "list", "--json", home=enclave_home).stdout)
    assert [(c["name"], c["files"]) for c in listed] == [("photos", 1)]
    # Something indexed, kept or removed: success, even with skips beside it.
    enclave("docs", "add", str(tmp_path / "ok.txt"), str(photos), "-c", "photos", home=enclave_home)


FILES = 3000


def test_ctrl_c_during_docs_add_keeps_the_files_indexed_and_says_how_to_resume(
    enclave_home: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "many"
    docs.mkdir()
    # Enough files that a quiet machine is still indexing when Ctrl-C arrives (600 were
    # all indexed first, now and then, on two idle cores).
    for i in range(FILES):
        (docs / f"doc{i:04}.md").write_text(f"# Unit {i}\n\n" + f"Unit {i} uses filter F{i} and oil grade {i % 7}.\n" * 3)
    env = dict(os.environ, ENCLAVE_HOME=str(enclave_home))
    env.pop("ENCLAVE_DEBUG", None)
    database = enclave_home / "data" / "enclave.db"
    # Its own process group, as a terminal's foreground job: Ctrl-C reaches the parser children too.
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "docs", "add", str(docs), "-c", "many"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    seen = 0
    while not seen and time.monotonic() < deadline and proc.poll() is None:
        try:  # the first files committed: indexing is under way
            seen = sqlite3.connect(database).execute("select count(*) from documents").fetchone()[0]
        except sqlite3.OperationalError:  # not created (or migrated) yet
            pass
        time.sleep(0.02)
    assert seen and proc.poll() is None, "indexing finished (or failed) before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)

    kept = sqlite3.connect(database).execute("select count(*) from documents").fetchone()[0]
    assert proc.returncode == 130, err
    assert 0 < kept < FILES
    files = f"{kept} files indexed so far are" if kept > 1 else "1 file indexed so far is"
    assert f"Interrupted: the {files} kept and searchable in many." in err
    assert "Run the same command again to resume" in err
    assert "Aborted!" not in err and "Traceback" not in err and "WARNING" not in err
    assert out == ""
    db = sqlite3.connect(database)
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    audit = db.execute("select detail from audit where kind = 'documents_indexed'").fetchone()[0]
    assert json.loads(audit)["interrupted"] is True and json.loads(audit)["indexed"] == kept

    final = json.loads(enclave("docs", "add", str(docs), "-c", "many", "--json", home=enclave_home).stdout)
    assert (final["files_unchanged"], final["files_indexed"]) == (kept, FILES - kept)  # resumed, not redone
    assert db.execute("select count(*), count(distinct path) from documents").fetchone() == (FILES, FILES)
    assert db.execute("select count(*) from chunks").fetchone()[0] == FILES
    hits = json.loads(enclave("docs", "search", "filter F599", "--json", home=enclave_home).stdout)
    assert Path(hits[0]["path"]).name == "doc0599.md"
