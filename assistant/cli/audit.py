"""`enclave audit`: the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import (
    _audit,
    _store,
    _write_or_print,
    force_option,
)
from assistant.core.text import inline


@click.group()
def audit() -> None:
    """The append-only, hash-chained audit log (model loads, exports, deletions)."""


@audit.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Check the chain: reports every edited, removed or reordered entry."""
    verdict = _audit(_store(ctx, write=False)).check()
    if verdict.problems:
        for problem in verdict.problems:
            click.echo(f"FAIL {inline(str(problem))}")
        ctx.exit(1)
    click.echo(f"ok   {verdict.entries} entries, chain intact; {verdict.protection}")
    for note in repair_notes(_audit(_store(ctx, write=False)).entries()):
        click.echo(f"note {inline(note)}")


def repair_notes(entries: list[dict[str, Any]]) -> list[str]:
    """What a reviewer must know of each rebuild of the database: the chain is intact
    from there on, but what could not be read is only in the kept copy."""
    notes = []
    for row in entries:
        if row["kind"] != "database_repaired":
            continue
        try:
            detail = json.loads(row["detail"])
        except (TypeError, ValueError):
            detail = {}
        lost = bool(detail.get("unreadable_file") or detail.get("lost_tables") or detail.get("lost_rows"))
        notes.append(
            f"entry {row['seq']} ({row['at']}): the database was rebuilt by `enclave doctor --repair`"
            + (
                "; entries before it that could not be read (all of them, if this is entry 1) are only in "
                f"the kept copy {detail.get('kept', '')}"
                if lost or row["seq"] == 1
                else f"; the damaged file is kept at {detail.get('kept', '')}"
            )
        )
    return notes


@audit.command("list")
@click.option("-n", "--limit", type=int, default=50, show_default=True)
@click.pass_context
def audit_list(ctx: click.Context, limit: int) -> None:
    """The most recent audit entries."""
    for row in _audit(_store(ctx, write=False)).entries()[-limit:]:
        click.echo(inline(f"{row['seq']:>6}  {row['at']}  {row['kind']:<12} {row['detail']}"))


@audit.command("export")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@force_option
@click.pass_context
def audit_export(ctx: click.Context, output: Path | None, force: bool) -> None:
    """Write the whole log as JSON Lines, hashes included, for a compliance review."""
    log = _audit(_store(ctx))
    text = log.export()
    if output is not None:
        from assistant.app.history import check_export_target

        check_export_target(output, force=force)  # refused before it is recorded as done
    log.record("audit_export", to=str(output) if output else "stdout")
    _write_or_print(text, output, force=force)
