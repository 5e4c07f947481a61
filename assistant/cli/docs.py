"""`enclave docs`: index the user's files and search them, all on this machine."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import _settings, confirm_destructive
from assistant.core.errors import EnclaveError
from assistant.core.format import human_size
from assistant.core.text import displayable, for_model, inline


def _err(text: str = "") -> None:
    click.echo(text, err=True)


def status_lines(vectors: dict[str, Any]) -> list[str]:
    """``searchable``, ``vectors`` and ``index`` lines of `docs status`."""
    total = vectors["passages"]
    lines = [f"searchable: {total:,} passages (keywords; cheap vectors for {vectors['static']:,})"]
    bg = vectors.get("background") or {}
    done = vectors["minilm"]
    if total:
        state = f", background {bg['state']}" if bg else ""
        if bg.get("reason") and bg.get("state") in ("paused", "stopped", "failed"):
            state += f" ({bg['reason']})"
        if bg.get("eta_s"):
            from assistant.app.documents import format_eta

            state += f", about {format_eta(bg['eta_s'])} left"
        lines.append(f"vectors: MiniLM {done:,}/{total:,} passages ({done / total:.0%}){state}")
        if bg.get("hint"):
            lines.append(f"  {bg['hint']}")
    ann = vectors.get("ann") or {}
    if ann.get("line"):
        lines.append(f"index: {ann['line']}")
    return lines


def _open(ctx: click.Context, build: bool = False, *, write: bool = True, lazy: bool = False) -> Any:
    """The documents of this home (``write=False``: opened read-only, which also works
    in a home that cannot be written; ``lazy``: MiniLM is loaded only if a search needs
    it). With ``build``, the embedding model is built first if it is missing and the
    build tools are installed (once, ~30 s); without them, search stays keyword-only and
    the report says so."""
    from assistant.app.documents import Documents

    settings = _settings(ctx)
    if build and Documents.embedder_missing(settings):
        from assistant.cli.progress import BuildProgress

        _err("Building the embedding model for document search (once; about 2 min)…")
        try:
            with BuildProgress() as progress:
                Documents.build_embedder(settings, progress)
        except EnclaveError as exc:
            _err(click.style("note: ", fg="yellow") + f"{exc.message} Indexing continues with keyword search.")
    documents = Documents.open(settings, write=write, lazy=lazy or build)
    ctx.call_on_close(documents.close)
    return documents


class IndexProgress:
    """Honest progress on stderr, one line per phase: ``searchable`` (files, MiB, passages,
    MiB/s and an ETA from the smoothed byte rate) and ``vectors`` (MiniLM passages). A live
    display on a terminal; otherwise a line every 2 s — as JSON lines with ``--json``, so a
    script can follow it without parsing prose (stdout keeps only the report)."""

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self._live: Any = None
        self._lines: dict[str, str] = {}
        self._last_line = 0.0

    def __enter__(self) -> IndexProgress:
        if sys.stderr.isatty() and not self.as_json:
            from rich.console import Console
            from rich.live import Live

            self._live = Live("", console=Console(stderr=True), transient=True, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __call__(self, p: Any) -> None:
        line = progress_line(p)
        self._lines[p.phase] = line
        finished = p.bytes_done >= p.bytes_total
        if self._live is not None:
            self._live.update("\n".join(self._lines.values()))
        elif time.monotonic() - self._last_line > 2 or finished:
            self._last_line = time.monotonic()
            _err(json.dumps({"progress": p.as_dict()}) if self.as_json else line)

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)


def progress_line(p: Any) -> str:
    """``searchable: 12/40 files · 3.1/9.8 MiB · 1,234 passages · 2.4 MiB/s · about 3 s left``."""
    from assistant.app.documents import format_eta

    eta = p.eta
    left = f" · about {format_eta(eta)} left" if eta else ""
    if p.phase == "vectors":
        rate = f" · {p.rate:.0f} passages/s" if p.rate else ""
        return f"vectors: {p.bytes_done:,}/{p.bytes_total:,} passages (MiniLM){rate}{left}"
    rate = f" · {p.rate / 2**20:.1f} MiB/s" if p.rate else ""
    current = f" · {inline(Path(p.current).name)[-40:]}" if p.current and p.bytes_done < p.bytes_total else ""
    return (
        f"searchable: {p.files_done}/{p.files_total} files · {p.bytes_done / 2**20:.1f}/{p.bytes_total / 2**20:.1f} MiB"
        f" · {p.passages:,} passages{rate}{left}{current}"
    )


def _report_data(report: Any, documents: Any, failure: EnclaveError | None = None) -> dict[str, Any]:
    """A report as ``--json`` prints it (with ``error`` when the command fails)."""
    data: dict[str, Any] = report.as_dict()
    if failure is not None:
        data["error"] = {"message": failure.message, "hint": failure.hint}
    data["vector_search"] = documents.vector_search
    data["vectors_status"] = {k: v for k, v in documents.vectors().items() if k != "line"}
    return data


def _print_report(report: Any, documents: Any, as_json: bool, failure: EnclaveError | None = None) -> None:
    if as_json:
        click.echo(json.dumps(_report_data(report, documents, failure), ensure_ascii=False))
        return
    vectors = documents.vectors()
    rate = report.bytes / 2**20 / report.seconds if report.seconds > 0 else 0.0
    click.echo(
        f"{inline(report.collection)}: {report.files_indexed} indexed, {report.files_unchanged} unchanged, "
        f"{report.files_removed} removed, {len(report.skipped)} skipped · {report.chunks} passages · "
        f"{human_size(report.bytes)} in {report.seconds:.1f} s ({rate:.2f} MiB/s)"
    )
    shown = report.skipped if len(report.skipped) <= 20 else report.skipped[:10]
    for path, reason in shown:
        click.echo(f"  skipped {inline(path)}: {inline(reason)}")
    if len(shown) < len(report.skipped):
        from collections import Counter

        kinds = Counter(reason.split(" (")[0] for _, reason in report.skipped[len(shown) :])
        summary = ", ".join(f"{n} × {why}" for why, n in kinds.most_common(5))
        click.echo(
            f"  … and {len(report.skipped) - len(shown)} more skipped ({summary}); `enclave docs status` lists all"
        )
    for path, note in report.notes:
        click.echo(f"  note {inline(path)}: {inline(note)}")
    if failure is not None:
        return  # the error says why and what to do; the search set-up is beside the point
    if vectors["line"]:
        cheap = " + cheap vectors" if documents.cheap_vectors else ""
        click.echo(f"  searchable now (keywords{cheap}); {vectors['line']}")
    if not documents.vector_search:
        _err(
            click.style("note: ", fg="yellow") + "keyword search only: the embedding model is not built. "
            "Build it with `enclave models build all-minilm-l6-v2`, then run `enclave docs sync`."
        )
    elif not documents.cheap_vectors:
        _err(
            click.style("note: ", fg="yellow") + "no cheap vectors: the embedding model was built by an Enclave "
            "from before they existed, so until the background fills in the MiniLM vectors search is by "
            "keywords alone. `enclave models build all-minilm-l6-v2 --force`, then `enclave docs sync`, adds them."
        )


@click.group()
def docs() -> None:
    """Index your documents and search them (nothing leaves this machine)."""


@docs.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-c", "--collection", default="default", show_default=True, help="Collection to add them to.")
@click.option("--wait", is_flag=True, help="Compute the MiniLM vectors now instead of in the background.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (progress: JSON lines on stderr).")
@click.pass_context
def docs_add(ctx: click.Context, paths: tuple[Path, ...], collection: str, wait: bool, as_json: bool) -> None:
    """Index files and folders (.txt .md .rst .html .pdf .docx, also .gz-compressed).

    Searchable as soon as this returns (keywords plus a cheap vector per passage); the
    contextual MiniLM vectors are filled in by a low-priority background process that
    pauses while an answer is generated (`enclave docs status` shows it). Incremental
    and resumable: unchanged files cost nothing, changed files are re-read, deleted ones
    are removed; stop it at any moment and run it again.
    """
    from assistant.app.documents import Interrupted, nothing_indexed

    # No model build (minutes, the first time) before saying that no path exists.
    documents = _open(ctx, build=any(os.path.lexists(p.expanduser()) for p in paths))
    try:
        with IndexProgress(as_json) as progress:
            report = documents.add(list(paths), collection, progress)
            failure = nothing_indexed(report, list(paths))
            if failure is None:
                _vectors(documents, wait, progress)
    except Interrupted as stop:
        _interrupted(ctx, stop, documents, as_json)
    except KeyboardInterrupt:  # after indexing (in --wait's MiniLM vectors, most likely)
        _err(
            "Interrupted after indexing: every file is indexed and searchable now. The MiniLM vectors "
            "are filled in by the background, which `enclave docs sync` starts again."
        )
        ctx.exit(130)
    _print_report(report, documents, as_json, failure)
    if failure is not None:
        raise failure  # after the report, which lists every skipped file: exit 1, the reason on stderr


def _interrupted(ctx: click.Context, stop: Any, documents: Any, as_json: bool) -> None:
    """Ctrl-C during `docs add`: the files kept and how to resume, on one line (not click's
    bare "Aborted!"); ``--json`` still prints one report, marked interrupted. Exit 130."""
    if as_json:
        data = _report_data(stop.report, documents, stop)
        data["interrupted"] = True
        click.echo(json.dumps(data, ensure_ascii=False))
    _err(displayable(f"{stop.message} {stop.hint}"))
    ctx.exit(stop.exit_code)


def _vectors(documents: Any, wait: bool, progress: IndexProgress) -> None:
    """MiniLM vectors: now (``--wait``) or by the background embedder."""
    if wait:
        documents.fill_vectors(progress)
    else:
        documents.start_background()


@docs.command("sync")
@click.argument("collection", required=False)
@click.option("--wait", is_flag=True, help="Compute the MiniLM vectors now instead of in the background.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the reports as one JSON array (progress: JSON lines on stderr)."
)
@click.pass_context
def docs_sync(ctx: click.Context, collection: str | None, wait: bool, as_json: bool) -> None:
    """Bring collections up to date with their folders (all when none is named)."""
    documents = _open(ctx, build=True)
    names = [collection] if collection else documents.names()
    if not names:
        raise EnclaveError("There are no document collections yet.", "Add documents with `enclave docs add PATH`.")
    reports = []
    for i, name in enumerate(names):
        with IndexProgress(as_json) as progress:
            report = documents.sync(name, progress)
            if i == len(names) - 1:
                _vectors(documents, wait, progress)
        if as_json:
            reports.append(_report_data(report, documents))
        else:
            _print_report(report, documents, as_json)
    if as_json:  # one JSON document per call: an array with one report per collection
        click.echo(json.dumps(reports, ensure_ascii=False))


@docs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def docs_list(ctx: click.Context, as_json: bool) -> None:
    """Collections with their files, passages and size."""
    rows = _open(ctx, write=False).collections()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No documents yet. Add some with `enclave docs add PATH`.")
        return
    width = max(len(inline(r["name"])) for r in rows)
    for r in rows:
        skipped = f", {r['skipped']} skipped" if r["skipped"] else ""
        click.echo(
            f"{inline(r['name']):<{width}}  {r['files']} files, {r['chunks']} passages, {human_size(r['bytes'])}"
            f"{skipped}  ·  {', '.join(inline(root) for root in r['roots'])}"
        )


@docs.command("status")
@click.argument("collection", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def docs_status(ctx: click.Context, collection: str | None, as_json: bool) -> None:
    """Files in a collection, what was skipped and why, and the search set-up."""
    documents = _open(ctx, write=False, lazy=True)
    names = [collection] if collection else documents.names()
    vectors = documents.vectors()
    data: dict[str, Any] = {
        "vector_search": documents.vector_search,
        "embedder_sha256": documents.embedder_sha256,
        "vectors": {k: v for k, v in vectors.items() if k != "line"},
        "collections": [documents.status(name) for name in names],
    }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    mode = "keyword (BM25) + vectors, fused" if documents.vector_search else "keyword (BM25) only"
    click.echo(f"search: {mode}")
    for line in status_lines(vectors):
        click.echo(line)
    if not names:
        click.echo("No documents yet. Add some with `enclave docs add PATH`.")
    for entry in data["collections"]:
        click.echo(f"\n{inline(entry['name'])}: {len(entry['documents'])} files")
        for doc in entry["documents"]:
            note = f"  ({inline(doc['note'])})" if doc["note"] else ""
            size = human_size(doc["size"])
            click.echo(f"  {inline(doc['path'])}  {doc['kind']}, {doc['chunks']} passages, {size}{note}")
        for skip in entry["skipped"]:
            click.echo(f"  skipped {inline(skip['path'])}: {inline(skip['reason'])}")


@docs.command("remove")
@click.argument("collection")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.pass_context
def docs_remove(ctx: click.Context, collection: str, path: Path | None, yes: bool) -> None:
    """Forget a collection (or one file or folder in it). Your files are not touched."""
    documents = _open(ctx)
    documents.check(collection)
    what = f"{inline(str(path))} from {inline(collection)}" if path else f"the whole collection {inline(collection)}"
    how = confirm_destructive(f"Remove {what} from the index?", yes, f"refusing to remove {what} from the index")
    count = documents.remove(collection, path, how=how)
    click.echo(f"Removed {count} document{'s' if count != 1 else ''} ({what}). The files on disk are unchanged.")


@docs.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("-c", "--collection", "collections", multiple=True, help="Collection(s) to search (default: all).")
@click.option("-k", "--limit", "k", type=int, default=5, show_default=True, help="How many passages.")
@click.option(
    "--mode",
    type=click.Choice(["fused", "bm25", "vector"]),
    default="fused",
    show_default=True,
    help="Ranking: keyword (bm25), meaning (vector), or both fused.",
)
@click.option(
    "--best",
    is_flag=True,
    help="Rank with the contextual MiniLM vectors too (loads the model: ~1-2 s more); "
    "the default ranks with keywords and the cheap static vectors.",
)
@click.option("--path", "paths", multiple=True, metavar="GLOB", help="Only files this glob or path matches (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def docs_search(
    ctx: click.Context,
    query: tuple[str, ...],
    collections: tuple[str, ...],
    k: int,
    mode: str,
    paths: tuple[str, ...],
    best: bool,
    as_json: bool,
) -> None:
    """Ranked passages for a query, with file, page, lines and score.

    Fast by default: keywords (BM25) fused with the cheap static vectors, with no model
    to load; `--best` adds the MiniLM vectors (what answers use)."""
    text = for_model(" ".join(query)).text  # argv that is not UTF-8 arrives as lone surrogates
    documents = _open(ctx, write=False, lazy=True)
    hits = documents.search(
        text, k=k, collections=list(collections) or None, mode=mode, paths=list(paths) or None, best=best
    )
    if as_json:
        click.echo(json.dumps([{"n": i + 1, **h.as_dict()} for i, h in enumerate(hits)], ensure_ascii=False))
        return
    if not hits:
        click.echo("No passage matched.")
    for i, hit in enumerate(hits, start=1):
        sim = f", similarity {hit.similarity:.2f}" if hit.similarity is not None else ""
        if hit.similarity is None and hit.static_similarity is not None:
            sim = f", static similarity {hit.static_similarity:.2f}"
        click.echo(
            click.style(f"[{i}] {inline(hit.location())}", bold=True)
            + click.style(f"  score {hit.score:.4f}{sim}", dim=True)
        )
        if hit.heading:
            click.echo(click.style(f"    {inline(hit.heading)}", dim=True))
        body = hit.text if len(hit.text) <= 400 else hit.text[:400] + " …"
        for line in displayable(body).splitlines():
            click.echo(f"    {line}")
