"""Query-time re-scoring: the static-only passages of a search's top get their MiniLM
vector at once (real all-MiniLM-L6-v2, real SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.core.settings import Settings
from assistant.retrieval.backfill import Backfill
from assistant.retrieval.embed import Embedder, embedder_folder
from assistant.retrieval.index import Library
from assistant.retrieval.static import StaticEncoder
from assistant.retrieval.vectors import find_space, passage_text
from assistant.storage.database import Store

pytestmark = pytest.mark.slow

QUESTION = "How do I reset the pump pressure?"
#: Passages that share the question's words (BM25 and the bag-of-pieces static vector
#: rank them first) but do not say how to reset anything.
DISTRACTORS = [
    "The pump pressure is written to the log every hour by the pump controller.",
    "Pump pressure readings above the red line mean the pump works too hard.",
    "How the pump pressure sensor is calibrated: see the pump pressure appendix.",
    "The pressure of the pump is shown on the front display of the pump unit.",
    "Pump pressure alarms: the pump sounds a tone when the pressure changes.",
    "Each pump has a pressure gauge; pump pressure is measured in bar.",
    "Low pump pressure may come from a blocked pump inlet or a worn pump seal.",
    "The pump pressure log keeps thirty days of pump pressure history.",
]
#: Passages about something else.
OTHERS = [
    "The warranty covers parts and labour for two years from the date of purchase.",
    "Store the unit in a dry place between five and forty degrees.",
    "The housing is made of stainless steel and can be cleaned with water.",
    "Replace the filter cartridge every six months.",
]
#: Says how, in other words: only a contextual vector sees that it answers (keywords and
#: static vectors put it 9th of 13, every MiniLM vector 4th).
ANSWER = "To bring the pump back to its factory setting, hold the red button down for five seconds."
PASSAGES = [*DISTRACTORS, *OTHERS, ANSWER]


@pytest.fixture(scope="module")
def minilm(embedder_home: Path) -> Iterator[Embedder]:
    import os

    old = os.environ.get("ENCLAVE_HOME")
    os.environ["ENCLAVE_HOME"] = str(embedder_home)
    try:
        folder = embedder_folder(Settings.load())
    finally:
        if old is None:
            os.environ.pop("ENCLAVE_HOME", None)
        else:
            os.environ["ENCLAVE_HOME"] = old
    embedder = Embedder(folder, threads=1)
    yield embedder
    embedder.close()


def _library(settings: Settings, minilm: Embedder, tmp_path: Path, rescore_top: int, name: str = "db") -> Library:
    folder = tmp_path / f"docs-{name}"
    folder.mkdir()
    for i, text in enumerate(PASSAGES):
        (folder / f"note{i}.md").write_text(f"{text}\n")
    store = Store(settings.locations.data / f"{name}.db")
    library = Library(store, minilm, static=StaticEncoder(minilm.folder), rescore_top=rescore_top)
    library.add([folder], "manual")
    assert library.vector_progress()["minilm"] == 0  # static vectors only, as right after `docs add`
    return library


def _minilm_ids(library: Library, minilm: Embedder) -> set[int]:
    space = find_space(library.db, minilm.sha256)
    if space is None:
        return set()
    return {int(r[0]) for r in library.db.execute("select chunk_id from passage_vectors where space = ?", [space])}


def test_the_rescored_passages_keep_their_vectors_and_the_backfill_skips_them(
    settings: Settings, minilm: Embedder, tmp_path: Path
) -> None:
    library = _library(settings, minilm, tmp_path, rescore_top=3)
    total = library.vector_progress()["passages"]
    hits = library.search(QUESTION, k=3, mode="fused")
    assert library.last_rescored == 3
    assert all(h.similarity is not None for h in hits)  # ranked by MiniLM, not by the static vector
    stored = _minilm_ids(library, minilm)
    assert stored == {h.chunk_id for h in hits}
    # What was stored is the passage's own MiniLM vector (float16), as the background writes it.
    space = find_space(library.db, minilm.sha256)
    for hit in hits:
        row = library.db.execute(
            "select v.vector, c.heading, c.text from passage_vectors v join chunks c on c.id = v.chunk_id "
            "where v.space = ? and v.chunk_id = ?",
            [space, hit.chunk_id],
        ).fetchone()
        want = minilm.embed([passage_text(row[1], row[2])])[0]
        assert np.allclose(np.frombuffer(row[0], dtype=np.float16), want, atol=2e-3)
    # The same search again is already exact: nothing more to embed.
    library.search(QUESTION, k=3, mode="fused")
    assert library.last_rescored == 0
    # The background embedder looks only at the passages still without a MiniLM vector.
    assert Backfill(library, minilm).run() == total - 3
    assert library.vector_progress()["minilm"] == total
    library.store.close()


def test_a_passage_only_the_contextual_vector_ranks_is_found(
    settings: Settings, minilm: Embedder, tmp_path: Path
) -> None:
    def answer_rank(library: Library) -> int | None:
        hits = library.search(QUESTION, k=5, mode="fused")
        return next((i for i, h in enumerate(hits, 1) if h.text.strip() == ANSWER), None)

    plain = _library(settings, minilm, tmp_path, rescore_top=0, name="plain")
    assert answer_rank(plain) is None  # keywords + static vectors miss it: what this test is about
    plain.fill_vectors()
    assert answer_rank(plain) is not None  # with every MiniLM vector it is in the top 5
    plain.store.close()

    rescored = _library(settings, minilm, tmp_path, rescore_top=10, name="rescored")
    assert answer_rank(rescored) is not None
    assert rescored.last_rescored == 10  # the top 10, no more: the budget of one search
    rescored.store.close()


def test_with_the_setting_off_search_is_as_before(settings: Settings, minilm: Embedder, tmp_path: Path) -> None:
    loads: list[int] = []

    def loader() -> Embedder:
        loads.append(1)
        return minilm

    built = _library(settings, minilm, tmp_path, rescore_top=0)
    # Lazy, as `enclave docs search` opens it: MiniLM is loaded only when a search needs it.
    library = Library(built.store, loader, static=built.static, rescore_top=0)
    hits = library.search(QUESTION, k=5, mode="fused")
    assert loads == [] and library.last_rescored == 0 and _minilm_ids(library, minilm) == set()
    assert all(h.similarity is None and h.static_similarity is not None for h in hits)
    # Cheap queries (`docs search` without --best) never load MiniLM, whatever the setting.
    library.rescore_top = 10
    library.cheap_queries = True
    assert [h.chunk_id for h in library.search(QUESTION, k=5, mode="fused")] == [h.chunk_id for h in hits]
    assert loads == [] and _minilm_ids(library, minilm) == set()
    # BM25 mode has no vectors to improve.
    library.cheap_queries = False
    library.search(QUESTION, k=5, mode="bm25")
    assert loads == [] and library.last_rescored == 0
    library.search(QUESTION, k=5, mode="fused")
    assert loads == [1] and len(_minilm_ids(library, minilm)) == 10
    built.store.close()


def test_a_database_that_cannot_be_written_still_ranks_with_the_vectors(
    settings: Settings, minilm: Embedder, tmp_path: Path
) -> None:
    built = _library(settings, minilm, tmp_path, rescore_top=0, name="ro")
    path = built.store.path
    built.store.close()
    store = Store(path, readonly=True)
    library = Library(store, minilm, static=StaticEncoder(minilm.folder), rescore_top=10)
    hits = library.search(QUESTION, k=5, mode="fused")
    assert ANSWER in [h.text.strip() for h in hits]  # found as with the vectors stored
    assert library.last_rescored == 10 and all(h.similarity is not None for h in hits)
    assert _minilm_ids(library, minilm) == set()  # nothing was written
    store.close()
