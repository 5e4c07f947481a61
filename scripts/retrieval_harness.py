"""What measure_retrieval.py and bench_retrieval.py share: finding the embedder, a Library
in a throwaway Enclave home, percentiles, answer matching.

Not a command; the two scripts import it from this folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings

SCRIPTS = Path(__file__).resolve().parent
for folder in (SCRIPTS, SCRIPTS.parent):  # the other scripts; the checkout (the corpus is tests/data)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from tests.data.retrieval_corpus import QUESTIONS_FILE, normalise  # noqa: E402

MODES = ("bm25", "vector", "fused")


def say(message: str) -> None:
    """Progress for a person watching: stderr, so stdout stays the report (or JSON)."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def enclave_home(path: Path | None) -> Iterator[None]:
    """ENCLAVE_HOME set to ``path`` (or left alone when None) for the duration."""
    saved = os.environ.get("ENCLAVE_HOME")
    if path is not None:
        os.environ["ENCLAVE_HOME"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("ENCLAVE_HOME", None)
        else:
            os.environ["ENCLAVE_HOME"] = saved


@dataclass
class EmbedderChoice:
    """The embedder to use, or None with the reason vector and fused modes are skipped."""

    embedder: Any
    where: str
    why_not: str = ""


def find_embedder(home: Path | None) -> EmbedderChoice:
    """The real all-MiniLM-L6-v2 embedder, as installed under ``home`` (an Enclave home:
    what ENCLAVE_HOME would be) or under the user's normal home when ``home`` is None.

    Loaded before the scripts move ENCLAVE_HOME to a temporary directory, so the index
    under test is throwaway while the model is the one the user built."""
    try:
        from assistant.retrieval.embed import load_embedder
    except ImportError as exc:
        return EmbedderChoice(None, "", f"this checkout has no assistant.retrieval.embed ({exc})")
    with enclave_home(home):
        try:
            settings = Settings.load()
        except EnclaveError as exc:
            return EmbedderChoice(None, "", f"settings could not be read: {exc}")
        where = str(settings.locations.models)
        embedder = load_embedder(settings)
    if embedder is None:
        return EmbedderChoice(
            None,
            where,
            f"no embedder is built under {where} (build it with `enclave models build all-minilm-l6-v2`, "
            "or point --embedder at the Enclave home that has it)",
        )
    return EmbedderChoice(embedder, where)


def import_library() -> Any:
    """assistant.retrieval.index.Library, or exit with one clear sentence."""
    try:
        from assistant.retrieval.index import Library
    except ImportError as exc:
        raise SystemExit(f"error: this checkout has no document index (assistant.retrieval.index: {exc}).") from exc
    return Library


def open_library(home: Path, embedder: Any, static: bool = True) -> tuple[Any, Any]:
    """A Library over a new database in the Enclave home ``home``; returns (library, store).
    With ``static`` (and a checkout that has them), the embedder's static table gives each
    passage its cheap vector at ``add`` time, as ``enclave docs add`` does."""
    import inspect

    from assistant.storage.database import Store

    Library = import_library()
    with enclave_home(home):
        settings = Settings.load()
    store = Store(settings.locations.database)
    kwargs: dict[str, Any] = {}
    if static and embedder is not None and "static" in inspect.signature(Library).parameters:
        from assistant.retrieval.static import StaticEncoder, has_static

        if has_static(embedder.folder):
            kwargs["static"] = StaticEncoder(embedder.folder)
    return Library(store, embedder, **kwargs), store


def add_files(lib: Any, files: list[Path], collection: str, vectors: str = "full", index_files: bool = False) -> Any:
    """Index ``files`` as ``docs add`` does; with ``vectors="full"`` also fill every MiniLM
    vector (what the background embedder does afterwards). On a checkout from before
    issue 18, ``add`` embedded while indexing and there is nothing to fill. With
    ``index_files`` the ANN and tantivy files are built as the background builds them
    (whatever the size, when ENCLAVE_DOCS_ANN_MIN / ENCLAVE_DOCS_TEXT_INDEX_MIN are 0)."""
    report = lib.add(files, collection=collection, progress=None)
    if vectors == "full" and hasattr(lib, "vector_progress"):
        report.vectors = lib.fill_vectors()
    if index_files:
        from assistant.retrieval import ann, textindex

        folder = Path(lib.store.path).parent / "index"
        lib.index_dir = folder
        for line in ann.maintain(lib.store, folder) + textindex.maintain(lib.store, folder):
            say(line)
    return report


def corpus_files(root: Path) -> list[Path]:
    """Every document under a corpus directory (not the questions), in a stable order."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != QUESTIONS_FILE)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def is_answer(hit: Any, root: Path, path: str, answer: str) -> bool:
    """A hit answers when it comes from the right file and its text holds the answer
    (compared without case or whitespace differences: wrapped lines, HTML text)."""
    return same_file(hit, root, path) and normalise(answer) in normalise(hit.text)


def same_file(hit: Any, root: Path, path: str) -> bool:
    return Path(hit.path).resolve() == (root / path).resolve()


@contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then t[0] is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def generated_corpus() -> Path:
    """The seeded corpus written to a new temporary folder (left for the caller to inspect)."""
    from tests.data.retrieval_corpus import write_corpus

    root = Path(tempfile.mkdtemp(prefix="enclave-corpus-")) / "corpus"
    write_corpus(root)
    return root
