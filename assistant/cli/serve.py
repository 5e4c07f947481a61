"""`enclave serve`: the installed models over an OpenAI-compatible API on 127.0.0.1."""

from __future__ import annotations

import click

from assistant.cli.common import _err, _settings
from assistant.core.errors import EnclaveError


@click.group(invoke_without_command=True)
@click.option("--port", type=int, help="Port to listen on (default 8642, the serve_port setting; 0 picks a free one).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs --i-understand-the-risk.",
)
@click.option(
    "--i-understand-the-risk",
    "understood",
    is_flag=True,
    help="Allow --host to be an address other machines can reach (recorded in the audit log).",
)
@click.pass_context
def serve(ctx: click.Context, port: int | None, host: str, understood: bool) -> None:
    """Serve the installed models over an OpenAI-compatible API (Continue, aider, Open WebUI, llm, openai).

    Listens on 127.0.0.1 only; every request needs the bearer token (`enclave serve token`).
    Ctrl-C stops it.
    """
    if ctx.invoked_subcommand is not None:
        return
    from assistant.server.run import prepare
    from assistant.server.run import serve as run

    settings = _settings(ctx)
    prepared = prepare(settings, host, port, understood=understood)
    where = prepared.where

    try:  # Ctrl-C at any moment from here on stops the server cleanly
        if where.exposed:
            _err(
                click.style("warning: ", fg="yellow", bold=True)
                + f"listening on {where.host}: other machines can reach this API (recorded in the audit log)."
            )
        _err(f"Enclave API on {where.base_url}  (OpenAI-compatible)")
        _err(f"  token:  `enclave serve token` prints it (stored in {prepared.token.path}, mode 600)")
        _err("  models: GET /v1/models lists them; Ctrl-C stops the server.")
        try:
            prepared.models.warm(settings.model)  # loads in the background: the first answer need not wait
        except EnclaveError as exc:  # the default model may not be built; the others are still served
            _err(click.style("note: ", fg="yellow") + f"{exc.message} {exc.hint}")
        run(prepared)
    except KeyboardInterrupt:
        pass
    finally:
        prepared.close()
    _err("Stopped.")


@serve.command("token")
@click.option("--rotate", is_flag=True, help="Replace the token (a running server accepts only the new one at once).")
@click.pass_context
def token(ctx: click.Context, rotate: bool) -> None:
    """Print the API's bearer token (created on first use; stored with mode 600)."""
    from assistant.app.access import rotate_token, token_for_display

    settings = _settings(ctx)
    if rotate:
        current = rotate_token(settings)
        _err(f"New token {current.id} in {current.path}; the old one no longer works.")
    else:
        current, created = token_for_display(settings)
        if created:
            _err(f"Created a token in {current.path} (mode 600).")
    click.echo(current.secret)
