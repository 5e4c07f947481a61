"""`enclave history`: stored conversations (the use cases live in assistant.app.history)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import _err, _settings, confirm_destructive, force_option
from assistant.core.text import displayable, inline


def _history(ctx: click.Context, *, write: bool = True) -> Any:
    from assistant.app.history import History

    return History.open(_settings(ctx), write=write)


@click.group()
def history() -> None:
    """List, show, search, rename, delete and export stored conversations."""


@history.command("list")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="How many to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Stored conversations, most recent first."""
    rows = _history(ctx, write=False).recent(limit)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No conversations yet.")
    for row in rows:
        title = inline(row["title"] or (row["first"] or "")[:60])
        model = inline(str(row["model"]))
        click.echo(f"{row['id']:>5}  {row['updated_at']}  {row['messages']:>3} msgs  {model:<24} {title}")


@history.command("show")
@click.argument("conversation_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_show(ctx: click.Context, conversation_id: int, as_json: bool) -> None:
    """Print a conversation with where and by which model each answer ran."""
    text = _history(ctx, write=False).show(conversation_id, "json" if as_json else "md")
    click.echo(text if as_json else displayable(text))


@history.command("search")
@click.argument("text")
@click.option("-n", "--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def history_search(ctx: click.Context, text: str, limit: int, as_json: bool) -> None:
    """Full-text search over every stored message."""
    rows = _history(ctx, write=False).search(text, limit)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("No matches.")
    for row in rows:
        click.echo(f"{row['conversation_id']:>5}  {row['role']:<9} {inline(row['snippet'])}")


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
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.pass_context
def history_delete(ctx: click.Context, conversation_id: int, yes: bool) -> None:
    """Delete a conversation for good (messages and search index rows)."""
    history = _history(ctx)
    title = history.title(conversation_id)
    how = confirm_destructive(
        f"Delete conversation {conversation_id} ({inline(title)!r})?",
        yes,
        f"refusing to delete conversation {conversation_id}",
    )
    history.delete(conversation_id, how=how)
    click.echo(f"Deleted {conversation_id}.")


@history.command("export")
@click.argument("conversation_id", type=int)
@click.option("-f", "--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@force_option
@click.pass_context
def history_export(ctx: click.Context, conversation_id: int, fmt: str, output: Path | None, force: bool) -> None:
    """Export a conversation as Markdown or JSON (a new file is private: mode 0600)."""
    exported = _history(ctx).export(conversation_id, fmt, output, force=force)
    if exported.path is None:
        click.echo(displayable(exported.text) if sys.stdout.isatty() else exported.text)
    else:
        _err(f"Wrote {inline(str(exported.path))}")
