"""`enclave report`: one archive for a support person, with no conversation or document content."""

from __future__ import annotations

from pathlib import Path

import click

from assistant.cli.common import _settings, _store


@click.command()
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="The archive (.tar.gz)."
)
@click.pass_context
def report(ctx: click.Context, output: Path) -> None:
    """Write an incident report: versions, settings without secrets, doctor, errors, stats, audit head."""
    from assistant.app.report import build

    parts = build(_settings(ctx), _store(ctx), output)
    click.echo(f"Wrote {output}: {', '.join(parts)}")
    click.echo("It holds no conversation, system prompt or document content; read it before you send it.")
