"""Documents at scale: growing passage ids, the collection inside MATCH, the background
embedder (resumable, yields to generation), honest progress, the ANN index files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from assistant.retrieval import ann, backfill, open_library
from assistant.retrieval.index import Library
from assistant.retrieval.progress import Progress
from assistant.storage.database import Store, StoreError

ROOT = Path(__file__).resolve().parents[2]


def _folder(tmp_path: Path, name: str, n: int, word: str = "pump") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i in range(n):
        (folder / f"f{i}.md").write_text(f"# Part {i}\n\nThe {word} seal number {i} is checked monthly.\n")
    return folder


def test_passage_ids_only_grow_and_cannot_be_reused(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = Store(settings.locations.database)
    library = Library(store, None)
    folder = _folder(tmp_path, "d", 2)
    library.add([folder], "c")
    before = {r[0] for r in store.db.execute("select id from chunks")}
    (folder / "f1.md").write_text("# Part 1\n\nChanged text of the last file.\n")
    library.add([folder], "c")  # the last file's passage is deleted and written again
    after = {r[0] for r in store.db.execute("select id from chunks")}
    assert min(after - before) > max(before)
    assert store.db.execute("select count(*) from chunk_tombstones").fetchone()[0] == 1
    freed = max(before - after)  # the id of the deleted passage is never given again
    with pytest.raises(StoreError, match="passage ids must increase"):
        with store.transaction() as db:
            db.execute(
                "insert into chunks (id, document_id, seq, line_start, line_end, heading, text, tokens) "
                "select ?, id, 0, 1, 1, '', 'x', 1 from documents limit 1",
                [freed],
            )
    store.close()


def test_the_collection_filter_is_inside_the_match(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = Store(settings.locations.database)
    library = Library(store, None)
    library.add([_folder(tmp_path, "big", 30)], "big")
    library.add([_folder(tmp_path, "small", 2, "valve")], "small")
    library.add([_folder(tmp_path, "other", 1)], "other")
    hits = library.search("pump seal", k=5, collections=["other"], mode="bm25")
    assert [h.collection for h in hits] == ["other"]
    assert {h.collection for h in library.search("seal", k=40, mode="bm25")} == {"big", "small", "other"}
    store.db.execute("insert into chunks_fts(chunks_fts) values('integrity-check')")
    store.close()


def test_background_fill_is_resumable_and_search_uses_the_best_vector(settings, tiny_embedder_installed, tmp_path):  # type: ignore[no-untyped-def]
    store = Store(settings.locations.database)
    library = open_library(settings, store)
    assert library.rescore_top == settings.docs_rescore_top > 0
    library.rescore_top = 0  # the mixed state as the background leaves it (re-scoring: test_rescore.py)
    library.add([_folder(tmp_path, "d", 5)], "c")
    assert library.vector_progress()["static"] == 5 and library.vector_progress()["minilm"] == 0
    assert backfill.pending(library)
    assert library.fill_vectors(limit=2) == 2  # "killed" after one batch of two
    hits = library.search("pump seal", k=5, mode="vector")
    kinds = sorted("minilm" if h.similarity is not None else "static" for h in hits)
    assert kinds == ["minilm"] * 2 + ["static"] * 3  # each passage by the best vector it has
    # A new run carries on from the cursor; nothing is embedded twice.
    filler = backfill.Backfill(library, library.embedder)
    assert filler.cursor() > 0
    assert filler.run() == 3 and filler.run() == 0
    assert library.vector_progress()["minilm"] == 5 and not backfill.pending(library)
    store.close()


def test_the_background_waits_while_a_turn_generates(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = backfill.run_dir(settings)
    assert not backfill.busy(folder)
    with backfill.generating(settings):
        assert backfill.busy(folder)
    assert not backfill.busy(folder)
    # A marker left by a dead process does not block it.
    (folder / "generating-999999999-1").touch()
    assert not backfill.busy(folder) and not list(folder.glob("generating-*"))


def test_the_background_process_fills_vectors_and_reports(
    enclave_home: Path, tiny_embedder_installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCLAVE_DOCS_BACKGROUND", "1")
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "assistant"]
    out = subprocess.run(
        [*cmd, "docs", "add", str(_folder(tmp_path, "d", 4)), "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert report["chunks"] == 4 and report["vectors"] == 4  # searchable at once: static vectors
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(
            subprocess.run(
                [*cmd, "docs", "status", "--json"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        if status["vectors"]["minilm"] == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status["vectors"]["minilm"] == 4
    deadline = time.monotonic() + 30
    while status["vectors"]["background"]["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.3)
        status = json.loads(
            subprocess.run(
                [*cmd, "docs", "status", "--json"], env=env, cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout
        )
    assert status["vectors"]["background"]["state"] == "done"
    text = subprocess.run([*cmd, "docs", "status"], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert "searchable: 4 passages" in text.stdout and "vectors: MiniLM 4/4 passages (100%)" in text.stdout


def test_the_eta_is_smoothed_by_bytes() -> None:
    p = Progress(0, 10, 0, 1000, "", started=0.0)
    assert p.eta is None  # nothing done yet
    p.advance(1, 100, 5, now=1.0)  # 100 B/s
    p.advance(1, 10, 5, now=2.0)  # one slow file: 10 B/s for a second
    assert p.rate is not None and 80 < p.rate < 100  # the rate moves, it does not jump
    p.advance(1, 190, 5, now=3.0)
    assert p.files_done == 3 and p.passages == 15 and p.bytes_done == 300
    assert p.as_dict()["phase"] == "searchable"


def _synthetic(store: Store, n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` passages in one collection with random unit vectors in one space."""
    from assistant.retrieval.vectors import space_id, vector_blob

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with store.transaction() as db:
        cid = db.execute("insert into collections (name, created_at) values ('s', 'now')").lastrowid
        doc = db.execute(
            "insert into documents (collection_id, path, sha256, size, mtime_ns, kind, chunks, indexed_at) "
            "values (?, '/s', 'x', 1, 1, 'text', ?, 'now')",
            [cid, n],
        ).lastrowid
        db.conn.executemany(
            "insert into chunks (id, document_id, seq, line_start, line_end, heading, text, tokens) "
            "values (?, ?, ?, 1, 1, '', ?, 1)",
            [(i + 1, doc, i, f"passage {i}") for i in range(n)],
        )
        space = space_id(db, "synthetic", "static", dim)
        db.conn.executemany(
            "insert into passage_vectors (space, chunk_id, vector) values (?, ?, ?)",
            [(space, i + 1, vector_blob(v)) for i, v in enumerate(vectors)],
        )
    return vectors


def test_the_ann_index_is_built_used_and_rebuilt_when_damaged(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ann, "MIN_ENTRIES", 100)
    store = Store(settings.locations.database)
    vectors = _synthetic(store, 400)
    folder = settings.locations.data / "index"
    library = Library(store, None, index_dir=folder)
    space = 1
    assert ann.needs_build(store.db, folder, space) == "no index yet"
    # One thread: a graph built by several is not the same from run to run, and this
    # compares its top 10 with the exact one.
    done = ann.maintain(store, folder, threads=1)
    assert len(done) == 1 and ann.needs_build(store.db, folder, space) is None
    path = ann.index_path(folder, space)
    assert path.is_file() and oct(path.stat().st_mode & 0o777) == "0o600"
    q = vectors[7]
    exact = library._matrices.search(store.db, space, q, 10, None)
    fast = library._space_search(space, q, None)
    assert fast[0][0] == 8 and [i for i, _ in fast[:10]] == [i for i, _ in exact]
    assert library._ann is not None and library._ann.get(store.db, space) is not None
    # A damaged file is not used (exact search answers) and the background rebuilds it.
    path.write_bytes(b"garbage")
    library._ann.close()
    assert library._space_search(space, q, None)[0][0] == 8
    assert "does not match" in (ann.needs_build(store.db, folder, space) or "")
    ann.maintain(store, folder, threads=1)
    assert ann.needs_build(store.db, folder, space) is None
    status = library.ann_status()
    assert status["state"] == "on" and "usearch i8" in status["line"]
    store.close()


def test_no_index_file_is_written_when_the_database_is_encrypted(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from assistant.storage import crypt

    monkeypatch.setenv(crypt.KEY_ENV, "a passphrase for the test")
    key = crypt.key_from_env()
    store = Store(settings.locations.database, key)
    library = open_library(settings, store)
    assert library.index_dir is None
    status = library.ann_status()
    assert status["state"] == "excluded" and "encryption at rest" in status["line"]
    store.close()


def test_the_bm25_index_serves_large_collections_with_the_tail_and_deletions(settings, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    from assistant.retrieval import textindex

    monkeypatch.setattr(textindex, "MIN_PASSAGES", 10)
    store = Store(settings.locations.database)
    folder = settings.locations.data / "index"
    library = Library(store, None, index_dir=folder)
    docs = _folder(tmp_path, "d", 20)
    (docs / "valve.md").write_text("# Valve\n\nThe brass valve needs grease every spring.\n")
    library.add([docs], "c")
    exact = [i for i, _ in library._bm25("brass valve grease", None)]
    assert textindex.needs_build(store.db, folder) == "no BM25 index yet"
    assert textindex.maintain(store, folder) and textindex.needs_build(store.db, folder) is None
    fast = library._bm25("brass valve grease", None)
    assert library._text is not None and library._text.get(store.db) is not None
    assert fast[0][0] == exact[0] and fast[0][1] < 0  # negative, as FTS5's rank
    # A file added after the build is found through the FTS5 tail; a removed one is gone.
    (docs / "gasket.md").write_text("# Gasket\n\nThe rubber gasket is replaced yearly.\n")
    library.add([docs], "c")
    hits = library.search("rubber gasket", k=3, mode="bm25")
    assert Path(hits[0].path).name == "gasket.md"
    library.remove("c", docs / "valve.md")
    assert all(Path(h.path).name != "valve.md" for h in library.search("brass valve grease", k=5, mode="bm25"))
    # A damaged index is not used; the background rebuilds it.
    (folder / textindex.FOLDER / "meta.json").write_text("{}")
    library._text.close()
    assert library._text.get(store.db) is None and "does not match" in (textindex.needs_build(store.db, folder) or "")
    assert Path(library.search("rubber gasket", k=1, mode="bm25")[0].path).name == "gasket.md"  # FTS5 answers
    textindex.maintain(store, folder)
    assert textindex.needs_build(store.db, folder) is None
    assert "BM25 tantivy index" in library.ann_status()["line"]
    store.close()


def test_a_large_set_without_its_index_is_scanned_in_blocks(settings) -> None:  # type: ignore[no-untyped-def]
    from assistant.retrieval.vectors import stream_search

    store = Store(settings.locations.database)
    vectors = _synthetic(store, 300)
    library = Library(store, None)
    exact = library._matrices.search(store.db, 1, vectors[3], 10, None)
    assert stream_search(store.db, 1, vectors[3], 10, None, block=64) == exact
    assert stream_search(store.db, 1, vectors[3], 10, [1], block=64) == exact
    store.close()


def test_a_database_from_before_moves_its_vectors_and_rebuilds_the_full_text_index(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from assistant.storage import database

    monkeypatch.setattr(database, "MIGRATIONS", database.MIGRATIONS[:4])
    old = Store(settings.locations.database)
    with old.transaction() as db:
        db.execute("insert into collections (id, name, created_at) values (1, 'm', 'now')")
        db.execute(
            "insert into documents (id, collection_id, path, sha256, size, mtime_ns, kind, chunks, indexed_at) "
            "values (1, 1, '/m.txt', 'x', 1, 1, 'text', 2, 'now')"
        )
        for i, text in ((1, "the pump seal"), (2, "the brass valve")):
            db.execute(
                "insert into chunks (id, document_id, seq, line_start, line_end, heading, text, tokens) "
                "values (?, 1, ?, 1, 1, '', ?, 3)",
                [i, i - 1, text],
            )
            db.execute(
                "insert into chunk_vectors (chunk_id, embedder, vector) values (?, 'old-model', ?)",
                [i, np.ones(4, dtype=np.float16).tobytes()],
            )
    assert old.version == 4
    old.close()
    monkeypatch.undo()
    store = Store(settings.locations.database)
    assert store.version == len(database.MIGRATIONS)
    assert store.db.execute("select sha256, kind, dim from vector_spaces").fetchall() == [("old-model", "minilm", 4)]
    assert store.db.execute("select count(*) from passage_vectors").fetchone()[0] == 2
    library = Library(store, None)
    assert [h.text for h in library.search("brass valve", k=1, mode="bm25")] == ["the brass valve"]
    assert [h.text for h in library.search("pump", k=1, collections=["m"], mode="bm25")] == ["the pump seal"]
    # New passages get ids above every old one.
    assert store.db.execute("select value from counters where name = 'chunks'").fetchone()[0] == 2
    store.close()


def test_no_rate_is_shown_in_the_first_second_and_sizes_are_in_binary_units() -> None:
    """Found by a tester: the first --json progress line of `docs add` claimed a rate of
    several GiB/s (one small file's time), and the line said MB for MiB."""
    from assistant.cli.docs import progress_line

    p = Progress(0, 10, 0, 10 * 2**20, "a.md", started=100.0)
    p.advance(1, 2**20, 5, now=100.001)  # a first file that took a millisecond
    assert p.rate is None and p.as_dict()["rate"] is None
    assert "/s" not in progress_line(p) and "1.0/10.0 MiB" in progress_line(p)
    p.advance(1, 2**20, 5, now=102.0)  # two seconds in: the average so far, not 1 GiB/s
    assert p.rate is not None and p.rate == pytest.approx(2**20, rel=0.01)
    assert " 1.0 MiB/s" in progress_line(p)
