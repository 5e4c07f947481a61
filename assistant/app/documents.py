"""Documents, as every front end uses them: the `/docs` switch of a conversation (one
parser for `ask --docs`, `chat`'s `/docs` and the TUI's), and the collection use cases
behind `enclave docs` — indexing, search, status, removal — audited here, once.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.core.text import path_text
from assistant.retrieval import open_library
from assistant.retrieval.index import Hit, IndexingInterrupted, IngestReport, Library, Progress
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store

if TYPE_CHECKING:
    from assistant.app.turns import Conversation

__all__ = [
    "Documents",
    "DocsSwitch",
    "Hit",
    "IndexingStopped",
    "Interrupted",
    "IngestReport",
    "NothingIndexed",
    "Progress",
    "collection_for",
    "nothing_indexed",
    "parse_switch",
    "report_line",
    "switch_documents",
    "use_collection",
]


class IndexingStopped(EnclaveError):
    """Indexing was stopped by the user; what was indexed so far is kept."""

    def __init__(self) -> None:
        super().__init__(
            "Indexing stopped; the files read so far are indexed.", "Run it again (or /docs sync) to continue."
        )


class Interrupted(EnclaveError):
    """`docs add` was interrupted (Ctrl-C); what was indexed by then is kept.

    ``report`` is the run so far; the message counts the files kept and the hint says
    that the same command resumes. Exit status 130, as a shell gives a command ended by
    SIGINT."""

    exit_code = 130

    def __init__(self, report: IngestReport) -> None:
        kept = report.files_indexed + report.files_unchanged
        if kept:
            files = f"the {kept:,} file{'s' if kept != 1 else ''} indexed so far {'are' if kept != 1 else 'is'} kept"
            what = f"Interrupted: {files} and searchable in {report.collection}."
        else:
            what = f"Interrupted before any file was indexed into {report.collection}."
        super().__init__(
            what, "Run the same command again to resume: files already indexed are not read again."
        )
        self.report = report


def _stoppable(
    progress: Callable[[Progress], None] | None, cancel: threading.Event | None
) -> Callable[[Progress], None] | None:
    if cancel is None:
        return progress

    def report(state: Progress) -> None:
        if cancel.is_set():
            raise IndexingStopped()
        if progress is not None:
            progress(state)

    return report


def collection_for(paths: list[Path]) -> str:
    """The collection a `/docs add PATH` without ``-c`` goes into: the first folder's
    (or file's) name, in lower case letters, digits and dashes."""
    first = paths[0].expanduser()
    stem = first.name if first.is_dir() else first.stem
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return name or "default"


def use_collection(conv: Conversation, documents: Documents, collection: str) -> str:
    """After indexing into ``collection``: answer from it in this conversation too (added
    to the collections already on). The sentence to show."""
    if conv.all_documents:
        conv.use_documents(documents.library, None)
        return f"Documents on (all collections, now with {collection})."
    names = [*(conv.collections or []), collection] if conv.documents_on else [collection]
    conv.use_documents(documents.library, list(dict.fromkeys(names)))
    return f"Documents on ({', '.join(conv.collections or [])}): answers cite their sources."


#: The files `docs add` reads, in the words of its messages.
READABLE = ".txt, .md, .rst, .html, .pdf, .docx and text without a suffix, each also gzip-compressed as .gz"


class NothingIndexed(EnclaveError):
    """`docs add` indexed nothing and changed no collection (every path missing, every
    file skipped, or no files at all); the message says why and the hint what to do."""


def nothing_indexed(report: IngestReport, paths: Sequence[Path]) -> NothingIndexed | None:
    """The error for a run that indexed, kept and removed nothing; None when it did something."""
    if not report.nothing_indexed:
        return None
    collection = (
        f"The collection {report.collection} is unchanged."
        if report.collection_exists
        else f"The collection {report.collection} was not created."
    )
    given = [path_text(p) for p in paths]
    reasons = [reason for _, reason in report.skipped]
    if not reasons:
        where = given[0] if len(given) == 1 else f"the {len(given)} paths given"
        return NothingIndexed(
            f"nothing was indexed: there are no files in {where} (hidden files and folders are passed over).",
            f"Point it at a folder or file of documents ({READABLE}). {collection}",
        )
    if all(reason == "does not exist" for reason in reasons):
        what = f"{given[0]} does not exist" if len(given) == 1 else f"none of the {len(given)} paths exists"
        return NothingIndexed(
            f"nothing was indexed: {what}.",
            f"Check the path (a typo, or a drive that is not mounted?). {collection}",
        )
    kinds = Counter(reason.split(" (")[0] for reason in reasons)
    summary = ", ".join(f"{n} × {why}" for why, n in kinds.most_common(3))
    more = f", {len(kinds) - 3} other reasons" if len(kinds) > 3 else ""
    every = "the only file was skipped" if len(reasons) == 1 else f"all {len(reasons)} files were skipped"
    return NothingIndexed(
        f"nothing was indexed: {every} ({summary}{more}).",
        f"Enclave reads {READABLE}; each skipped file is listed with its reason. Fix or convert them, "
        f"or point it at another folder. {collection}",
    )


def report_line(report: IngestReport) -> str:
    """One line about an indexing run, for the chat and the TUI."""
    skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
    return (
        f"{report.collection}: {report.files_indexed} indexed, {report.files_unchanged} unchanged, "
        f"{report.files_removed} removed{skipped} · {report.chunks} passage{'' if report.chunks == 1 else 's'} "
        f"in {report.seconds:.1f} s"
    )


#: Words that mean "every collection" in a `/docs` argument.
ALL = ("", "all", "on")
USAGE = "/docs [COLLECTION…|all|off] [--path GLOB]…"


@dataclass(frozen=True)
class DocsSwitch:
    """What a `/docs ARG` (or `--docs ARG --path GLOB`) asks for: ``show`` what is on,
    documents ``off``, or ``on`` for some collections (None: all) and, with ``paths``,
    only the files those globs match."""

    action: Literal["show", "on", "off"]
    collections: list[str] | None = None
    paths: list[str] = field(default_factory=list)

    @property
    def on(self) -> bool:
        return self.action != "off"


def parse_switch(arg: str | None, paths: Sequence[str] = ()) -> DocsSwitch:
    """The one parser of the documents switch, for `ask --docs`, `chat`'s `/docs` and the
    TUI's: nothing (show what is on); ``off``; ``all``/``on``; collection names separated
    by commas or spaces; ``--path GLOB`` (repeatable) to answer from some files only:
    ``/docs licences --path 'GPL-*'``. Raises :class:`EnclaveError` with the usage."""
    try:
        words = shlex.split(arg or "")
    except ValueError as exc:
        raise EnclaveError(f"Cannot read /docs {arg}: {exc}.", f"Usage: {USAGE}") from exc
    globs = list(paths)
    names: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--path":
            if i + 1 >= len(words):
                raise EnclaveError("--path needs a file name or glob.", f"Usage: {USAGE}")
            globs.append(words[i + 1])
            i += 2
            continue
        if word.startswith("--path="):
            globs.append(word.split("=", 1)[1])
        elif word.startswith("-"):
            raise EnclaveError(f"Unknown /docs option {word}.", f"Usage: {USAGE}")
        else:
            names.extend(name for name in word.split(",") if name)
        i += 1
    if [n.lower() for n in names] == ["off"]:
        if globs:
            raise EnclaveError("/docs off takes no --path.", f"Usage: {USAGE}")
        return DocsSwitch("off")
    if not names and not globs:
        return DocsSwitch("show")
    every = not names or (len(names) == 1 and names[0].lower() in ALL)
    return DocsSwitch("on", None if every else names, globs)


def switch_documents(
    conv: Conversation, arg: str | None, store: Store | None = None, paths: Sequence[str] = ()
) -> str:
    """Turn documents on or off for ``conv`` as ``arg`` (and ``paths``) ask; the sentence
    to show. Nothing asked shows what is on (or turns every collection on when documents
    are off). Raises :class:`EnclaveError` for an unknown collection, a glob that matches
    no file, or an empty library."""
    switch = parse_switch(arg, paths)
    if switch.action == "show" and conv.documents_on:
        return documents_state(conv)
    if switch.action == "off":
        conv.use_documents(None)
        return "Documents off: answers come from the model alone."
    library = open_library(conv.settings, store or conv.store or Store.open(conv.settings))
    if not library.collections():
        raise EnclaveError("There are no indexed documents yet.", "Add some with `enclave docs add PATH`.")
    conv.use_documents(library, switch.collections, switch.paths)
    search = "keyword + vector" if library.has_embedder or library.static is not None else "keyword-only"
    note = ""
    progress = vectors_line(library)
    if progress:
        start_background(conv.settings, library)
        note = f" ({progress})"
    return f"Documents on ({_scope(conv)}, {search} search): answers quote their sources.{note}"


def _filling(library: Library) -> tuple[int, int, dict[str, Any]] | None:
    """(passages, those with their MiniLM vector, the background's state row) while some
    passage still lacks its MiniLM vector; None when none does or there is no MiniLM."""
    if not library.has_embedder:
        return None
    p = library.vector_progress()
    total, done = int(p["passages"]), int(p["minilm"])
    if total == 0 or done >= total:
        return None
    return total, done, dict(p.get("background") or {})


def vectors_line(library: Library, started_at: float | None = None) -> str:
    """``MiniLM vectors 1,234 of 5,000 passages (25 %), background running, about 2 min left``;
    empty when every passage has its MiniLM vector (or there is no MiniLM model).
    ``started_at``: when this process started the background embedder (its state row
    from before then is an older run's)."""
    filling = _filling(library)
    if filling is None:
        return ""
    total, done, bg = filling
    if started_at is not None and float(bg.get("updated_at") or 0) < started_at:
        bg = {"state": "starting"}
    state = bg.get("state", "not started")
    reason = f" ({bg['reason']})" if bg.get("reason") and state in ("paused", "stopped", "failed") else ""
    eta = f", about {format_eta(bg['eta_s'])} left" if bg.get("eta_s") else ""
    return f"MiniLM vectors {done:,} of {total:,} passages ({done / total:.0%}), background {state}{reason}{eta}"


def vectors_badge(library: Library | None) -> str:
    """The TUI's short form: ``vectors 45 % · 2 min`` while MiniLM vectors are being filled in."""
    filling = _filling(library) if library is not None else None
    if filling is None:
        return ""
    total, done, bg = filling
    state = bg.get("state", "")
    tail = (
        f" · {format_eta(bg['eta_s'])}" if bg.get("eta_s") else (f" · {state}" if state and state != "running" else "")
    )
    return f"vectors {done / total:.0%}{tail}"


def format_eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def start_background(settings: Settings, library: Library) -> bool:
    """Start the background embedder when some passage lacks its MiniLM vector."""
    from assistant.retrieval import backfill

    if backfill.pending(library):
        return backfill.start(settings, library.store)
    return False


def _scope(conv: Conversation) -> str:
    names = ", ".join(conv.collections or []) or "all collections"
    return names + (f"; files matching {' '.join(conv.paths)}" if conv.paths else "")


def documents_state(conv: Conversation) -> str:
    """Which documents this conversation answers from, in one sentence."""
    if not conv.documents_on:
        return "Documents off. `/docs` turns them on (all collections), `/docs NAME` one collection."
    return f"Documents on: {_scope(conv)}. `/docs off` turns them off."


class Documents:
    """The collections of one database, with the embedding model when it is built."""

    def __init__(self, settings: Settings, store: Store, library: Library) -> None:
        self.settings = settings
        self.store = store
        self.library = library
        self._audit = AuditLog(store)
        self._started_at: float | None = None

    @classmethod
    def open(
        cls, settings: Settings, store: Store | None = None, *, write: bool = True, lazy: bool = False
    ) -> Documents:
        """The documents of the database ``settings`` point at (``write=False``: read-only;
        ``lazy``: MiniLM is loaded only if a search needs it)."""
        store = store or Store.open(settings, write=write)
        return cls(settings, store, open_library(settings, store, lazy=lazy))

    @staticmethod
    def embedder_missing(settings: Settings) -> bool:
        """Whether the first ``docs add`` should build the embedding model now: it is not
        built, the settings allow it and this installation has the build tools."""
        from assistant.core.records import MANIFEST_NAME
        from assistant.retrieval.embed import embedder_folder

        built = (embedder_folder(settings) / MANIFEST_NAME).is_file()  # no model load just to ask
        return settings.docs_build_embedder and not built and build_tools_installed()

    @staticmethod
    def build_embedder(settings: Settings, progress: Callable[[Any], None]) -> None:
        """Build the embedding model (vector search) and its static table, about 2 min once."""
        from assistant.retrieval.embed import build_embedder

        build_embedder(settings, progress=progress)

    def close(self) -> None:
        self.store.close()

    @property
    def vector_search(self) -> bool:
        return self.library.has_embedder or self.library.static is not None

    @property
    def embedder_sha256(self) -> str | None:
        lib = self.library
        if lib._embedder is not None:
            return lib._embedder.sha256
        return lib._embedder_sha256() if lib.has_embedder else None

    def vectors(self) -> dict[str, Any]:
        """Passages with static and MiniLM vectors, and the background embedder's state."""
        data = self.library.vector_progress()
        data["line"] = vectors_line(self.library, self._started_at)
        data["ann"] = self.library.ann_status()
        return data

    @property
    def cheap_vectors(self) -> bool:
        """Whether passages get a static vector when indexed (the embedding model's build
        includes the static table; a build from before it existed does not)."""
        return self.library.static is not None

    def start_background(self) -> bool:
        started_at = time.time()
        started = start_background(self.settings, self.library)
        if started:
            self._started_at = started_at
        return started

    def fill_vectors(self, progress: Callable[[Progress], None] | None = None) -> int:
        """Compute the missing MiniLM vectors now, in this process (``docs add --wait``)."""
        return self.library.fill_vectors(progress=progress)

    def names(self) -> list[str]:
        return [str(c["name"]) for c in self.library.collections()]

    def collections(self) -> list[dict[str, Any]]:
        return self.library.collections()

    @classmethod
    def of(cls, conv: Conversation) -> Documents:
        """The documents of ``conv``'s database, sharing its library when documents are on
        (so the next question searches what was just indexed)."""
        store = conv.store or Store.open(conv.settings)
        return cls(conv.settings, store, conv.library or open_library(conv.settings, store))

    def add(
        self,
        paths: list[Path],
        collection: str,
        progress: Callable[[Progress], None] | None,
        cancel: threading.Event | None = None,
    ) -> IngestReport:
        """Index ``paths`` into ``collection`` (incremental, resumable); audited. Setting
        ``cancel`` stops after the file being read (:class:`IndexingStopped`; what was
        indexed is kept, and running it again continues); Ctrl-C raises
        :class:`Interrupted`, with the same guarantee."""
        try:
            report = self.library.add(paths, collection, _stoppable(progress, cancel))
        except IndexingInterrupted as stop:
            self._audit_add(stop.report, paths, interrupted=True)
            raise Interrupted(stop.report) from None
        self._audit_add(report, paths)
        return report

    def _audit_add(self, report: IngestReport, paths: list[Path], interrupted: bool = False) -> None:
        self._audit.record(
            "documents_indexed",
            collection=report.collection,
            paths=[path_text(p) for p in paths],
            indexed=report.files_indexed,
            removed=report.files_removed,
            skipped=len(report.skipped),
            **({"interrupted": True} if interrupted else {}),
        )

    def sync(
        self, collection: str, progress: Callable[[Progress], None] | None, cancel: threading.Event | None = None
    ) -> IngestReport:
        """Re-walk a collection's folders; audited. ``cancel`` as for :meth:`add`."""
        report = self.library.sync(collection, _stoppable(progress, cancel))
        self._audit.record(
            "documents_synced", collection=collection, indexed=report.files_indexed, removed=report.files_removed
        )
        return report

    def status(self, collection: str) -> dict[str, Any]:
        """Every file of a collection, and every skipped one with why."""
        return {
            "name": collection,
            "documents": self.library.documents(collection),
            "skipped": self.library.skipped(collection),
        }

    def check(self, collection: str) -> None:
        """Raise the "no such collection" error (with the known names) unless it exists."""
        self.library.collection_id(collection)

    def remove(self, collection: str, path: Path | None, *, how: str) -> int:
        """Forget a collection, or one file or folder in it (the files are never touched);
        audited with how the user confirmed it."""
        count = self.library.remove(collection, path)
        self._audit.record(
            "documents_removed", collection=collection, path=path_text(path) if path else None, documents=count, how=how
        )
        return count

    def search(
        self,
        text: str,
        k: int,
        collections: list[str] | None,
        mode: str,
        paths: list[str] | None = None,
        best: bool = True,
    ) -> list[Hit]:
        """Ranked passages. ``best=False`` ranks with the cheap query vector only (BM25 +
        static vectors): no MiniLM load, for a one-shot command that must answer fast."""
        self.library.cheap_queries = not best
        return self.library.search(text, k=k, collections=collections, mode=mode, paths=paths)


def build_tools_installed() -> bool:
    """Whether this installation can build models (the ``build`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "onnx"))
