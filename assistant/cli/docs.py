"""`enclave docs`: index the user's files and search them, all on this machine."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import _settings
from assistant.core.errors import EnclaveError
from assistant.core.format import human_size


def _err(text: str = "") -> None:
    click.echo(text, err=True)


def _open(ctx: click.Context, build: bool = False) -> Any:
    """The documents of this home. With ``build``, the embedding model is built first if
    it is missing and the build tools are installed (once, ~30 s); without them, search
    stays keyword-only and the report says so."""
    from assistant.app.documents import Documents

    settings = _settings(ctx)
    if build and Documents.embedder_missing(settings):
        from assistant.cli.progress import BuildProgress

        _err("Building the embedding model for document search (once; about 30 s)…")
        try:
            with BuildProgress() as progress:
                Documents.build_embedder(settings, progress)
        except EnclaveError as exc:
            _err(click.style("note: ", fg="yellow") + f"{exc.message} Indexing continues with keyword search.")
    documents = Documents.open(settings)
    ctx.call_on_close(documents.close)
    return documents


class IndexProgress:
    """Files, MB and an ETA on stderr while indexing (a live bar on a terminal)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._last_line = 0.0

    def __enter__(self) -> IndexProgress:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("indexing"),
                BarColumn(),
                TextColumn("{task.fields[files]}"),
                TextColumn("{task.fields[mb]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[current]}", style="dim", markup=False),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("indexing", total=None, files="", mb="", current="")
        return self

    def __call__(self, p: Any) -> None:
        files = f"{p.files_done}/{p.files_total} files"
        mb = f"{p.bytes_done / 2**20:.1f}/{p.bytes_total / 2**20:.1f} MB"
        if self._bar is not None:
            self._bar.update(
                self._task,
                total=max(p.bytes_total, 1),
                completed=p.bytes_done,
                files=files,
                mb=mb,
                current=Path(p.current).name[-40:],
            )
        elif time.monotonic() - self._last_line > 2 or p.files_done == p.files_total:
            self._last_line = time.monotonic()
            eta = f", about {p.eta:.0f} s left" if p.eta is not None and p.files_done < p.files_total else ""
            _err(f"indexing: {files}, {mb}{eta}")

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _print_report(report: Any, documents: Any, as_json: bool) -> None:
    if as_json:
        data = report.as_dict()
        data["vector_search"] = documents.vector_search
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    rate = report.bytes / 2**20 / report.seconds if report.seconds > 0 else 0.0
    click.echo(
        f"{report.collection}: {report.files_indexed} indexed, {report.files_unchanged} unchanged, "
        f"{report.files_removed} removed, {len(report.skipped)} skipped · {report.chunks} passages · "
        f"{human_size(report.bytes)} in {report.seconds:.1f} s ({rate:.2f} MB/s)"
    )
    shown = report.skipped if len(report.skipped) <= 20 else report.skipped[:10]
    for path, reason in shown:
        click.echo(f"  skipped {path}: {reason}")
    if len(shown) < len(report.skipped):
        from collections import Counter

        kinds = Counter(reason.split(" (")[0] for _, reason in report.skipped[len(shown) :])
        summary = ", ".join(f"{n} × {why}" for why, n in kinds.most_common(5))
        click.echo(
            f"  … and {len(report.skipped) - len(shown)} more skipped ({summary}); `enclave docs status` lists all"
        )
    for path, note in report.notes:
        click.echo(f"  note {path}: {note}")
    if not documents.vector_search:
        _err(
            click.style("note: ", fg="yellow") + "keyword search only: the embedding model is not built. "
            "Build it with `enclave models build all-minilm-l6-v2`, then run `enclave docs sync`."
        )


@click.group()
def docs() -> None:
    """Index your documents and search them (nothing leaves this machine)."""


@docs.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-c", "--collection", default="default", show_default=True, help="Collection to add them to.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def docs_add(ctx: click.Context, paths: tuple[Path, ...], collection: str, as_json: bool) -> None:
    """Index files and folders (.txt .md .rst .html .pdf .docx).

    Incremental and resumable: unchanged files cost nothing, changed files are
    re-read, deleted ones are removed; stop it at any moment and run it again.
    """
    documents = _open(ctx, build=True)
    with IndexProgress() as progress:
        report = documents.add(list(paths), collection, progress)
    _print_report(report, documents, as_json)


@docs.command("sync")
@click.argument("collection", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@click.pass_context
def docs_sync(ctx: click.Context, collection: str | None, as_json: bool) -> None:
    """Bring collections up to date with their folders (all when none is named)."""
    documents = _open(ctx, build=True)
    names = [collection] if collection else documents.names()
    if not names:
        raise EnclaveError("There are no document collections yet.", "Add documents with `enclave docs add PATH`.")
    for name in names:
        with IndexProgress() as progress:
            report = documents.sync(name, progress)
        _print_report(report, documents, as_json)


@docs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def docs_list(ctx: click.Context, as_json: bool) -> None:
    """Collections with their files, passages and size."""
    rows = _open(ctx).collections()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No documents yet. Add some with `enclave docs add PATH`.")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        skipped = f", {r['skipped']} skipped" if r["skipped"] else ""
        click.echo(
            f"{r['name']:<{width}}  {r['files']} files, {r['chunks']} passages, {human_size(r['bytes'])}{skipped}"
            f"  ·  {', '.join(r['roots'])}"
        )


@docs.command("status")
@click.argument("collection", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def docs_status(ctx: click.Context, collection: str | None, as_json: bool) -> None:
    """Files in a collection, what was skipped and why, and the search set-up."""
    documents = _open(ctx)
    names = [collection] if collection else documents.names()
    data: dict[str, Any] = {
        "vector_search": documents.vector_search,
        "embedder_sha256": documents.embedder_sha256,
        "collections": [documents.status(name) for name in names],
    }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    mode = "keyword (BM25) + vectors, fused" if documents.vector_search else "keyword (BM25) only"
    click.echo(f"search: {mode}")
    if not names:
        click.echo("No documents yet. Add some with `enclave docs add PATH`.")
    for entry in data["collections"]:
        click.echo(f"\n{entry['name']}: {len(entry['documents'])} files")
        for doc in entry["documents"]:
            note = f"  ({doc['note']})" if doc["note"] else ""
            click.echo(f"  {doc['path']}  {doc['kind']}, {doc['chunks']} passages, {human_size(doc['size'])}{note}")
        for skip in entry["skipped"]:
            click.echo(f"  skipped {skip['path']}: {skip['reason']}")


@docs.command("remove")
@click.argument("collection")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def docs_remove(ctx: click.Context, collection: str, path: Path | None, yes: bool) -> None:
    """Forget a collection (or one file or folder in it). Your files are not touched."""
    documents = _open(ctx)
    documents.check(collection)
    what = f"{path} from {collection}" if path else f"the whole collection {collection}"
    if not yes and sys.stdin.isatty():
        click.confirm(f"Remove {what} from the index?", abort=True)
    count = documents.remove(collection, path, how="--yes" if yes else "confirmed at the prompt")
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def docs_search(
    ctx: click.Context, query: tuple[str, ...], collections: tuple[str, ...], k: int, mode: str, as_json: bool
) -> None:
    """Ranked passages for a query, with file, page, lines and score."""
    text = " ".join(query)
    hits = _open(ctx).search(text, k=k, collections=list(collections) or None, mode=mode)
    if as_json:
        click.echo(json.dumps([{"n": i + 1, **h.as_dict()} for i, h in enumerate(hits)], ensure_ascii=False))
        return
    if not hits:
        click.echo("No passage matched.")
    for i, hit in enumerate(hits, start=1):
        sim = f", similarity {hit.similarity:.2f}" if hit.similarity is not None else ""
        click.echo(
            click.style(f"[{i}] {hit.location()}", bold=True) + click.style(f"  score {hit.score:.4f}{sim}", dim=True)
        )
        if hit.heading:
            click.echo(click.style(f"    {hit.heading}", dim=True))
        body = hit.text if len(hit.text) <= 400 else hit.text[:400] + " …"
        for line in body.splitlines():
            click.echo(f"    {line}")
