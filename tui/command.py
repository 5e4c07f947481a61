"""`enclave tui`: registered with the CLI through the ``enclave.commands`` entry point."""

from __future__ import annotations

import click

from assistant.cli.common import _latest, _settings, continue_option


@click.command()
@click.option("-m", "--model", help="Model name (see `enclave models list`).")
@click.option("-e", "--engine", type=click.Choice(["onnx", "litert"]), help="Engine to run the model with.")
@click.option("-p", "--persona", help="Persona / system prompt.")
@click.option("--ctx", "context_window", type=int, help="Context window in tokens (default 2048).")
@continue_option
@click.pass_context
def tui(
    ctx: click.Context,
    model: str | None,
    engine: str | None,
    persona: str | None,
    context_window: int | None,
    resume: int | None,
) -> None:
    """The terminal UI (what `enclave` opens with no command)."""
    from assistant.app.history import History
    from tui.app import run

    settings = _settings(ctx, model=model, persona=persona, context_window=context_window)
    # Opened here, before the screen is taken over: an encrypted database may ask for its key.
    history = History.open(settings)
    if resume == 0:
        resume = _latest(history.store)
    run(settings, resume, store=history.store, engine=engine)
