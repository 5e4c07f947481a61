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
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from retrieval_corpus import QUESTIONS_FILE, normalise  # noqa: E402

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


def open_library(home: Path, embedder: Any) -> tuple[Any, Any]:
    """A Library over a new database in the Enclave home ``home``; returns (library, store)."""
    from assistant.storage.database import Store

    Library = import_library()
    with enclave_home(home):
        settings = Settings.load()
    store = Store(settings.locations.database)
    return Library(store, embedder), store


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
    from retrieval_corpus import write_corpus

    root = Path(tempfile.mkdtemp(prefix="enclave-corpus-")) / "corpus"
    write_corpus(root)
    return root
