"""`enclave history`: stored conversations (the use cases live in assistant.app.history)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import _err, _settings


def _history(ctx: click.Context) -> Any:
    from assistant.app.history import History

    return History.open(_settings(ctx))


@click.group()
def history() -> None:
    """List, show, search, rename, delete and export stored conversations."""


@history.command("list")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="How many to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Stored conversations, most recent first."""
    rows = _history(ctx).recent(limit)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No conversations yet.")
    for row in rows:
        title = row["title"] or (row["first"] or "")[:60]
        click.echo(f"{row['id']:>5}  {row['updated_at']}  {row['messages']:>3} msgs  {row['model']:<24} {title}")


@history.command("show")
@click.argument("conversation_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_show(ctx: click.Context, conversation_id: int, as_json: bool) -> None:
    """Print a conversation with where and by which model each answer ran."""
    click.echo(_history(ctx).show(conversation_id, "json" if as_json else "md"))


@history.command("search")
@click.argument("text")
@click.option("-n", "--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_search(ctx: click.Context, text: str, limit: int, as_json: bool) -> None:
    """Full-text search over every stored message."""
    rows = _history(ctx).search(text, limit)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No matches.")
    for row in rows:
        click.echo(f"{row['conversation_id']:>5}  {row['role']:<9} {row['snippet']}")


@history.command("rename")
@click.argument("conversation_id", type=int)
@click.argument("title")
@click.pass_context
def history_rename(ctx: click.Context, conversation_id: int, title: str) -> None:
    """Give a conversation a title."""
    _history(ctx).rename(conversation_id, title)
    click.echo(f"Renamed {conversation_id}.")


@history.command("delete")
@click.argument("conversation_id", type=int)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def history_delete(ctx: click.Context, conversation_id: int, yes: bool) -> None:
    """Delete a conversation for good (messages and search index rows)."""
    history = _history(ctx)
    title = history.title(conversation_id)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete conversation {conversation_id} ({title!r})?", abort=True, err=True)
    history.delete(conversation_id, how="--yes" if yes else "confirmed at the prompt")
    click.echo(f"Deleted {conversation_id}.")


@history.command("export")
@click.argument("conversation_id", type=int)
@click.option("-f", "--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@click.pass_context
def history_export(ctx: click.Context, conversation_id: int, fmt: str, output: Path | None) -> None:
    """Export a conversation as Markdown or JSON."""
    exported = _history(ctx).export(conversation_id, fmt, output)
    if exported.path is None:
        click.echo(exported.text)
    else:
        _err(f"Wrote {exported.path}")
